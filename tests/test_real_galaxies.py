"""Real galaxies: rings, tabulated profiles, vertical laws, flows and warps (`galcubecraft.rings`).

Each feature is checked against a truth that does not share the renderer's code: the
written formulae of the velocity fields (Spekkens & Sellwood 2007 for the harmonic flows)
evaluated on pixel centres, SciPy's PCHIP and quadrature for tabulated profiles, closed forms
for the lag and the vertical laws, a brute-force sum over a fine disk-plane grid, and
finite differences for the gradients.
"""
import math

import astropy.units as u
import numpy as np
import pytest
import torch
from astropy.coordinates import SkyCoord
from radio_beam import Beam
from scipy import integrate, interpolate, special

import galcubecraft as gcc
from galcubecraft import functional as F

KMS = u.km / u.s
JYKMS = u.Jy * KMS
D = torch.float64


def grid_for(n_pix=64, pixel=1.0, n_chan=60, width=10.0, beam=None, **kw):
    return gcc.CubeGrid(shape=(n_chan, n_pix, n_pix), pixel_scale=pixel * u.arcsec,
                        channel_width=width * KMS, beam=None if beam is None else
                        Beam(beam * u.arcsec), center=SkyCoord(150 * u.deg, 2 * u.deg), **kw)


def disk(**kw):
    args = dict(surface=gcc.ExponentialDisk(scale_length=5 * u.arcsec),
                kinematics=gcc.ArctanRotationCurve(v_max=150 * KMS, r_turn=3 * u.arcsec),
                inclination=60 * u.deg, position_angle=40 * u.deg, flux=20 * JYKMS,
                dispersion=12 * KMS)
    args.update(kw)
    return gcc.Galaxy(**args)


def render(galaxy, grid, **sampling):
    with torch.no_grad():
        return gcc.render_tensor(galaxy, grid, dtype=D, **sampling).numpy()


def l1(a, b):
    return float(np.abs(a - b).sum() / np.abs(b).sum())


def disk_coordinates(grid, galaxy):
    """Each pixel centre's disk-plane radius and azimuth (from the receding major axis towards
    the far side, at PA - 90 deg), for a thin flat disk: the written geometry."""
    east, north = (q.to_value(u.arcsec) for q in grid.sky_offsets())
    pa = galaxy.position_angle.to_value(u.rad)
    inc = galaxy.inclination.to_value(u.rad)
    x = east * math.sin(pa) + north * math.cos(pa)
    y = (-east * math.cos(pa) + north * math.sin(pa)) / math.cos(inc)
    return np.hypot(x, y), np.arctan2(y, x)


def moment1(cube, grid):
    v = grid.spectral_axis.to_value(KMS)[:, None, None]
    return (cube * v).sum(0) / cube.sum(0)


ZERO_FLOW = gcc.RadialFlow(0 * KMS)


# ----------------------------------------------------------------------------- the plain path
def test_a_plain_disk_by_the_rings_agrees_with_the_exact_cells():
    """The same galaxy rendered by the ring quadrature (a zero radial flow sends it there)
    and by the exact sky cells: the two integrals agree."""
    grid = grid_for(n_pix=48, n_chan=30, width=20.0, beam=3.0)
    plain = disk(vertical=gcc.ExponentialVertical(0.5 * u.arcsec))
    a, b = render(plain.replace(flows=[ZERO_FLOW]), grid), render(plain, grid, oversample=4)
    assert l1(a, b) < 4e-3
    assert abs(a.sum() / b.sum() - 1) < 1e-4


def quadrature_truth(grid, n_r=600, n_phi=800, r_max=100.0, h=5.0, sigma_v=12.0):
    """What each 'point' pixel of ``grid`` holds for the thin disk of
    `test_the_ring_quadrature_converges_to_the_exact_cube`, by Gauss-Legendre (radius)
    and trapezoid (azimuth, periodic) quadrature of the disk plane: the exponential disk
    times the channel-integrated line times the beam at the pixel centre, summed in numpy.
    Converged to 1e-13 (doubling both counts)."""
    east, north = (q.to_value(u.arcsec) for q in grid.sky_offsets())
    edges = grid.pixel_grid().channel_edges
    x, wx = np.polynomial.legendre.leggauss(n_r)
    radius, w_r = (x + 1) / 2 * r_max, wx * r_max / 2
    phi = (np.arange(n_phi) + 0.5) * 2 * math.pi / n_phi
    R, P = (a.ravel() for a in np.meshgrid(radius, phi))
    W = np.meshgrid(w_r, phi)[0].ravel() * 2 * math.pi / n_phi
    inc = math.radians(60)
    weight = np.exp(-R / h) / (2 * math.pi * h**2) * R * W * 20.0
    v = 2 / math.pi * 150 * np.arctan(R / 3) * np.cos(P) * math.sin(inc)
    e, n = -R * np.sin(P) * math.cos(inc), R * np.cos(P)          # PA = 0
    beam = 3.0 / (2 * math.sqrt(2 * math.log(2)))
    out = 0.0
    for s in range(0, R.size, 100_000):
        sl = slice(s, s + 100_000)
        line = np.diff(0.5 * special.erf((edges[:, None] - v[None, sl]) / (math.sqrt(2) * sigma_v)),
                       axis=0) * weight[None, sl]
        ge = np.exp(-0.5 * ((east[0, :, None] - e[None, sl]) / beam) ** 2)
        gn = np.exp(-0.5 * ((north[:, 0, None] - n[None, sl]) / beam) ** 2)
        out = out + np.einsum("rn,sn,cn->crs", gn, ge, line, optimize=True)
    return out / np.abs(np.diff(edges))[:, None, None]


def test_the_ring_quadrature_converges_to_the_exact_cube():
    """A thin disk at 60 deg rising over 3" under a 3" beam (the hardest part of an ordinary
    cube: its steep centre), against `quadrature_truth`: the ring quadrature's default is
    within 0.3% L1 and converges with its sampling; the plain disk's exact cells within 0.1%."""
    grid = grid_for(n_pix=32, n_chan=24, width=20.0, beam=3.0)
    galaxy = disk(flows=[ZERO_FLOW], inclination=60 * u.deg, position_angle=0 * u.deg)
    truth = quadrature_truth(grid)
    errors = [l1(render(galaxy, grid, oversample=k), truth) for k in (2, 4)]
    assert errors[0] < 3e-3 and errors[1] < 0.6 * errors[0], errors
    assert l1(render(galaxy.replace(flows=()), grid), truth) < 1e-3


# ----------------------------------------------------------------------------- flux
WARP = gcc.Warp([0, 8, 16, 30] * u.arcsec, inclination=[20, 35, 65, 80] * u.deg,
                position_angle=[40, 45, 60, 70] * u.deg)
FEATURES = {
    "ring": dict(surface=gcc.GaussianRing(radius=8 * u.arcsec, width=1.5 * u.arcsec)),
    "thin ring": dict(surface=gcc.GaussianRing(radius=6 * u.arcsec, width=0.2 * u.arcsec)),
    "tabulated": dict(surface=gcc.TabulatedSurface([0, 4, 8, 12, 20] * u.arcsec,
                                                   [1.0, 0.6, 0.9, 0.3, 0.0])),
    "sech2": dict(vertical=gcc.Sech2Vertical(1.0 * u.arcsec), flows=[ZERO_FLOW]),
    "gaussian vertical": dict(vertical=gcc.GaussianVertical(1.0 * u.arcsec), flows=[ZERO_FLOW]),
    "inflow": dict(flows=[gcc.RadialFlow(-40 * KMS)]),
    "fountain": dict(vertical=gcc.ExponentialVertical(0.8 * u.arcsec),
                     flows=[gcc.VerticalFlow(30 * KMS)]),
    "lagging halo": dict(vertical=gcc.ExponentialVertical(1.5 * u.arcsec),
                         flows=[gcc.LaggingHalo(20 * KMS / u.arcsec)]),
    "bar": dict(flows=[gcc.BisymmetricFlow(40 * KMS, 30 * KMS, 30 * u.deg)]),
    "lopsided": dict(flows=[gcc.LopsidedFlow([10, 30] * KMS, [5, 20] * KMS, 60 * u.deg,
                                             radius=[0, 20] * u.arcsec)]),
    "dispersion profile": dict(flows=[gcc.DispersionProfile([40, 5] * KMS,
                                                            radius=[0, 15] * u.arcsec)]),
    "warp 20 -> 80 deg": dict(warp=WARP, vertical=gcc.ExponentialVertical(0.5 * u.arcsec)),
    "flare": dict(warp=gcc.Warp([0, 10, 30] * u.arcsec, scale_height=[0.2, 0.2, 3] * u.arcsec),
                  inclination=80 * u.deg),
    "bulge + disk": dict(surface=gcc.SurfaceSum(
        [gcc.ExponentialDisk(scale_length=3 * u.arcsec), gcc.SersicBulge(0.8 * u.arcsec, 4)],
        fractions=[0.75, 0.25])),
    "disk + ring": dict(surface=gcc.SurfaceSum(
        [gcc.ExponentialDisk(scale_length=2 * u.arcsec),
         gcc.GaussianRing(9 * u.arcsec, 1 * u.arcsec)], fractions=[0.5, 0.5])),
    "asymmetric drift": dict(flows=[gcc.AsymmetricDrift()]),
}


