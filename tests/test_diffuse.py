"""Diffuse structures: halos, bridges and tails conserve their flux, move as stated, and are
differentiable like the disks."""
import astropy.units as u
import numpy as np
import pytest
import torch

import galcubecraft as gcc
from conftest import JYKMS, KMS, make_galaxy
from galcubecraft.diffuse import Stream, bridge, halo, tail


def grid(n=96, beam=3 * u.arcsec, **kw):
    return gcc.CubeGrid(shape=(48, n, n), pixel_scale=1 * u.arcsec, channel_width=20 * KMS,
                        beam=beam, **kw)


def host_and_satellite():
    host = make_galaxy(surface=gcc.SersicDisk(r_eff=5 * u.arcsec, n=1))
    sat = make_galaxy(surface=gcc.SersicDisk(r_eff=2 * u.arcsec, n=1),
                      offset=[20, 15] * u.arcsec, v_sys=150 * KMS, flux=5 * JYKMS)
    return host, sat


@pytest.mark.parametrize("curvature, taper, beam", [(0.0, 0.0, 3 * u.arcsec),
                                                    (0.4, 1.0, None),
                                                    (-0.3, -0.5, 2 * u.arcsec)])
def test_streams_conserve_their_flux(curvature, taper, beam):
    g = grid(beam=beam)
    stream = Stream(start=[-20, -10] * u.arcsec, end=[25, 20] * u.arcsec,
                    control=[-20 + 45 / 2 - curvature * 30, -10 + 15 + curvature * 45]
                    * u.arcsec, width=2.5 * u.arcsec, flux=1.7 * JYKMS, v_start=-150 * KMS,
                    v_end=200 * KMS, dispersion=12 * KMS, taper=taper)
    cube = gcc.render(stream, g).unitless_filled_data[:]
    assert g.integrated_flux(cube).to_value(JYKMS) == pytest.approx(1.7, rel=1e-4)


def test_bridge_runs_from_host_to_satellite_in_position_and_velocity():
    g = grid(beam=None)
    host, sat = host_and_satellite()
    b = bridge(host, sat, flux=2 * JYKMS, dispersion=10 * KMS)
    cube = gcc.render(b, g).unitless_filled_data[:]
    v = g.spectral_axis.to_value(KMS)
    # the flux-weighted velocity of the pixels along the bridge: linear in the distance from
    # the host (a straight bridge, its curve parameter proportional to length), 0 to 150 km/s
    for f in (0.2, 0.4, 0.6, 0.8):
        x, y = (int(round(c)) for c in g.pixel_of([20 * f, 15 * f] * u.arcsec))
        east, north = g.offset_of_pixel(x, y).to_value(u.arcsec)
        along = (0.8 * east + 0.6 * north) / 25.0
        centroid = np.sum(cube[:, y, x] * v) / cube[:, y, x].sum()
        assert centroid == pytest.approx(150 * along, abs=1.0)
    with pytest.raises(TypeError):
        bridge(host, "satellite", flux=1 * JYKMS)


def test_taper_moves_flux_towards_the_start():
    g = grid(beam=None)
    s = Stream(start=[-30, 0] * u.arcsec, end=[30, 0] * u.arcsec, width=3 * u.arcsec,
               flux=1 * JYKMS, v_start=0 * KMS, v_end=0 * KMS, taper=1.0)
    image = gcc.render(s, g).unitless_filled_data[:].sum(axis=0)
    east, _ = g.sky_offsets().to_value(u.arcsec)
    # brightness per length 2 (1 - t): the western (start) half holds 3/4 of the flux
    assert image[east < 0].sum() / image.sum() == pytest.approx(0.75, abs=2e-3)


def test_tail_trails_away_from_the_host_and_fades():
    host, sat = host_and_satellite()
    t = tail(sat, host=host, length=20 * u.arcsec, flux=1 * JYKMS)
    start, _, end = t.points
    np.testing.assert_allclose(start, [20, 15])
    np.testing.assert_allclose(end, [20 + 16, 15 + 12])     # 20" further along host->satellite
    # continues the host-satellite velocity gradient: 150 km/s over 25", so +120 km/s over 20"
    assert t.v_end.to_value(KMS) == pytest.approx(150 + 120)
    assert t.taper == 1.0
    with pytest.raises(ValueError, match="sits on its host"):
        tail(host, host=host, length=5 * u.arcsec, flux=1 * JYKMS)


