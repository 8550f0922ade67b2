"""Physics of the rendered cubes: flux, kinematics, convergence, gradients, batching."""
import math
import time

import astropy.units as u
import numpy as np
import pytest
import torch
from torch.autograd.gradcheck import GradcheckError
from astropy.coordinates import SkyCoord
from radio_beam import Beam

import galcubecraft as gcc
import galcubecraft.projector as projector_module
from conftest import JYKMS, KMS, make_galaxy
from galcubecraft.conventions import C_KMS, observed_velocity


def grid_for(channel_width=20 * KMS, beam=Beam(3 * u.arcsec), n_pix=48, pixel=1 * u.arcsec,
             span=720 * KMS, **kw):
    n_chan = int(round((span / abs(channel_width)).to_value(u.one)))
    return gcc.CubeGrid(shape=(n_chan, n_pix, n_pix), pixel_scale=pixel,
                        channel_width=channel_width, beam=beam, **kw)


def l1(a, b):
    return float((a - b).abs().sum() / b.abs().sum())


# ----------------------------------------------------------------------------- flux
FLUX_CASES = [
    # inclination, beam, channel width, Sersic n
    (0, Beam(3 * u.arcsec), 20, 1.0),
    (30, None, 20, 1.0),
    (60, Beam(3 * u.arcsec), 5, 1.0),
    (60, Beam(4 * u.arcsec, 2 * u.arcsec, 45 * u.deg), 50, 0.7),
    (80, Beam(3 * u.arcsec), 20, 1.5),
    (85, Beam(6 * u.arcsec, 3 * u.arcsec, -20 * u.deg), 10, 1.0),
]


@pytest.mark.parametrize("inclination, beam, width, n", FLUX_CASES)
def test_integrated_flux_equals_galaxy_flux(inclination, beam, width, n):
    """sum(cube) |dv| Omega_pix / Omega_beam = flux, to 1e-3, for a galaxy inside the field."""
    grid = grid_for(channel_width=width * KMS, beam=beam)
    galaxy = make_galaxy(surface=gcc.SersicDisk(r_eff=3 * u.arcsec, n=n),
                         inclination=inclination * u.deg, flux=12.5 * JYKMS)
    cube = gcc.render(galaxy, grid)
    measured = grid.integrated_flux(cube.unitless_filled_data[:])
    assert measured.unit == JYKMS
    assert measured.value == pytest.approx(12.5, rel=1e-3)
    # and through spectral-cube's own moment-0 and beam area
    mom0 = cube.moment0().to(grid.unit * KMS)
    per_beam = 1.0 if beam is None else float((grid.pixel_area / beam.sr).decompose())
    assert float(np.nansum(mom0.value)) * per_beam == pytest.approx(12.5, rel=1e-3)


@pytest.mark.parametrize("inclination, pa", [(80, 37), (89, 120), (45, 200)])
def test_pixels_outside_a_galaxys_footprint_hold_none_of_its_light(inclination, pa):
    """Integrating every pixel of the grid gives the same cube as the galaxy's own strip."""
    grid = grid_for(n_pix=40)
    galaxies = [make_galaxy(surface=gcc.SersicDisk(r_eff=2.5 * u.arcsec, n=1.0),
                            vertical=gcc.ExponentialVertical(0.4 * u.arcsec),
                            inclination=inclination * u.deg, position_angle=pa * u.deg,
                            offset=(3, -2) * u.arcsec),
                make_galaxy(inclination=30 * u.deg, offset=(-8, 5) * u.arcsec)]
    projector = gcc.Projector(grid, dtype=torch.float64)
    (law, params), = gcc.stack_parameters(galaxies, dtype=torch.float64)
    with torch.no_grad():
        strip = projector.project(params, law)
        pixels, used = projector.footprint(params)
        n_pix = projector.padded_shape[0] * projector.padded_shape[1]
        if inclination >= 80:                          # a nearly edge-on disk's strip is narrow
            assert int(used[0].sum()) < 0.5 * n_pix
        everywhere = gcc.Projector(grid, dtype=torch.float64, footprint=False)
        assert int(everywhere.footprint(params)[1].sum()) == 2 * n_pix
        full = everywhere.project(params, law)
    peak = float(full.abs().max())
    assert float((strip - full).abs().max()) < 1e-6 * peak
    assert float(strip.sum()) == pytest.approx(float(full.sum()), rel=1e-6)