@pytest.mark.parametrize("feature", list(FEATURES))
@pytest.mark.parametrize("dispersion, width", [(12.0, 10.0), (0.5, 25.0), (60.0, 2.5)])
def test_flux_is_conserved_for_every_feature(feature, dispersion, width):
    """Beam-free, the whole galaxy in the field and the band: the cube holds the flux, to 1e-3
    (the observed-frame flux times 1 - v_sys / c on the radio axis), at any dispersion and
    channel width (a line narrower than a channel, or spread over many)."""
    n_chan = int(round(600 / width))
    grid = grid_for(n_pix=64, pixel=1.5, n_chan=n_chan, width=width)
    galaxy = disk(dispersion=dispersion * KMS, v_sys=300 * KMS,
                  **{**dict(surface=gcc.ExponentialDisk(scale_length=3 * u.arcsec)),
                     **FEATURES[feature]})
    galaxy = galaxy if not galaxy.model.plain else galaxy.replace(flows=[ZERO_FLOW])
    grid = grid.replace(velocity_center=300 * KMS)
    cube = render(galaxy, grid)
    measured = cube.sum() * width
    expected = 20.0 * (1 - 300 / 299792.458)
    assert abs(measured / expected - 1) < 1e-3, (feature, measured, expected)


# ----------------------------------------------------------------------------- surfaces
def azimuthal_profile(image, radius, edges):
    which = np.digitize(radius.ravel(), edges)
    sums = np.bincount(which, image.ravel(), len(edges) + 1)[1:-1]
    counts = np.bincount(which, None, len(edges) + 1)[1:-1]
    return sums / np.maximum(counts, 1)


def test_a_face_on_tabulated_profile_reproduces_its_table():
    """Face-on, beam-free, 0.5" pixels: the azimuthal average of the moment-0 map is the
    table's PCHIP interpolant (SciPy's), normalised to the flux by quadrature, to 1e-3 of the
    peak."""
    radius = np.array([0, 3, 6, 9, 12, 16, 20, 24.0])
    values = np.array([0.5, 1.0, 0.8, 1.2, 0.6, 0.3, 0.1, 0.0])
    galaxy = disk(surface=gcc.TabulatedSurface(radius * u.arcsec, values),
                  inclination=0 * u.deg)
    grid = grid_for(n_pix=120, pixel=0.5, n_chan=40, width=20.0)
    image = render(galaxy, grid).sum(0) * 20.0 / 0.25          # Jy km/s per arcsec^2
    r, _ = disk_coordinates(grid, galaxy)
    pchip = interpolate.PchipInterpolator(radius, values)
    norm = integrate.quad(lambda x: 2 * math.pi * x * pchip(x), 0, 24, limit=200)[0]
    # the mean over each pixel (8 x 8 points): the profile has a kink at the centre
    east, north = (q.to_value(u.arcsec) for q in grid.sky_offsets())
    sub = (np.arange(8) + 0.5) / 8 * 0.5 - 0.25
    expected = np.mean([pchip(np.minimum(rr, 24)) * (rr <= 24) for rr in
                        (np.hypot(east + a, north + b) for a in sub for b in sub)], axis=0)
    expected = 20.0 * expected / norm
    edges = np.arange(0.0, 26.0, 1.0)
    got = azimuthal_profile(image, r, edges)
    want = azimuthal_profile(expected, r, edges)
    assert np.abs(got - want).max() < 1e-3 * want.max()


def test_pchip_matches_scipy_and_is_differentiable():
    x = torch.tensor([0.0, 1.0, 2.5, 3.0, 5.0], dtype=D)
    # (no two equal neighbours: where a slope is zero the interpolant is not differentiable)
    y = torch.tensor([1.0, 3.0, 2.0, 2.2, 0.5], dtype=D, requires_grad=True)
    t = torch.linspace(-1, 6, 301, dtype=D)
    got = F.interpolate_pchip(t, x, y)
    want = interpolate.PchipInterpolator(x.numpy(), y.detach().numpy())(
        np.clip(t.numpy(), 0, 5))
    np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-12)
    assert torch.autograd.gradcheck(lambda v: F.interpolate_pchip(t, x, v), (y,))


def test_a_tabulated_sersic_renders_the_sersic_disk():
    """A TabulatedSurface made from a Sérsic table renders the cube of the SersicDisk it was
    drawn from to < 0.2% L1, both through the ring quadrature; and to < 0.4% against the
    exact cells of the plain SersicDisk."""
    grid = grid_for(n_pix=48, n_chan=30, width=20.0, beam=3.0)
    sersic = gcc.SersicDisk(r_eff=5 * u.arcsec, n=1.5)
    r = np.linspace(0, 45, 181)
    table = sersic.surface_brightness(r * u.arcsec, 1 * JYKMS).value
    tabulated = disk(surface=gcc.TabulatedSurface(r * u.arcsec, table), flows=[ZERO_FLOW])
    same = disk(surface=sersic, flows=[ZERO_FLOW])
    assert l1(render(tabulated, grid), render(same, grid)) < 2e-3
    assert l1(render(tabulated, grid), render(disk(surface=sersic), grid, oversample=4)) < 4e-3


