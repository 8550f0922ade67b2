"""Noise for synthetic cubes: white, or correlated by the beam as in an interferometric image.

The two functions of GalCubeCraft 0.1.0's ``utils`` keep their names and meaning:

* `apply_noise` adds white Gaussian noise whose rms is the cube's peak over
  ``peak_snr``;
* `apply_and_convolve_noise` adds noise with the same rms that is spatially
  correlated by the beam.

What changed, and why (see the migration page of the docs):

* Randomness comes from an explicit ``seed`` (an int, a
  `numpy.random.SeedSequence` or a `numpy.random.Generator`), never from
  numpy's global state, so a call is reproducible on its own.
* Beam-correlated noise has the autocorrelation of the *beam*: white noise is
  filtered by the square root of the beam's transfer function (a Gaussian of
  FWHM/√2), so the noise's autocorrelation function is the beam itself, as
  for the thermal noise of an interferometric image.  GalCubeCraft 0.1.0
  convolved with the beam, which gives an autocorrelation √2 wider than the
  beam.  The filter is periodic (FFT), so the noise is stationary up to the
  cube's edges (0.1.0 zero-padded, which lowered the noise near the edges).
* The rms is exact in expectation (the filter's power is computed, not
  measured on the realisation), so a cube's noise is a fair draw and its
  measured rms scatters about the target as real noise does.
"""
import math
import numbers

import astropy.units as u
import numpy as np
import torch
from radio_beam import Beam

from . import functional as F
from .grid import beam_in_pixels
from .units import validate_number, validate_quantity

__all__ = ["rng_from_seed", "beam_from_info", "peak_rms", "white_noise", "white_normals",
           "correlated_noise", "apply_noise", "apply_and_convolve_noise", "convolve_beam",
           "NoiseModel", "noise_levels"]


def rng_from_seed(seed):
    """A `numpy.random.Generator` from an int, a SeedSequence, a Generator or None."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(seed, numbers.Integral) and seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        return np.random.default_rng(seed)
    raise TypeError(f"seed must be an int, a numpy SeedSequence or Generator, or None, "
                    f"got {seed!r}")


def beam_from_info(beam_info, pixel_scale=1 * u.arcsec):
    """A `radio_beam.Beam` from GalCubeCraft 0.1.0's ``beam_info``.

    Parameters
    ----------
    beam_info : sequence of 3 floats, float, or `radio_beam.Beam`
        ``[bmin, bmaj, theta]``: minor and major FWHM in pixels and the angle
        of the major axis in degrees counter-clockwise from the +x (column)
        axis, as 0.1.0 uses them; a single number is a circular FWHM in
        pixels.  A `~radio_beam.Beam` is returned unchanged.
    pixel_scale : `~astropy.units.Quantity` [angle]
        Angular size of a pixel.

    Notes
    -----
    With east to the left and north up, an axis at ``theta`` counter-clockwise
    from +x (west) has the sky position angle ``theta + 90 deg`` (east of north).
    ``bmin > bmaj`` is accepted and means the major axis lies along ``theta + 90 deg``.
    """
    if isinstance(beam_info, Beam):
        return beam_info
    pixel_scale = validate_quantity("pixel_scale", pixel_scale, u.arcsec, positive=True)
    if isinstance(beam_info, numbers.Real):
        bmin = bmaj = beam_info
        theta = 0.0
    else:
        try:
            bmin, bmaj, theta = (float(v) for v in beam_info)
        except (TypeError, ValueError):
            raise ValueError(f"beam_info must be [bmin_px, bmaj_px, theta_deg] or one FWHM in "
                             f"pixels, got {beam_info!r}") from None
    bmin = validate_number("beam_info bmin", bmin, positive=True)
    bmaj = validate_number("beam_info bmaj", bmaj, positive=True)
    theta = validate_number("beam_info theta", theta)
    pa = theta + 90.0
    if bmin > bmaj:
        bmin, bmaj, pa = bmaj, bmin, theta
    pa = pa % 180.0
    return Beam(major=bmaj * pixel_scale, minor=bmin * pixel_scale, pa=pa * u.deg)


def _as_array(cube, name="cube"):
    """(array as float numpy/torch, back-converter)."""
    if isinstance(cube, torch.Tensor):
        data = cube.detach()
        if data.ndim < 2:
            raise ValueError(f"{name} must have at least 2 dimensions, got shape "
                             f"{tuple(data.shape)}")
        return data.cpu().double().numpy(), (
            lambda a: torch.as_tensor(a, dtype=cube.dtype, device=cube.device))
    unit = None
    if isinstance(cube, u.Quantity):
        unit, cube = cube.unit, cube.value
    data = np.asarray(cube)
    if data.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.floating):
        data = data.astype(float)
    dtype = data.dtype
    if unit is None:
        return data, lambda a: a.astype(dtype, copy=False)
    return data, lambda a: u.Quantity(a.astype(dtype, copy=False), unit)


def peak_rms(cube, peak_snr):
    """Noise rms that gives the cube's peak the signal-to-noise ``peak_snr``."""
    data, _ = _as_array(cube)
    peak_snr = validate_number("peak_snr", peak_snr, positive=True)
    peak = float(np.max(data))
    if not np.isfinite(peak) or peak <= 0:
        raise ValueError(f"the cube's peak must be positive and finite to set a peak S/N, "
                         f"got {peak}")
    return peak / peak_snr