@pytest.mark.parametrize("dispersion, width", [(10, 20), (40, 25), (15, 5)])
def test_velocity_nodes_agree_with_exact_line_integration(dispersion, width):
    """Lines spread over velocity nodes give the erf-integrated cube to < 0.05% (L1), the same
    flux and the same moment-1 map."""
    grid = grid_for(channel_width=width * KMS)
    galaxy = make_galaxy(dispersion=dispersion * KMS, inclination=70 * u.deg)
    (law, params), = gcc.stack_parameters([galaxy], dtype=torch.float64)
    cubes = {}
    for path in ("erf", "nodes"):
        with torch.no_grad():
            cubes[path] = gcc.Projector(grid, dtype=torch.float64,
                                        line_integration=path)(params, law)[0]
    exact, nodes = cubes["erf"], cubes["nodes"]
    assert l1(nodes, exact) < 5e-4
    assert float(nodes.sum()) == pytest.approx(float(exact.sum()), rel=1e-7)
    v = torch.as_tensor(grid.spectral_axis.to_value(KMS)).reshape(-1, 1, 1)
    bright = exact.sum(0) > 0.05 * exact.sum(0).max()
    mom1 = [((c * v).sum(0) / c.sum(0))[bright] for c in (exact, nodes)]
    assert float((mom1[0] - mom1[1]).abs().max()) < 0.02 * width


def test_flux_outside_the_field_is_lost_not_folded_back():
    """A galaxy half outside the field keeps only the half inside (no FFT wrap-around)."""
    grid = grid_for()
    galaxy = make_galaxy(inclination=0 * u.deg, offset=(24, 0) * u.arcsec,
                         surface=gcc.SersicDisk(r_eff=3 * u.arcsec, n=1))
    flux = gcc.render(galaxy, grid)
    measured = grid.integrated_flux(flux.unitless_filled_data[:]).value
    # the field's east edge runs through the galaxy's centre: half of a symmetric disk is inside
    assert measured / 30 == pytest.approx(0.5, abs=2e-3)


# ----------------------------------------------------------------------------- kinematics
def test_face_on_moment1_is_vsys_and_width_is_dispersion():
    grid = grid_for(channel_width=10 * KMS)
    galaxy = make_galaxy(inclination=0 * u.deg, v_sys=47 * KMS, dispersion=25 * KMS)
    cube = gcc.render(galaxy, grid)
    signal = cube.moment0().value > 1e-3 * np.nanmax(cube.moment0().value)
    assert signal.sum() > 500
    m1 = cube.moment1().to_value(KMS)[signal]
    # the gas's velocities compose relativistically with v_sys: the line's mean is v_sys
    # moved by -sigma^2 / 2c (-1.0e-3 km/s); its mean by quadrature over the Gaussian
    u_int = np.linspace(-10, 10, 4001) * 25.0
    weight = np.exp(-0.5 * (u_int / 25.0) ** 2)
    expected = np.sum(weight * observed_velocity(47.0, u_int)) / weight.sum()
    assert expected == pytest.approx(47.0 - 25.0**2 / (2 * C_KMS), abs=1e-6)
    np.testing.assert_allclose(m1, expected, atol=6e-4)      # float32 node deposits: 5.5e-4
    # second moment of a channel-integrated Gaussian: sigma^2 + dv^2 / 12 (Sheppard)
    m2 = cube.moment2().to_value(KMS**2)[signal]
    np.testing.assert_allclose(np.sqrt(m2 - 10.0**2 / 12), 25.0, rtol=1e-3)


