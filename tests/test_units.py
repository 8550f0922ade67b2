"""Bad input gets a clear error naming the parameter (table-driven)."""
import math

import astropy.units as u
import numpy as np
import pytest
from radio_beam import Beam

import galcubecraft as gcc
from conftest import KMS, JYKMS, make_galaxy


def grid(**kw):
    args = dict(shape=(8, 16, 16), pixel_scale=1 * u.arcsec, channel_width=20 * KMS,
                beam=Beam(3 * u.arcsec))
    args.update(kw)
    return gcc.CubeGrid(**args)


# (factory, exception, words the message must contain)
BAD_INPUTS = [
    (lambda: gcc.SersicDisk(r_eff=8.4, n=1), u.UnitTypeError, "r_eff"),
    (lambda: gcc.SersicDisk(r_eff=8.4 * u.km / u.s, n=1), u.UnitsError, "r_eff"),
    (lambda: gcc.SersicDisk(r_eff=-1 * u.arcsec, n=1), ValueError, "r_eff"),
    (lambda: gcc.SersicDisk(r_eff=0 * u.arcsec, n=1), ValueError, "r_eff"),
    (lambda: gcc.SersicDisk(r_eff=np.nan * u.arcsec, n=1), ValueError, "r_eff"),
    (lambda: gcc.SersicDisk(r_eff=np.inf * u.kpc, n=1), ValueError, "r_eff"),
    (lambda: gcc.SersicDisk(r_eff=1 * u.arcsec, n=0), ValueError, "n"),
    (lambda: gcc.SersicDisk(r_eff=1 * u.arcsec, n=-2), ValueError, "n"),
    (lambda: gcc.SersicDisk(r_eff=1 * u.arcsec, n=math.nan), ValueError, "n"),
    (lambda: gcc.ExponentialVertical(scale_height=-0.1 * u.arcsec), ValueError, "scale_height"),
    (lambda: gcc.ExponentialVertical(scale_height=1 * u.Jy), u.UnitsError, "scale_height"),
    (lambda: gcc.ArctanRotationCurve(v_max=200, r_turn=1 * u.arcsec), u.UnitTypeError, "v_max"),
    (lambda: gcc.ArctanRotationCurve(v_max=200 * u.arcsec, r_turn=1 * u.arcsec),
     u.UnitsError, "v_max"),
    (lambda: gcc.ArctanRotationCurve(v_max=200 * KMS, r_turn=0 * u.arcsec), ValueError, "r_turn"),
    (lambda: gcc.FlatRotationCurve(v_flat=np.nan * KMS), ValueError, "v_flat"),
    (lambda: gcc.TabulatedRotationCurve([2, 1] * u.kpc, [1, 2] * KMS), ValueError, "radius"),
    (lambda: gcc.TabulatedRotationCurve([1, 2] * u.kpc, [1, 2, 3] * KMS), ValueError, "radius"),
    (lambda: make_galaxy(inclination=91 * u.deg), ValueError, "inclination"),
    (lambda: make_galaxy(inclination=-1 * u.deg), ValueError, "inclination"),
    (lambda: make_galaxy(inclination=60), u.UnitTypeError, "inclination"),
    (lambda: make_galaxy(position_angle=np.nan * u.deg), ValueError, "position_angle"),
    (lambda: make_galaxy(flux=30 * u.Jy), u.UnitsError, "flux"),
    (lambda: make_galaxy(flux=-1 * JYKMS), ValueError, "flux"),
    (lambda: make_galaxy(dispersion=-1 * KMS), ValueError, "dispersion"),
    (lambda: make_galaxy(v_sys=np.inf * KMS), ValueError, "v_sys"),
    (lambda: make_galaxy(offset=(0, 0, 0) * u.arcsec), ValueError, "offset"),
    (lambda: make_galaxy(distance=-3 * u.Mpc), ValueError, "distance"),
    (lambda: make_galaxy(distance=3 * u.Mpc, redshift=0.1), ValueError, "distance"),
    (lambda: grid(shape=(0, 16, 16)), ValueError, "shape"),
    (lambda: grid(shape=(8, 16)), ValueError, "shape"),
    (lambda: grid(shape=(8.5, 16, 16)), ValueError, "shape"),
    (lambda: grid(shape=(100000, 100000, 100000)), ValueError, "shape"),
    (lambda: grid(pixel_scale=0 * u.arcsec), ValueError, "pixel_scale"),
    (lambda: grid(pixel_scale=1 * u.km), u.UnitsError, "pixel_scale"),
    (lambda: grid(channel_width=0 * KMS), ValueError, "channel_width"),
    (lambda: grid(channel_width=20 * u.GHz), u.UnitsError, "channel_width"),
    (lambda: grid(beam=Beam(0 * u.arcsec)), ValueError, "beam"),
    (lambda: grid(beam=-2 * u.arcsec), ValueError, "beam"),
    (lambda: grid(beam="big"), TypeError, "beam"),
    (lambda: grid(rest_frequency=-1 * u.GHz), ValueError, "rest_frequency"),
]


@pytest.mark.parametrize("factory, exc, word", BAD_INPUTS)
def test_bad_input_raises_named_error(factory, exc, word):
    with pytest.raises(exc, match=word):
        factory()


def test_physical_size_without_distance_is_refused(small_grid):
    galaxy = make_galaxy(surface=gcc.SersicDisk(r_eff=5 * u.kpc, n=1))
    with pytest.raises(ValueError, match="r_eff.*distance or a redshift"):
        gcc.render(galaxy, small_grid)


def test_physical_size_with_distance_equals_angle(small_grid):
    """5 kpc at 20 Mpc is the same galaxy as 51.566 arcsec."""
    kpc = make_galaxy(surface=gcc.SersicDisk(r_eff=0.5 * u.kpc, n=1), distance=20 * u.Mpc)
    ang = make_galaxy(surface=gcc.SersicDisk(
        r_eff=(0.5 * u.kpc / (20 * u.Mpc)).to(u.arcsec, u.dimensionless_angles()), n=1))
    assert kpc.tensors()["r_eff"].item() == pytest.approx(ang.tensors()["r_eff"].item(), rel=1e-6)


def test_redshift_uses_planck18_angular_diameter_distance():
    from astropy.cosmology import Planck18
    g = make_galaxy(surface=gcc.SersicDisk(r_eff=5 * u.kpc, n=1), redshift=1.0)
    expected = (5 * u.kpc / Planck18.angular_diameter_distance(1.0)).to(
        u.arcsec, u.dimensionless_angles())
    assert g.tensors()["r_eff"].item() == pytest.approx(expected.value, rel=1e-6)


def test_scene_distance_applies_to_galaxies_without_one():
    g = make_galaxy(surface=gcc.SersicDisk(r_eff=1 * u.kpc, n=1))
    near = make_galaxy(surface=gcc.SersicDisk(r_eff=1 * u.kpc, n=1), distance=1 * u.Mpc)
    scene = gcc.Scene([g, near], distance=10 * u.Mpc)
    r = [gal.tensors()["r_eff"].item() for gal in scene]
    assert r[0] == pytest.approx(20.6265, rel=1e-4)
    assert r[1] == pytest.approx(206.265, rel=1e-4)


def test_empty_render_is_refused(small_grid):
    with pytest.raises(ValueError, match="no galaxies"):
        gcc.render([], small_grid)
