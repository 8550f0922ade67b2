"""Galaxies at high redshift: distances, observed frequencies, line widths, luminosities."""
import astropy.constants as const
import astropy.units as u
import numpy as np
import pytest
from astropy.cosmology import Planck18

import galcubecraft as gcc
from conftest import JYKMS, KMS
from galcubecraft.lines import (line_flux_from_gas_mass, line_flux_from_luminosity,
                                line_luminosity, rest_frequency)

C_KMS = const.c.to_value(KMS)


def distant_galaxy(**kw):
    args = dict(surface=gcc.SersicDisk(r_eff=3 * u.kpc, n=1),
                kinematics=gcc.FlatRotationCurve(v_flat=250 * KMS), inclination=0 * u.deg,
                position_angle=0 * u.deg, flux=1 * JYKMS, dispersion=60 * KMS, redshift=4.0)
    args.update(kw)
    return gcc.Galaxy(**args)


def test_a_galaxy_at_z4_has_the_angular_size_astropy_predicts():
    galaxy = distant_galaxy()
    expected = (3 * u.kpc / Planck18.angular_diameter_distance(4.0)).to(
        u.arcsec, u.dimensionless_angles())
    assert galaxy.tensors()["r_eff"].item() == pytest.approx(expected.value, rel=1e-6)
    # and the rendered image: half the flux within r_eff (face-on, no beam, fine pixels)
    grid = gcc.CubeGrid(shape=(24, 96, 96), pixel_scale=0.04 * u.arcsec,
                        channel_width=40 * KMS, rest_frequency="CO(4-3)", redshift=4.0)
    image = gcc.render(galaxy, grid).unitless_filled_data[:].sum(axis=0)
    east, north = grid.sky_offsets().to_value(u.arcsec)
    inside = np.hypot(east, north) <= expected.value
    assert image[inside].sum() / image.sum() == pytest.approx(0.5, abs=0.01)


def test_a_z4_line_lands_at_the_observed_frequency_with_its_physical_width():
    """f_obs = f0 / (1 + z); a dispersion sigma is sigma f_obs / c wide in frequency."""
    galaxy = distant_galaxy()
    assert galaxy.v_sys.to_value(KMS) == pytest.approx(C_KMS * 4 / 5)
    grid = gcc.CubeGrid(shape=(64, 32, 32), pixel_scale=0.2 * u.arcsec, channel_width=8 * KMS,
                        rest_frequency="CO(4-3)", spectral_type="FREQ", redshift=4.0)
    f0 = rest_frequency("CO(4-3)").to_value(u.Hz)
    cube = gcc.render(galaxy, grid)
    # summed in float64: a float32 sum of 65,536 voxels alone moves the centroid by 1e-7
    spectrum = cube.unitless_filled_data[:].astype(np.float64).sum(axis=(1, 2))
    freq = cube.spectral_axis.to_value(u.Hz)
    centre = np.sum(spectrum * freq) / spectrum.sum()
    assert centre == pytest.approx(f0 / 5, rel=1e-7)
    width = np.sqrt(np.sum(spectrum * (freq - centre) ** 2) / spectrum.sum())
    channel = abs(freq[1] - freq[0])
    expected = np.hypot(f0 / 5 * 60 / C_KMS, channel / np.sqrt(12))   # + the channel box
    assert width == pytest.approx(expected, rel=5e-3)


def test_radio_velocity_of_a_redshift_is_astropys_radio_doppler():
    f0 = rest_frequency("CO(3-2)")
    for z in (0.01, 0.5, 4.0, 7.0):
        v = (f0 / (1 + z)).to(KMS, equivalencies=u.doppler_radio(f0))
        assert gcc.radio_velocity(z).to_value(KMS) == pytest.approx(v.value, rel=1e-12)
    with pytest.raises(ValueError, match="redshift"):
        gcc.radio_velocity(-1.0)


def test_scene_redshift_sets_distance_and_systemic_velocity():
    free = distant_galaxy(redshift=None, surface=gcc.SersicDisk(r_eff=2 * u.kpc, n=1))
    fixed = distant_galaxy(redshift=None, v_sys=100 * KMS,
                           surface=gcc.SersicDisk(r_eff=2 * u.kpc, n=1))
    scene = gcc.Scene([free, fixed], redshift=2.0)
    assert scene.galaxies[0].v_sys.to_value(KMS) == pytest.approx(C_KMS * 2 / 3)
    assert scene.galaxies[1].v_sys.to_value(KMS) == pytest.approx(100)
    assert distant_galaxy(redshift=None, surface=gcc.SersicDisk(
        r_eff=1 * u.arcsec)).v_sys == 0 * KMS