def _los_velocity(grid, galaxy):
    """The analytic line-of-sight velocity field at pixel centres (km/s)."""
    east, north = (q.to_value(u.arcsec) for q in grid.sky_offsets())
    pa = galaxy.position_angle.to_value(u.rad)
    inc = galaxy.inclination.to_value(u.rad)
    x = east * math.sin(pa) + north * math.cos(pa)
    y = (-east * math.cos(pa) + north * math.sin(pa)) / math.cos(inc)
    r = np.hypot(x, y)
    vc = galaxy.kinematics(r * u.arcsec).to_value(KMS)
    return galaxy.v_sys.to_value(KMS) + vc * math.sin(inc) * x / np.where(r > 0, r, 1), r


@pytest.mark.parametrize("pa", [30, 160, 250])
def test_moment1_follows_the_analytic_velocity_field(pa):
    """Beam-free thin disk: moment-1 = v_sys + v_c(R) sin i cos(phi) away from the centre."""
    grid = grid_for(channel_width=5 * KMS, beam=None, n_pix=64, pixel=0.5 * u.arcsec)
    galaxy = make_galaxy(vertical=gcc.ExponentialVertical(0 * u.arcsec),
                         kinematics=gcc.ArctanRotationCurve(200 * KMS, 3 * u.arcsec),
                         surface=gcc.SersicDisk(r_eff=6 * u.arcsec, n=1), v_sys=20 * KMS,
                         inclination=50 * u.deg, position_angle=pa * u.deg)
    cube = gcc.render(galaxy, grid)
    m1 = cube.moment1().to_value(KMS)
    expected, radius = _los_velocity(grid, galaxy)
    ring = (radius > 3) & (radius < 12)
    assert ring.sum() > 300
    # the pixel average of a curved field differs from its centre value at second order
    np.testing.assert_allclose(m1[ring], expected[ring], atol=1.5)


def test_receding_side_lies_at_the_position_angle_in_world_coordinates(tmp_path):
    """Render, write FITS, read with spectral-cube: the receding side is at PA east of north."""
    center = SkyCoord(150 * u.deg, 2 * u.deg)
    grid = grid_for(channel_width=10 * KMS, beam=Beam(2 * u.arcsec), n_pix=65,
                    pixel=0.5 * u.arcsec, center=center)
    pa, inc, vsys = 40 * u.deg, 60 * u.deg, 100 * KMS
    galaxy = make_galaxy(position_angle=pa, inclination=inc, v_sys=vsys,
                         vertical=gcc.ExponentialVertical(0 * u.arcsec),
                         surface=gcc.SersicDisk(r_eff=5 * u.arcsec, n=1))
    path = tmp_path / "pa.fits"
    gcc.render(galaxy, grid).write(path)
    from spectral_cube import SpectralCube
    cube = SpectralCube.read(path).with_spectral_unit(KMS, velocity_convention="radio")
    m1 = cube.moment1().to_value(KMS)
    for sep, side in [(8, +1), (8, -1), (12, +1)]:
        angle = pa if side > 0 else pa + 180 * u.deg
        where = center.directional_offset_by(angle, sep * u.arcsec)
        x, y = cube.wcs.celestial.world_to_pixel(where)
        v = m1[int(round(float(y))), int(round(float(x)))]
        v_rot = galaxy.kinematics(sep * u.arcsec).to_value(KMS)
        v_expected = vsys.value + side * v_rot * np.sin(inc.to_value(u.rad))
        assert (v - vsys.value) * side > 100          # receding side redshifted, and vice versa
        assert v == pytest.approx(v_expected, abs=12)  # off-centre pixel + 2" beam smearing
    # the systemic velocity lands at the centre
    x, y = cube.wcs.celestial.world_to_pixel(center)
    spectrum = cube[:, int(round(float(y))), int(round(float(x)))]
    centroid = float((spectrum.value * cube.spectral_axis.value).sum() / spectrum.value.sum())
    assert centroid == pytest.approx(vsys.value, abs=1.0)


