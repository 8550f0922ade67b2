"""Spectral responses of the instrument: what a channel sees of a spectrally narrow line.

The projector integrates the line exactly over each channel (a box); a response adds the
correlator's or spectrograph's line-spread function on top, as a convolution along the
channel axis.  A response is part of the observation: give it to
`~galcubecraft.CubeGrid` as ``spectral_response``.  The model is rendered as many channels
beyond each end of the band as the kernel reaches, so the convolution is exact at the band
edges too.
"""
import math

import astropy.units as u
import numpy as np
from scipy.special import erf

from .units import FWHM_PER_SIGMA, validate_number, validate_velocity

__all__ = ["SpectralResponse", "GaussianLSF", "SampledGaussian", "Hanning"]


class SpectralResponse:
    """Base class: a unit-sum kernel over whole channels, odd length, centred."""

    def kernel(self, channel_width):
        """Kernel weights (numpy, odd length, unit sum) for channels of ``channel_width``."""
        raise NotImplementedError

    def half_width(self, channel_width):
        """Channels the kernel reaches beyond its centre."""
        return (len(self.kernel(channel_width)) - 1) // 2


class GaussianLSF(SpectralResponse):
    """A Gaussian line-spread function of the given FWHM (velocity).

    The weights are the Gaussian integrated over each channel (erf
    differences), out to ``truncate`` sigma, then normalised to unit sum.
    """

    def __init__(self, fwhm, truncate=5.0):
        self.fwhm = validate_velocity("fwhm", fwhm, positive=True)
        self.truncate = float(truncate)

    def kernel(self, channel_width):
        width = abs(u.Quantity(channel_width).to_value(u.km / u.s))
        sigma = self.fwhm.to_value(u.km / u.s) / FWHM_PER_SIGMA / width   # in channels
        half = max(1, int(math.ceil(self.truncate * sigma)))
        edges = (np.arange(-half, half + 2) - 0.5) / (math.sqrt(2) * sigma)
        w = 0.5 * np.diff(erf(edges))
        return w / w.sum()

    def __repr__(self):
        return f"<GaussianLSF fwhm={self.fwhm}>"


class SampledGaussian(SpectralResponse):
    """A Gaussian of ``sigma`` *channels* sampled at channel centres, out to ``truncate`` sigma
    and normalised: the kernel of `scipy.ndimage.gaussian_filter1d`, which GalCubeCraft 0.1.0
    applies to its cubes with sigma = 0.6 channel."""

    def __init__(self, sigma, truncate=4.0):
        self.sigma = validate_number("sigma", sigma, positive=True)
        self.truncate = float(truncate)

    def kernel(self, channel_width):
        half = int(math.ceil(self.truncate * self.sigma))
        w = np.exp(-0.5 * (np.arange(-half, half + 1) / self.sigma) ** 2)
        return w / w.sum()

    def __repr__(self):
        return f"<SampledGaussian sigma={self.sigma} channels>"


class Hanning(SpectralResponse):
    """Hanning smoothing (weights 1/4, 1/2, 1/4 over adjacent channels), as ALMA's correlator
    applies it.  It correlates the noise of neighbouring channels and widens a narrow line to
    an effective resolution of about two channels."""

    def kernel(self, channel_width):
        return np.array([0.25, 0.5, 0.25])

    def __repr__(self):
        return "<Hanning>"