def white_noise(shape, rms, seed=None):
    """Independent Gaussian noise of standard deviation ``rms`` (a float array)."""
    rms = validate_number("rms", rms, minimum=0)
    return rng_from_seed(seed).standard_normal(shape) * rms


def white_normals(shape, seeds, device=None, dtype=torch.float64):
    """Standard normal draws ``(len(seeds), *shape)``, the ``k``-th from ``seeds[k]`` alone.

    On the CPU each comes from its `numpy.random.Generator` (`rng_from_seed`), so a cube's
    noise is the same whether it is drawn alone or in a batch.  On another device each is drawn
    there by torch's generator (Philox on CUDA), seeded from its own generator: the same for
    the same seeds on that device, with no round trip through the host, but not the CPU's
    draws.
    """
    shape = tuple(int(s) for s in shape)
    device = torch.device(device or "cpu")
    rngs = [rng_from_seed(seed) for seed in seeds]
    if device.type == "cpu":
        return torch.from_numpy(np.stack([rng.standard_normal(shape) for rng in rngs])
                                if rngs else np.zeros((0,) + shape)).to(dtype)
    out = torch.empty((len(rngs),) + shape, device=device, dtype=dtype)
    for k, rng in enumerate(rngs):
        generator = torch.Generator(device=device)
        generator.manual_seed(int(rng.integers(2**63 - 1)))
        out[k] = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return out


def _sqrt_beam_filter(shape, beam_pixels):
    """Real-space periodic kernel whose autocorrelation is the beam (unit-sum Gaussian)."""
    sig_maj, sig_min, angle = beam_pixels
    transfer = F.beam_transfer_function(shape, sig_maj, sig_min, angle, dtype=torch.float64)
    return torch.sqrt(transfer)


def _mean_power(spectrum, nx):
    """Mean of ``|spectrum|**2`` over each full 2-D spectrum, from its ``rfft2`` half,
    summed over any leading (plane) axes.

    The rfft2 bins with ``0 < kx < nx / 2`` stand for two bins each.  For a filter's
    transfer function this is the variance it gives unit white noise; for the
    transform of an image, the sum of the image's squares (Parseval).
    """
    return float((spectrum.abs() ** 2 * _rfft_weights(nx)).sum()) / (spectrum.shape[-2] * nx)