def test_halo_is_a_thick_lagging_disk_that_conserves_flux():
    host, _ = host_and_satellite()
    h = halo(host, flux=3 * JYKMS, scale=2.0, thickness=0.8, lag=0.4, dispersion=35 * KMS)
    assert isinstance(h, gcc.Galaxy)
    assert h.surface.r_eff == 10 * u.arcsec and h.vertical.scale_height == 4 * u.arcsec
    assert h.kinematics.v_max == 0.6 * host.kinematics.v_max
    g = grid(n=200)
    cube = gcc.render(h, g).unitless_filled_data[:]
    assert g.integrated_flux(cube).to_value(JYKMS) == pytest.approx(3.0, rel=2e-3)


def test_streams_are_differentiable():
    g = grid(n=48, beam=3 * u.arcsec)
    projector = gcc.Projector(g, dtype=torch.float64)
    s = Stream(start=[-10, -5] * u.arcsec, end=[12, 8] * u.arcsec, control=[0, 8] * u.arcsec,
               width=3 * u.arcsec, flux=1 * JYKMS, v_start=-100 * KMS, v_end=120 * KMS,
               dispersion=15 * KMS, taper=0.3)
    base = {k: v.unsqueeze(0) for k, v in s.tensors(dtype=torch.float64).items()}
    weights = torch.rand((1, g.n_chan) + projector.padded_shape, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(0))

    def loss(params):
        return (projector.project_streams(params) * weights).sum()

    for name, index in (("sigma", None), ("v_end", None), ("dispersion", None),
                        ("points", (0, 1, 1)), ("taper", None)):
        params = {k: v.clone().requires_grad_(k == name) for k, v in base.items()}
        grad = torch.autograd.grad(loss(params), params[name])[0]
        eps = 1e-4
        plus = {k: v.clone() for k, v in base.items()}
        minus = {k: v.clone() for k, v in base.items()}
        idx = index if index is not None else (0,)
        plus[name][idx] += eps
        minus[name][idx] -= eps
        numeric = (loss(plus) - loss(minus)) / (2 * eps)
        assert float(grad[idx]) == pytest.approx(float(numeric), rel=1e-4, abs=1e-9), name


def test_scenes_mix_galaxies_and_streams_and_observe_labels_them():
    host, sat = host_and_satellite()
    items = [host, sat, halo(host, flux=2 * JYKMS), bridge(host, sat, flux=1 * JYKMS),
             tail(sat, host=host, length=15 * u.arcsec, flux=1 * JYKMS)]
    g = grid(n=128)
    cube = gcc.render(gcc.Scene(items), g).unitless_filled_data[:]
    assert g.integrated_flux(cube).to_value(JYKMS) == pytest.approx(30 + 5 + 2 + 1 + 1,
                                                                    rel=2e-3)
    obs = gcc.observe(items, g)
    assert set(np.unique(obs.labels)) >= {1, 2, 4}
    assert len(obs.params["galaxies"]) == 3 and len(obs.params["streams"]) == 2
    batch = gcc.observe_batch([items, items[:2]], g)          # streams are not galaxies
    assert batch.cube_params[:, 0].tolist() == [3, 2]
    np.testing.assert_array_equal(batch.labels[0].numpy(), obs.labels)


def test_bad_streams():
    common = dict(start=[0, 0] * u.arcsec, end=[1, 1] * u.arcsec, width=1 * u.arcsec,
                  flux=1 * JYKMS, v_start=0 * KMS, v_end=0 * KMS)
    with pytest.raises(ValueError, match="taper"):
        Stream(**{**common, "taper": 2})
    with pytest.raises(u.UnitsError):
        Stream(**{**common, "width": 1 * KMS})
    with pytest.raises(ValueError, match="width"):
        Stream(**{**common, "width": -1 * u.arcsec})
    with pytest.raises(u.UnitTypeError):
        Stream(**{**common, "flux": 1.0})
    with pytest.raises(ValueError, match="distance"):
        Stream(**{**common, "start": [0, 0] * u.kpc}).points