def test_descending_velocity_axis_is_the_mirrored_cube():
    up = grid_for(channel_width=20 * KMS)
    down = grid_for(channel_width=-20 * KMS)
    galaxy = make_galaxy(v_sys=30 * KMS)
    a = gcc.render(galaxy, up).unitless_filled_data[:]
    b = gcc.render(galaxy, down).unitless_filled_data[:]
    np.testing.assert_allclose(b, a[::-1], rtol=1e-4, atol=1e-6 * a.max())


def test_symmetry_under_rotation_by_180_degrees():
    """PA -> PA + 180 is the same disk rotated by 180 deg on the sky, which for a symmetric disk
    with v_sys = 0 is also the velocity-reversed cube to first order in v / c (the relativistic
    composition of velocities, -v^2 / 2c, breaks it at 1e-3 of the peak here)."""
    grid = grid_for(channel_width=20 * KMS)
    a = gcc.render(make_galaxy(position_angle=30 * u.deg), grid).unitless_filled_data[:]
    b = gcc.render(make_galaxy(position_angle=210 * u.deg), grid).unitless_filled_data[:]
    np.testing.assert_allclose(b, a[:, ::-1, ::-1], rtol=1e-5, atol=1e-6 * a.max())
    np.testing.assert_allclose(b, a[::-1], rtol=2e-3, atol=2e-3 * a.max())


# ----------------------------------------------------------------------------- convergence
@pytest.mark.parametrize("inclination", [30, 60, 80])
def test_doubling_the_sampling_changes_the_cube_by_less_than_0p2_percent(inclination):
    """The DESIGN reference model (128^2 x 40, 1" pixels, 4" beam) is converged at default sampling
    (measured: 0.12% at 30 deg, 0.16% at 60 deg, 0.20% at 80 deg)."""
    grid = gcc.CubeGrid(shape=(40, 128, 128), pixel_scale=1 * u.arcsec,
                        channel_width=20 * KMS, beam=Beam(4 * u.arcsec))
    galaxy = make_galaxy(surface=gcc.ExponentialDisk(scale_length=5 * u.arcsec),
                         vertical=gcc.ExponentialVertical(0.5 * u.arcsec),
                         dispersion=10 * KMS, inclination=inclination * u.deg)
    with torch.no_grad():
        default = gcc.render_tensor(galaxy, grid)
        doubled = gcc.render_tensor(galaxy, grid, oversample=4, minor_density=2,
                                    max_minor_samples=256)
    assert l1(default, doubled) < 2e-3


# ----------------------------------------------------------------------------- batching
def test_batch_equals_individual_renders(small_grid):
    galaxies = [make_galaxy(inclination=i * u.deg, position_angle=p * u.deg, flux=f * JYKMS)
                for i, p, f in [(20, 10, 5), (75, 200, 8), (50, 300, 3)]]
    projector = gcc.Projector(small_grid)
    (law, params), = gcc.stack_parameters(galaxies)
    with torch.no_grad():
        batched = projector(params, law)
        for k, g in enumerate(galaxies):
            single = projector({n: v[None] for n, v in g.tensors().items()}, type(g.kinematics))
            torch.testing.assert_close(batched[k], single[0], rtol=1e-5, atol=1e-7)


def random_disks(seed, count, *, r_eff, n, height, inclination):
    """``count`` seeded disks (`make_galaxy`) within 6" of the centre, at any position angle,
    their r_eff and scale height (arcsec), Sérsic n and inclination (deg) drawn uniformly from
    the ranges given."""
    rng = np.random.default_rng(seed)
    return [make_galaxy(
        surface=gcc.SersicDisk(r_eff=rng.uniform(*r_eff) * u.arcsec, n=rng.uniform(*n)),
        vertical=gcc.ExponentialVertical(scale_height=rng.uniform(*height) * u.arcsec),
        inclination=rng.uniform(*inclination) * u.deg,
        position_angle=rng.uniform(0, 360) * u.deg,
        offset=rng.uniform(-6, 6, 2) * u.arcsec) for _ in range(count)]


