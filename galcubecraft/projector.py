"""The torch projector: galaxy parameter tensors in, (batch, n_chan, ny, nx) cubes out.

It knows pixels, channels and the beam, and nothing about component classes,
units, files or plots.  The stages are small named steps, in order::

    sky_to_disk -> vertical layers -> surface_density -> line_of_sight_velocity
    -> line_profile (channel-integrated) -> integrate_los -> convolve_beam

How the integral is sampled
---------------------------
Each pixel is split into ``oversample x oversample`` cells.  A cell's flux is
the integral of the emission density over its sky area and the whole line of
sight.  For a cell of width ``d`` centred at ``(xi, eta)`` in the galaxy frame
(``xi`` along the major axis), the change of variables from (sky ``eta``, depth)
to disk-frame (``Y``, ``Z``) has unit Jacobian, so

    flux = d * sum_k w_k * integral over Y in [(eta -/+ d/2 + Z_k sin i) / cos i] of Sigma(R) dY

where ``Z_k, w_k`` are equal-mass layers of the vertical profile
(:func:`~galcubecraft.functional.vertical_layers`).  The ``Y`` interval of a
cell grows as ``1/cos i``, and it is sampled with ``ceil(1/cos i)`` points
(capped, and clipped to the disk's extent), so the disk plane is sampled as
finely at high inclination as face-on, and an edge-on disk stays finite.  The
line of each sample is a Gaussian integrated exactly over each channel
(differences of erf), so fluxes are exact for any dispersion and channel width.
"""
import math

import numpy as np
import scipy.fft
import torch
from scipy.special import gammaincinv
from torch.utils.checkpoint import checkpoint

import astropy.units as u

from . import functional as F

__all__ = ["Projector"]

_FWHM_PER_SIGMA = math.sqrt(8 * math.log(2))
#: Fraction of a Sérsic profile's light beyond the radius where the disk is cut.
_TRUNCATION_FRACTION = 1e-6
#: Number of beam sigmas by which the model is rendered beyond the field before convolution.
_BEAM_MARGIN_SIGMAS = 5.0


