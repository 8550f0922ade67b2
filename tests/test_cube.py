"""Output contract: SpectralCube with the grid's WCS and beam; FITS that CASA, CARTA and
spectral-cube read."""
import os

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from radio_beam import Beam
from spectral_cube import SpectralCube

import galcubecraft as gcc
from conftest import casatools_or_skip, KMS
from fits_rules import assert_valid_cube


@pytest.fixture
def cube(small_grid, galaxy):
    return gcc.render(galaxy, small_grid)


def test_output_contract(cube, small_grid):
    assert isinstance(cube, SpectralCube)
    assert cube.unit == u.Jy / u.beam
    assert cube.beam == small_grid.beam
    assert cube.shape == small_grid.shape
    assert cube.wcs.wcs.compare(small_grid.wcs.wcs)
    np.testing.assert_allclose(cube.spectral_axis.to_value(KMS),
                               small_grid.spectral_axis.to_value(KMS))
    # the field centre is at the grid's centre
    ra, dec = cube.wcs.celestial.pixel_to_world_values((small_grid.shape[2] - 1) / 2,
                                                       (small_grid.shape[1] - 1) / 2)
    assert ra == pytest.approx(150) and dec == pytest.approx(2)


def test_beam_free_cube_is_jy_per_pixel(galaxy):
    grid = gcc.CubeGrid(shape=(8, 16, 16), pixel_scale=1 * u.arcsec, channel_width=40 * KMS)
    cube = gcc.render(galaxy, grid)
    assert cube.unit == u.Jy / u.pix


def test_fits_round_trip_through_spectral_cube(cube, tmp_path):
    path = tmp_path / "galaxy.fits"
    cube.write(path)
    header = fits.getheader(path)
    assert header["BUNIT"] == "Jy/beam"
    assert header["CTYPE3"] == "VRAD" and header["SPECSYS"] == "LSRK"
    assert header["RESTFRQ"] == pytest.approx(115.2712018e9)
    for key in ("BMAJ", "BMIN", "BPA", "RADESYS"):
        assert key in header
    back = SpectralCube.read(path)
    assert back.unit == u.Jy / u.beam
    assert back.beam == cube.beam
    np.testing.assert_array_equal(back.unitless_filled_data[:], cube.unitless_filled_data[:])
    np.testing.assert_allclose(back.spectral_axis.to_value(KMS), cube.spectral_axis.to_value(KMS),
                               rtol=0, atol=1e-9)
    freq = back.with_spectral_unit(u.GHz, velocity_convention="radio").spectral_axis
    expected = (cube.spectral_axis).to(u.GHz, u.doppler_radio(115.2712018 * u.GHz))
    np.testing.assert_allclose(freq.to_value(u.GHz), expected.to_value(u.GHz), rtol=1e-12)


def test_shared_validator_passes(cube, tmp_path):
    path = tmp_path / "galaxy.fits"
    cube.write(path)
    assert_valid_cube(str(path))


@pytest.mark.parametrize("change, rule", [
    (lambda h: h.set("BUNIT", "Jy beam-1"), "Jy/beam spelled for casacore"),
    (lambda h: h.remove("BMIN"), "header: BMIN"),
    (lambda h: h.remove("CUNIT3"), "header: axis 3 keywords"),
    (lambda h: h.remove("RESTFRQ"), "RESTFRQ"),
    (lambda h: h.set("CTYPE3", "VELO-LSR"), "FITS-standard spectral type"),
])
def test_the_fits_rules_catch_what_casa_would_misread(cube, tmp_path, change, rule):
    """Each rule fails on the header mistake it exists for (the rules can fail)."""
    path = tmp_path / "galaxy.fits"
    cube.write(path)
    with fits.open(path, mode="update") as hdul:
        change(hdul[0].header)
    with pytest.raises(AssertionError, match=rule):
        assert_valid_cube(str(path))


def test_casatools_reads_the_beam_and_unit(cube, tmp_path):
    casatools = casatools_or_skip()
    path = tmp_path / "galaxy.fits"
    cube.write(path)
    ia = casatools.image()
    ia.open(str(path))
    try:
        assert ia.brightnessunit() == "Jy/beam"
        assert ia.restoringbeam()["major"]["value"] == pytest.approx(3.0)
    finally:
        ia.close()


def test_write_refuses_to_overwrite(cube, tmp_path):
    path = tmp_path / "galaxy.fits"
    cube.write(path)
    with pytest.raises(FileExistsError):
        cube.write(path)
    cube.write(path, overwrite=True)


def test_interrupted_write_leaves_nothing_half_written(cube, tmp_path, monkeypatch):
    path = tmp_path / "galaxy.fits"
    path.write_bytes(b"previous")

    def explode(self, name, *args, **kwargs):
        with open(name, "wb") as fh:
            fh.write(b"SIMPLE  =                    T" + b" " * 100)
        raise KeyboardInterrupt("interrupted")

    monkeypatch.setattr(fits.PrimaryHDU, "writeto", explode)
    with pytest.raises(KeyboardInterrupt):
        cube.write(path, overwrite=True)
    assert path.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["galaxy.fits"]


def test_non_finite_data_is_refused(small_grid):
    data = np.zeros(small_grid.shape)
    data[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        gcc.to_spectral_cube(data, small_grid)


def test_elliptical_beam_written_and_read(galaxy, tmp_path):
    beam = Beam(5 * u.arcsec, 3 * u.arcsec, 25 * u.deg)
    grid = gcc.CubeGrid(shape=(12, 32, 32), pixel_scale=1 * u.arcsec, channel_width=50 * KMS,
                        beam=beam)
    path = tmp_path / "ell.fits"
    gcc.render(galaxy, grid).write(path)
    back = SpectralCube.read(path)
    assert back.beam.major.to_value(u.arcsec) == pytest.approx(5)
    assert back.beam.minor.to_value(u.arcsec) == pytest.approx(3)
    assert back.beam.pa.to_value(u.deg) == pytest.approx(25)
