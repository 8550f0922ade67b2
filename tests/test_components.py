"""Components: values, conventions and representations."""
import astropy.units as u
import numpy as np
import pytest
from scipy.special import gammaincinv

import galcubecraft as gcc
from conftest import KMS, JYKMS


def test_analytic_rotation_curve_is_the_seed_law():
    """v = v0 * 1.022 * (R / R0)^0.0803 with R0 = 2 R_e / b_n^n (GalCubeCraft 0.1.0)."""
    rc = gcc.AnalyticRotationCurve(v_0=200 * KMS)
    r = np.array([0.5, 1, 5, 20]) * u.kpc
    n, r_eff = 1.3, 4 * u.kpc
    r0 = 2 * r_eff / gammaincinv(2 * n, 0.5) ** n
    expected = 200 * 1.022 * (r / r0).to_value(u.one) ** 0.0803
    np.testing.assert_allclose(rc(r, r_eff=r_eff, n=n).to_value(KMS), expected, rtol=1e-10)
    explicit = gcc.AnalyticRotationCurve(v_0=200 * KMS, r_0=r0)
    np.testing.assert_allclose(explicit(r).to_value(KMS), expected, rtol=1e-10)
    with pytest.raises(ValueError, match="r_eff and n"):
        rc(r)


def test_arctan_and_flat_curves():
    rc = gcc.ArctanRotationCurve(v_max=200 * KMS, r_turn=2 * u.kpc)
    np.testing.assert_allclose(rc([0, 2, 1e6] * u.kpc).to_value(KMS), [0, 100, 200], atol=1e-3)
    flat = gcc.FlatRotationCurve(v_flat=150 * KMS)
    np.testing.assert_allclose(flat([0.1, 10] * u.arcsec).to_value(KMS), 150)
    with pytest.raises(u.UnitsError):
        rc([1, 2] * u.arcsec)   # angles against a curve given in kpc


def test_tabulated_curve_interpolates_and_stays_flat():
    rc = gcc.TabulatedRotationCurve([1, 2, 4] * u.arcsec, [100, 150, 160] * KMS)
    np.testing.assert_allclose(rc([0, 0.5, 3, 100] * u.arcsec).to_value(KMS), [0, 50, 155, 160])


@pytest.mark.parametrize("law", [
    gcc.AnalyticRotationCurve(v_0=200 * KMS),
    gcc.AnalyticRotationCurve(v_0=180 * KMS, r_0=3 * u.arcsec),
    gcc.ArctanRotationCurve(v_max=200 * KMS, r_turn=2 * u.arcsec),
    gcc.FlatRotationCurve(v_flat=150 * KMS),
    gcc.TabulatedRotationCurve([1, 2, 4] * u.arcsec, [100, 150, 160] * KMS),
])
def test_closed_form_slopes_equal_the_derivative_of_the_law(law):
    """The slope the projector uses for the velocity spread is dv/dR of the law itself."""
    import torch
    galaxy = gcc.Galaxy(surface=gcc.SersicDisk(r_eff=4 * u.arcsec, n=1.3), kinematics=law,
                        flux=1 * JYKMS, inclination=60 * u.deg, position_angle=0 * u.deg)
    params = galaxy.tensors(dtype=torch.float64)
    radius = torch.tensor([0.3, 1.3, 2.7, 5.0, 11.0], dtype=torch.float64)
    v, slope = law.circular_velocity_and_slope(radius, params)
    step = 1e-5
    numeric = (law.circular_velocity(radius + step, params)
               - law.circular_velocity(radius - step, params)) / (2 * step)
    np.testing.assert_allclose(v.numpy(), law.circular_velocity(radius, params).numpy())
    np.testing.assert_allclose(slope.numpy(), numeric.numpy(), rtol=1e-6, atol=1e-6)


def test_surface_brightness_integrates_to_flux():
    disk = gcc.SersicDisk(r_eff=3 * u.arcsec, n=2.0)
    r = np.linspace(0, 300, 300001) * u.arcsec
    sb = disk.surface_brightness(r, 10 * JYKMS)
    total = np.trapezoid((2 * np.pi * r * sb).to_value(JYKMS / u.arcsec), r.to_value(u.arcsec))
    assert total == pytest.approx(10, rel=1e-4)


def test_exponential_disk_is_sersic_n1():
    d = gcc.ExponentialDisk(scale_length=5 * u.arcsec)
    assert d.n == 1.0
    assert d.scale_length.to_value(u.arcsec) == pytest.approx(5)
    assert d.r_eff.to_value(u.arcsec) == pytest.approx(5 * gammaincinv(2, 0.5))


def test_reprs_show_units():
    assert repr(gcc.SersicDisk(r_eff=8.4 * u.arcsec, n=1.0)) == \
        "<SersicDisk(r_eff=8.4 arcsec, n=1.0)>"
    assert "km / s" in repr(gcc.ArctanRotationCurve(200 * KMS, 2 * u.arcsec))
    g = gcc.Galaxy(surface=gcc.SersicDisk(r_eff=1 * u.kpc), kinematics=gcc.FlatRotationCurve(
        100 * KMS), inclination=30 * u.deg, position_angle=0 * u.deg, flux=1 * JYKMS,
        distance=10 * u.Mpc)
    assert "distance=10.0 Mpc" in repr(g)


def test_components_compare_by_value():
    assert gcc.SersicDisk(1 * u.arcsec, 2) == gcc.SersicDisk(1 * u.arcsec, 2)
    assert gcc.SersicDisk(1 * u.arcsec, 2) != gcc.SersicDisk(1 * u.arcsec, 3)