class Projector:
    """Render batches of galaxies onto a `~galcubecraft.CubeGrid` with torch.

    Parameters
    ----------
    grid : `~galcubecraft.CubeGrid`
        Pixels, channels and beam.
    device : str or `torch.device`, optional
        Where the tensors live (default CPU).
    dtype : `torch.dtype`
        Floating-point type of the computation (default float32; use
        float64 for gradient checks and reference renders).
    oversample : int
        Cells per pixel along each sky axis (default 2).
    layer_density : float
        Vertical layers per cell width of projected thickness ``h sin i``
        (default 2); the number of layers is even, from 2 to ``max_layers``.
    max_layers : int
        Cap on the number of vertical layers.
    max_minor_samples : int
        Cap on the samples per cell along the disk's minor axis
        (``ceil(1/cos i)``); reached only above ~88 deg inclination.
    max_chunk_elements : int
        Largest intermediate tensor (elements); bounds the memory per chunk.

    Notes
    -----
    ``__call__`` takes a mapping of parameter tensors, each of shape
    ``(batch,)`` (tabulated rotation curves: ``(batch, n_points)``), as
    returned by `Galaxy.tensors` and stacked, and the rotation-curve class
    whose ``velocity`` turns radii into circular speeds.  The result is in
    Jy/beam (Jy/pixel for a beam-free grid) and differentiable with respect
    to every parameter.
    """

    def __init__(self, grid, *, device=None, dtype=torch.float32, oversample=2,
                 layer_density=2.0, max_layers=32, max_minor_samples=32,
                 max_chunk_elements=2**23):
        if int(oversample) != oversample or oversample < 1:
            raise ValueError(f"oversample must be a positive integer, got {oversample!r}")
        if not layer_density > 0:
            raise ValueError(f"layer_density must be positive, got {layer_density!r}")
        if int(max_layers) < 2 or int(max_minor_samples) < 1:
            raise ValueError("max_layers must be >= 2 and max_minor_samples >= 1")
        self.grid = grid
        self.oversample = int(oversample)
        self.layer_density = float(layer_density)
        self.max_layers = int(max_layers) // 2 * 2
        self.max_minor_samples = int(max_minor_samples)
        self.max_chunk_elements = int(max_chunk_elements)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype

        n_chan, ny, nx = grid.shape
        self.pixel = grid.pixel_scale.to_value(u.arcsec)
        self.channel_width = grid.channel_width.to_value(u.km / u.s)
        if grid.beam is not None:
            sig_maj = grid.beam.major.to_value(u.arcsec) / self.pixel / _FWHM_PER_SIGMA
            sig_min = grid.beam.minor.to_value(u.arcsec) / self.pixel / _FWHM_PER_SIGMA
            self.margin = int(math.ceil(_BEAM_MARGIN_SIGMAS * sig_maj))
            self._beam = (sig_maj, sig_min, math.pi / 2 + grid.beam.pa.to_value(u.rad))
            self.brightness_scale = float((grid.beam.sr / grid.pixel_area).decompose())
        else:
            self.margin, self._beam, self.brightness_scale = 0, None, 1.0
        self.padded_shape = (ny + 2 * self.margin, nx + 2 * self.margin)
        self.fft_shape = tuple(scipy.fft.next_fast_len(s, real=True) for s in self.padded_shape)
        self._build_cache()

    # ------------------------------------------------------------------ cached tensors
    def _build_cache(self):
        dev, dt = self.device, self.dtype
        ny_p, nx_p = self.padded_shape
        m = self.margin
        _, ny, nx = self.grid.shape
        east = -(np.arange(nx_p) - m - (nx - 1) / 2) * self.pixel
        north = (np.arange(ny_p) - m - (ny - 1) / 2) * self.pixel
        ee, nn = np.meshgrid(east, north, indexing="xy")
        self._east = torch.as_tensor(ee.ravel(), device=dev, dtype=dt)
        self._north = torch.as_tensor(nn.ravel(), device=dev, dtype=dt)
        s = self.oversample
        frac = ((np.arange(s) + 0.5) / s - 0.5) * self.pixel
        fe, fn = np.meshgrid(-frac, frac, indexing="xy")
        self._cell_east = torch.as_tensor(fe.ravel(), device=dev, dtype=dt)
        self._cell_north = torch.as_tensor(fn.ravel(), device=dev, dtype=dt)
        self._edges = torch.as_tensor(self.grid.channel_edges.to_value(u.km / u.s),
                                      device=dev, dtype=dt)
        if self._beam is not None:
            self._transfer = F.beam_transfer_function(self.fft_shape, *self._beam,
                                                      device=dev, dtype=dt)
        else:
            self._transfer = None

    def to(self, device=None, dtype=None):
        """Move the cached grid and beam tensors (in place); returns self."""
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        self._build_cache()
        return self

    # ------------------------------------------------------------------ sampling plan
    def sampling(self, params):
        """The static sampling plan for a batch: cells per pixel side, layers, minor-axis samples.

        Chosen from the batch's largest projected thickness and inclination,
        so every galaxy of the batch is sampled at least as finely as it needs.
        """
        with torch.no_grad():
            cell = self.pixel / self.oversample
            inc = params["inclination"].detach().double()
            h = params["scale_height"].detach().double()
            thickness = float((h * torch.sin(inc)).max())
            layers = 2 * min(max(math.ceil(self.layer_density * thickness / cell), 1),
                             self.max_layers // 2)
            cos_min = float(torch.cos(inc).min().clamp_min(1e-12))
            rmax = float(self._truncation_radius(params).max())
            minor = math.ceil(min(1.0 / cos_min, 2 * rmax / cell) - 1e-9)
            minor = min(max(minor, 1), self.max_minor_samples)
        return {"oversample": self.oversample, "layers": layers, "minor_samples": minor}

    @staticmethod
    def _truncation_radius(params):
        n = params["n"].detach().double().cpu().numpy()
        r_eff = params["r_eff"].detach().double().cpu().numpy()
        scale = (gammaincinv(2 * n, 1 - _TRUNCATION_FRACTION) / gammaincinv(2 * n, 0.5)) ** n
        return torch.as_tensor(r_eff * scale)

    # ------------------------------------------------------------------ rendering
    def __call__(self, params, kinematics):
        """Render a batch: ``(batch, n_chan, ny, nx)`` in Jy/beam (or Jy/pixel)."""
        return self.observe(self.project(params, kinematics))

    def project(self, params, kinematics):
        """The model before the beam, on the grid padded by the beam margin.

        Returns ``(batch, n_chan, ny + 2 margin, nx + 2 margin)`` in the
        brightness unit of the output (so that `observe` is only the beam).
        """
        params = {k: torch.as_tensor(v, device=self.device, dtype=self.dtype)
                  for k, v in params.items()}
        batch = params["flux"].shape[0]
        plan = self.sampling(params)
        layers_z, layers_w = F.vertical_layers(plan["layers"])
        layers_z = torch.as_tensor(layers_z, device=self.device, dtype=self.dtype)
        rmax = self._truncation_radius(params).to(self.device, self.dtype)

        # One b_n solve per galaxy; the amplitude makes the total flux exact.
        b_n = F.sersic_bn(params["n"])
        amplitude = params["flux"] / F.sersic_total_flux(torch.ones_like(b_n), params["r_eff"],
                                                         params["n"], b_n=b_n)
        shaped = {k: (v.reshape(batch, 1, 1, 1, 1) if v.dim() == 1 else v)
                  for k, v in params.items()}
        shaped.update(b_n=b_n.reshape(batch, 1, 1, 1, 1),
                      amplitude=amplitude.reshape(batch, 1, 1, 1, 1),
                      rmax=rmax.reshape(batch, 1, 1, 1, 1))

        n_pix = self._east.numel()
        per_pixel = self.oversample**2 * plan["layers"] * plan["minor_samples"]
        chunk = max(1, self.max_chunk_elements // (batch * per_pixel * (self._edges.numel())))
        need_grad = torch.is_grad_enabled() and any(v.requires_grad for v in params.values())
        pieces = []
        for start in range(0, n_pix, chunk):
            args = (self._east[start:start + chunk], self._north[start:start + chunk],
                    shaped, kinematics, layers_z, plan["minor_samples"])
            if need_grad:
                pieces.append(checkpoint(self._integrate_chunk, *args, use_reentrant=False))
            else:
                pieces.append(self._integrate_chunk(*args))
        spectra = torch.cat(pieces, dim=1)                      # (B, P, n_chan)
        ny_p, nx_p = self.padded_shape
        cube = spectra.transpose(1, 2).reshape(batch, -1, ny_p, nx_p)
        return cube * (self.brightness_scale / self.channel_width)

    def _integrate_chunk(self, east, north, p, kinematics, layers_z, n_minor):
        cell = self.pixel / self.oversample
        # sky_to_disk: cells (P, C) -> galaxy frame (B, P, C, 1, 1)
        e = (east[:, None] + self._cell_east[None, :])[None, :, :, None, None]
        n = (north[:, None] + self._cell_north[None, :])[None, :, :, None, None]
        xi, eta = F.sky_to_disk(e, n, p["x0"], p["y0"], p["position_angle"])
        sin_i = torch.sin(p["inclination"])
        cos_i = torch.cos(p["inclination"]).clamp_min(1e-6)
        # vertical layers: each cell's sky strip is a Y interval in every layer (B, P, C, K, 1)
        z = p["scale_height"] * layers_z.reshape(1, 1, 1, -1, 1)
        y_mid = (eta + z * sin_i) / cos_i
        half = 0.5 * cell / cos_i
        lo = torch.clamp(y_mid - half, min=-p["rmax"], max=p["rmax"])
        hi = torch.clamp(y_mid + half, min=-p["rmax"], max=p["rmax"])
        t = (torch.arange(n_minor, device=east.device, dtype=east.dtype) + 0.5) / n_minor
        y = lo + (hi - lo) * t.reshape(1, 1, 1, 1, -1)             # (B, P, C, K, M)
        radius = torch.sqrt(xi**2 + y**2 + (1e-4 * cell) ** 2)
        # surface_density x cell area -> flux of each sample (Jy km/s)
        sigma = F.sersic(radius, p["amplitude"], p["r_eff"], p["n"], b_n=p["b_n"])
        weight = sigma * (hi - lo) * (cell / (n_minor * layers_z.numel()))
        # line_of_sight_velocity
        v_circ = kinematics.velocity(radius, p)
        v_los = F.line_of_sight_velocity(xi, radius, v_circ, p["v_sys"], p["inclination"])
        batch, n_pix = weight.shape[:2]
        weight = weight.reshape(batch, n_pix, -1)
        v_los = v_los.reshape(batch, n_pix, -1)
        # line_profile: channel-integrated Gaussian; integrate_los: weighted sum over samples
        disp = p["dispersion"].reshape(batch, 1, 1).clamp_min(1e-6)
        cdf = F.channel_cdf(self._edges, v_los, disp.expand_as(v_los))
        summed = torch.einsum("bps,bpse->bpe", weight, cdf)
        return summed[..., 1:] - summed[..., :-1]

    def observe(self, model):
        """Convolve a padded model with the beam (FFT) and cut it to the grid."""
        m = self.margin
        if self._transfer is not None:
            model = F.convolve_beam(model, self._transfer, self.fft_shape)
        _, ny, nx = self.grid.shape
        return model[..., m:m + ny, m:m + nx]
