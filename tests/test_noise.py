"""Noise: rms, correlation length, reproducibility, and 0.1.0's beam conventions."""
import math

import astropy.units as u
import numpy as np
import pytest
import torch
from astropy.convolution import Gaussian2DKernel
from astropy.modeling import fitting, models
from radio_beam import Beam

from galcubecraft.noise import (apply_and_convolve_noise, apply_noise, beam_from_info,
                                convolve_beam, correlated_noise, peak_rms, white_noise)

FWHM = math.sqrt(8 * math.log(2))


def autocorrelation(noise):
    """Mean (over channels) normalised spatial autocorrelation, centred."""
    spec = np.fft.fft2(noise - noise.mean(axis=(-2, -1), keepdims=True))
    acf = np.fft.ifft2(np.abs(spec) ** 2).real.mean(axis=0)
    return np.fft.fftshift(acf / acf.flat[0])


def acf_fwhm(acf, half=12):
    """FWHMs (major, minor, pixels) and major-axis angle (deg from +x) of the ACF's centre,
    from a least-squares 2-D Gaussian fit (astropy.modeling)."""
    cy, cx = np.array(acf.shape) // 2
    patch = acf[cy - half:cy + half + 1, cx - half:cx + half + 1]
    y, x = np.mgrid[-half:half + 1, -half:half + 1]
    fit = fitting.LevMarLSQFitter()(models.Gaussian2D(1, 0, 0, 2, 2, 0.1), x, y, patch)
    sx, sy = abs(fit.x_stddev.value), abs(fit.y_stddev.value)
    theta = math.degrees(fit.theta.value)
    if sy > sx:
        sx, sy, theta = sy, sx, theta + 90
    return FWHM * sx, FWHM * sy, theta % 180


def test_white_noise_rms_within_2_percent():
    noise = white_noise((40, 128, 128), 0.3, seed=1)
    assert abs(noise.std() / 0.3 - 1) < 0.02
    assert abs(noise.mean()) < 0.01
    acf = autocorrelation(noise)
    assert abs(acf[64, 65]) < 0.01 and abs(acf[65, 64]) < 0.01


@pytest.mark.parametrize("beam_info", [[4, 4, 0], [3, 6, 30], [5, 3.5, -20]])
def test_correlated_noise_rms_and_beam_autocorrelation(beam_info):
    """rms within 2% of the target on a 40x128x128 cube; the ACF has the beam's FWHMs and PA."""
    rms = 0.05
    noise = correlated_noise((40, 128, 128), beam_info, rms, seed=3)
    assert abs(noise.std() / rms - 1) < 0.02
    major, minor, angle = acf_fwhm(autocorrelation(noise))
    beam = beam_from_info(beam_info)
    assert major == pytest.approx(beam.major.to_value(u.arcsec), rel=0.05)
    assert minor == pytest.approx(beam.minor.to_value(u.arcsec), rel=0.05)
    if beam.major > beam.minor * 1.2:
        # the major axis, counter-clockwise from +x, is 0.1.0's theta (or theta + 90 when
        # bmin > bmaj was given)
        theta = beam_info[2] if beam_info[1] >= beam_info[0] else beam_info[2] + 90
        diff = (angle - theta + 90) % 180 - 90
        assert abs(diff) < 3


def test_convolving_with_the_beam_itself_is_sqrt2_wider():
    """Why the filter is sqrt(beam): 0.1.0's convolution by the beam gives an ACF sqrt(2) wider."""
    white = white_noise((20, 128, 128), 1.0, seed=4)
    seed_style = convolve_beam(white, [4, 4, 0])
    major, minor, _ = acf_fwhm(autocorrelation(seed_style), half=16)
    assert major == pytest.approx(4 * math.sqrt(2), rel=0.05)


def test_apply_noise_uses_the_peak_snr_and_is_reproducible():
    cube = np.zeros((20, 64, 64))
    cube[10, 32, 32] = 2.0
    noisy = apply_noise(cube, peak_snr=10, seed=7)
    assert noisy.shape == cube.shape
    assert abs((noisy - cube).std() / 0.2 - 1) < 0.02
    np.testing.assert_array_equal(noisy, apply_noise(cube, 10, seed=7))
    assert not np.array_equal(noisy, apply_noise(cube, 10, seed=8))
    noisy_b = apply_and_convolve_noise(cube, [4, 4, 0], 10, seed=7)
    assert abs((noisy_b - cube).std() / 0.2 - 1) < 0.05
    np.testing.assert_array_equal(noisy_b, apply_and_convolve_noise(cube, [4, 4, 0], 10, seed=7))


def test_noise_keeps_the_input_kind():
    cube = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    assert apply_noise(cube, 5, seed=0).dtype == np.float32
    q = apply_noise(cube * u.Jy / u.beam, 5, seed=0)
    assert q.unit == u.Jy / u.beam
    t = apply_and_convolve_noise(torch.from_numpy(cube), [3, 3, 0], 5, seed=0)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32


@pytest.mark.parametrize("snr", [0, -1, float("nan"), float("inf")])
def test_bad_snr_raises(snr):
    with pytest.raises(ValueError, match="peak_snr"):
        apply_noise(np.ones((2, 4, 4)), snr)


def test_empty_cube_has_no_peak_snr():
    with pytest.raises(ValueError, match="peak"):
        peak_rms(np.zeros((2, 4, 4)), 10)


def test_bad_seed_raises():
    with pytest.raises(TypeError, match="seed"):
        white_noise((2, 2), 1.0, seed="seven")
    with pytest.raises(ValueError, match="seed"):
        white_noise((2, 2), 1.0, seed=-1)


def test_beam_info_matches_0p1_kernel_orientation():
    """beam_from_info's Beam gives 0.1.0's Gaussian2DKernel(bmaj, bmin, theta)."""
    bmin, bmaj, theta = 3.0, 6.0, 30.0
    seed_kernel = Gaussian2DKernel(bmaj / FWHM, bmin / FWHM, math.radians(theta),
                                   x_size=41, y_size=41).array
    beam = beam_from_info([bmin, bmaj, theta])
    assert beam.major == 6 * u.arcsec and beam.minor == 3 * u.arcsec
    ours = beam.as_kernel(1 * u.arcsec, x_size=41, y_size=41).array
    np.testing.assert_allclose(ours / ours.sum(), seed_kernel / seed_kernel.sum(), atol=1e-4)


def test_beam_info_forms():
    assert beam_from_info(5) == Beam(5 * u.arcsec)
    swapped = beam_from_info([6, 3, 10])  # bmin > bmaj: the major axis is along theta + 90
    assert swapped.major == 6 * u.arcsec and swapped.minor == 3 * u.arcsec
    assert u.isclose(swapped.pa, 10 * u.deg)
    assert beam_from_info([2, 2, 0], 0.5 * u.arcsec).major == 1 * u.arcsec
    b = Beam(2 * u.arcsec)
    assert beam_from_info(b) is b


def test_convolve_beam_point_source_is_its_flux_per_beam():
    """A point source of S Jy (one pixel) becomes a peak of S Jy/beam, and flux is conserved."""
    cube = np.zeros((1, 65, 65))
    cube[0, 32, 32] = 3.0
    out = convolve_beam(cube, [6, 6, 0])
    area = math.pi * 6 * 6 / (4 * math.log(2))
    assert out.sum() / area == pytest.approx(3.0, rel=1e-9)
    assert out[0, 32, 32] == pytest.approx(3.0, rel=0.01)