def test_groups_cover_the_batch_and_do_not_change_its_cubes(small_grid, monkeypatch):
    """However a batch is grouped (``group_ratio`` 1: each galaxy with those of its own shape;
    one group for all), each galaxy is rendered once and its cube is the same to float32
    rounding; looser ratios make fewer groups."""
    galaxies = random_disks(3, 10, r_eff=(0.3, 6), n=(0.5, 4), height=(0.05, 2),
                            inclination=(10, 90))
    (law, params), = gcc.stack_parameters(galaxies)
    seen = []
    group = gcc.Projector._group_by_cost

    def spy(plan, ratio, bands=False):
        groups = group(plan, ratio, bands)
        seen.append((len(plan.cells), groups))
        return groups
    monkeypatch.setattr(gcc.Projector, "_group_by_cost", staticmethod(spy))
    cubes, counts = {}, {}
    with torch.no_grad():
        for ratio in (1.0, 1.35, 4.0, 1e9):
            seen.clear()
            cubes[ratio] = gcc.Projector(small_grid, group_ratio=ratio)(params, law)
            for n, groups in seen:
                assert sorted(torch.cat(groups).tolist()) == list(range(n))
            counts[ratio] = sum(len(groups) for _, groups in seen)
    assert counts[1.0] >= counts[1.35] >= counts[4.0] >= counts[1e9] == len(seen)
    assert counts[1.0] > counts[1e9], counts
    for ratio, cube in cubes.items():
        torch.testing.assert_close(cube, cubes[1e9], rtol=0,
                                   atol=1e-5 * float(cubes[1e9].abs().max()))


def test_the_batch_cube_is_the_same_under_autograd(small_grid):
    """Without autograd each group's light goes straight into its galaxies' rows of the
    batch's cube; under autograd by a sum apart (`Projector._deposit`).  The cubes agree to
    float32 rounding for a batch whose light takes every deposit: disks and cusps in several
    groups, compact ones whose pixels and bands are multipoles, central bands."""
    rng = np.random.default_rng(5)
    galaxies = [make_galaxy(
        surface=gcc.SersicDisk(r_eff=(r_eff := 10 ** rng.uniform(-1.3, 0.6)) * u.arcsec,
                               n=rng.uniform(0.7, 5)),
        vertical=gcc.ExponentialVertical(scale_height=rng.uniform(0.05, 0.5) * r_eff * u.arcsec),
        inclination=rng.uniform(10, 80) * u.deg, position_angle=rng.uniform(0, 360) * u.deg,
        offset=rng.uniform(-6, 6, 2) * u.arcsec) for _ in range(8)]
    (law, params), = gcc.stack_parameters(galaxies)
    projector = gcc.Projector(small_grid)
    with torch.no_grad():
        plain = projector(params, law)
    leaves = {k: v.clone().requires_grad_(k in ("flux", "r_eff")) for k, v in params.items()}
    traced = projector(leaves, law)
    assert traced.requires_grad
    torch.testing.assert_close(traced.detach(), plain, rtol=0,
                               atol=1e-5 * float(plain.abs().max()))
    for i in (0, 5):        # and each galaxy's rows are its own
        with torch.no_grad():
            alone = projector({k: v[i:i + 1] for k, v in params.items()}, law)
        torch.testing.assert_close(plain[i:i + 1], alone, rtol=0,
                                   atol=1e-5 * float(alone.abs().max()))