def test_grid_centred_on_a_redshifted_line():
    grid = gcc.CubeGrid(shape=(9, 8, 8), pixel_scale=1 * u.arcsec, channel_width=10 * KMS,
                        rest_frequency="[CII]", redshift=6.0)
    assert grid.frequencies[4].to_value(u.GHz) == pytest.approx(1900.5369 / 7, rel=1e-12)
    with pytest.raises(ValueError, match="not both"):
        gcc.CubeGrid(shape=(9, 8, 8), pixel_scale=1 * u.arcsec, channel_width=10 * KMS,
                     redshift=1.0, velocity_center=5 * KMS)


def test_line_luminosity_follows_solomon_and_vanden_bout():
    """L' = 3.25e7 S dv nu_obs^-2 D_L^2 (1 + z)^-3 (K km/s pc^2; Jy km/s, GHz, Mpc)."""
    z, flux = 4.0, 0.8 * JYKMS
    nu_obs = rest_frequency("CO(4-3)").to_value(u.GHz) / (1 + z)
    d_l = Planck18.luminosity_distance(z).to_value(u.Mpc)
    rounded = 3.25e7 * 0.8 * nu_obs**-2 * d_l**2 * (1 + z) ** -3
    lum = line_luminosity(flux, z, "CO(4-3)")
    assert lum.unit.is_equivalent(u.K * KMS * u.pc**2)
    assert lum.value == pytest.approx(rounded, rel=2e-3)        # 3.25e7 is c^2/2k rounded
    assert line_flux_from_luminosity(lum, z, "CO(4-3)").to_value(JYKMS) == pytest.approx(0.8)
    # M_gas = alpha_CO L'_CO(1-0), L'_43 = r_41 L'_10
    mass = 4.3 * u.Msun / (u.K * KMS * u.pc**2) * lum / 0.4
    assert line_flux_from_gas_mass(mass, z, "CO(4-3)", r_j1=0.4).to_value(JYKMS) == \
        pytest.approx(0.8)
    with pytest.raises(u.UnitsError):
        line_luminosity(1 * u.Jy, z, "CO(4-3)")


@pytest.mark.parametrize("spectral_type", ["VRAD", "FREQ"])
@pytest.mark.parametrize("z", [0.01, 2.0, 6.0])
def test_gas_mass_to_flux_to_cube_and_back_is_exact_at_any_redshift(z, spectral_type, tmp_path):
    """A galaxy's flux is the observed-frame S dV of Solomon & Vanden Bout (2005): a gas mass
    turned into a line flux, rendered, and measured back as an observer does (spectral-cube's
    moment 0 in velocities relative to the line's observed frequency) gives the same mass, to
    1e-3, on velocity and frequency axes (it came back 1 + z times too large before)."""
    from spectral_cube import SpectralCube
    line, mass = "CO(3-2)", 1e10 * u.Msun
    flux = line_flux_from_gas_mass(mass, z, line, r_j1=0.6)
    galaxy = gcc.Galaxy(surface=gcc.SersicDisk(r_eff=1 * u.arcsec, n=1),
                        kinematics=gcc.FlatRotationCurve(v_flat=200 * KMS),
                        inclination=45 * u.deg, position_angle=20 * u.deg, flux=flux,
                        dispersion=30 * KMS, v_sys=gcc.radio_velocity(z))
    grid = gcc.CubeGrid(shape=(48, 64, 64), pixel_scale=0.2 * u.arcsec,
                        channel_width=20 * KMS / (1 + z), beam=0.5 * u.arcsec,
                        rest_frequency=line, redshift=z, spectral_type=spectral_type)
    path = tmp_path / "cube.fits"
    gcc.render(galaxy, grid).write(path)
    cube = SpectralCube.read(path)
    nu_obs = rest_frequency(line) / (1 + z)
    observed = cube.with_spectral_unit(KMS, velocity_convention="radio", rest_value=nu_obs)
    pixels_per_beam = float((cube.beam.sr / (0.2 * u.arcsec) ** 2).decompose())
    measured = float(np.nansum(observed.moment0().value)) / pixels_per_beam * JYKMS
    assert measured.to_value(JYKMS) == pytest.approx(flux.to_value(JYKMS), rel=1e-3)
    assert grid.integrated_flux(cube.unitless_filled_data[:]).to_value(JYKMS) == \
        pytest.approx(flux.to_value(JYKMS), rel=1e-3)
    lum = line_luminosity(measured, z, line)
    assert (4.3 * u.Msun / (u.K * KMS * u.pc**2) * lum / 0.6).to_value(u.Msun) == \
        pytest.approx(mass.to_value(u.Msun), rel=1e-3)
