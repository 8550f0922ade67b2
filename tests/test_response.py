"""Spectral responses (line-spread functions) as part of the observation."""
import astropy.units as u
import numpy as np
import pytest

import galcubecraft as gcc
from conftest import KMS, make_galaxy
from galcubecraft.response import GaussianLSF, Hanning


def grid(n_chan=40, center=0, response=None, width=20):
    return gcc.CubeGrid(shape=(n_chan, 40, 40), pixel_scale=1 * u.arcsec,
                        channel_width=width * KMS, beam=3 * u.arcsec,
                        velocity_center=center * KMS, spectral_response=response)


def spectrum_moments(cube, grid):
    spec = cube.unitless_filled_data[:].astype(float).sum(axis=(1, 2))
    v = grid.spectral_axis.to_value(KMS)
    mean = (spec * v).sum() / spec.sum()
    return spec.sum(), (spec * (v - mean) ** 2).sum() / spec.sum()


@pytest.mark.parametrize("response", [Hanning(), GaussianLSF(fwhm=40 * KMS),
                                      GaussianLSF(fwhm=90 * KMS)])
def test_response_keeps_flux_and_adds_its_variance(response):
    """Convolution adds the kernel's variance to the line's, and keeps its flux."""
    galaxy = make_galaxy()
    plain, smoothed = grid(), grid(response=response)
    flux0, var0 = spectrum_moments(gcc.render(galaxy, plain), plain)
    flux1, var1 = spectrum_moments(gcc.render(galaxy, smoothed), smoothed)
    w = response.kernel(20 * KMS)
    k = np.arange(len(w)) - (len(w) - 1) / 2
    kernel_var = (w * k**2).sum() * 20.0**2
    assert flux1 == pytest.approx(flux0, rel=1e-5)
    assert var1 - var0 == pytest.approx(kernel_var, rel=2e-3)


def test_kernels():
    np.testing.assert_allclose(Hanning().kernel(20 * KMS), [0.25, 0.5, 0.25])
    w = GaussianLSF(fwhm=40 * KMS).kernel(20 * KMS)
    assert len(w) % 2 == 1 and w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(w, w[::-1])
    sigma = 40 / np.sqrt(8 * np.log(2)) / 20
    k = np.arange(len(w)) - (len(w) - 1) / 2
    # a Gaussian integrated over each channel: variance sigma^2 + 1/12 (channels^2)
    assert (w * k**2).sum() == pytest.approx(sigma**2 + 1 / 12, rel=1e-3)


def test_band_edges_see_the_line_beyond_the_band():
    """A narrow band equals the same channels of a wide band: the response reaches across the
    band's edges because the projector renders the channels beyond it."""
    galaxy = make_galaxy()
    wide = gcc.render(galaxy, grid(n_chan=40, response=GaussianLSF(fwhm=60 * KMS)))
    # channels 10..19 of the wide band (centres -190 .. -10 km/s)
    narrow = gcc.render(galaxy, grid(n_chan=10, center=-100,
                                     response=GaussianLSF(fwhm=60 * KMS)))
    wide = wide.unitless_filled_data[:]
    np.testing.assert_allclose(narrow.unitless_filled_data[:], wide[10:20], rtol=1e-4,
                               atol=1e-6 * float(np.nanmax(wide)))


def test_bad_responses():
    with pytest.raises(TypeError, match="spectral_response"):
        grid(response="hanning")
    with pytest.raises(ValueError, match="fwhm"):
        GaussianLSF(fwhm=-5 * KMS)
    with pytest.raises(u.UnitsError):
        GaussianLSF(fwhm=2 * u.arcsec)