@pytest.mark.parametrize("lines", ["erf", "nodes"])
def test_groups_rendered_at_once_are_the_cubes_rendered_in_turn(small_grid, monkeypatch, lines):
    """On several CPU threads a batch's groups render at once, one thread each
    (`Projector._by_groups`): the cube is the same, byte for byte, as the one of one thread
    that renders them in turn, through either line integration (the ``erf`` one's reused
    scratch buffer is not shared by threads), with ``threads`` given and by default (a render
    this small splits no kernel over threads, but its groups take torch's threads)."""
    galaxies = random_disks(11, 12, r_eff=(0.5, 4), n=(0.6, 4), height=(0.05, 0.5),
                            inclination=(0, 88))
    (law, params), = gcc.stack_parameters(galaxies)
    pools = []

    class Counted(projector_module.ThreadPoolExecutor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pools.append(self._max_workers)
    monkeypatch.setattr(projector_module, "ThreadPoolExecutor", Counted)
    erf_at_edges = projector_module.F.erf_at_edges

    def slow(*args, **kwargs):          # each thread's erf held long enough for another's
        out = erf_at_edges(*args, **kwargs)
        time.sleep(0.01)
        return out
    monkeypatch.setattr(projector_module.F, "erf_at_edges", slow)
    monkeypatch.delenv("GALCUBECRAFT_THREADS", raising=False)
    cubes = []
    for threads, mode in ((1, torch.no_grad), (3, torch.no_grad), (3, torch.inference_mode)):
        with mode():
            cubes.append(gcc.Projector(small_grid, threads=threads, line_integration=lines)(
                params, law))
    assert pools and max(pools) == 3          # the groups did render at once
    # by default a render this small splits no kernel over threads, but its groups take
    # torch's threads
    assert gcc.Projector(small_grid).threads_for(len(galaxies)) == 1
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        pools.clear()
        with torch.no_grad():
            cubes.append(gcc.Projector(small_grid, line_integration=lines)(params, law))
    finally:
        torch.set_num_threads(before)
    assert pools and max(pools) == 3
    assert all(torch.equal(cubes[0], cube) for cube in cubes[1:])


def test_several_galaxies_and_laws_sum_into_one_cube():
    small_grid = grid_for()   # +-360 km/s: both lines inside the band
    a = make_galaxy(offset=(-8, 5) * u.arcsec, flux=10 * JYKMS)
    b = make_galaxy(offset=(9, -6) * u.arcsec, flux=4 * JYKMS, v_sys=80 * KMS,
                    kinematics=gcc.AnalyticRotationCurve(v_0=150 * KMS),
                    surface=gcc.SersicDisk(r_eff=2 * u.arcsec, n=0.8))
    with torch.no_grad():
        both = gcc.render_tensor([a, b], small_grid)
        separate = gcc.render_tensor(a, small_grid) + gcc.render_tensor(b, small_grid)
    torch.testing.assert_close(both, separate, rtol=1e-5, atol=1e-7)
    assert small_grid.integrated_flux(both.numpy()).value == pytest.approx(14, rel=1e-3)


def test_tabulated_curve_reproduces_the_analytic_law(small_grid):
    arctan = gcc.ArctanRotationCurve(v_max=200 * KMS, r_turn=2 * u.arcsec)
    r = np.linspace(0, 60, 1201) * u.arcsec
    table = gcc.TabulatedRotationCurve(r, arctan(r))
    with torch.no_grad():
        # the same sampling for both (the table's first node, 0.05", would refine the centre:
        # galcubecraft.refine), so that only the laws differ
        a = gcc.render_tensor(make_galaxy(kinematics=arctan), small_grid, refine=False)
        b = gcc.render_tensor(make_galaxy(kinematics=table), small_grid, refine=False)
        assert l1(b, a) < 2e-4
        # and at default sampling both are within the renderer's accuracy of each other
        c = gcc.render_tensor(make_galaxy(kinematics=table), small_grid)
    assert l1(c, a) < 5e-3


def test_deterministic(small_grid, galaxy):
    a = gcc.render_tensor(galaxy, small_grid)
    b = gcc.render_tensor(galaxy, small_grid)
    assert torch.equal(a, b)


@pytest.fixture(params=["erf", "nodes"])
def line_path(request):
    """Run a test through each way of integrating the lines over the channels."""
    return request.param


def test_runs_on_device(small_grid, galaxy, device, line_path):
    with torch.no_grad():
        out = gcc.render_tensor(galaxy, small_grid, device=device, line_integration=line_path)
    assert out.device.type == device
    ref = gcc.render_tensor(galaxy, small_grid, line_integration=line_path)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- gradients
GRAD_NAMES = ["r_eff", "n", "inclination", "position_angle", "v_max", "dispersion", "flux",
              "scale_height", "v_sys", "x0", "r_turn"]


def _tiny(line_integration="auto"):
    grid = gcc.CubeGrid(shape=(6, 10, 10), pixel_scale=1 * u.arcsec, channel_width=60 * KMS,
                        beam=Beam(2.5 * u.arcsec, 2 * u.arcsec, 20 * u.deg))
    galaxy = make_galaxy(surface=gcc.SersicDisk(r_eff=2 * u.arcsec, n=1.2),
                         # r_turn clear of the sampling plan's steps (1.5" is exactly where
                         # the central bands stop: a finite difference there crosses a step)
                         kinematics=gcc.ArctanRotationCurve(150 * KMS, 1.4 * u.arcsec),
                         dispersion=40 * KMS, inclination=55 * u.deg, offset=(0.3, -0.2) * u.arcsec)
    projector = gcc.Projector(grid, dtype=torch.float64, oversample=1,
                              line_integration=line_integration)
    params = {k: v[None] for k, v in galaxy.tensors(dtype=torch.float64).items()}
    return projector, params, type(galaxy.kinematics)


def test_gradients_are_finite_and_nonzero_for_every_parameter(line_path):
    projector, params, law = _tiny(line_path)
    for name in GRAD_NAMES:
        params[name].requires_grad_(True)
    cube = projector(params, law)
    (cube**2).sum().backward()
    for name in GRAD_NAMES:
        grad = params[name].grad
        assert grad is not None and torch.isfinite(grad).all(), name
        assert grad.abs().item() > 0, name


#: Float64 central differences of step 1e-6 are good to ~1e-10 here: these tolerances catch a
#: gradient 1e-3 off (tighter than the 1e-3 / 1e-5 the full-mode check used).
GRADCHECK_TOLERANCES = dict(eps=1e-6, atol=1e-9, rtol=1e-5)


def test_gradcheck(line_path):
    """Analytic gradients equal finite differences for every parameter.

    Fast mode (`torch.autograd.gradcheck(fast_mode=True)`) compares the Jacobian projected
    on random vectors, one backward pass per input instead of one per output voxel: the
    same check of every parameter's gradient, at a twentieth of the cost."""
    projector, params, law = _tiny(line_path)

    def f(*values):
        p = dict(params)
        p.update(zip(GRAD_NAMES, values))
        return projector(p, law)

    inputs = tuple(params[n].clone().requires_grad_(True) for n in GRAD_NAMES)
    assert torch.autograd.gradcheck(f, inputs, fast_mode=True, **GRADCHECK_TOLERANCES)


def test_gradcheck_catches_a_wrong_gradient():
    """The fast-mode check above can fail: a gradient 1% off in one parameter is caught."""
    projector, params, law = _tiny()

    class Scaled(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x.clone()

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            return 1.01 * grad

    weights = torch.rand(projector.observed.shape, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)

    def f(r_eff, flux):       # one output: torch reruns a failed check in slow mode, per output
        cube = projector({**params, "r_eff": Scaled.apply(r_eff), "flux": flux}, law)
        return (cube * weights).sum()

    inputs = (params["r_eff"].clone().requires_grad_(True),
              params["flux"].clone().requires_grad_(True))
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(f, inputs, fast_mode=True, **GRADCHECK_TOLERANCES)
