"""Line catalogue and frequency axes: names resolve, FREQ and VRAD cubes are the same cube."""

import astropy.constants as const
import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from spectral_cube import SpectralCube

import galcubecraft as gcc
from conftest import casatools_or_skip, KMS, make_galaxy
from galcubecraft.lines import LINES, rest_frequency
from fits_rules import assert_valid_cube


@pytest.mark.parametrize("name, expected", [
    ("CO(1-0)", 115.2712018 * u.GHz), ("co(3-2)", 345.7959899 * u.GHz),
    ("CO (2-1)", 230.538 * u.GHz), ("[CII]", 1900.5369 * u.GHz),
    ("HI", 1.420405751768 * u.GHz),
    ("Halpha", (const.c / (6564.614 * u.AA)).to(u.GHz)),
    ("[OIII]5007", (const.c / (5008.240 * u.AA)).to(u.GHz)),
])
def test_rest_frequencies(name, expected):
    assert u.isclose(rest_frequency(name), expected, rtol=1e-12)
    assert rest_frequency(name).unit == u.GHz


def test_co_ladder_is_a_slightly_stretched_rigid_rotor():
    """nu(J -> J-1) = 2 B J - 4 D J^3: a rigid rotor's harmonic ladder, pulled down by
    centrifugal distortion; B and D from CO(1-0) and CO(2-1) predict the rest to 1e-6."""
    nu1, nu2 = (rest_frequency(f"CO({j}-{j - 1})").to_value(u.GHz) for j in (1, 2))
    d = (2 * nu1 - nu2) / 24          # from nu1 = 2B - 4D, nu2 = 4B - 32D
    b = (nu1 + 4 * d) / 2
    assert 0 < d < 1e-5 * b
    for j in range(3, 11):
        nu = rest_frequency(f"CO({j}-{j - 1})").to_value(u.GHz)
        assert nu == pytest.approx(2 * b * j - 4 * d * j**3, rel=1e-6)


def test_unknown_line_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"CO\(3-2\)") as info:
        rest_frequency("CO(42-41)")
    assert "CO(42-41)" in str(info.value)
    with pytest.raises(TypeError):
        rest_frequency(115)
    assert len(LINES) >= 14


def grid(**kw):
    args = dict(shape=(24, 40, 40), pixel_scale=1 * u.arcsec, channel_width=20 * KMS,
                beam=3 * u.arcsec, velocity_center=50 * KMS, rest_frequency="CO(3-2)")
    args.update(kw)
    return gcc.CubeGrid(**args)


def test_grid_takes_a_line_name():
    assert u.isclose(grid().rest_frequency, 345.7959899 * u.GHz)
    assert grid().wcs.wcs.restfrq == pytest.approx(345.7959899e9)
    with pytest.raises(ValueError, match="spectral_type"):
        grid(spectral_type="VOPT")


@pytest.mark.parametrize("width", [20, -20])
def test_freq_and_vrad_cubes_are_the_same_cube(tmp_path, width):
    """Same data; spectral axes agree exactly after spectral-cube's radio conversion."""
    galaxy = make_galaxy(v_sys=50 * KMS)
    vrad = gcc.render(galaxy, grid(channel_width=width * KMS))
    freq = gcc.render(galaxy, grid(channel_width=width * KMS, spectral_type="FREQ"))
    np.testing.assert_array_equal(vrad.unitless_filled_data[:], freq.unitless_filled_data[:])
    path = tmp_path / "freq.fits"
    freq.write(path)
    header = fits.getheader(path)
    assert header["CTYPE3"] == "FREQ" and header["CUNIT3"] == "Hz"
    assert header["RESTFRQ"] == pytest.approx(345.7959899e9)
    # frequency falls as radio velocity rises
    assert np.sign(header["CDELT3"]) == -np.sign(width)
    read = SpectralCube.read(path).with_spectral_unit(KMS, velocity_convention="radio")
    np.testing.assert_allclose(read.spectral_axis.to_value(KMS),
                               vrad.spectral_axis.to_value(KMS), atol=1e-6)
    # the line is where the galaxy's systemic velocity puts it
    spec = read.unmasked_data[:].value.sum(axis=(1, 2))
    v = read.spectral_axis.to_value(KMS)
    assert (spec * v).sum() / spec.sum() == pytest.approx(50, abs=1.0)


def test_freq_cube_passes_the_shared_validator(tmp_path):
    path = tmp_path / "freq.fits"
    gcc.render(make_galaxy(), grid(spectral_type="FREQ")).write(path)
    assert_valid_cube(str(path))


def test_casa_reads_the_same_rest_frequency_and_beam_from_freq_and_vrad_cubes(tmp_path):
    casatools = casatools_or_skip()
    seen = []
    for spectral_type in ("VRAD", "FREQ"):
        path = tmp_path / f"{spectral_type}.fits"
        gcc.render(make_galaxy(), grid(spectral_type=spectral_type)).write(path)
        ia = casatools.image()
        ia.open(str(path))
        try:
            cs = ia.coordsys()
            rest = cs.restfrequency()
            beam = ia.restoringbeam()
            seen.append((rest["value"][0], rest["unit"], beam["major"]["value"],
                         beam["minor"]["value"], beam["positionangle"]["value"]))
            cs.done()
        finally:
            ia.close()
    assert seen[0] == pytest.approx(seen[1])
    assert seen[0][0] == pytest.approx(345.7959899e9) and seen[0][1] == "Hz"