def test_the_rings_radial_profile_peaks_at_its_radius():
    galaxy = disk(surface=gcc.GaussianRing(radius=10 * u.arcsec, width=1.2 * u.arcsec),
                  inclination=0 * u.deg)
    grid = grid_for(n_pix=64, pixel=0.5, n_chan=30, width=20.0)
    image = render(galaxy, grid).sum(0)
    r, _ = disk_coordinates(grid, galaxy)
    edges = np.arange(0.0, 16.0, 0.25)
    profile = azimuthal_profile(image, r, edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    assert abs(centres[np.argmax(profile)] - 10.0) <= 0.25
    # its light-weighted mean radius is the Gaussian ring's, R0 + w^2 / R0 nearly
    mean = (profile * centres**2).sum() / (profile * centres).sum()
    x = np.linspace(0, 20, 20001)
    ring = x * np.exp(-0.5 * ((x - 10) / 1.2) ** 2)
    assert abs(mean - (x * ring).sum() / ring.sum()) < 0.02


def test_vertical_laws_bins_keep_light_and_moments():
    """The height bins carry the light, its mean height and its spread exactly (closed forms:
    exponential 1 and 2, sech^2 ln 2 and pi^2/12, Gaussian sqrt(2/pi) and 1)."""
    truths = {gcc.ExponentialVertical: (1.0, 2.0), gcc.Sech2Vertical: (math.log(2),
                                                                       math.pi**2 / 12),
              gcc.GaussianVertical: (math.sqrt(2 / math.pi), 1.0)}
    for law, (first, second) in truths.items():
        for n, step in ((1, 1.0), (7, 0.4), (24, 0.3)):
            mass, mean, var = law.height_bins(step, n)
            assert abs(mass.sum() - 1) < 1e-9
            assert abs((mass * mean).sum() - first) < 1e-9
            assert abs((mass * (var + mean**2)).sum() - second) < 1e-8


# ----------------------------------------------------------------------------- velocity fields
def thin(**kw):
    return disk(vertical=gcc.ExponentialVertical(0 * u.arcsec), v_sys=0 * KMS, **kw)


@pytest.mark.parametrize("pa", [40, 200])
def test_pure_radial_motion_moment1_is_vrad_sin_i_sin_phi(pa):
    """A non-rotating disk with only an outflow: moment-1 = v_rad sin i sin(phi), zero along
    the major axis, positive (receding) on the far side, PA - 90 deg."""
    galaxy = thin(kinematics=gcc.FlatRotationCurve(0 * KMS), position_angle=pa * u.deg,
                  flows=[gcc.RadialFlow([20, 60] * KMS, radius=[0, 20] * u.arcsec)])
    grid = grid_for(n_pix=64, pixel=0.5, n_chan=60, width=5.0)
    m1 = moment1(render(galaxy, grid), grid)
    r, phi = disk_coordinates(grid, galaxy)
    v_rad = np.interp(r, [0, 20], [20, 60])
    expected = v_rad * math.sin(math.radians(60)) * np.sin(phi)
    ok = (r > 3) & (r < 12)
    np.testing.assert_allclose(m1[ok], expected[ok], atol=1.0)
    major = ok & (np.abs(np.sin(phi)) < 0.05)
    assert major.sum() > 10 and np.abs(m1[major]).max() < 3.0


def spekkens_sellwood(r, phi, inc, vt, v2t, v2r, phib, m=2):
    """Spekkens & Sellwood (2007) eq. 5 (m = 2; its m = 1 analogue), as written."""
    tb = phi - phib
    return math.sin(inc) * (vt * np.cos(phi) - v2t * np.cos(m * tb) * np.cos(phi)
                            - v2r * np.sin(m * tb) * np.sin(phi))


@pytest.mark.parametrize("m", [2, 1])
def test_harmonic_flows_follow_spekkens_and_sellwood(m):
    rc = gcc.ArctanRotationCurve(v_max=150 * KMS, r_turn=3 * u.arcsec)
    flow = (gcc.BisymmetricFlow(35 * KMS, 25 * KMS, 30 * u.deg) if m == 2 else
            gcc.LopsidedFlow(35 * KMS, 25 * KMS, 30 * u.deg))
    galaxy = thin(kinematics=rc, flows=[flow], dispersion=8 * KMS)
    grid = grid_for(n_pix=64, pixel=0.5, n_chan=90, width=5.0)
    m1 = moment1(render(galaxy, grid), grid)
    r, phi = disk_coordinates(grid, galaxy)
    vt = rc(r * u.arcsec).to_value(KMS)
    expected = spekkens_sellwood(r, phi, math.radians(60), vt, 35, 25, math.radians(30), m)
    ok = (r > 4) & (r < 12)
    np.testing.assert_allclose(m1[ok], expected[ok], atol=1.5)


def test_a_lagging_halo_shifts_the_line_centroid_by_the_lag_times_mean_height():
    """The receding half of a flat-rotating disk: its flux-weighted velocity is
    sin i (v_c - lag <|z|>) 2/pi; with an exponential profile <|z|> = h, so the lag moves it
    by sin i lag h 2/pi."""
    h, lag, inc = 1.2, 15.0, 70.0
    grid = grid_for(n_pix=50, pixel=1.0, n_chan=80, width=5.0)

    def receding_centroid(flows):
        galaxy = disk(kinematics=gcc.FlatRotationCurve(150 * KMS), inclination=inc * u.deg,
                      position_angle=0 * u.deg, vertical=gcc.ExponentialVertical(h * u.arcsec),
                      surface=gcc.ExponentialDisk(scale_length=3 * u.arcsec), flows=flows)
        cube = render(galaxy, grid)
        north = grid.sky_offsets()[1].to_value(u.arcsec)
        half = cube * (north > 0)[None]
        v = grid.spectral_axis.to_value(KMS)
        return (half.sum((1, 2)) * v).sum() / half.sum()
    lagging = gcc.LaggingHalo(lag * KMS / u.arcsec)
    shift = receding_centroid([ZERO_FLOW]) - receding_centroid([lagging])
    expected = math.sin(math.radians(inc)) * lag * h * 2 / math.pi
    assert abs(shift - expected) < 0.01 * expected, (shift, expected)


def test_a_fountain_broadens_the_face_on_line_by_its_speed():
    """Face-on, gas leaving the plane on both sides at v_vert: the line splits into +-v_vert
    (second moment sigma^2 + v_vert^2), its centroid unmoved."""
    galaxy = disk(inclination=0 * u.deg, vertical=gcc.ExponentialVertical(0.5 * u.arcsec),
                  flows=[gcc.VerticalFlow(25 * KMS)], dispersion=10 * KMS)
    grid = grid_for(n_pix=48, n_chan=80, width=2.5)
    spectrum = render(galaxy, grid).sum((1, 2))
    v = grid.spectral_axis.to_value(KMS)
    mean = (spectrum * v).sum() / spectrum.sum()
    var = (spectrum * (v - mean) ** 2).sum() / spectrum.sum() - 2.5**2 / 12
    assert abs(mean) < 0.05
    assert abs(math.sqrt(var) - math.hypot(10, 25)) < 0.05


def test_a_dispersion_profile_sets_the_local_line_width():
    galaxy = disk(inclination=0 * u.deg, flows=[gcc.DispersionProfile([40, 10] * KMS,
                                                                      radius=[0, 20] *
                                                                      u.arcsec)])
    grid = grid_for(n_pix=64, n_chan=100, width=2.5)
    cube = render(galaxy, grid)
    r, _ = disk_coordinates(grid, galaxy)
    v = grid.spectral_axis.to_value(KMS)[:, None]
    ring = (r > 2) & (r < 14)
    spec = cube[:, ring]
    var = (spec * v**2).sum(0) / spec.sum(0) - 2.5**2 / 12
    np.testing.assert_allclose(np.sqrt(var), np.interp(r[ring], [0, 20], [40, 10]), rtol=6e-3)


# ----------------------------------------------------------------------------- warps
def test_a_warp_turns_each_ring_to_its_own_orientation():
    """Moment-1 of a warped thin disk (PA 40 -> 100 deg between 5" and 20") follows each
    ring's own position angle: on the sky, the kinematic major axis of the outer ring is
    turned by 60 deg from the inner one's."""
    warp = gcc.Warp([0, 5, 20, 40] * u.arcsec, position_angle=[40, 40, 100, 100] * u.deg)
    galaxy = thin(kinematics=gcc.FlatRotationCurve(150 * KMS), warp=warp,
                  surface=gcc.ExponentialDisk(scale_length=8 * u.arcsec))
    grid = grid_for(n_pix=96, pixel=0.5, n_chan=80, width=5.0)
    m1 = moment1(render(galaxy, grid), grid)
    east, north = (q.to_value(u.arcsec) for q in grid.sky_offsets())
    sky_r = np.hypot(east, north)
    sky_pa = np.degrees(np.arctan2(east, north)) % 360
    for radius, pa in ((3.5, 40), (23.0, 100)):
        ring = (np.abs(sky_r - radius) < 0.5) & np.isfinite(m1)
        peak = sky_pa[ring][np.argmax(m1[ring])]
        assert abs((peak - pa + 180) % 360 - 180) < 8, (radius, peak)


def test_a_warp_that_does_not_change_is_the_flat_disk():
    flat = disk(vertical=gcc.Sech2Vertical(0.4 * u.arcsec))
    warped = flat.replace(warp=gcc.Warp([0, 50] * u.arcsec, inclination=[60, 60] * u.deg,
                                        position_angle=[40, 40] * u.deg,
                                        scale_height=[0.4, 0.4] * u.arcsec))
    grid = grid_for(n_pix=48, n_chan=30, width=20.0, beam=3.0)
    assert l1(render(warped, grid), render(flat, grid)) < 1e-10


# ----------------------------------------------------------------------------- gradients
GRAD = {
    "ring": (dict(surface=gcc.GaussianRing(radius=3 * u.arcsec, width=1.1 * u.arcsec)),
             ["ring_radius", "ring_width"]),
    "table": (dict(surface=gcc.TabulatedSurface([0, 2.1, 4.3, 7.3] * u.arcsec,
                                                [1, 0.7, 0.4, 0.0])),
              ["table_surface_density", "table_radius"]),
    "sech2": (dict(vertical=gcc.Sech2Vertical(0.6 * u.arcsec), flows=[ZERO_FLOW]),
              ["scale_height", "inclination"]),
    "radial and vertical": (dict(vertical=gcc.GaussianVertical(0.5 * u.arcsec),
                                 flows=[gcc.RadialFlow([-30, 10] * KMS, radius=[0, 6] * u.arcsec),
                                        gcc.VerticalFlow(20 * KMS)]),
                            ["radial_v_rad", "radial_radius", "vertical_v_vert"]),
    "lag and dispersion": (dict(vertical=gcc.ExponentialVertical(0.5 * u.arcsec),
                                flows=[gcc.LaggingHalo(10 * KMS / u.arcsec),
                                       gcc.DispersionProfile([30, 15] * KMS,
                                                             radius=[0, 6] * u.arcsec)]),
                           ["lag_dv_dz", "profile_dispersion", "profile_radius"]),
    "harmonic": (dict(flows=[gcc.BisymmetricFlow(30 * KMS, 20 * KMS, 25 * u.deg),
                             gcc.LopsidedFlow([10, 20] * KMS, [5, 8] * KMS, 70 * u.deg,
                                              radius=[0, 6] * u.arcsec)]),
                 ["bar_v_2t", "bar_v_2r", "bar_angle", "lopsided_v_1t", "lopsided_v_1r",
                  "lopsided_angle"]),
    "warp": (dict(warp=gcc.Warp([0, 3, 7] * u.arcsec, inclination=[40, 55, 70] * u.deg,
                                position_angle=[20, 30, 45] * u.deg)),
             ["warp_inclination", "warp_position_angle", "warp_radius", "x0", "v_max"]),
    "ring centres and velocities": (
        dict(warp=gcc.Warp([0, 3, 7] * u.arcsec, centre_east=[0, 0.3, 0.8] * u.arcsec,
                           centre_north=[0, -0.2, 0.4] * u.arcsec, v_shift=[0, 5, 20] * KMS)),
        ["warp_centre_east", "warp_centre_north", "warp_v_shift"]),
    "flare": (dict(warp=gcc.Warp([0, 3, 7] * u.arcsec, scale_height=[0.2, 0.4, 1.1] * u.arcsec),
                   inclination=75 * u.deg, flows=[gcc.LaggingHalo(8 * KMS / u.arcsec)]),
              ["warp_scale_height", "lag_dv_dz"]),
    "sum of profiles": (dict(surface=gcc.SurfaceSum(
        [gcc.ExponentialDisk(scale_length=1.5 * u.arcsec), gcc.SersicBulge(0.7 * u.arcsec, 2.5),
         gcc.GaussianRing(3 * u.arcsec, 0.8 * u.arcsec)], fractions=[0.5, 0.3, 0.2])),
        ["bulge_flux_fraction", "bulge_r_eff", "bulge_n", "ring_flux_fraction", "ring_radius",
         "r_eff"]),
    "asymmetric drift": (dict(flows=[gcc.AsymmetricDrift(0.8)]),
                         ["drift_azimuthal_ratio", "dispersion", "r_eff", "v_max"]),
}


@pytest.mark.parametrize("case", list(GRAD))
def test_gradcheck_for_every_new_parameter(case, device):
    """float64 analytic gradients equal central differences, tabulated nodes included."""
    kw, names = GRAD[case]
    grid = gcc.CubeGrid(shape=(6, 12, 12), pixel_scale=1 * u.arcsec, channel_width=60 * KMS,
                        beam=Beam(2.6 * u.arcsec, 2.2 * u.arcsec, 20 * u.deg))
    kw = {"surface": gcc.ExponentialDisk(scale_length=1.5 * u.arcsec), **kw}
    galaxy = disk(dispersion=35 * KMS, offset=(0.3, -0.2) * u.arcsec, **kw)
    (model, params), = gcc.stack_parameters([galaxy], device=device, dtype=D)
    projector = gcc.Projector(grid, device=device, dtype=D, oversample=1)

    def f(*values):
        values = dict(zip(names, values))
        if "table_surface_density" in values:      # the table ends at zero, held there
            values["table_surface_density"] = torch.cat(
                [values["table_surface_density"], params["table_surface_density"][:, -1:]], -1)
        return projector({**params, **values}, model)
    inputs = tuple((params[n][:, :-1] if n == "table_surface_density" else params[n])
                   .clone().requires_grad_(True) for n in names)
    # on CUDA the scatters add in whatever order the atomics land: backward is deterministic
    # only to rounding
    nondet = 1e-12 if device == "cuda" else 0.0
    assert torch.autograd.gradcheck(f, inputs, fast_mode=True, eps=1e-6, atol=1e-9, rtol=1e-5,
                                    nondet_tol=nondet)


# ----------------------------------------------------------------------------- bad input
def flat_galaxy(**kw):
    """A galaxy from a flat dictionary of text, as a file gives it (None: leave a key out)."""
    values = dict(r_eff="5 arcsec", inclination="30 deg", position_angle="0 deg",
                  flux="1 Jy km/s", rotation="flat", v_flat="1 km/s")
    values.update(kw)
    return gcc.Galaxy.from_dict({k: v for k, v in values.items() if v is not None})


@pytest.mark.parametrize("make, match", [
    (lambda: gcc.TabulatedSurface([0, 5, 3] * u.arcsec, [1, 1, 1]), "increasing"),
    (lambda: gcc.TabulatedSurface([0, 5] * u.arcsec, [1, -1]), ">= 0"),
    (lambda: gcc.TabulatedSurface([0, 5] * u.arcsec, [0, 0]), "not all zero"),
    (lambda: gcc.GaussianRing(5 * u.arcsec, -1 * u.arcsec), "width must be positive"),
    (lambda: gcc.GaussianRing(5 * u.arcsec, 1 * u.km / u.s), "width"),
    (lambda: gcc.BisymmetricFlow(20 * KMS, 10 * KMS, None), "angle"),
    (lambda: gcc.Warp([5] * u.arcsec, inclination=[30] * u.deg), "at least 2"),
    (lambda: gcc.Warp([0, 5] * u.arcsec), "a scale_height table"),
    (lambda: gcc.Warp([0, 5] * u.arcsec, inclination=[30, 95] * u.deg), "inclination"),
    (lambda: gcc.Warp([0, 5] * u.arcsec, inclination=[30, 40, 50] * u.deg), "one value per"),
    (lambda: gcc.RadialFlow([10, 20] * KMS), "radius of its nodes"),
    (lambda: gcc.RadialFlow(10 * u.arcsec), "v_rad"),
    (lambda: gcc.LaggingHalo(-5 * KMS / u.kpc), "dv_dz"),
    (lambda: gcc.DispersionProfile([10, 20] * KMS, None), "radius"),
    (lambda: disk(flows=[gcc.RadialFlow(1 * KMS), gcc.RadialFlow(2 * KMS)]), "one of each"),
    (lambda: disk(surface=gcc.GaussianRing(5 * u.arcsec, 1 * u.arcsec),
                  kinematics=gcc.AnalyticRotationCurve()), "r_0"),
    (lambda: disk(warp=[30, 40]), "Warp"),
    (lambda: gcc.SurfaceSum([gcc.GaussianRing(5 * u.arcsec, 1 * u.arcsec)], [1.0]), "two"),
    (lambda: gcc.SurfaceSum([gcc.SersicDisk(5 * u.arcsec), gcc.SersicDisk(1 * u.arcsec)],
                            [0.5, 0.5]), "SersicBulge"),
    (lambda: gcc.SurfaceSum([gcc.SersicDisk(5 * u.arcsec), gcc.SersicBulge(1 * u.arcsec)],
                            [0.5, 0.4]), "add up to 1"),
    (lambda: gcc.SurfaceSum([gcc.SersicDisk(5 * u.arcsec), gcc.SersicBulge(1 * u.arcsec)],
                            [1.2, -0.2]), "fractions"),
    (lambda: gcc.SurfaceSum([gcc.SersicDisk(5 * u.arcsec), gcc.SersicBulge(1 * u.arcsec)],
                            [0.5]), "one share per term"),
    (lambda: gcc.SurfaceSum([gcc.GaussianRing(5 * u.arcsec, 1 * u.arcsec),
                             gcc.GaussianRing(9 * u.arcsec, 1 * u.arcsec)], [0.5, 0.5]),
     "one profile of each"),
    (lambda: gcc.SurfaceSum([gcc.SersicDisk(5 * u.arcsec), 3], [0.5, 0.5]), "Surface"),
    (lambda: gcc.SersicBulge(1 * u.arcsec, n=0), "n must be positive"),
    (lambda: gcc.AsymmetricDrift(-1), "azimuthal_ratio"),
    (lambda: flat_galaxy(bulge_flux_fraction=0.2), "bulge_r_eff"),
    (lambda: flat_galaxy(bulge_r_eff="1 arcsec"), "bulge_flux_fraction"),
    (lambda: flat_galaxy(surface="ring", ring_radius="5 arcsec", ring_width="1 arcsec",
                         ring_flux_fraction=0.3, r_eff=None), "ring_flux_fraction"),
    (lambda: flat_galaxy(bulge_r_eff="1 arcsec", bulge_flux_fraction=0.6,
                         ring_radius="5 arcsec", ring_width="1 arcsec", ring_flux_fraction=0.6),
     "add up to"),
])
def test_bad_input_names_the_parameter(make, match):
    with pytest.raises((ValueError, TypeError, u.UnitsError), match=match):
        make()


def test_a_lag_per_kpc_needs_a_distance():
    galaxy = disk(flows=[gcc.LaggingHalo(15 * KMS / u.kpc)],
                  vertical=gcc.ExponentialVertical(1 * u.arcsec))
    with pytest.raises(ValueError, match="dv_dz"):
        galaxy.tensors()
    placed = galaxy.replace(distance=20 * u.Mpc)
    per_arcsec = placed.tensors(dtype=D)["lag_dv_dz"].item()
    kpc_per_arcsec = (20 * u.Mpc * (1 * u.arcsec).to_value(u.rad)).to_value(u.kpc)
    assert per_arcsec == pytest.approx(15 * kpc_per_arcsec, rel=1e-9)


def test_reprs_are_readable():
    text = repr(disk(surface=gcc.GaussianRing(8 * u.arcsec, 2 * u.arcsec), warp=WARP,
                     flows=[gcc.BisymmetricFlow(20 * KMS, 10 * KMS, 30 * u.deg)]))
    assert "GaussianRing(radius=8.0 arcsec, width=2.0 arcsec)" in text
    assert "BisymmetricFlow(v_2t=20.0 km / s" in text and "Warp(4 nodes" in text


# ----------------------------------------------------------------------------- flat dictionaries
def everything():
    return disk(surface=gcc.GaussianRing(8 * u.arcsec, 2 * u.arcsec),
                vertical=gcc.Sech2Vertical(0.5 * u.arcsec),
                kinematics=gcc.FlatRotationCurve(180 * KMS),
                flows=[gcc.LaggingHalo(5 * KMS / u.arcsec),
                       gcc.BisymmetricFlow(30 * KMS, 20 * KMS, 45 * u.deg),
                       gcc.RadialFlow([-10, -30] * KMS, radius=[0, 12] * u.arcsec),
                       gcc.DispersionProfile([30, 10] * KMS, radius=[0, 20] * u.arcsec)],
                warp=gcc.Warp([0, 8, 20] * u.arcsec, inclination=[60, 60, 75] * u.deg))


def test_every_part_round_trips_through_a_flat_dictionary():
    galaxy = everything()
    flat = galaxy.to_dict()
    assert flat["surface"] == "ring" and flat["vertical"] == "sech2"
    assert flat["bar_angle"] == 45 * u.deg and flat["warp_inclination"][-1] == 75 * u.deg
    assert gcc.Galaxy.from_dict(flat) == galaxy
    # the same as text, as a TOML file or a command line gives it
    text = {k: (v if isinstance(v, str) else [str(x) for x in v] if np.ndim(v) else str(v))
            for k, v in flat.items() if v is not None}
    assert gcc.Galaxy.from_dict(text) == galaxy


def test_a_toml_galaxy_renders_what_python_renders(tmp_path):
    from galcubecraft.cli import main
    config = tmp_path / "real.toml"
    config.write_text("""
[grid]
shape = [16, 32, 32]
pixel_scale = "1 arcsec"
channel_width = "25 km/s"
beam = "3 arcsec"

[[galaxy]]
surface = "ring"
ring_radius = "8 arcsec"
ring_width = "2 arcsec"
vertical = "sech2"
scale_height = "0.5 arcsec"
rotation = "flat"
v_flat = "180 km/s"
inclination = "60 deg"
position_angle = "40 deg"
flux = "20 Jy km/s"
dispersion = "12 km/s"
bar_v_2t = "30 km/s"
bar_v_2r = "20 km/s"
bar_angle = "45 deg"
warp_radius = ["0 arcsec", "8 arcsec", "20 arcsec"]
warp_inclination = ["60 deg", "60 deg", "75 deg"]
""")
    out = tmp_path / "real.fits"
    assert main(["render", "--config", str(config), "-o", str(out)]) == 0
    from spectral_cube import SpectralCube
    written = SpectralCube.read(out).unitless_filled_data[:]
    galaxy = disk(surface=gcc.GaussianRing(8 * u.arcsec, 2 * u.arcsec),
                  vertical=gcc.Sech2Vertical(0.5 * u.arcsec),
                  kinematics=gcc.FlatRotationCurve(180 * KMS),
                  flows=[gcc.BisymmetricFlow(30 * KMS, 20 * KMS, 45 * u.deg)],
                  warp=gcc.Warp([0, 8, 20] * u.arcsec, inclination=[60, 60, 75] * u.deg),
                  v_sys=0 * KMS)
    grid = gcc.CubeGrid(shape=(16, 32, 32), pixel_scale=1 * u.arcsec,
                        channel_width=25 * KMS, beam=Beam(3 * u.arcsec),
                        center=SkyCoord(150 * u.deg, 2 * u.deg))
    expected = gcc.render(galaxy, grid).unitless_filled_data[:]
    assert l1(written, expected) < 1e-5


def test_every_part_round_trips_through_a_truth_table(tmp_path):
    """Scalars in cells, tables (a warp's nodes, a tabulated profile, a flow's tabulated
    amplitude) in array columns padded with NaN: written to ECSV, stacked with tables of other
    lengths, and read back, the galaxies are the same."""
    from astropy.table import QTable
    from galcubecraft.catalogue import galaxies_from_table, stack_tables, truth_table
    grid = grid_for(n_pix=32, n_chan=20, width=25.0)
    galaxy = disk(surface=gcc.GaussianRing(8 * u.arcsec, 2 * u.arcsec),
                  vertical=gcc.GaussianVertical(0.5 * u.arcsec),
                  flows=[gcc.BisymmetricFlow(30 * KMS, 20 * KMS, 45 * u.deg),
                         gcc.RadialFlow(-20 * KMS), gcc.AsymmetricDrift(0.8)], v_sys=0 * KMS)
    table = truth_table(grid, [galaxy])
    assert table["surface"][0] == "ring" and table["bar_v_2t"][0, 0] == 30 * KMS
    assert table["drift_azimuthal_ratio"][0] == 0.8
    back, = galaxies_from_table(table, grid)
    assert back.surface == galaxy.surface and back.vertical == galaxy.vertical
    assert back.flows == galaxy.flows
    tabulated = [
        galaxy.replace(flows=[gcc.RadialFlow([-10, -30] * KMS, radius=[0, 9] * u.arcsec)]),
        everything().replace(v_sys=0 * KMS, offset=(2, -3) * u.arcsec),
        disk(surface=gcc.SurfaceSum([gcc.SersicDisk(r_eff=6 * u.arcsec, n=1.5),
                                     gcc.TabulatedSurface([0, 2, 4, 6, 9] * u.arcsec,
                                                          [1, 0.8, 0.5, 0.2, 0])],
                                    fractions=[0.6, 0.4]),
             warp=gcc.Warp([0, 5] * u.arcsec, centre_east=[0, 1] * u.arcsec), v_sys=0 * KMS),
    ]
    first, second = truth_table(grid, tabulated[:1]), truth_table(grid, tabulated[1:])
    assert first["radial_v_rad"].shape == (1, 2) and second["radial_v_rad"].shape[1] == 2
    assert second["warp_radius"].shape[1] == 3
    stacked = stack_tables([table, first, second])
    stacked.write(tmp_path / "truth.ecsv", format="ascii.ecsv")
    read = QTable.read(tmp_path / "truth.ecsv", format="ascii.ecsv")
    again = galaxies_from_table(read, grid)
    assert again[0] == back
    for expected, got in zip(tabulated, again[1:]):
        # the same galaxy, its offset through the grid's pixels to rounding
        assert got.replace(offset=expected.offset) == expected
        assert np.allclose(got.offset.to_value(u.arcsec), expected.offset.to_value(u.arcsec),
                           atol=1e-9)


# ----------------------------------------------------------------------------- populations
def test_populations_draw_real_galaxies_in_their_fractions():
    from galcubecraft.catalogue import random_galaxies
    from galcubecraft.priors import GalaxyPriors
    grid = gcc.CubeGrid(shape=(40, 64, 64), pixel_scale=1 * u.arcsec, channel_width=40 * KMS)
    priors = GalaxyPriors(warp_fraction=0.5, bar_fraction=0.6, lopsided_fraction=0.3,
                          radial_fraction=0.3, ring_fraction=0.2,
                          bar_v_2t={"distribution": "uniform", "low": "5 km/s",
                                    "high": "30 km/s"})
    galaxies = random_galaxies(grid, 400, priors=priors, seed=3, edge=4 * u.arcsec,
                               min_separation=0 * u.arcsec)
    counts = {"warp": sum(g.warp is not None for g in galaxies),
              "ring": sum(isinstance(g.surface, gcc.GaussianRing) for g in galaxies)}
    for kind, name in ((gcc.BisymmetricFlow, "bar"), (gcc.LopsidedFlow, "lopsided"),
                       (gcc.RadialFlow, "radial")):
        counts[name] = sum(any(isinstance(f, kind) for f in g.flows) for g in galaxies)
    for name, fraction in (("warp", 0.5), ("bar", 0.6), ("lopsided", 0.3), ("radial", 0.3),
                           ("ring", 0.2)):
        sigma = math.sqrt(400 * fraction * (1 - fraction))
        assert abs(counts[name] - 400 * fraction) < 4 * sigma, (name, counts[name])
    bars = [f for g in galaxies for f in g.flows if isinstance(f, gcc.BisymmetricFlow)]
    assert all(5 <= f.v_2t[0].to_value(KMS) <= 30 for f in bars)
    # the same seed, the same galaxies; priors without parts draw plain disks as before
    again = random_galaxies(grid, 400, priors=priors, seed=3, edge=4 * u.arcsec,
                            min_separation=0 * u.arcsec)
    assert again == galaxies
    plain = random_galaxies(grid, 20, priors=GalaxyPriors(), seed=3, edge=4 * u.arcsec,
                            min_separation=0 * u.arcsec)
    assert all(g.model.plain for g in plain)


def test_stacked_parameters_are_each_galaxys_own_tensors():
    """`stack_parameters` stacks the galaxies' numbers on the host and makes one tensor of
    each: row for row, bit for bit and dtype for dtype, each galaxy's own ``tensors()``
    (float64 ``v_sys``, tables, bulges' fractions, every part of real galaxies); and
    `ObservedBatch.galaxy_tensor` holds their scalars."""
    from galcubecraft.catalogue import random_galaxies
    from galcubecraft.observation import ObservedBatch
    from galcubecraft.priors import GalaxyPriors
    grid = gcc.CubeGrid(shape=(40, 64, 64), pixel_scale=1 * u.arcsec, channel_width=40 * KMS)
    priors = GalaxyPriors(warp_fraction=0.5, bar_fraction=0.5, lopsided_fraction=0.3,
                          radial_fraction=0.3, ring_fraction=0.2, bulge_fraction=0.3,
                          drift_fraction=0.3)
    galaxies = random_galaxies(grid, 60, priors=priors, seed=5, edge=4 * u.arcsec,
                               min_separation=0 * u.arcsec)
    galaxies.append(disk(distance=20 * u.Mpc, v_sys=1500 * KMS,          # sizes in kpc
                         surface=gcc.ExponentialDisk(scale_length=0.5 * u.kpc)))
    # a flow tabulated where the priors' are constant: a table beside their scalars
    galaxies.append(disk(flows=[gcc.LopsidedFlow([5, 10] * KMS, [0, 2] * KMS, 30 * u.deg,
                                                 radius=[0, 10] * u.arcsec)]))
    for dtype in (torch.float32, torch.float64):
        groups = gcc.stack_parameters(galaxies, dtype=dtype, index=True)
        assert sorted(int(r) for _, _, rows in groups for r in rows) == list(range(62))
        assert len(groups) > 3
        for _, params, rows in groups:
            for j, i in enumerate(rows.tolist()):
                own = galaxies[i].tensors(dtype=dtype)
                assert own.keys() == params.keys()
                for key, value in own.items():
                    assert params[key].dtype == value.dtype, key
                    assert torch.equal(params[key][j], value), key
    # galaxies are values: what they hand out is theirs to change, not a view of them
    tabulated = galaxies[-1]
    before = tabulated.flows[0].v_1t.copy()
    tabulated.numbers()["lopsided_v_1t"][:] = 0.0
    tabulated.tensors(dtype=torch.float64)["lopsided_v_1t"].zero_()
    assert np.array_equal(tabulated.flows[0].v_1t, before) and before.value.any()
    scenes = [galaxies[k:k + 3] for k in range(0, 62, 3)]
    batch = ObservedBatch(grid, torch.zeros(len(scenes), 1), torch.zeros(len(scenes), 1), None,
                          None, None, scenes, None, None)
    table, names = batch.galaxy_tensor(dtype=torch.float64)
    for k, scene in enumerate(scenes):
        for j, galaxy in enumerate(scene):
            own = galaxy.tensors(dtype=torch.float64)
            for c, name in enumerate(names):
                expected = own[name] if name in own and own[name].dim() == 0 else math.nan
                assert torch.equal(table[k, j, c], torch.as_tensor(expected, dtype=torch.float64)
                                   ) or (math.isnan(expected) and torch.isnan(table[k, j, c]))
        assert torch.isnan(table[k, len(scene):]).all()


def test_the_realistic_disks_preset_makes_a_dataset(tmp_path):
    from pathlib import Path
    from galcubecraft.dataset import generate_dataset
    preset = Path(__file__).resolve().parents[1] / "examples" / "realistic_disks.toml"
    out = tmp_path / "train"
    generate_dataset(preset, 8, out, progress=False)
    from astropy.table import Table
    table = Table.read(out / "galaxies.ecsv")
    assert {"surface", "vertical", "radial_v_rad", "lopsided_v_1t"} <= set(table.colnames)


@pytest.mark.parametrize("spec, match", [
    (dict(bar_v_2t="20 km/s"), "bar_fraction"),
    (dict(warp_fraction=1.5), r"\[0, 1\]"),
    (dict(bar_fraction=0.5, bar_v_2t="20 deg"), "bar_v_2t"),
])
def test_bad_population_parts_are_refused(spec, match):
    from galcubecraft.priors import GalaxyPriors
    with pytest.raises((ValueError, u.UnitsError), match=match):
        GalaxyPriors(**spec)


def test_a_flaring_disk_thickens_outwards():
    """Edge-on, a flare (0.3" -> 2" from 5" to 25") widens the light's minor-axis profile at
    large radii, against the same disk unflared; face-on it changes nothing."""
    grid = grid_for(n_pix=64, n_chan=10, width=80.0, beam=2.0)
    flat = disk(inclination=89 * u.deg, position_angle=0 * u.deg,
                vertical=gcc.ExponentialVertical(0.3 * u.arcsec), flows=[ZERO_FLOW],
                surface=gcc.ExponentialDisk(scale_length=8 * u.arcsec))
    flared = flat.replace(warp=gcc.Warp([0, 5, 25] * u.arcsec,
                                        scale_height=[0.3, 0.3, 2.0] * u.arcsec))
    east = grid.sky_offsets()[0].to_value(u.arcsec)[0]
    north = grid.sky_offsets()[1].to_value(u.arcsec)[:, 0]

    def width(galaxy, at):
        image = render(galaxy, grid).sum(0)
        row = image[np.argmin(np.abs(north - at))]
        return math.sqrt((row * east**2).sum() / row.sum())
    assert width(flared, 20.0) > 2.5 * width(flat, 20.0)
    # face-on the height does not show: the same image
    face_on = [render(g.replace(inclination=0 * u.deg), grid).sum(0) for g in (flat, flared)]
    assert l1(face_on[1], face_on[0]) < 1e-6


def test_ring_centres_and_velocities_move_each_ring():
    """Rings all moved by the same (east, north) and velocity: the galaxy moved (its offset
    and systemic velocity: the same cube to rounding, and to the second order in v / c of
    composing the velocities)."""
    grid = grid_for(n_pix=48, n_chan=30, width=20.0, beam=3.0)
    base = disk(vertical=gcc.Sech2Vertical(0.4 * u.arcsec), v_sys=0 * KMS)
    moved = base.replace(warp=gcc.Warp([0, 40] * u.arcsec, centre_east=[2, 2] * u.arcsec,
                                       centre_north=[-1, -1] * u.arcsec,
                                       v_shift=[30, 30] * KMS))
    shifted = base.replace(offset=(2, -1) * u.arcsec, v_sys=30 * KMS,
                           warp=gcc.Warp([0, 40] * u.arcsec, centre_east=[0, 0] * u.arcsec))
    assert l1(render(moved, grid), render(shifted, grid)) < 5e-4
    # a ring drifting east: the outer light's centroid moves with it
    drift = base.replace(warp=gcc.Warp([0, 5, 20] * u.arcsec, centre_east=[0, 0, 4] * u.arcsec))
    east = grid.sky_offsets()[0].to_value(u.arcsec)
    image = render(drift, grid).sum(0)
    assert (image * east).sum() / image.sum() > 0.5


@pytest.mark.parametrize("kw", [
    dict(flows=[gcc.BisymmetricFlow(30 * KMS, 20 * KMS, 30 * u.deg)], dispersion=25 * KMS),
    dict(flows=[gcc.LaggingHalo(10 * KMS / u.arcsec)],
         vertical=gcc.ExponentialVertical(1 * u.arcsec), dispersion=15 * KMS),
    dict(flows=[gcc.DispersionProfile([40, 8] * KMS, radius=[0, 15] * u.arcsec)]),
], ids=["bar", "lagging halo", "dispersion profile"])
def test_velocity_nodes_agree_with_integrating_every_line(kw):
    """The ring quadrature's two line integrations, velocity nodes and erf per channel, give
    the same cube (a varying dispersion always takes erf: one node kernel cannot carry it)."""
    grid = grid_for(n_pix=48, n_chan=30, width=20.0, beam=3.0)
    galaxy = disk(**kw)
    assert l1(render(galaxy, grid, line_integration="nodes"),
              render(galaxy, grid, line_integration="erf")) < 5e-4


def test_a_seeded_sweep_of_real_galaxies_keeps_its_flux():
    """Random ring-path galaxies over the legal range (sizes 0.03-16", any inclination with
    0 and 90 deg among them, razor-thin to thick, every surface and vertical law, sums with a
    bulge, flows and asymmetric drift, z up to 6, with and without a beam): finite cubes whose
    flux is the galaxy's, to 1e-3."""
    rng = np.random.default_rng(7)
    for k in range(12):
        scale = 10 ** rng.uniform(-1.5, 1.2)
        inc = [0, 90, 80][k % 3] if k < 6 else rng.uniform(0, 90)
        h = [0, 0.3, 1.5][k % 3] * scale
        surface = [gcc.ExponentialDisk(scale_length=scale * u.arcsec),
                   gcc.GaussianRing(radius=2 * scale * u.arcsec, width=0.3 * scale * u.arcsec),
                   gcc.TabulatedSurface(np.linspace(0, 6 * scale, 7) * u.arcsec,
                                        [1, .9, .7, .4, .2, .1, 0]),
                   gcc.SersicDisk(r_eff=scale * u.arcsec, n=rng.uniform(0.5, 2))][k % 4]
        if k % 6 == 5:           # a ring or a Sersic disk with a bulge
            surface = gcc.SurfaceSum([surface, gcc.SersicBulge(0.3 * scale * u.arcsec, 2)],
                                     fractions=[0.8, 0.2])
        vertical = [gcc.ExponentialVertical, gcc.Sech2Vertical, gcc.GaussianVertical][k % 3]
        flows = [gcc.RadialFlow(rng.uniform(-40, 40) * KMS)]
        if k % 4 == 2:
            flows.append(gcc.AsymmetricDrift())
        if k % 2:
            flows.append(gcc.BisymmetricFlow(20 * KMS, 10 * KMS, rng.uniform(0, 180) * u.deg))
        if k % 5 == 0:
            flows.append(gcc.LaggingHalo(5 * KMS / u.arcsec))
        z = [0, 0.5, 3, 6][k % 4]
        galaxy = gcc.Galaxy(surface=surface, vertical=vertical(h * u.arcsec),
                            kinematics=gcc.ArctanRotationCurve(200 * KMS, scale * u.arcsec),
                            inclination=inc * u.deg, position_angle=rng.uniform(0, 360) * u.deg,
                            flux=10 * JYKMS, dispersion=rng.uniform(2, 40) * KMS, flows=flows,
                            redshift=z or None)
        pixel = max(0.05, scale / 2)
        grid = gcc.CubeGrid(shape=(48, 64, 64), pixel_scale=pixel * u.arcsec,
                            channel_width=25 * KMS, velocity_center=galaxy.v_sys,
                            beam=None if k % 2 else Beam(3 * pixel * u.arcsec),
                            center=SkyCoord(150 * u.deg, 2 * u.deg))
        cube = render(galaxy, grid)
        assert np.isfinite(cube).all(), k
        flux = grid.integrated_flux(cube).to_value(JYKMS)
        assert abs(flux / 10.0 - 1) < 1e-3, (k, flux)


# ----------------------------------------------------------------------------- sums, drift
def test_each_profile_of_a_sum_keeps_its_share_of_the_flux():
    """A disk and a ring far apart, beam-free: the light inside and outside the radius between
    them is each profile's share (to the light of the disk's tail beyond it); the sum's
    surface brightness integrates to the flux."""
    grid = grid_for(n_pix=96, pixel=0.5, n_chan=60, width=10.0)
    shares = (0.3, 0.7)
    surface = gcc.SurfaceSum([gcc.ExponentialDisk(scale_length=1.5 * u.arcsec),
                              gcc.GaussianRing(15 * u.arcsec, 1 * u.arcsec)], fractions=shares)
    galaxy = disk(surface=surface, inclination=0 * u.deg)
    image = render(galaxy, grid).sum(0) * 10.0
    east, north = (q.to_value(u.arcsec) for q in grid.sky_offsets())
    inner = np.hypot(east, north) < 9.0
    tail = 0.3 * (1 + 9 / 1.5) * math.exp(-9 / 1.5)         # the disk's light beyond 9"
    assert image[inner].sum() / 20.0 == pytest.approx(shares[0] - tail, abs=1e-3)
    assert image[~inner].sum() / 20.0 == pytest.approx(shares[1] + tail, abs=1e-3)
    radius = np.linspace(0, 40, 400001) * u.arcsec
    sb = surface.surface_brightness(radius, 20 * JYKMS)
    integral = integrate.trapezoid(2 * np.pi * radius * sb, radius)
    assert integral.to_value(JYKMS) == pytest.approx(20.0, rel=1e-4)


def test_a_bulge_and_disk_render_as_the_two_plain_galaxies():
    """Disk (n = 1) + bulge (n = 4, B/T = 0.3) by the ring quadrature against the sum of the
    two plain Sersic galaxies by the exact sky cells (another code path): within 0.6% L1."""
    grid = grid_for(n_pix=48, n_chan=40, width=10.0, beam=3.0)
    kw = dict(dispersion=30 * KMS, position_angle=20 * u.deg)
    total = disk(surface=gcc.SurfaceSum([gcc.SersicDisk(8 * u.arcsec, 1),
                                         gcc.SersicBulge(3 * u.arcsec, 4)],
                                        fractions=[0.7, 0.3]),
                 kinematics=gcc.ArctanRotationCurve(150 * KMS, 3 * u.arcsec), **kw)
    parts = [total.replace(surface=gcc.SersicDisk(r_eff, n), flux=share * 20 * JYKMS)
             for r_eff, n, share in ((8 * u.arcsec, 1, 0.7), (3 * u.arcsec, 4, 0.3))]
    plain = sum(render(g, grid) for g in parts)
    assert l1(render(total, grid), plain) < 6e-3


def test_sersic_disks_with_flows_render_up_to_n_8():
    """A Sersic disk of index 4 to 8 with a zero flow (the ring quadrature) against the exact
    cells: the rings that never reach the field are single samples, so the extended wings of
    n = 8 (1e-6 of the light beyond 3000 r_eff) take little time, and the cube agrees."""
    grid = grid_for(n_pix=48, n_chan=30, width=20.0, beam=3.0)
    for n in (4, 8):
        galaxy = disk(surface=gcc.SersicDisk(5 * u.arcsec, n), dispersion=30 * KMS)
        rings, plain = render(galaxy.replace(flows=[ZERO_FLOW]), grid), render(galaxy, grid)
        assert l1(rings, plain) < 1.2e-2, n
        assert abs(rings.sum() / plain.sum() - 1) < 1e-3, n


@pytest.mark.parametrize("ratio", [1.0, 0.7])
def test_asymmetric_drift_slows_the_rotation_as_the_jeans_equation_says(ratio):
    """An exponential disk (h = 5") with a flat circular speed of 100 km/s and 30 km/s of
    dispersion: the major axis's moment-1 is sqrt(v_c^2 - sigma^2 (R/h - 1 + ratio^2)) sin i,
    written out (d ln Sigma / d ln R = -R/h)."""
    grid = grid_for(n_pix=64, pixel=0.5, n_chan=80, width=5.0)
    galaxy = disk(kinematics=gcc.FlatRotationCurve(100 * KMS), dispersion=30 * KMS,
                  position_angle=0 * u.deg, flows=[gcc.AsymmetricDrift(ratio)])
    m1 = moment1(render(galaxy, grid), grid)
    radius, phi = disk_coordinates(grid, galaxy)
    v_phi = np.sqrt(100**2 + 30**2 * (-radius / 5.0 + 1 - ratio**2))
    expected = v_phi * np.cos(phi) * math.sin(math.radians(60))
    major = (np.abs(np.sin(phi)) < 0.05) & (radius > 2) & (radius < 14)
    assert major.sum() > 20
    assert np.abs(m1 - expected)[major].max() < 0.2
    # without the drift the gas would show the circular speed
    assert np.abs(np.abs(expected) - 100 * math.sin(math.radians(60)))[major].max() > 5


def test_a_ring_rotates_faster_inside_its_radius_under_pressure():
    """Inside a ring the surface density rises outwards: pressure pushes outwards and the gas
    rotates faster than the circular speed; outside, slower."""
    grid = grid_for(n_pix=64, pixel=0.5, n_chan=80, width=5.0)
    galaxy = disk(surface=gcc.GaussianRing(8 * u.arcsec, 2 * u.arcsec), position_angle=0 * u.deg,
                  kinematics=gcc.FlatRotationCurve(100 * KMS), dispersion=25 * KMS,
                  flows=[gcc.AsymmetricDrift()])
    m1 = np.abs(moment1(render(galaxy, grid), grid))
    radius, phi = disk_coordinates(grid, galaxy)
    major = np.abs(np.sin(phi)) < 0.05
    circular = 100 * math.sin(math.radians(60))
    assert (m1[major & (radius > 5) & (radius < 7)] > circular + 1).all()
    assert (m1[major & (radius > 9.5) & (radius < 12)] < circular - 1).all()


def test_sums_and_drift_round_trip_through_flat_dictionaries_and_files():
    galaxy = disk(surface=gcc.SurfaceSum([gcc.GaussianRing(8 * u.arcsec, 2 * u.arcsec),
                                          gcc.SersicBulge(1 * u.arcsec, 3.0),
                                          gcc.TabulatedSurface([0, 3, 6] * u.arcsec, [1, .5, 0])],
                                         fractions=[0.6, 0.3, 0.1]),
                  kinematics=gcc.FlatRotationCurve(180 * KMS), flows=[gcc.AsymmetricDrift(0.9)])
    flat = galaxy.to_dict()
    assert flat["surface"] == "ring" and flat["bulge_flux_fraction"] == 0.3
    assert flat["table_flux_fraction"] == 0.1 and flat["drift_azimuthal_ratio"] == 0.9
    assert gcc.Galaxy.from_dict(flat) == galaxy
    text = {k: (v if isinstance(v, str) else [str(x) for x in v] if np.ndim(v) else str(v))
            for k, v in flat.items() if v is not None}
    assert gcc.Galaxy.from_dict(text) == galaxy
    assert "SersicBulge" in repr(galaxy) and galaxy.model.describe().startswith("GaussianRing +")


def test_populations_draw_bulges_and_drift():
    from galcubecraft.catalogue import random_galaxies
    from galcubecraft.priors import GalaxyPriors
    grid = gcc.CubeGrid(shape=(40, 64, 64), pixel_scale=1 * u.arcsec, channel_width=40 * KMS)
    priors = GalaxyPriors(bulge_fraction=0.5, drift_fraction=0.25,
                          bulge_flux_fraction={"distribution": "uniform", "low": 0.1,
                                               "high": 0.2})
    galaxies = random_galaxies(grid, 200, priors=priors, seed=5, edge=4 * u.arcsec,
                               min_separation=0 * u.arcsec)
    bulged = [g for g in galaxies if isinstance(g.surface, gcc.SurfaceSum)]
    drifting = [g for g in galaxies if any(isinstance(f, gcc.AsymmetricDrift) for f in g.flows)]
    assert abs(len(bulged) - 100) < 4 * math.sqrt(50) and abs(len(drifting) - 50) < 4 * 6.2
    assert all(0.1 <= g.surface.fractions[1] <= 0.2 for g in bulged)
    assert all(g.surface.terms[1].r_eff <= 0.3 * g.surface.main.r_eff for g in bulged)


def test_priors_over_any_parameter_and_each_node_of_a_table(tmp_path):
    """A priors file's [galaxy.parameters] draws any flat parameter, and each node of a
    table from its own distribution; the drawn galaxies carry them, with the same seed the
    same galaxies, and their truth tables hold the drawn nodes."""
    from galcubecraft.catalogue import random_galaxies, truth_table
    from galcubecraft.priors import read_priors_file
    path = tmp_path / "priors.toml"
    path.write_text("""
[galaxy]
r_eff = {distribution = "loguniform", low = "2 arcsec", high = "4 arcsec"}

[galaxy.parameters]
surface = "ring"
ring_radius = {distribution = "uniform", low = "3 arcsec", high = "6 arcsec"}
ring_width = "1 arcsec"
scale_height = "0.3 arcsec"
warp_radius = ["0 arcsec", "5 arcsec", "10 arcsec"]
warp_inclination = ["50 deg", {distribution = "uniform", low = "50 deg", high = "60 deg"},
                    {distribution = "uniform", low = "60 deg", high = "80 deg"}]
lag_dv_dz = {distribution = "uniform", low = "1 km/(s arcsec)", high = "5 km/(s arcsec)"}
""")
    priors, _ = read_priors_file(path)
    grid = gcc.CubeGrid(shape=(40, 64, 64), pixel_scale=1 * u.arcsec, channel_width=40 * KMS)
    galaxies = random_galaxies(grid, 50, priors=priors, seed=2, edge=4 * u.arcsec,
                               min_separation=0 * u.arcsec)
    assert galaxies == random_galaxies(grid, 50, priors=priors, seed=2, edge=4 * u.arcsec,
                                       min_separation=0 * u.arcsec)
    nodes = np.array([g.warp.inclination.to_value(u.deg) for g in galaxies])
    assert (nodes[:, 0] == 50).all()
    assert (50 <= nodes[:, 1]).all() and (nodes[:, 1] <= 60).all() and nodes[:, 1].std() > 2
    assert (60 <= nodes[:, 2]).all() and (nodes[:, 2] <= 80).all()
    assert all(isinstance(g.surface, gcc.GaussianRing) and g.vertical.scale_height
               == 0.3 * u.arcsec for g in galaxies)
    assert all(any(isinstance(f, gcc.LaggingHalo) for f in g.flows) for g in galaxies)
    table = truth_table(grid, galaxies)
    assert np.allclose(table["warp_inclination"].to_value(u.deg), nodes)


@pytest.mark.parametrize("spec, match", [
    (dict(warp_radius="5 arcsec"), "give a list"),
    (dict(inclination=["5 deg", "6 deg"]), "one number"),
    (dict(warp_inclination=["50 deg", {"distribution": "uniform", "low": "80 deg",
                                       "high": "95 deg"}]), r"warp_inclination\[1\]"),
    (dict(warp_inclination=["50 deg", "3 km/s"]), r"warp_inclination\[1\]"),
    (dict(surface="bar"), "surface must be one of"),
    (dict(no_such=1), "unknown galaxy parameter"),
])
def test_bad_parameter_priors_are_refused(spec, match):
    from galcubecraft.priors import GalaxyPriors
    with pytest.raises((ValueError, u.UnitsError), match=match):
        GalaxyPriors(parameters=spec)


def test_merged_groups_render_each_galaxy_as_alone():
    """Real galaxies of different parts merged into one group (each holding the others' parts
    at no amplitude) render the cubes they render in their own groups, to rounding; parts
    that change the sampling (a lag, a table) are not merged."""
    mixed = [
        disk(),
        disk(surface=gcc.GaussianRing(6 * u.arcsec, 1.5 * u.arcsec), flows=[ZERO_FLOW]),
        disk(flows=[gcc.BisymmetricFlow([30, 30, 0] * KMS, [20, 20, 0] * KMS, 40 * u.deg,
                                        radius=[0, 5, 7] * u.arcsec)], offset=(3, 1) * u.arcsec),
        disk(surface=gcc.SurfaceSum([gcc.ExponentialDisk(scale_length=3 * u.arcsec),
                                     gcc.SersicBulge(1 * u.arcsec)], fractions=[0.8, 0.2]),
             flows=[gcc.LopsidedFlow(15 * KMS, 5 * KMS, 10 * u.deg), gcc.RadialFlow(-20 * KMS)]),
        disk(surface=gcc.GaussianRing(5 * u.arcsec, 1 * u.arcsec), inclination=45 * u.deg,
             warp=gcc.Warp([0, 4, 9] * u.arcsec, inclination=[45, 45, 70] * u.deg)),
        disk(vertical=gcc.ExponentialVertical(1 * u.arcsec),
             flows=[gcc.LaggingHalo(5 * KMS / u.arcsec)]),
    ]
    mixed = [g.replace(flux=(10 + k) * JYKMS) for k, g in enumerate(mixed)]
    grid = grid_for(n_pix=40, n_chan=24, width=20.0, beam=3.0)
    projector = gcc.Projector(grid, dtype=D)
    alone = gcc.stack_parameters(mixed, dtype=D)
    merged = gcc.stack_parameters(mixed, dtype=D, merge=True)
    assert len(alone) == 6 and len(merged) == 3
    union = [m for m, _ in merged if isinstance(m, gcc.rings.DiskModel)
             and not m.uses_height() and not m.plain][0]
    assert union.describe() == ("ExponentialDisk + SersicBulge + GaussianRing, RadialFlow, "
                                "BisymmetricFlow, LopsidedFlow, Warp")

    def cubes(groups):
        # each galaxy known by its flux
        with torch.no_grad():
            return {round(float(params["flux"][k]), 9): cube.numpy() for model, params in groups
                    for k, cube in enumerate(projector(params, model))}
    a, b = cubes(alone), cubes(merged)
    assert len(a) == 6
    for key in a:
        assert np.abs(a[key] - b[key]).max() <= 1e-12 * np.abs(a[key]).max(), key
    # with index, each merged row names its galaxy (each known by its flux)
    rows_seen = []
    for _, params, rows in gcc.stack_parameters(mixed, dtype=D, merge=True, index=True):
        assert params["flux"].tolist() == [mixed[r].flux.value for r in rows.tolist()]
        rows_seen += rows.tolist()
    assert sorted(rows_seen) == list(range(6))