def _rfft_weights(nx):
    """How many bins of a full spectrum each ``rfft`` bin of a row of ``nx`` stands for: two
    for ``0 < kx < nx / 2``, one for ``kx = 0`` and (``nx`` even) the Nyquist bin."""
    weight = torch.full((nx // 2 + 1,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if nx % 2 == 0:
        weight[-1] = 1.0
    return weight


def correlated_noise(shape, beam, rms, seed=None, pixel_scale=1 * u.arcsec):
    """Gaussian noise of rms ``rms`` whose spatial autocorrelation is the beam.

    Parameters
    ----------
    shape : tuple of int
        ``(..., ny, nx)``; each image plane (channel) gets independent noise.
    beam : `radio_beam.Beam` or GalCubeCraft 0.1.0 ``beam_info``
        The beam; ``beam_info`` is in pixels, a `~radio_beam.Beam` is
        converted with ``pixel_scale``.
    rms : float
        Standard deviation of the noise (expected value, exact).
    seed : int, `numpy.random.SeedSequence`, `numpy.random.Generator` or None
        Source of randomness.
    pixel_scale : `~astropy.units.Quantity` [angle]
        Pixel size, to express a `~radio_beam.Beam` in pixels.

    Notes
    -----
    White noise is filtered by ``sqrt(B(k))``, ``B`` the beam's transfer
    function, with periodic FFTs over the image plane: the result is stationary
    and its autocorrelation is ``rms**2 * beam / beam_peak``.  The scale that
    turns unit white noise into unit-rms filtered noise is the filter's power,
    ``sqrt(mean |H|^2)``, computed exactly.
    """
    rms = validate_number("rms", rms, minimum=0)
    beam = beam_from_info(beam, pixel_scale)
    pixel = validate_quantity("pixel_scale", pixel_scale, u.arcsec, positive=True)
    beam_pixels = beam_in_pixels(beam, pixel)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape must be (..., ny, nx) with positive sizes, got {shape}")
    ny, nx = shape[-2:]
    white = torch.from_numpy(rng_from_seed(seed).standard_normal(shape))
    filt = _sqrt_beam_filter((ny, nx), beam_pixels)
    power = _mean_power(filt, nx)
    noise = torch.fft.irfft2(torch.fft.rfft2(white) * filt, s=(ny, nx))
    return (noise * (rms / math.sqrt(power))).numpy()


def apply_noise(cube, peak_snr, seed=None):
    """Add white Gaussian noise of rms ``max(cube) / peak_snr`` (GalCubeCraft 0.1.0 name).

    Accepts a numpy array, a `~astropy.units.Quantity` or a torch tensor and
    returns the same kind.  ``seed`` makes the draw reproducible.
    """
    data, back = _as_array(cube)
    rms = peak_rms(data, peak_snr)
    return back(data + white_noise(data.shape, rms, seed))


def apply_and_convolve_noise(cube, beam_info, peak_snr, seed=None):
    """Add beam-correlated noise of rms ``max(cube) / peak_snr`` (GalCubeCraft 0.1.0 name).

    ``beam_info`` is ``[bmin_px, bmaj_px, theta_deg]`` (or a FWHM in pixels,
    or a `radio_beam.Beam` on 1" pixels); see `correlated_noise`.
    """
    data, back = _as_array(cube)
    rms = peak_rms(data, peak_snr)
    return back(data + correlated_noise(data.shape, beam_info, rms, seed))


def convolve_beam(cube, beam_info):
    """Convolve each channel with the beam and convert Jy/pixel to Jy/beam (0.1.0 name).

    The kernel has unit sum and the result is multiplied by the beam area in
    pixels, as GalCubeCraft 0.1.0 does.  The images are zero-padded by five
    beam sigmas, so emission does not wrap around.
    """
    data, back = _as_array(cube)
    beam = beam_from_info(beam_info)
    sigmas = beam_in_pixels(beam, 1 * u.arcsec)     # beam_info is in pixels
    pad = int(math.ceil(5 * sigmas[0]))
    ny, nx = data.shape[-2:]
    fft_shape = (ny + 2 * pad, nx + 2 * pad)
    transfer = F.beam_transfer_function(fft_shape, *sigmas, dtype=torch.float64)
    padded = torch.nn.functional.pad(torch.from_numpy(np.ascontiguousarray(data, float)),
                                     (pad, pad, pad, pad))
    out = F.convolve_beam(padded, transfer, fft_shape)[..., pad:pad + ny, pad:pad + nx]
    area = float(beam.sr / (1 * u.arcsec) ** 2)
    return back(out.numpy() * area)


# --------------------------------------------------------------------------- observation noise
def _spatial_filter(grid, shape2, correlation):
    """The periodic spatial filter |H| on an rfft2 grid (None for white noise) and its power."""
    if correlation == "white":
        return None, 1.0
    filt = _sqrt_beam_filter(shape2, grid.beam_pixels())
    return filt, _mean_power(filt, shape2[1])


class NoiseModel:
    """The thermal noise of an observation: its level, and how it is correlated.

    Give exactly one of ``rms``, ``peak_snr`` or ``integrated_snr``.

    Parameters
    ----------
    rms : `~astropy.units.Quantity`, optional
        Noise per channel in the cube's unit (e.g. ``0.5 * u.mJy / u.beam``), the
        rms of the final noise (after any correlation).
    peak_snr : float, optional
        The clean cube's peak over the rms.
    integrated_snr : float, optional
        The clean cube's flux inside the emission mask over the standard deviation
        of the noise summed over that mask.  That deviation is computed exactly
        for this noise (its spatial and spectral correlation included), not
        with an independent-beams approximation.
    correlation : {'beam', 'white'}
        ``'beam'`` (default; needs a beam): the spatial autocorrelation of the
        noise is the beam, as for the thermal noise of an interferometric
        image; ``'white'``: independent pixels.
    spectral : bool
        Pass the noise through the grid's spectral response (default True): with
        ``Hanning()`` adjacent channels are then correlated by 2/3 and next
        neighbours by 1/6, as in ALMA cubes.  No effect without a response.
    """

    def __init__(self, *, rms=None, peak_snr=None, integrated_snr=None, correlation="beam",
                 spectral=True):
        given = [k for k, v in (("rms", rms), ("peak_snr", peak_snr),
                                ("integrated_snr", integrated_snr)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of rms, peak_snr, integrated_snr; got "
                             f"{given or 'none'}")
        if rms is not None:
            if not isinstance(rms, u.Quantity):
                raise u.UnitTypeError(f"rms must be a Quantity in the cube's unit (e.g. "
                                      f"Jy/beam), got {rms!r}")
            if not (np.isfinite(rms.value) and rms.value >= 0):
                raise ValueError(f"rms must be finite and >= 0, got {rms}")
        self.rms = rms
        self.peak_snr = None if peak_snr is None else validate_number(
            "peak_snr", peak_snr, positive=True)
        self.integrated_snr = None if integrated_snr is None else validate_number(
            "integrated_snr", integrated_snr, positive=True)
        if correlation not in ("beam", "white"):
            raise ValueError(f"correlation must be 'beam' or 'white', got {correlation!r}")
        self.correlation = correlation
        self.spectral = bool(spectral)

    def _kernel(self, grid):
        kernel = grid.response_kernel
        return np.ones(1) if not self.spectral or kernel is None else kernel

    def check_grid(self, grid):
        """Raise `ValueError` if this noise cannot be drawn on ``grid`` (beam-correlated noise
        on a grid without a beam)."""
        if self.correlation == "beam" and grid.beam is None:
            raise ValueError("beam-correlated noise needs a grid with a beam; use "
                             "correlation='white' for a beam-free grid")

    def sum_sigma(self, grid, mask):
        """Standard deviation of unit-rms noise of this model summed over ``mask`` (exact).

        ``mask``: one cube ``(n_chan, ny, nx)`` (a float is returned) or a batch of them, a
        tensor ``(..., n_chan, ny, nx)`` (a float64 tensor ``(...)`` is returned)."""
        self.check_grid(grid)
        batched = isinstance(mask, torch.Tensor) and mask.dim() > 3
        m = mask.to(torch.float64) if isinstance(mask, torch.Tensor) else \
            torch.as_tensor(np.asarray(mask, dtype=float))
        kernel = self._kernel(grid)
        n_chan, ny, nx = m.shape[-3:]
        filt, power = _spatial_filter(grid, (ny, nx), self.correlation)
        # spectral mixing (full convolution over channels) of the mask planes, then their
        # spatial filter (the two commute)
        k = len(kernel)
        mixed = m.new_zeros(m.shape[:-3] + (n_chan + k - 1, ny, nx))
        for j, w in enumerate(kernel):
            mixed[..., j:j + n_chan, :, :] += float(w) * m
        spec = torch.fft.rfft2(mixed)                          # (..., n_mixed, ny, nx//2+1)
        power2 = spec.real.square() + spec.imag.square()      # |spec|^2
        if filt is not None:
            power2 = power2 * filt.to(spec.device) ** 2
        # Parseval over each (spatial) plane, summed over the mixed channels
        weights = _rfft_weights(nx).to(spec.device)
        total = (power2 * weights).sum(dim=(-3, -2, -1)) / (ny * nx)
        sigma = torch.sqrt(total / (power * float(np.sum(kernel**2))))
        return sigma if batched else float(sigma)

    def resolve_rms(self, clean, grid, mask):
        """The rms (in the cube's unit) this model gives for ``clean`` on ``grid``."""
        clean = torch.as_tensor(np.asarray(clean, dtype=float))[None]
        mask = torch.as_tensor(np.asarray(mask, dtype=bool))[None]
        return float(noise_levels([self], clean, mask, grid)[0]) * grid.unit

    def white_shape(self, grid):
        """The shape of the white noise `correlate` takes for one cube of ``grid``: the
        grid's, with the channels the spectral response consumes."""
        n_chan, ny, nx = grid.shape
        return (n_chan + len(self._kernel(grid)) - 1, ny, nx)

    def correlate(self, white, grid):
        """Unit white noise ``(..., *white_shape)`` made this model's noise of unit rms
        ``(..., *grid.shape)``: filtered over pixels (the beam's square root) and channels
        (the spectral response), and scaled by the filters' exact power."""
        self.check_grid(grid)
        kernel = self._kernel(grid)
        n_chan, ny, nx = grid.shape
        filt, power = _spatial_filter(grid, (ny, nx), self.correlation)
        if filt is not None:
            white = torch.fft.irfft2(torch.fft.rfft2(white) * filt.to(white.device), s=(ny, nx))
        if len(kernel) > 1:
            white = F.convolve_spectral(white, torch.as_tensor(kernel, device=white.device,
                                                               dtype=white.dtype))
        return white / math.sqrt(power * float(np.sum(kernel**2)))

    def draw(self, grid, rms, seed=None):
        """A noise cube of ``grid.shape`` and the given rms (a Quantity or a float)."""
        self.check_grid(grid)
        rms = float(u.Quantity(rms).to_value(grid.unit)) if isinstance(rms, u.Quantity) \
            else float(rms)
        white = white_normals(self.white_shape(grid), [seed])[0]
        return (self.correlate(white, grid) * rms).numpy()

    #: The whitened likelihood keeps the spatial frequencies where the beam's transfer
    #: function is at least this (where the noise, and any beam-convolved model, has power).
    KEEP = 1e-4

    def whitened_chi2(self, residual, grid, rms, keep=KEEP):
        """``(chi2, n_modes)``: the chi-squared of ``residual`` (data minus model, a torch
        tensor ``(..., n_chan, ny, nx)`` in the grid's unit) under this noise, and how many
        independent Gaussian variables it sums (`chi2`'s, made for one call).

        The residual is whitened exactly for this model's covariance: divided by the rms
        (``rms``: a float, or one per channel), decorrelated over channels by the Cholesky
        factor of the spectral response's correlation, and over pixels in Fourier space by
        the filter that correlates the noise (`draw`'s), on the frequencies where the beam's
        transfer function is at least ``keep`` (above them neither the noise nor a
        beam-convolved model has power to speak of; they are left out).  For noise this
        model draws, ``chi2`` is then a chi-squared variable of ``n_modes`` degrees of freedom:
        the log-likelihood is ``-chi2 / 2`` up to a constant, and differentiable.  White
        noise without a spectral response gives the plain sum of squares.
        """
        residual = torch.as_tensor(residual)
        dtype = residual.dtype if residual.dtype.is_floating_point else torch.float64
        function, n_modes = self.chi2(grid, residual.shape[-3:], rms, keep=keep, dtype=dtype,
                                      device=residual.device)
        return function(residual), n_modes

    def chi2(self, grid, shape, rms, keep=KEEP, dtype=torch.float64, device=None):
        """``(function, n_modes)``: `whitened_chi2` for residuals of ``shape`` ``(n_chan, ny,
        nx)``, its factors (the channels' Cholesky factor, the spatial filter) made once, for
        a fit that evaluates it many times."""
        self.check_grid(grid)
        n_chan, ny, nx = (int(n) for n in shape)
        rms = torch.as_tensor(np.array(rms, dtype=float), dtype=dtype, device=device)
        inverse_rms = 1 / (rms.reshape(-1, 1, 1) if rms.dim() else rms)
        kernel = self._kernel(grid)
        chol = None
        if len(kernel) > 1:
            # the channels' correlation: noise_j = sum_k w_k u_{j+k}, normalised
            w = np.asarray(kernel, dtype=float)
            auto = np.correlate(w, w, mode="full")[len(w) - 1:] / np.sum(w**2)
            lag = np.abs(np.subtract.outer(np.arange(n_chan), np.arange(n_chan)))
            corr = np.where(lag < len(auto), auto[np.minimum(lag, len(auto) - 1)], 0.0)
            chol = torch.as_tensor(np.linalg.cholesky(corr), dtype=dtype, device=device)

        def whitened(residual):
            y = residual * inverse_rms
            if chol is not None:
                flat = y.reshape(*y.shape[:-3], n_chan, ny * nx)
                y = torch.linalg.solve_triangular(chol, flat, upper=False).reshape(y.shape)
            return y
        filt, power = _spatial_filter(grid, (ny, nx), self.correlation)
        if filt is None:
            return (lambda residual: (whitened(residual) ** 2).sum(dim=(-3, -2, -1)),
                    n_chan * ny * nx)
        kept = filt ** 2 >= keep * float((filt ** 2).max())
        weight = torch.where(kept, _rfft_weights(nx).expand_as(filt), torch.zeros_like(filt))
        scale = torch.where(kept, math.sqrt(power) / filt.clamp_min(1e-300),
                            torch.zeros_like(filt))
        # |rfft2 (y) x scale|^2, each bin counted as often as it stands for, over ny nx
        factor = (scale ** 2 * weight / (ny * nx)).to(device=device, dtype=dtype)

        def function(residual):
            return (torch.fft.rfft2(whitened(residual)).abs() ** 2 * factor).sum(dim=(-3, -2, -1))
        return function, int(round(float(weight.sum()))) * n_chan

    @property
    def correlation_key(self):
        """What the noise's correlation depends on (not its level): models with the same key
        are filtered alike."""
        return (self.correlation, self.spectral)

    def __repr__(self):
        level = (f"rms={self.rms}" if self.rms is not None else
                 f"peak_snr={self.peak_snr}" if self.peak_snr is not None else
                 f"integrated_snr={self.integrated_snr}")
        return f"<NoiseModel {level} correlation={self.correlation!r} spectral={self.spectral}>"


def noise_levels(noises, clean, mask, grid):
    """The rms (float64 tensor ``(batch,)``, in the grid's unit) that each of ``noises`` (one
    `NoiseModel` per cube) gives its cube of ``clean`` ``(batch, n_chan, ny, nx)``, with the
    emission ``mask`` (bool, the same shape) where an integrated S/N is measured.

    The one home of the three ways to set a level: an rms as given; a peak S/N, the clean
    peak over it; an integrated S/N, the flux in the mask over it and over the standard
    deviation of this noise summed over the mask (`NoiseModel.sum_sigma`, exact).
    """
    unit = grid.unit
    clean = clean.to(torch.float64)
    out = torch.full((len(noises),), math.nan, dtype=torch.float64, device=clean.device)
    given = [k for k, m in enumerate(noises) if m.rms is not None]
    if given:
        out[given] = torch.tensor([noises[k].rms.to_value(unit) for k in given],
                                  dtype=torch.float64, device=clean.device)
    peak = [k for k, m in enumerate(noises) if m.peak_snr is not None]
    if peak:
        top = clean[peak].amax(dim=(-3, -2, -1))
        if not bool(torch.isfinite(top).all() and (top > 0).all()):
            raise ValueError(f"the cube's peak must be positive and finite to set a peak S/N, "
                             f"got {top.min().item()}")
        out[peak] = top / torch.tensor([noises[k].peak_snr for k in peak],
                                       dtype=torch.float64, device=clean.device)
    integrated = [k for k, m in enumerate(noises) if m.integrated_snr is not None]
    for key in {noises[k].correlation_key for k in integrated}:
        rows = [k for k in integrated if noises[k].correlation_key == key]
        signal = (clean[rows] * mask[rows]).sum(dim=(-3, -2, -1))
        if not bool((signal > 0).all()):
            raise ValueError("the clean cube has no flux in its emission mask; an integrated "
                             "S/N cannot be set")
        snr = torch.tensor([noises[k].integrated_snr for k in rows], dtype=torch.float64,
                           device=clean.device)
        out[rows] = signal / (snr * noises[rows[0]].sum_sigma(grid, mask[rows]))
    return out
