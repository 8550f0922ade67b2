"""The torch projector: galaxy parameter tensors in, (batch, n_chan, ny, nx) cubes out.

It knows pixels, channels and the beam, and nothing about component classes,
units, files or plots.  The stages are small named steps, in order::

    sampling (a SamplingPlan per galaxy) -> footprint -> sky_to_disk -> vertical window
    -> surface_density -> line_of_sight_velocity -> line_profile (channel-integrated)
    -> integrate_los -> observe (beam, spectral response)

Streams (`galcubecraft.streams`) are integrated beside the disks and observed the same way.

How the integral is sampled
---------------------------
Each pixel is split into at least ``oversample x oversample`` cells of width ``d``
(more for galaxies whose projected minor axis is narrower than 1.5 cells).
A cell's flux is the integral of the emission density over its sky area and
the whole line of sight.  With ``xi`` along the major axis and ``eta`` along
the minor axis, the change of variables from (sky ``eta``, depth along the
line of sight) to disk-frame (``Y``, ``Z``) has unit Jacobian
(``eta = Y cos i - Z sin i``), so the exact cell flux is

    d * integral dY Sigma(R(xi, Y)) g(Y),
    g(Y) = P[Z in ((Y cos i - eta - d/2) / sin i, (Y cos i - eta + d/2) / sin i)]

where ``P`` is the (exponential) vertical distribution.  ``g`` is a box of
width ``d / cos i`` smoothed by a Laplace kernel of scale ``h tan i`` (for a
position angle between the pixel axes, a trapezoid: the box convolved with a
narrower one, integrated as such, `_BOX_SIDE`);
its integral over each ``Y`` bin is analytic
(:func:`~galcubecraft.functional.window_integral`), so the vertical structure
is integrated exactly and the ``Y`` bins only need to resolve the surface
brightness and velocity field of the disk.  The bins are as wide as a cell
(``minor_density`` per cell; across a trapezoid at most half of it,
`galcubecraft.refine.FOOTPRINT_BINS`: a bin's window is not flat across the ramps)
and span the window (``3 h tan i`` beyond the
box, the tails folded into the end bins), clipped to the disk's extent, so
an edge-on disk stays finite and every cell's weights add up to its exact
share of the flux.  Each sample's line is a Gaussian of the gas dispersion
at the light-weighted mean velocity of the sample's area, broadened by the
spread of the velocity field over it
(:func:`~galcubecraft.functional.velocity_moments`), integrated over each
channel, so fluxes are exact for any dispersion and channel width: either
through a grid of velocity nodes that keeps each sample's flux, mean and
variance (:func:`~galcubecraft.functional.deposit_lines`, the default where it
saves time) or directly, with differences of erf per sample and channel edge.
"""
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Optional

import numpy as np
import scipy.fft
import torch
from torch.utils.checkpoint import checkpoint

from . import functional as F
from . import refine, rings, streams
from .pixelgrid import PixelGrid
from .resources import check_memory
from .conventions import C_KMS, internal_velocity, velocity_compression

__all__ = ["Projector", "SamplingPlan", "FOOTPRINT_HEIGHTS", "BEAM_MARGIN_SIGMAS",
           "TRUNCATION_FRACTION", "SMALL_RENDER", "DOMAIN", "FINER_RADIUS", "check_device",
           "single_threaded_renders"]

#: Fraction of a Sérsic profile's light beyond the radius where the disk is cut.
TRUNCATION_FRACTION = 1e-6
#: Floor on cos(i): an exactly edge-on disk is rendered at i = 89.94 deg (projected minor axis
#: 1e-3 of the major axis), which keeps the window arithmetic finite in float32.
_COS_FLOOR = 1e-3
#: The Y window's bins extend at least this many Laplace scales (h tan i) beyond its box, and at
#: most _MAX_TAIL; the light beyond (an exponential tail) is one sample at the tail's centroid
#: on each side, with the midpoint rule's second-order correction for its variance lam^2.
#: Between, a galaxy's reach is where that sample's error, the tail's mass e^-T times a third of
#: the cubed ratio of the Laplace scale to the light's e-folding length (the tail's skewness
#: term), falls below _TAIL_ERROR; the e-folding length is taken at r_eff or, where shorter, at
#: the radius enclosing _TAIL_LIGHT of the light (a cusp) or all but it (n < 1), or the scale of
#: the envelope's step where the centre is refined (`Projector._window_tail`).
_WINDOW_TAIL = 3.0
_MAX_TAIL = 12.0
_TAIL_ERROR = 1e-3
_TAIL_SKEW = 1.0 / 3.0
_TAIL_LIGHT = 0.01
_TAIL_CORRECTION = 0.5
#: Pixels that can hold light from within the radius enclosing all but this fraction of a
#: galaxy's light are sampled with ``oversample`` cells per pixel side; the others (the outer
#: zone, most of a footprint) with one, as their light allows.
_ZONE_LIGHT = 3e-2
_OUTER_BIN_EFOLDS = 4.0
_OUTER_CELLS_PER_MINOR_AXIS = 0.5
_BIN_EFOLDS = 1.0
_SQRT12 = math.sqrt(12.0)
#: Minor-axis bins are uniform in asinh((Y - Y_0) / s), s the larger of this many cells and
#: this fraction of r_eff: uniform across narrow windows, and widening away from Y_0 across the
#: long windows of nearly edge-on disks.  Y_0 is the window's middle (symmetric bins, so
#: midpoint errors cancel to first order) or, in windows longer than 2 _PEAK_STRETCHES s, the
#: point nearest the galaxy's centre, where the light along the sight line peaks.
_STRETCH_CELLS = 4.0
#: A galaxy's cells are at most this fraction of its projected minor axis (up to max_oversample).
_CELLS_PER_MINOR_AXIS = 1.5
_STRETCH_R_EFF = 0.5
#: Long windows have their finest bins this many stretches inside them, nearest the centre.
_PEAK_STRETCHES = 16.0
#: A cell's footprint across the minor axis is a trapezoid whose ramps are at least this
#: fraction of its window's span (a wider ramp by that much changes the window by ~1e-6).
_MIN_RAMP = 1e-3
#: A cell's footprint is integrated as the trapezoid it is wherever its narrower side across
#: the minor axis (``d min(|cos PA|, |sin PA|)``) is more than this fraction of the cell, that
#: is wherever the position angle is more than ~0.06 deg off the pixel axes (on them it is a
#: box, exactly, at half the cost; within them the box moves ~1e-7 of a cell's light).  Thick
#: disks once kept the box (the trapezoid cost the batch of 64 random galaxies 12-18% then):
#: the Laplace window blurs the ramps but does not remove them, and ten thick exponential disks
#: (r_eff 3-5 pixels, h 0.4-1.3 pixels, 30-90 deg) were 0.15-0.55% L1 from the Monte Carlo
#: cube with the box, 0.11-0.21% with the trapezoid (the worst, at 90 deg, is
#: tests/test_accuracy.py's OBLIQUE_DISKS); with the trapezoid's
#: bins at `refine.FOOTPRINT_BINS` = 2 and `F.bin_window_integrals`, the batches cost no more.
_BOX_SIDE = 1e-3
#: A bin whose window holds less than this fraction of its width keeps its sample at its
#: midpoint (its light is negligible; the centroid's ratio would be rounding).
_HELD_WINDOW = 1e-6
#: Least bins across the envelope's step (a_0 / 2 to a_0, `galcubecraft.refine`) along every
#: window.  The cells resolve it on the sky (`galcubecraft.refine.STEP_CELLS` a half step), but
#: a cell's window spans 1.5 cells / cos i of the disk plane: with these bins only along
#: windows 8 times longer than the step, disks of the dataset's priors (r_eff = 2.3 pixels,
#: h = 0.1 r_eff, 68 deg) were 0.024-0.115% L1 from four times their bins (0.005-0.009% now),
#: and with none a thin n = 5.5 cusp at 89 deg lost 0.3% of its flux.
_STEP_BINS = 4.0


#: Scale heights above the midplane beyond which a galaxy's light is neglected (e^-15 = 3e-7).
FOOTPRINT_HEIGHTS = 15.0
#: The velocity nodes are used when they number at most this fraction of a pixel's
#: samples x channel edges (each sample then costs eight scatters instead of an erf per edge).
#: On a GPU erf is cheap and scatters are atomic: nodes pay off only with many channels
#: (measured on an H100: 0.25 made batches of 64 x 64 x 32 cubes a fifth slower).
_NODES_PAY_OFF = 0.25
_NODES_PAY_OFF_GPU = 0.05
#: Renders of fewer padded output elements (batch x channels x pixels) than this run on one
#: CPU thread by default: they are made of many small kernels, each an OpenMP barrier, which a
#: busy machine turns into waits (measured on 2 cores, the 128^2 x 40 reference: quiet, 0.12-0.14
#: s on 1 thread and 0.09-0.10 s on 2; beside two CPU-bound processes 0.17-0.26 s on 1, 0.5-0.7 s
#: on 2).  Robustness is bought with the quiet two-thread speed-up (see ``Projector(threads=)``).
SMALL_RENDER = 2**23


def check_device(device):
    """A `torch.device` that exists here, or a ValueError that says what to use instead."""
    if device is None:
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got "
                         f"{device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: torch sees no CUDA device here "
                         "(torch.cuda.is_available() is False); use 'cpu'")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r}: there are {torch.cuda.device_count()} CUDA "
                         "devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps': torch's MPS backend is not available here; use 'cpu'")
    return device


#: What the projector's integral needs of its inputs (internal units): name -> (low, high,
#: low inclusive?).  Checked once per batch by `Projector.check_inputs`; outside these the
#: arithmetic gives NaN or empty cubes.  The user-facing bounds (e.g. n <= 20) are the
#: parameters' declarations, checked when galaxies are made.
DOMAIN = {
    "r_eff": (0.0, math.inf, False), "n": (0.0, math.inf, False),
    "scale_height": (0.0, math.inf, True), "inclination": (0.0, math.pi / 2 + 1e-6, True),
    "dispersion": (0.0, math.inf, True), "flux": (0.0, math.inf, True),
    "v_sys": (-math.inf, C_KMS, True),
    "warp_inclination": (0.0, math.pi / 2 + 1e-6, True), "ring_width": (0.0, math.inf, False),
    "ring_radius": (0.0, math.inf, True), "table_surface_density": (0.0, math.inf, True),
    "bulge_r_eff": (0.0, math.inf, False), "bulge_n": (0.0, math.inf, False),
}
#: The same for every parameter whose name ends so (a sum of profiles' shares of the flux).
DOMAIN_BY_SUFFIX = {"_flux_fraction": (0.0, 1.0, True)}
#: The tensors every batch needs; plain disks (`galcubecraft.rings.DiskModel.plain`) also
#: ``r_eff`` and ``n``.
_REQUIRED = ("x0", "y0", "inclination", "position_angle", "flux", "dispersion", "v_sys",
             "scale_height")


def _domain(name):
    """``(low, high, low inclusive?)`` of the tensor ``name`` (`DOMAIN`), or None."""
    if name in DOMAIN:
        return DOMAIN[name]
    return next((d for suffix, d in DOMAIN_BY_SUFFIX.items() if name.endswith(suffix)), None)


class _RenderThreads(threading.local):
    """Per thread: whether it renders a group of a batch (`Projector._by_groups`: its own
    groups then render in turn), and how many CPU threads the render it is in may use at once
    (`Projector._render_threads`; None outside a render)."""
    group = False
    budget = None

    def mark(self):
        self.group = True


_RENDER = _RenderThreads()


def single_threaded_renders():
    """Make this thread's renders run on it alone: torch's intra-op threads set to one for it
    (the threads already running keep theirs; those started later take torch's count from its
    last setting, which the pool's owner restores), a batch's groups rendered in turn rather
    than on threads of their own, and no scratch shared with another thread.

    The initializer of threads that render at once (`Projector`'s groups of a batch,
    `galcubecraft.dataset`'s render blocks): each works apart, with no barrier to wait at,
    and what it renders does not depend on how many threads the process has."""
    torch.set_num_threads(1)
    _RENDER.mark()


@contextmanager
def _torch_threads(n):
    """Run the block with ``n`` intra-op threads (torch's setting is global: restored after)."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _odd_fast_len(n):
    """The least odd length >= ``n`` that `scipy.fft` transforms fast."""
    m = n + 1 - n % 2
    while scipy.fft.next_fast_len(m, real=True) != m:
        m += 2
    return m


#: Number of beam sigmas by which the model is rendered beyond the field before convolution.
BEAM_MARGIN_SIGMAS = 5.0

#: Least beam sigma (minor axis) in the pixels the model is rendered on.  A narrower beam is
#: rendered on pixels an integer factor finer, and read out onto the grid's (see
#: `Projector.supersampling`): the beam's transfer function at the rendered pixels'
#: Nyquist frequency is then exp(-pi^2 s^2 / 2) < 1e-3, so the convolved image is
#: band-limited where they sample it and what a pixel holds (`~galcubecraft.CubeGrid`'s
#: ``pixel_sampling``) is read exactly.
MIN_BEAM_SIGMA = 1.2

#: Plain disks whose r_eff is under this many of the grid's pixels are rendered on pixels twice
#: finer wherever the rest are rendered on the grid's own (`Projector.finer_galaxies`).  A
#: pixel's integral keeps how much light it holds and the readout takes it as spread over the
#: pixel; in a rotating disk each channel's light lies on a strip narrower than a pixel, which
#: that loses, and the error grows steeply as the disk shrinks: an arctan disk at 68 deg, 10
#: km/s lines in 20 km/s channels, under a 3-pixel beam, is 2.5%, 0.88%, 0.30%, 0.09% L1 off
#: the render on 6x finer pixels at r_eff = 2.3, 4, 6, 9 pixels (0.27%, 0.19%, 0.08%, 0.05% on
#: pixels twice finer), and 1.0%, 0.32%, 0.10%, 0.03% under a 6-pixel beam.  Per-pixel dipoles
#: (the light's centroid in each pixel, less the one the readout implies) took the 2.3-pixel
#: disk only to 1.1% and 0.40%.  Larger disks keep the grid's pixels: the reference render
#: (h = 5 pixels) is 0.08% off on them and would cost 1.5x on finer ones.
FINER_RADIUS = 8.0

#: A disk whose r_eff cos i + this many scale heights sin i is under a rendered pixel (a thin
#: disk near edge-on, its light on a line) is rendered centred on a pixel too.
_THIN_HEIGHTS = 3.0

#: A galaxy with this fraction of its light within one rendered pixel of its centre is
#: rendered centred on a pixel and translated back (`Projector._centred_on_pixels`).
_CENTRE_LIGHT = 0.1


@dataclass(frozen=True)
class SamplingPlan:
    """How each galaxy of a batch is sampled; every field has one row per galaxy.

    Attributes
    ----------
    cells : Tensor (batch,), int
        Cells per pixel side.
    minor : Tensor (batch,), int
        Disk-plane bins per cell along the minor axis.
    rmax : Tensor (batch,)
        Truncation radius (arcsec): the disk holds all but `TRUNCATION_FRACTION` of its
        light within it.
    tail : Tensor (batch,)
        Laplace scales by which each cell's window reaches beyond its box before its tails
        are one sample each.
    bands : `galcubecraft.refine.BandPlan`, optional
        The central bands (planned with the rotation law).
    pixels, pixel_used : Tensor (batch, P), optional
        The footprint (`Projector.footprint`): indices into the padded grid and a mask.
    entries : `galcubecraft.refine.BandEntries`, optional
        The cells of the bands.
    zone : Tensor (batch,), optional
        The radius (arcsec) holding all but `_ZONE_LIGHT` of the light: pixels that can hold
        light from within it are the inner zone, sampled with ``cells`` and ``minor``; the
        others (the outer zone) with ``outer_cells`` and ``outer_minor``, per block of
        `Projector.outer_block` rendered pixels a side (`Projector.footprint`).
    trapezoid : Tensor (batch,), bool, optional
        Whether a cell's footprint across the minor axis is a trapezoid (the position angle
        between the pixel axes, `_BOX_SIDE`), integrated as such, or a box.
    """

    cells: torch.Tensor
    minor: torch.Tensor
    rmax: torch.Tensor
    tail: Optional[torch.Tensor] = None
    bands: Optional[refine.BandPlan] = None
    pixels: Optional[torch.Tensor] = None
    pixel_used: Optional[torch.Tensor] = None
    entries: Optional[refine.BandEntries] = None
    zone: Optional[torch.Tensor] = None
    outer_cells: Optional[torch.Tensor] = None
    outer_minor: Optional[torch.Tensor] = None
    trapezoid: Optional[torch.Tensor] = None

    def outer(self):
        """The plan of the outer zone (its own cells and bins; no footprint yet)."""
        return replace(self, cells=self.outer_cells, minor=self.outer_minor, pixels=None,
                       pixel_used=None)

    def with_footprint(self, pixels, pixel_used):
        return replace(self, pixels=pixels, pixel_used=pixel_used)

    def with_entries(self, entries):
        return replace(self, entries=entries)

    def select(self, idx):
        """The plan of the galaxies ``idx``, their footprints trimmed to the longest."""
        rows = {name: getattr(self, name)[idx.to(getattr(self, name).device)]
                for name in ("cells", "minor", "rmax", "tail", "pixels", "pixel_used", "zone",
                             "outer_cells", "outer_minor", "trapezoid")
                if getattr(self, name) is not None}
        longest = int(rows["pixel_used"].sum(dim=1).max()) if len(idx) else 0
        rows["pixels"], rows["pixel_used"] = (rows["pixels"][:, :longest],
                                              rows["pixel_used"][:, :longest])
        cpu = idx.cpu()
        if self.bands is not None:
            rows["bands"] = self.bands.select(cpu.numpy())
        if self.entries is not None:
            rows["entries"] = self.entries.select(cpu)
        return SamplingPlan(**rows)


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
        Least number of cells per rendered pixel along each sky axis (default 2).
    max_oversample : int
        Most cells per pixel side, used for galaxies whose projected minor
        axis is narrower than 1.5 cells (default 8).
    minor_density : float
        Disk-plane samples per cell width along the minor axis (default 1).
    max_minor_samples : int
        Cap on the samples per cell along the minor axis (default 64); the
        count is ``(1/cos i + 6 h tan i / d) * minor_density``, so the cap is
        reached only for very thick or nearly edge-on disks.
    line_nodes_per_sigma : float or None
        How the line profiles are integrated over the channels.  With a number
        (default 2), each sample's flux is spread over a velocity grid of this
        many nodes per gas dispersion, keeping its mass, mean and variance
        exactly (`galcubecraft.functional.deposit_lines`), and one Gaussian per
        node is integrated over every channel once per galaxy: the cost per
        sample no longer grows with the number of channels.  Its error falls as
        the fourth power of the node spacing (about 3e-4 in L1 at 2 nodes per
        sigma).  With None, or where the grid would be too fine for that to save
        time (dispersions far below the channel width), every sample's Gaussian
        is integrated over every channel with ``erf``: exact, and the reference.
    line_integration : {'auto', 'nodes', 'erf'}
        ``'auto'`` (default) takes the velocity nodes where they save time (many
        samples and channels per node); ``'nodes'`` and ``'erf'`` force one way.
    footprint : bool
        Integrate each galaxy over its own footprint only (default): the pixels within
        its truncation radius along the major axis and ``rmax cos i + 15 h sin i``
        along the minor one.  False integrates every pixel of the padded grid (slower;
        a check that the footprint loses nothing).
    max_memory : int or str, optional
        The most memory a render may take (bytes, or text such as ``'48 GB'``); default
        ``GALCUBECRAFT_MAX_MEMORY`` if set, else the memory available.  A grid (or a
        batch) whose `memory_estimate` exceeds it is refused before anything is
        allocated, with the estimate in the message.
    threads : int, optional
        CPU threads for a render (torch's intra-op threads, set for the render and restored
        after).  Default: ``GALCUBECRAFT_THREADS`` if set, else one for renders smaller
        than `SMALL_RENDER` padded output elements and torch's own setting for larger ones.
        A small render is hundreds of small kernels, each ending in a thread barrier that,
        on a busy machine, waits for a core: measured on 2 cores, the 128^2 x 40 reference
        takes 0.12-0.14 s on one thread and 0.09-0.10 s on two when the machine is quiet,
        but 0.17-0.26 s on one and 0.5-0.7 s on two beside two CPU-bound processes.  On a
        dedicated machine ``threads=2`` (or ``GALCUBECRAFT_THREADS=2``) takes the quiet
        speed-up back.  A batch whose galaxies fall into several groups (of similar sampling
        cost) renders its groups at once, one thread each, on as many threads as
        ``threads`` (default: torch's, small renders too), so that it waits at no barrier
        either: 64 cubes of 64^2 x 32 on two threads beside a busy loop on each of 2 cores
        render at 24 cubes/s, against 7.5 with each kernel split over the threads (48-50
        cubes/s on the quiet machine either way; ``python -m benchmarks.baseline 6163d20
        --busy``).
    min_beam_sigma : float
        Least beam sigma (minor axis) in rendered pixels (default `MIN_BEAM_SIGMA`, 1.2):
        a grid whose beam is narrower is rendered on pixels the least integer factor
        finer that reaches it (`beam_supersampling`), so that what the grid's pixels hold
        (``CubeGrid(pixel_sampling=)``) is read exactly.  The cost grows as the square of
        the factor.  Where light sits inside a rendered pixel is kept only to second order
        for compact galaxies (`_centred_on_pixels`), and small disks are rendered on pixels
        twice finer (``finer_radius``); 0 renders on the grid's own pixels (the fastest, and
        wrong by several percent where the beam is under ~3 pixels FWHM).  Measured in
        :ref:`pixel-sampling` and docs/rendering.rst.
    finer_radius : float or None
        Plain disks whose ``r_eff`` is under this many of the grid's pixels (default
        `FINER_RADIUS`, 8) are rendered on pixels twice finer, with cells of the same size,
        where the render is otherwise on the grid's own pixels (`finer_galaxies`, by a
        twin projector: `finer_projector`): inclined rotating disks of a few pixels, whose
        channel maps are narrower than a pixel, are then ~0.3% L1 from converged instead of
        up to 2.5%, at ~0.85 of the rate.  0 or None renders every galaxy on the same pixels,
        which `project` does too.
    supersampling : int, optional
        Rendered pixels per side of the grid's pixels: at least this many (default: the
        least that gives the beam ``min_beam_sigma`` rendered pixels, `beam_supersampling`).
    max_chunk_elements : int, optional
        Largest intermediate tensor (elements); bounds the memory per chunk.
        Default 2**23 on a CPU (32 MB in float32, cache-friendly) and 2**28 on
        a GPU (1 GiB: fewer, larger kernels).
    group_ratio : float, optional
        A batch is split into groups of galaxies of similar sampling cost; a
        galaxy joins a group while the group's cost, padded to its largest
        member, stays within this factor of its own.  Default 1.35 on a CPU
        (padding costs time) and 4 on a GPU (each group costs kernel launches).

    Attributes
    ----------
    observed : `~galcubecraft.pixelgrid.PixelGrid`
        The grid's pixels, channels and beam: what `observe` returns.
    supersampling : int
        How many times finer than the grid's the rendered pixels are (`beam_supersampling`).
    pixels : `~galcubecraft.pixelgrid.PixelGrid`
        The rendered pixels (``observed`` refined ``supersampling`` times), which `project`
        returns, padded by ``margin`` pixels for the beam.
    outer_block : int
        Rendered pixels a side of the blocks the outer zone is sampled on
        (`outer_block_side`; 1 where the render is on the grid's own pixels).

    Notes
    -----
    ``__call__`` takes a mapping of parameter tensors, each of shape
    ``(batch,)`` (tabulated rotation curves: ``(batch, n_points)``), as
    returned by `Galaxy.tensors` and stacked, and the rotation-curve class
    whose ``circular_velocity`` turns radii into circular speeds.  The result is in
    Jy/beam (Jy/pixel for a beam-free grid) and differentiable with respect
    to every parameter.
    """

    def __init__(self, grid, *, device=None, dtype=torch.float32, oversample=2, max_oversample=8,
                 minor_density=1.0, max_minor_samples=512,
                 line_nodes_per_sigma=2.0, line_integration="auto", footprint=True,
                 refine=True, band_cells=refine.BAND_CELLS, min_beam_sigma=MIN_BEAM_SIGMA,
                 finer_radius=FINER_RADIUS, supersampling=None, max_chunk_elements=None,
                 group_ratio=None, max_memory=None, threads=None):
        if int(oversample) != oversample or oversample < 1:
            raise ValueError(f"oversample must be a positive integer, got {oversample!r}")
        if not minor_density > 0:
            raise ValueError(f"minor_density must be positive, got {minor_density!r}")
        if int(max_minor_samples) < 1:
            raise ValueError(f"max_minor_samples must be >= 1, got {max_minor_samples!r}")
        if line_nodes_per_sigma is not None and not line_nodes_per_sigma >= 1:
            raise ValueError(f"line_nodes_per_sigma must be >= 1 or None, got "
                             f"{line_nodes_per_sigma!r}")
        if line_integration not in ("auto", "nodes", "erf"):
            raise ValueError(f"line_integration must be 'auto', 'nodes' or 'erf', got "
                             f"{line_integration!r}")
        if line_integration == "nodes" and line_nodes_per_sigma is None:
            raise ValueError("line_integration='nodes' needs line_nodes_per_sigma")
        self.line_nodes_per_sigma = line_nodes_per_sigma
        self.line_integration = line_integration
        self.use_footprint = bool(footprint)
        if int(band_cells) != band_cells or band_cells < 1:
            raise ValueError(f"band_cells must be a positive integer, got {band_cells!r}")
        self.refine = bool(refine)
        self.band_cells = int(band_cells)
        if not (isinstance(min_beam_sigma, (int, float)) and 0 <= min_beam_sigma <= 16):
            raise ValueError(f"min_beam_sigma must be a number in [0, 16] (beam sigmas in "
                             f"rendered pixels), got {min_beam_sigma!r}")
        self.min_beam_sigma = float(min_beam_sigma)
        if finer_radius is not None and not (isinstance(finer_radius, (int, float))
                                             and 0 <= finer_radius < math.inf):
            raise ValueError(f"finer_radius must be a number >= 0 (the grid's pixels) or None, "
                             f"got {finer_radius!r}")
        self.finer_radius = float(finer_radius or 0.0)
        if supersampling is not None and (int(supersampling) != supersampling
                                          or supersampling < 1):
            raise ValueError(f"supersampling must be a positive integer or None, got "
                             f"{supersampling!r}")
        # the options a twin on finer pixels (`finer_projector`) is built with
        self._options = dict(
            oversample=oversample, max_oversample=max_oversample, minor_density=minor_density,
            max_minor_samples=max_minor_samples, line_nodes_per_sigma=line_nodes_per_sigma,
            line_integration=line_integration, footprint=footprint, refine=refine,
            band_cells=band_cells, min_beam_sigma=min_beam_sigma,
            max_chunk_elements=max_chunk_elements, group_ratio=group_ratio,
            max_memory=max_memory, threads=threads)
        self._finer = None
        self.grid = grid
        self.oversample = int(oversample)
        self.max_oversample = int(max_oversample)
        self.minor_density = float(minor_density)
        self.max_minor_samples = int(max_minor_samples)
        self.device = check_device(device)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        if (max_chunk_elements is not None and int(max_chunk_elements) < 1) or \
                (group_ratio is not None and not group_ratio >= 1):
            raise ValueError(f"max_chunk_elements must be >= 1 and group_ratio >= 1, got "
                             f"{max_chunk_elements!r} and {group_ratio!r}")
        self._budgets = (max_chunk_elements, group_ratio)
        self._set_budgets()
        self.dtype = dtype

        # the grid as plain numbers, converted once (the projector never sees units); a beam
        # narrower than MIN_BEAM_SIGMA pixels is rendered on finer pixels, read out by observe
        observed = grid if isinstance(grid, PixelGrid) else grid.pixel_grid()
        self.observed = observed
        self.supersampling = max(int(supersampling or 1),
                                 self.beam_supersampling(observed.beam, self.min_beam_sigma))
        pixels = observed.refined(self.supersampling)
        self.pixels = pixels
        n_chan, ny, nx = pixels.shape
        self.pixel = pixels.pixel
        # (east, north) per (column, row) pixel step, and the position angle of the +y pixel
        # axis (0 unless the grid came from a rotated header)
        self._sky_matrix = pixels.sky_matrix
        self._rotation = pixels.rotation
        self._beam = pixels.beam
        # the outer zone is sampled on blocks of outer_block^2 rendered pixels (`footprint`);
        # the margin is whole blocks
        self.outer_block = self.outer_block_side(self.supersampling, pixels.beam,
                                                 self.min_beam_sigma)
        step = self.outer_block
        self.margin = -(-self.beam_margin(pixels.beam) // step) * step
        self.brightness_scale = pixels.beam_pixels
        self.padded_shape = (ny + 2 * self.margin, nx + 2 * self.margin)
        # the spectral response reaches this many channels beyond the band: render them too
        self._response = pixels.response
        self.chan_margin = pixels.chan_margin
        self.fft_shape = tuple(scipy.fft.next_fast_len(s, real=True) for s in self.padded_shape)
        # odd lengths for translations: no Nyquist term, so shifts compose exactly
        self._translate_shape = tuple(_odd_fast_len(s) for s in self.padded_shape)
        self.max_memory = max_memory
        if threads is None and os.environ.get("GALCUBECRAFT_THREADS"):
            try:
                threads = int(os.environ["GALCUBECRAFT_THREADS"])
            except ValueError:
                raise ValueError("GALCUBECRAFT_THREADS must be a positive integer, got "
                                 f"{os.environ['GALCUBECRAFT_THREADS']!r}") from None
        if threads is not None and (int(threads) != threads or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = threads
        self.check_memory(batch=1)      # before the grid's caches are allocated
        self._erf_work = None      # scratch for erf_at_edges, grown on demand
        self._build_cache()

    def memory_estimate(self, batch=1, moved=0):
        """Bytes a render of ``batch`` galaxies (or cubes) on this grid takes at its peak.

        The padded model cube and its copies through the scatter and the beam (six of them
        with the separable beam, nine with the FFT's complex spectra), the beam matrices,
        and the chunks' temporaries (bounded by ``max_chunk_elements``).  Measured peaks on
        a CPU are 40-85% of this estimate, from 128^2 x 40 to 1024^2 x 64, separable and
        rotated beams (a test checks the estimate covers the peak).  Each of ``moved``
        compact galaxies (`_centred_on_pixels`) adds its multipoles: K cubes, twice.
        """
        n_chan = self.pixels.shape[0] + 2 * self.chan_margin
        ny_p, nx_p = self.padded_shape
        item = torch.tensor([], dtype=self.dtype).element_size()
        cube = batch * n_chan * ny_p * nx_p * item
        separable = self._beam is None or F.beam_is_separable(*self._beam)
        copies = 6 if separable else 9
        _, ny, nx = self.observed.shape
        matrices = (ny * ny_p + nx * nx_p) * item if separable and self._beam else 0
        chunks = 3 * self.max_chunk_elements * item
        multipoles = 2 * len(F.MULTIPOLES) * moved * n_chan * ny_p * nx_p * item
        return copies * cube + multipoles + matrices + chunks + 64 * 2**20

    def check_memory(self, batch=1, moved=0):
        """Raise `~galcubecraft.resources.MemoryLimitError` if a render of ``batch`` (``moved``
        of them compact, `memory_estimate`) would need more memory than allowed
        (``max_memory``)."""
        _, ny, nx = self.pixels.shape
        pad = "" if not self.margin else f", padded by {self.margin} pixels for the beam"
        finer = ("" if self.supersampling == 1 else
                 f" ({self.supersampling}x finer than the grid's for its narrow beam)")
        check_memory(self.memory_estimate(batch, moved),
                     f"rendering {batch} x {self.pixels.shape[0]} channels x {ny} x {nx} pixels"
                     f"{finer}{pad}", self.max_memory)

    @staticmethod
    def beam_margin(beam):
        """Pixels rendered beyond the field on each side so that the beam brings their light in.

        ``beam`` as `PixelGrid.beam` (sigmas in pixels), or None.
        """
        return 0 if beam is None else int(math.ceil(BEAM_MARGIN_SIGMAS * beam[0]))

    @staticmethod
    def outer_block_side(supersampling, beam, min_beam_sigma=MIN_BEAM_SIGMA):
        """Rendered pixels a side of the blocks the outer zone is sampled on
        (`SamplingPlan.zone`): the largest divisor of ``supersampling`` whose blocks see the
        beam's minor axis at least ``min_beam_sigma / 2`` blocks wide.

        The outer zone holds `_ZONE_LIGHT` of a galaxy's light, sampled as with
        ``oversample=1`` on those blocks: it is read out at half the resolution asked of the
        rest, at most the grid's own pixels, and the finer pixels cost where the light is.
        Where small disks are rendered on pixels twice finer for where the light lies in each
        pixel (`finer_projector`, docs/rendering.rst), the one-galaxy cubes of
        ``benchmarks.dataset`` render at 0.85 of the rate on the grid's pixels instead of
        0.38; where the default renders
        finer for a beam under `MIN_BEAM_SIGMA` pixels, the batch of ``benchmarks.render``
        (a 2-pixel beam) renders 1.24x faster, 0.16% L1 at most from the render on 5x finer
        pixels (0.13% with the outer zone on the finer pixels).  ``beam`` as
        `PixelGrid.beam` (sigmas in rendered pixels), or None."""
        if beam is None or supersampling == 1:
            return 1
        floor = 0.5 * min_beam_sigma * (1 - 1e-9)
        return max(b for b in range(1, supersampling + 1)
                   if supersampling % b == 0 and (b == 1 or beam[1] / b >= floor))

    @staticmethod
    def beam_supersampling(beam, min_beam_sigma=MIN_BEAM_SIGMA):
        """How many times finer than the grid's the pixels of the render are: the least
        integer that gives the beam's minor axis ``min_beam_sigma`` rendered pixels (1
        without a beam).  ``beam`` as `PixelGrid.beam` (sigmas in the grid's pixels), or
        None."""
        if beam is None:
            return 1
        return max(1, int(math.ceil(min_beam_sigma / beam[1] - 1e-9)))

    # ------------------------------------------------------------------ cached tensors
    def _build_cache(self):
        dev, dt = self.device, self.dtype
        self._cloud_operators = {}
        east, north = self.pixels.sky_offsets(margin=self.margin)
        self._east = torch.as_tensor(east.ravel(), device=dev, dtype=dt)
        self._north = torch.as_tensor(north.ravel(), device=dev, dtype=dt)
        # the blocks of the outer zone (`outer_block_side`), margin included: their centres,
        # their rendered pixels (a spare block, past the last, holds the spare pixel) and each
        # pixel's block
        self._block_east = self._block_north = self._block_pixels = self._pixel_block = None
        step = self.outer_block
        if step > 1:
            ny_p, nx_p = self.padded_shape
            by, bx = ny_p // step, nx_p // step

            def blocks(t):
                return torch.as_tensor(t.reshape(by, step, bx, step).mean(axis=(1, 3)).ravel(),
                                       device=dev, dtype=dt)
            self._block_east, self._block_north = blocks(east), blocks(north)
            rows = torch.arange(ny_p).reshape(by, 1, step, 1)
            cols = torch.arange(nx_p).reshape(1, bx, 1, step)
            fine = (rows * nx_p + cols).reshape(by * bx, step * step)
            self._block_pixels = torch.cat([fine, torch.full((1, step * step),
                                                             ny_p * nx_p)]).to(dev)
            self._pixel_block = ((torch.arange(ny_p)[:, None] // step) * bx
                                 + torch.arange(nx_p)[None, :] // step).reshape(-1).to(dev)
        edges = self.pixels.channel_edges
        # velocities are computed relative to the band's centre, so that float32 keeps its
        # precision at any redshift (float32 resolves a radio velocity of 2.4e5 km/s, z = 4,
        # to 0.016 km/s: 1% of a 1.6 km/s line)
        self._velocity_origin = float(0.5 * (edges[0] + edges[-1]))
        self._edges = torch.as_tensor(edges - self._velocity_origin, device=dev, dtype=dt)
        # brightness per channel is its flux over its width (widths differ on wavelength axes;
        # signed: on a descending axis the erf differences are negative too)
        self._inv_widths = torch.as_tensor(self.brightness_scale / np.diff(edges),
                                           device=dev, dtype=dt).reshape(-1, 1, 1)
        self._half_inv_widths = 0.5 * self._inv_widths.reshape(-1)
        self._kernel = (None if self._response is None
                        else torch.as_tensor(self._response, device=dev, dtype=dt))
        if self._beam is not None:
            # a beam along the pixel axes is two matrix products; a rotated one, an FFT; both
            # read out what the grid's pixels hold (the beam-convolved sky at their centres,
            # or its mean over them) from the rendered pixels' integrals
            self._beam_matrices = F.beam_matrices(self.fft_shape, self.padded_shape, self.margin,
                                                  *self._beam, **self._readout())
            self._transfer = (F.beam_transfer_function(self.fft_shape, *self._beam,
                                                       **self._readout())
                              if self._beam_matrices is None else None)
        else:
            self._transfer = self._beam_matrices = None

    def _operators(self, shift, cloud, separable):
        """The beam's readout matrices (or transfer function) with moves or clouds; those
        without moves are kept for the next batch."""
        key = (cloud, separable)
        cache = self._cloud_operators
        if shift is None and key in cache:
            return cache[key]
        if separable:
            out = F.beam_matrices(self.fft_shape, self.padded_shape, self.margin, *self._beam,
                                  **self._readout(shift, cloud))
        else:
            out = F.beam_transfer_function(self.fft_shape, *self._beam,
                                           **self._readout(shift, cloud))
        if shift is None:
            cache[key] = out
        return out

    def _set_budgets(self):
        """Chunk size and grouping: the caller's, else this device's defaults."""
        chunk, ratio = self._budgets
        on_cpu = self.device.type == "cpu"
        self.max_chunk_elements = int(chunk or (2**23 if on_cpu else 2**28))
        self.group_ratio = float(ratio or (1.35 if on_cpu else 4.0))

    def to(self, device=None, dtype=None):
        """Move the cached grid and beam tensors (in place); returns self."""
        if device is not None:
            self.device = torch.device(device)
            self._set_budgets()
        if dtype is not None:
            self.dtype = dtype
        self._build_cache()
        if self._finer is not None:
            self._finer.to(device, dtype)
        return self

    # ------------------------------------------------------------------ sampling plan
    def sampling(self, params, kinematics=None):
        """The sampling plan: cells per pixel side and minor-axis samples per cell, per galaxy.

        A galaxy is split into at least ``oversample`` cells per pixel side,
        more where its projected minor axis ``hypot(r_eff cos i, h sin i)`` is
        narrower than 1.5 cells (up to ``max_oversample``); its window along
        the minor axis gets as many bins as it needs (up to
        ``max_minor_samples``); ``rmax`` is where the disk is cut (the radius
        enclosing all but 1e-6 of its light).  Pixels that see no light from within the
        radius holding all but `_ZONE_LIGHT` of it (the outer zone) get their own counts,
        ``outer_cells`` and ``outer_minor``, as with ``oversample=1`` on blocks of
        ``outer_block`` rendered pixels a side (`SamplingPlan.zone`, `outer_block_side`).
        With the rotation law (``kinematics``), the
        centre of each galaxy the cells cannot resolve is planned into bands
        (`galcubecraft.refine.plan_bands`).  Counts are per galaxy (``cells``, ``minor``),
        so a galaxy renders the same whatever else is in its batch: the batch's
        tensors are sized for the largest counts and the extra cells and bins
        of the others carry zero weight.
        """
        with torch.no_grad():
            inc = params["inclination"].detach().double().cpu()
            pa = params["position_angle"].detach().double().cpu()
            h = params["scale_height"].detach().double().cpu()
            r_eff = params["r_eff"].detach().double().cpu()
            sin_i, cos_i = torch.sin(inc), torch.cos(inc).clamp_min(_COS_FLOOR)
            lam = h * sin_i / cos_i
            n = params["n"].detach().double().cpu()
            b_n = torch.as_tensor(F.sersic_bn(n.numpy()))
            # the light's e-folding length at r_eff, or where it is shorter: nearer the centre
            # for a cusp (n > 1), at the radius enclosing _TAIL_LIGHT of the light, further out
            # for a flat-topped profile (n < 1), at the one enclosing all but _TAIL_LIGHT
            inner, outer = (torch.as_tensor(F.sersic_enclosing_radius(
                fraction, r_eff.numpy(), n.numpy())) for fraction in (_TAIL_LIGHT,
                                                                      1 - _TAIL_LIGHT))
            efold = torch.minimum(F.sersic_efold(r_eff, r_eff, n, b_n), torch.minimum(
                F.sersic_efold(inner, r_eff, n, b_n), F.sersic_efold(outer, r_eff, n, b_n)))
            tail = self._window_tail(lam, efold)
            rmax = self.truncation_radius(params)
            counts = self._counts(r_eff, n, b_n, rmax, cos_i, lam, tail,
                                  self._footprint_sides(pa))
            cells, minor, trapezoid = counts(self.oversample)
            cell = self.pixel / cells
            # the outer zone (beyond the radius holding all but _ZONE_LIGHT of the light) is
            # sampled as with oversample=1, with cells of up to _OUTER_CELLS_PER_MINOR_AXIS of
            # the projected minor axis and bins of up to _OUTER_BIN_EFOLDS e-folding lengths
            zone = torch.as_tensor(F.sersic_enclosing_radius(1 - _ZONE_LIGHT, r_eff.numpy(),
                                                             n.numpy()))
            outer_cells, outer_minor, _ = counts(1, _OUTER_BIN_EFOLDS,
                                                 _OUTER_CELLS_PER_MINOR_AXIS, trapezoid=trapezoid,
                                                 pixel=self.pixel * self.outer_block)
            bands = None
            if kinematics is not None and self.refine:
                solid = kinematics.solid_body_radius(params).detach().double().cpu()
                bands = refine.plan_bands(
                    r_eff.numpy(), n.numpy(), b_n.numpy(), rmax.numpy(), cell.numpy(),
                    solid.expand_as(r_eff).numpy(), band_cells=refine.band_cells_for(
                        self.band_cells, r_eff.numpy(), h.numpy(), sin_i.numpy()),
                    velocity_cell=self._velocity_cell(params, kinematics, sin_i))
                # the envelope's step (a_0 / 2 to a_0) shapes the light along a window as its
                # e-folding length does: a tail reaching into it is no longer one sample's
                # worth (a thick exponential disk at 66 deg, lam = 1.25 a_0 / 3, lost 6e-4
                # of its flux and was 0.7% L1 off with the tails at 3 lam)
                step = torch.as_tensor(np.where(bands.envelope & (bands.levels > 0),
                                                bands.outer / 4, np.inf))
                stepped = torch.maximum(tail, self._window_tail(lam, step))
                if bool((stepped > tail).any()):
                    tail = stepped
                    counts = self._counts(r_eff, n, b_n, rmax, cos_i, lam, tail,
                                          self._footprint_sides(pa))
                    _, minor, _ = counts(self.oversample, trapezoid=trapezoid)
                    outer_cells, outer_minor, _ = counts(
                        1, _OUTER_BIN_EFOLDS, _OUTER_CELLS_PER_MINOR_AXIS, trapezoid=trapezoid,
                        pixel=self.pixel * self.outer_block)
                # the windows resolve the envelope's step
                step = torch.as_tensor(np.where(bands.envelope, bands.outer, np.inf))
                minor = torch.maximum(minor, counts(self.oversample, step=step)[1])
        return SamplingPlan(cells=cells.to(torch.int64), minor=minor.to(torch.int64), rmax=rmax,
                            tail=tail, bands=bands, zone=zone,
                            outer_cells=outer_cells.to(torch.int64),
                            outer_minor=outer_minor.to(torch.int64), trapezoid=trapezoid)

    @staticmethod
    def _window_tail(lam, length):
        """The reach of a window, in Laplace scales ``lam``, beyond which its light is one
        sample per side: where the sample's error (the tail's mass e^-T times a third of the
        cubed ratio of ``lam`` to ``length``, the scale on which the light changes) falls below
        _TAIL_ERROR, within _WINDOW_TAIL.._MAX_TAIL.  Whole scales: the reach is a step
        function of the parameters, so that renders stay differentiable (gradients do not
        see the sampling move)."""
        return torch.ceil(torch.log(_TAIL_SKEW * (lam / length) ** 3 / _TAIL_ERROR)).clamp(
            _WINDOW_TAIL, _MAX_TAIL)

    @staticmethod
    def _velocity_cell(params, kinematics, sin_i):
        """``velocity_cell(radius)`` for `galcubecraft.refine.plan_bands`: the cells (arcsec)
        across which each galaxy's line-of-sight velocity changes by
        `~galcubecraft.refine.RESOLVE_VELOCITY` line dispersions at ``radius`` (arcsec, NumPy
        (batch, m)), a pair: along the sky, and along the sight line (the minor-axis bins, in
        the disk plane's y).  ``v_los = v_c(R) sin i x / R`` changes along x at most at
        ``sin i max(v_c / R, |dv_c / dR|)`` and along y at ``sin i (x y / R^2) (dv_c / dR -
        v_c / R)``, at most half the shear: none within the solid-body radius."""
        law = {name: (v[:, None] if v.dim() == 1 else v)
               for name, v in ((k, t.detach().double().cpu()) for k, t in params.items())}
        dispersion = params["dispersion"].detach().double().cpu()[:, None].clamp_min(1e-6)

        def velocity_cell(radius):
            r = torch.as_tensor(radius, dtype=torch.float64)
            v, slope = kinematics.circular_velocity_and_slope(r, law)
            along = sin_i[:, None] * torch.maximum(v.abs() / r, slope.abs())
            across = 0.5 * sin_i[:, None] * (slope - v / r).abs()
            resolved = refine.RESOLVE_VELOCITY * dispersion
            return (resolved / along).numpy(), (resolved / across).numpy()
        return velocity_cell

    def _footprint_sides(self, position_angle):
        """The wide and narrow sides of a cell's footprint across the minor axis of galaxies at
        ``position_angle`` (rad; the plan's detached copy or the integrand's own tensor), per
        unit of the cell's side: a box of the wide side convolved with one of the narrow side
        (`_footprint_window`)."""
        pa_pixels = position_angle - self._rotation          # PA relative to the pixel axes
        cs, sn = torch.cos(pa_pixels).abs(), torch.sin(pa_pixels).abs()
        return torch.maximum(cs, sn), torch.minimum(cs, sn)

    def _counts(self, r_eff, n, b_n, rmax, cos_i, lam, tail, sides):
        """``counts(oversample)``: cells per pixel side, minor-axis bins per cell and whether
        the cells' footprints are integrated as trapezoids, for each galaxy sampled with at
        least ``oversample`` cells per pixel side.  ``sides``: the wide and narrow sides of
        a cell's footprint across the minor axis, per unit of its side."""
        projected = torch.hypot(r_eff * cos_i, lam * cos_i)
        # bins are uniform in asinh((Y - Y_c) / s), and, where they widen, at most
        # _BIN_EFOLDS e-folding lengths of the light at the furthest radius the window reaches
        # within the radius holding all but 1e-4 of the light (long windows: thick disks
        # nearly edge-on, whose bins must resolve the disk along the sight line)
        reach = torch.as_tensor(F.sersic_enclosing_radius(1 - 1e-4, r_eff.numpy(), n.numpy()))

        def counts(oversample, bin_efolds=_BIN_EFOLDS, per_minor_axis=_CELLS_PER_MINOR_AXIS,
                   step=None, trapezoid=None, pixel=None):
            pixel = self.pixel if pixel is None else pixel
            cells = torch.ceil(per_minor_axis * pixel / projected - 1e-6)
            cells = cells.clamp(oversample, max(oversample, self.max_oversample))
            cell = pixel / cells
            # a trapezoid footprint is integrated in bins no wider than
            # 1 / refine.FOOTPRINT_BINS of it: a bin's window is not flat across its ramps
            if trapezoid is None:
                trapezoid = sides[1] > _BOX_SIDE
            finest = torch.where(trapezoid, torch.minimum(
                cell, refine.footprint_bin(sides[0] + sides[1], cell, cos_i)), cell)
            window = 1.5 * cell / cos_i + 2 * tail * lam
            span = torch.minimum(window, 2 * rmax)
            # the u-range of a window of width W is at most 2 asinh(W / 2s); bins no wider
            # than a cell where they are finest
            stretch = self._stretch(r_eff, cell)
            u_range = 2 * torch.asinh(span / (2 * stretch))
            far = torch.minimum(0.5 * span, reach)
            efold_far = F.sersic_efold(far, r_eff, n, b_n)
            du = torch.minimum(finest / stretch,
                               bin_efolds * efold_far / torch.hypot(far, stretch))
            if step is not None:
                # the envelope's step (``step`` = a_0: from a_0 / 2 to a_0) in at least
                # _STEP_BINS bins (a_0 or less from the peak)
                ratio = step / torch.hypot(step, stretch)               # NaN where no step
                du = torch.where(torch.isfinite(step),
                                 torch.minimum(du, 0.5 * ratio / _STEP_BINS), du)
            minor = torch.ceil(u_range * self.minor_density / du - 1e-3)
            return cells, minor.clamp(1, self.max_minor_samples), trapezoid
        return counts

    @staticmethod
    def _stretch(r_eff, cell):
        """Scale of the asinh bin stretch: a few cells, or a fraction of the half-light radius."""
        return torch.clamp(_STRETCH_R_EFF * r_eff, min=_STRETCH_CELLS * cell)

    @staticmethod
    def truncation_radius(params):
        """Where each galaxy's disk is cut (arcsec): the radius enclosing all but
        `TRUNCATION_FRACTION` of its light (``params``: ``n``, ``r_eff`` tensors)."""
        n = params["n"].detach().double().cpu().numpy()
        r_eff = params["r_eff"].detach().double().cpu().numpy()
        return torch.as_tensor(F.sersic_enclosing_radius(1 - TRUNCATION_FRACTION, r_eff, n))

    @classmethod
    def sky_reach(cls, params):
        """How far (arcsec) from its centre each galaxy's light can reach on the sky, any
        orientation: its truncation radius plus `FOOTPRINT_HEIGHTS` scale heights."""
        return cls.truncation_radius(params) + FOOTPRINT_HEIGHTS * \
            params["scale_height"].detach().double().cpu()

    # ------------------------------------------------------------------ rendering
    def __call__(self, params, kinematics):
        """Render a batch: ``(batch, n_chan, ny, nx)`` in Jy/beam (or Jy/pixel).

        ``observe(project(...))``, with the moves of compact galaxies (`_centred_on_pixels`)
        made by the beam's readout rather than by transforms of the model, and small disks
        (`finer_galaxies`) rendered on pixels twice finer by `finer_projector`.
        """
        model, kinematics = self._model_of(kinematics)
        if model is not None:
            params, batch = self._prepared(params, model)
            with self._render_threads(batch):
                return self._observe(self._project_rings(params, model), cloud=self._cloud)
        if self._beam is None:
            return self.observe(self.project(params, kinematics))
        finer = self.finer_galaxies(params)
        if finer is not None:
            return self._render_finer(params, kinematics, finer)
        return self._render_plain(params, kinematics)

    def _render_plain(self, params, kinematics):
        """`__call__` of plain disks under a beam, all on this projector's pixels."""
        params, batch = self._prepared(params)
        with self._render_threads(batch):
            cube, moves = self._model(params, kinematics)
            if moves is None:
                return self._observe(cube)
            which, still, dy, dx, model, moments = moves
            moved = self._observe_multipoles(model, moments, shift=(dy, dx))
            if cube is None:
                return moved
            out = self._observe(cube)
            return out.new_zeros((batch,) + out.shape[1:]).index_copy(
                0, still, out).index_copy(0, which, moved)

    def finer_galaxies(self, params):
        """Which plain disks of a batch are rendered on pixels twice finer (`finer_projector`):
        a boolean ``(batch,)`` tensor, or None where none is.  Those whose ``r_eff`` is under
        ``finer_radius`` of the grid's pixels, where the render is on the grid's own pixels
        under a beam (`FINER_RADIUS`).  Per galaxy, so that a galaxy renders the same in any
        batch."""
        if not self.finer_radius or self._beam is None or self.supersampling > 1 \
                or "r_eff" not in params:
            return None
        with torch.no_grad():
            r_eff = torch.as_tensor(params["r_eff"]).detach().double().cpu()
            finer = r_eff < self.finer_radius * self.pixel
        return finer if bool(finer.any()) else None

    @property
    def finer_projector(self):
        """The twin that renders `finer_galaxies`: the same grid and options on pixels twice
        finer, with cells of the same size (``oversample`` halved, rounded up), and the outer
        zone on the grid's pixels (`outer_block_side`).  Built on first use."""
        if self._finer is None:
            options = dict(self._options, oversample=-(-self._options["oversample"] // 2))
            self._finer = Projector(self.observed, device=self.device, dtype=self.dtype,
                                    finer_radius=None, supersampling=2 * self.supersampling,
                                    **options)
        return self._finer

    def _render_finer(self, params, kinematics, finer):
        """`__call__` of a batch with ``finer`` (`finer_galaxies`) galaxies rendered by
        `finer_projector` and the others here, in batch order."""
        self._prepared(params)              # checked once, naming the batch's own galaxies
        parts = []
        for render, which in ((self.finer_projector._render_plain, finer),
                              (self._render_plain, ~finer)):
            idx = which.nonzero().reshape(-1)
            if len(idx):
                sub = {k: torch.as_tensor(v)[idx.to(torch.as_tensor(v).device)]
                       for k, v in params.items()}
                parts.append((idx.to(self.device), render(sub, kinematics)))
        if len(parts) == 1:
            return parts[0][1]
        out = parts[0][1].new_zeros((finer.numel(),) + parts[0][1].shape[1:])
        for idx, part in parts:
            out = out.index_copy(0, idx, part)
        return out

    @staticmethod
    def _model_of(kinematics):
        """``(model, kinematics)``: a `~galcubecraft.rings.DiskModel` that needs the ring
        quadrature and None, or None and the rotation law of a plain disk."""
        if isinstance(kinematics, rings.DiskModel):
            if kinematics.plain:
                return None, kinematics.kinematics
            return kinematics, kinematics.kinematics
        return None, kinematics

    @staticmethod
    def check_inputs(params, plain=True):
        """Raise `ValueError` naming the parameter and the galaxy if a batch's tensors cannot
        be rendered: missing, not a number, infinite, or outside `DOMAIN` (once per batch)."""
        missing = [k for k in _REQUIRED + (("r_eff", "n") if plain else ())
                   if k not in params]
        if missing:
            raise ValueError(f"the parameter tensors lack {missing}; make them with "
                             "Galaxy.tensors() and stack_parameters")

        def outside(value, low, high, closed):
            """Where ``value`` is not finite or is outside ``(low, high]`` (``[low, high]``
            if ``closed``: a bool, or a bool tensor that broadcasts against ``value``)."""
            below = (value < low) if closed is True else (value <= low) if closed is False \
                else torch.where(closed, value < low, value <= low)
            return ~torch.isfinite(value) | (value > high) | below

        with torch.no_grad():
            # the batch's per-galaxy values stacked into one tensor, checked at once (a few
            # operations, not a few per parameter), with one device synchronisation; the
            # culprit is looked for only on failure
            domains = {name: _domain(name) or (-math.inf, math.inf, True) for name in params}
            rows = {name: v for name, v in params.items()
                    if v.dim() == 1 and v.shape == params["flux"].shape
                    and v.dtype == params["flux"].dtype and v.device == params["flux"].device}
            checks = []
            if rows:
                low, high, closed = (torch.tensor([domains[name][j] for name in rows],
                                                  device=params["flux"].device,
                                                  dtype=params["flux"].dtype if j < 2 else
                                                  torch.bool)[:, None] for j in range(3))
                checks.append(outside(torch.stack(list(rows.values())), low, high,
                                      closed).any())
            checks += [outside(value, *domains[name]).any()
                       for name, value in params.items() if name not in rows]
            if not bool(torch.stack(checks).any()):
                return
            bad = {name: outside(value, *domains[name]) for name, value in params.items()}
            name, flags = next((n, f) for n, f in bad.items() if bool(f.any()))
            value = params[name]
            where = torch.nonzero(flags.reshape(flags.shape[0], -1).any(dim=1))[0].item() \
                if flags.dim() else 0
            low, high, closed = _domain(name) or (-math.inf, math.inf, True)
            rule = "finite" if _domain(name) is None else (
                f"finite and in {'[' if closed else '('}{low:g}, {high:g}]")
            raise ValueError(f"{name} must be {rule} (internal units), got "
                             f"{value.reshape(value.shape[0], -1)[where].tolist()} "
                             f"for galaxy {where} of the batch")

    def threads_for(self, batch):
        """The CPU threads a render of ``batch`` cubes uses (see ``threads``)."""
        if self.device.type != "cpu":
            return None
        if self.threads is not None:
            return int(self.threads)
        n_chan = self.pixels.shape[0] + 2 * self.chan_margin
        size = batch * n_chan * self.padded_shape[0] * self.padded_shape[1]
        return 1 if size < SMALL_RENDER else None

    @contextmanager
    def _render_threads(self, batch):
        """Run a render of ``batch`` cubes with `threads_for` intra-op threads; its groups of
        galaxies may render at once on as many threads as ``threads``, or torch's own count
        (`_group_workers`): a small render splits no kernel over threads, but its groups
        still share the cores."""
        outer = _RENDER.budget
        if outer is None:                          # (the outermost render of this thread)
            _RENDER.budget = int(self.threads) if self.threads is not None and \
                self.device.type == "cpu" else torch.get_num_threads()
        try:
            with _torch_threads(self.threads_for(batch)):
                yield
        finally:
            _RENDER.budget = outer

    def project(self, params, kinematics):
        """The model before the beam, on the grid padded by the beam margin.

        Returns ``(batch, n_chan + 2 chan_margin, ny + 2 margin, nx + 2 margin)``
        (with the channels a spectral response reaches beyond the band) in the
        brightness unit of the output (so that `observe` is only the beam and the spectral
        response).  Disks that are more than plain (a `~galcubecraft.rings.DiskModel`
        given as ``kinematics``) come as the ring quadrature deposits them: observe them
        with ``observe(model, cloud=projector.cloud_for(kinematics))``.
        """
        model, kinematics = self._model_of(kinematics)
        params, batch = self._prepared(params, model)
        with self._render_threads(batch):
            if model is not None:
                return self._project_rings(params, model)
            if self._beam is None:
                return self._project(params, kinematics)
            cube, moves = self._model(params, kinematics)
            if moves is None:
                return cube
            which, still, dy, dx, model, moments = moves
            spectrum = torch.fft.rfft2(model, s=self._translate_shape)
            if moments is not None:
                spectrum = spectrum + F.multipole_spectrum(moments, self._translate_shape)
            phase = F.shift_phase(self._translate_shape, dy, dx, inner=1)
            moved = F.from_spectrum(spectrum * phase, self._translate_shape,
                                    self.padded_shape)
            if cube is None:
                return moved
            return moved.new_zeros((batch,) + moved.shape[1:]).index_copy(
                0, still, cube).index_copy(0, which, moved)

    def _prepared(self, params, model=None):
        """The batch's tensors on this device and dtype, checked (`check_inputs`, memory),
        ``v_sys`` relative to the band's centre; and the batch size."""
        v_sys = params.get("v_sys")
        params = {k: torch.as_tensor(v, device=self.device, dtype=self.dtype)
                  for k, v in params.items()}
        self.check_inputs(params, plain=model is None)
        params["v_sys"] = self._relative_velocity(v_sys)
        batch = int(params["flux"].shape[0])
        self.check_memory(batch=batch)
        return params, batch

    def _model(self, params, kinematics):
        """The model, with compact galaxies rendered on their nearest pixel centre
        (`_centred_on_pixels`): ``(cube, None)`` if none is, else ``(cube of the others or
        None, (which, still, dy, dx, model, moments))``: the moved galaxies and the others,
        the moves back (rendered pixels) and the moved galaxies' pixel integrals and
        multipoles (`_project`'s pair, before the moves)."""
        params, moves = self._centred_on_pixels(params)
        if moves is None:
            return self._project(params, kinematics), None
        which, dy, dx, (row, column, share) = moves
        batch = int(params["flux"].shape[0])
        self.check_memory(batch, moved=len(which))
        still = torch.as_tensor(np.setdiff1d(np.arange(batch), which.cpu().numpy()),
                                device=self.device)
        cube = self._project({k: v[still] for k, v in params.items()}, kinematics) \
            if len(still) else None
        model, moments, placed = self._project({k: v[which] for k, v in params.items()},
                                               kinematics, multipoles=True)
        # the central pixel's light of the galaxies whose centre is not placed by multipoles
        share = torch.where(placed.to(share.device), torch.zeros_like(share), share)
        model = F.point_share(model, row, column, share, self.fft_shape)
        return cube, (which, still, dy, dx, model, moments)

    def _centred_on_pixels(self, params):
        """Compact galaxies moved onto their nearest pixel centre, and the moves back.

        A pixel's integral keeps how much light it holds but not where in the pixel it
        lies: the beam's readout takes it as spread across the pixel, which places a source
        much smaller than a pixel up to half a pixel off (10% L1 of a point source under a
        6-pixel beam), and in each channel of a compact rotating one, the light off its
        centre by up to r_eff (1-3% L1).  Galaxies with `_CENTRE_LIGHT` of their light
        within one rendered pixel of their centre, and thin disks near edge-on
        (`_THIN_HEIGHTS`), whose light lies on a line through it, are rendered centred on
        their nearest pixel, where each pixel's light is gathered with its `F.MULTIPOLES`
        (`F.cell_multipoles`, `F.multipole_spectrum`: where in the pixel it lies, to second
        order), and moved back by the shift theorem (`F.translate`, which the beam makes
        exact).  None is moved where the beam is narrower than `MIN_BEAM_SIGMA` rendered
        pixels (``min_beam_sigma`` set below it), which the moves and the series need.
        The others (an exponential's centre, smooth within a pixel) keep their light as pixel
        integrals, but their central pixel holds light concentrated at its centre: the share
        ``1 - 12 <x^2>`` of it (``<x^2>`` its mean squared offset along an axis, from the
        Sérsic law within the pixel's area) is given the pixel's box (`F.point_share`).
        Returns the parameters and ``(which, dy, dx, point)``: the moved galaxies, their
        shifts (rendered pixels, differentiable in ``x0`` and ``y0``) and central pixels
        with those shares, or None if none is moved.
        """
        if self._beam[1] < MIN_BEAM_SIGMA * (1 - 1e-9):
            return params, None         # a move is exact only under a beam that band-limits
        with torch.no_grad():
            r_eff = params["r_eff"].double().cpu().numpy()
            n = params["n"].double().cpu().numpy()
            compact = F.sersic_enclosing_radius(_CENTRE_LIGHT, r_eff, n) < self.pixel
            # thin disks near edge-on: light within a pixel of their minor axis' line
            inc = params["inclination"].double().cpu().numpy()
            height = params["scale_height"].double().cpu().numpy()
            across = r_eff * np.abs(np.cos(inc)) + _THIN_HEIGHTS * height * np.sin(inc)
            compact = compact | (across < self.pixel)
        if not compact.any():
            return params, None
        which = torch.as_tensor(np.flatnonzero(compact), device=self.device)
        _, ny, nx = self.pixels.shape
        matrix = torch.as_tensor(self._sky_matrix, device=self.device, dtype=self.dtype)
        sky = torch.stack([params["x0"][which], params["y0"][which]])          # (2, moved)
        centre = torch.as_tensor([[(nx - 1) / 2], [(ny - 1) / 2]], device=self.device,
                                 dtype=self.dtype)
        position = torch.linalg.solve(matrix, sky) + centre
        pixel = torch.round(position).detach()
        shift = position - pixel
        moved = sky - matrix @ shift
        params = {**params, "x0": params["x0"].index_copy(0, which, moved[0]),
                  "y0": params["y0"].index_copy(0, which, moved[1])}
        # the mean squared offset along an axis of the light within the central pixel (its
        # area as a disk), face-on
        spread = F.sersic_central_spread(self.pixel / math.sqrt(math.pi), r_eff[compact],
                                         n[compact]) / 2 / self.pixel**2
        weight = torch.as_tensor(np.clip(1 - 12 * spread, 0, 1), device=self.device,
                                 dtype=self.dtype)
        index = (pixel + self.margin).long()
        return params, (which, shift[1], shift[0], (index[1], index[0], weight))

    def _relative_velocity(self, velocity):
        """A radio velocity (km/s) relative to the band's centre, subtracted in float64 before
        the cast to the projector's dtype (`_compression` turns it back into 1 - v / c)."""
        wide = torch.as_tensor(velocity, device=self.device)
        wide = wide.double() if wide.is_floating_point() else wide.to(torch.float64)
        return (wide - self._velocity_origin).to(self.dtype)

    def _compression(self, relative):
        """`velocity_compression` of a velocity given relative to the band's centre."""
        return velocity_compression(relative + self._velocity_origin)

    def _project(self, params, kinematics, multipoles=False):
        """The padded model ``(batch, n_chan, ny, nx)`` of plain disks.

        With ``multipoles``, a triple: the pixel integrals, which the beam's readout takes as
        light spread over each pixel; the light each pixel holds as its K `F.MULTIPOLES`
        (``(batch, K, n_chan, ny, nx)``, or None where there is none); and which galaxies'
        centres are in the multipoles (``(batch,)``).  Those are the galaxies whose cells
        are finer than ``oversample`` (narrower than `_CELLS_PER_MINOR_AXIS` default cells:
        concentrated within a pixel), whose pixel cells and central bands
        (`galcubecraft.refine`) go to the multipoles, and cusps (n > 1), whose central
        bands do.  The readout is exact for light smooth over a pixel, the multipoles for
        light concentrated within one.
        """
        plan = self.sampling(params, kinematics)
        outer = plan.outer()
        # the outer zone is always apart where it is sampled on blocks of pixels
        zoned = self.outer_block > 1 or \
            bool((outer.cells != plan.cells).any() or (outer.minor != plan.minor).any())
        plan = plan.with_footprint(*self.footprint(params, plan,
                                                   zone="inner" if zoned else None))
        if plan.bands is not None and plan.bands.any:
            plan = plan.with_entries(self.band_entries(params, plan))
        concentrated = plan.cells > self.oversample if multipoles else None
        placed = (concentrated.cpu() | (params["n"].detach().cpu() > 1.0)) if multipoles \
            else None
        # every pass deposits its light into the batch's one cube (and multipoles); the
        # zones' pixels and the bands are grouped apart: a galaxy's bands do not pad the
        # pixels of the others, nor its pixels their bands
        batch = int(params["flux"].shape[0])
        cube, moments = self._pixel_cells(params, plan, kinematics, concentrated,
                                          cube=self._new_cube(batch))
        if zoned:
            outer = outer.with_footprint(*self.footprint(params, outer, zone="outer"))
            if bool(outer.pixel_used.any()):
                blocks = self.outer_block > 1       # and read out as spread over them
                cube, moments = self._pixel_cells(
                    params, outer, kinematics, None if blocks else concentrated, blocks=blocks,
                    cube=cube, moments=moments)
        if plan.entries is not None:
            levels = torch.as_tensor(plan.bands.levels > 0)
            # the bands' light as multipoles where it is concentrated within a pixel: the
            # galaxies of concentrated cells, and cusps (n > 1), whose central pixel's light
            # peaks at its centre; an exponential's bands are read out with its envelope
            in_moments = placed if multipoles else torch.zeros_like(levels)
            for as_moments in (False, True):
                banded = (levels & (in_moments == as_moments)).nonzero().reshape(-1)
                if not len(banded):
                    continue
                sub = plan.select(banded)
                if as_moments and moments is None:
                    moments = self._new_cube(batch, multipoles=True)
                out = self._by_groups(
                    {k: v[banded.to(v.device)] for k, v in params.items()}, sub, kinematics,
                    self._group_by_cost(sub, self.group_ratio, bands=True),
                    partial(self._band_group, multipoles=as_moments),
                    moments if as_moments else cube, banded)
                if as_moments:
                    moments = out
                else:
                    cube = out
        ny_p, nx_p = self.padded_shape

        def unpadded(t):            # (a view: the spectra are brightness already)
            return t[..., :-1].reshape(*t.shape[:-1], ny_p, nx_p)
        if not multipoles:
            return unpadded(cube)
        return unpadded(cube), None if moments is None else unpadded(moments), placed

    def _new_cube(self, batch, multipoles=False):
        """A flat padded cube of zeros, (batch, n_chan, pixels + 1), the last pixel the spare
        that padding writes to; with ``multipoles``, (batch, K, n_chan, pixels + 1)."""
        ny_p, nx_p = self.padded_shape
        lead = (batch, len(F.MULTIPOLES)) if multipoles else (batch,)
        return torch.zeros((*lead, self._edges.numel() - 1, ny_p * nx_p + 1),
                           device=self.device, dtype=self.dtype)

    def _pixel_cells(self, params, plan, kinematics, concentrated=None, blocks=False, *,
                     cube, moments=None):
        """The pixel cells of ``plan``'s galaxies added to ``cube`` (`_new_cube`), and those
        of the galaxies ``concentrated`` (batch,) to ``moments`` as multipoles (made if None
        and needed); returns the pair.  With ``blocks``, the plan's pixels are blocks of
        rendered pixels (`footprint`'s outer zone on finer pixels)."""
        batch = int(params["flux"].shape[0])

        def render(idx, out, multipoles=False):
            sub = plan if idx is None else plan.select(idx)
            part = params if idx is None else {k: v[idx.to(v.device)] for k, v in params.items()}
            return self._by_groups(part, sub, kinematics,
                                   self._group_by_cost(sub, self.group_ratio),
                                   partial(self._project_group, multipoles=multipoles,
                                           blocks=blocks),
                                   out, torch.arange(batch) if idx is None else idx)
        if concentrated is None or not bool(concentrated.any()):
            return render(None, cube), moments
        if moments is None:
            moments = self._new_cube(batch, multipoles=True)
        if bool(concentrated.all()):
            return cube, render(None, moments, multipoles=True)
        inside = concentrated.nonzero().reshape(-1)
        spread = (~concentrated).nonzero().reshape(-1)
        return render(spread, cube), render(inside, moments, multipoles=True)

    def _by_groups(self, params, plan, kinematics, groups, render, out, rows):
        """``render(params, plan, kinematics, out, rows)`` for each group of galaxies: each
        adds its light to its ``rows`` (a CPU tensor, one per galaxy of ``params``) of
        ``out``, a batch's flat cube (`_new_cube`).  Returns ``out``."""
        if len(groups) == 1:
            return render(params, plan, kinematics, out, rows)

        def one(idx):
            sub = {k: v[idx.to(v.device)] for k, v in params.items()}
            return render(sub, plan.select(idx), kinematics, out, rows[idx])
        workers = self._group_workers(len(groups))
        if workers == 1:
            for idx in groups:
                out = one(idx)
            return out
        # over one thread each (`_group_workers`), the costliest first (`_group_by_cost`
        # lists them from the cheapest), each in this thread's inference mode (autograd's
        # modes are per thread); this thread's count is set back after them (it is also the
        # one that threads started later take)
        inference = torch.is_inference_mode_enabled()

        def in_mode(idx):
            # (inference_mode(False) turns autograd on: no_grad after it)
            with torch.inference_mode(inference), torch.no_grad():
                return one(idx)
        with _torch_threads(1), ThreadPoolExecutor(workers, initializer=single_threaded_renders) \
                as pool:
            for done in [pool.submit(in_mode, idx) for idx in reversed(groups)]:
                if done.result() is not out:    # (each adds to ``out`` in place: `_deposit`)
                    raise RuntimeError("a group's light was not added to the batch's cube")
        return out

    def _group_workers(self, n_groups):
        """How many groups of a batch render at once: each on one thread of the CPU threads
        of the render, where no autograd records it, it is not itself a group's, and the
        groups deposit into rows of their own (`_deposit`).  Each thread then works apart,
        without the barrier that every kernel split over threads waits at."""
        if self.device.type != "cpu" or _RENDER.group or torch.is_grad_enabled():
            return 1
        return max(1, min(_RENDER.budget or torch.get_num_threads(), n_groups))

    @staticmethod
    def _group_by_cost(plan, ratio, bands=False):
        """Split a batch into groups of similar shape, so that cheap galaxies are not padded to
        the most expensive one's size (results do not depend on the grouping).

        A galaxy's cost is its footprint's pixels x cells per pixel x minor-axis samples (with
        ``bands``, its band cells x their minor-axis samples), twice that for a trapezoid
        footprint; a group is padded to the largest of each.  In order of cost, each galaxy
        joins the group whose padded cost it raises least while that stays within ``ratio``
        of the group's own, else starts one: galaxies of similar cost but a different shape
        (more pixels, fewer cells) do not split a run of alike ones into many small groups.
        """
        footprint = 1.0 + (plan.trapezoid.double() if plan.trapezoid is not None else
                           torch.zeros(plan.cells.shape, dtype=torch.float64))
        if bands:
            shape = torch.stack([plan.entries.used.sum(dim=1).double(), footprint,
                                 plan.entries.minor.double() + 2], dim=1)
        else:
            shape = torch.stack([plan.pixel_used.sum(dim=1).cpu().double(),
                                 plan.cells.double() ** 2 * footprint,
                                 plan.minor.double() + 2], dim=1)
        shape = shape.cpu().numpy()
        cost = shape.prod(axis=1)
        n = len(cost)
        widest = np.empty((n, shape.shape[1]))     # each group's padded shape,
        sizes, totals = np.zeros(n), np.zeros(n)   # its galaxies and their own cost
        member = np.empty(n, dtype=np.int64)
        groups = 0
        for i in np.argsort(cost, kind="stable"):
            wider = np.maximum(widest[:groups], shape[i])
            padded = (sizes[:groups] + 1) * wider.prod(axis=1)
            fits = padded <= ratio * (totals[:groups] + cost[i])
            if fits.any():
                raised = np.where(fits, padded - sizes[:groups] * widest[:groups].prod(axis=1),
                                  np.inf)
                g = int(raised.argmin())
                widest[g] = wider[g]
            else:
                g, groups = groups, groups + 1
                widest[g] = shape[i]
            sizes[g] += 1
            totals[g] += cost[i]
            member[i] = g
        # each group's galaxies in batch order, the groups in order of their cheapest
        return [torch.from_numpy(np.flatnonzero(member == g)) for g in range(groups)] or \
            [torch.zeros(0, dtype=torch.int64)]

    def _shape(self, params, plan):
        """A group's parameters shaped (batch, 1, 1, 1) for the integrands, with what they
        share: b_n, the amplitude, the truncation radius, the inclination's sine and cosine
        and the dispersion; the channel edges (batch, n_chan + 1) in each galaxy's rest
        frame."""
        batch = params["flux"].shape[0]
        # One b_n solve per galaxy; the amplitude makes the total flux exact.  ``flux`` is the
        # observed-frame S dV (velocities at the line's observed frequency f_sys, as L' and gas
        # masses use it); on the grid's radio-velocity axis (relative to f0) the line's
        # integral is S dV f_sys / f0 = S dV (1 - v_sys / c)
        b_n = F.sersic_bn(params["n"])
        compression = self._compression(params["v_sys"])
        flux = params["flux"] * compression
        amplitude = flux / F.sersic_total_flux(torch.ones_like(b_n), params["r_eff"],
                                               params["n"], b_n=b_n)
        shaped = {k: (v.reshape(batch, 1, 1, 1) if v.dim() == 1 else v)
                  for k, v in params.items()}
        inc = params["inclination"].reshape(batch, 1, 1, 1)
        # the lines are integrated in each galaxy's rest frame, over the channel edges seen
        # from there (`internal_velocity`: the exact relativistic composition of the
        # systemic and internal velocities), so dispersions and rotation are physical
        sigma = params["dispersion"].clamp_min(1e-6)
        edges = self._rest_frame_edges(params)
        shaped.update(b_n=b_n.reshape(batch, 1, 1, 1),
                      amplitude=amplitude.reshape(batch, 1, 1, 1),
                      rmax=plan.rmax.to(self.device, self.dtype).reshape(batch, 1, 1, 1),
                      tail=plan.tail.to(self.device, self.dtype).reshape(batch, 1, 1, 1),
                      sin_i=torch.sin(inc), cos_i=torch.cos(inc).clamp_min(_COS_FLOOR),
                      sigma=sigma.reshape(batch, 1, 1, 1), edges=edges)
        # which footprints the group integrates (a Python set: no device sync in the chunks)
        trapezoid = plan.trapezoid if plan.trapezoid is not None else \
            torch.zeros(batch, dtype=torch.bool)
        shaped.update(trapezoid=trapezoid.to(self.device).reshape(batch, 1, 1, 1),
                      footprints={"trapezoid" if t else "box" for t in trapezoid.tolist()})
        return shaped, sigma

    def _rest_frame_edges(self, params):
        """The channel edges (batch, n_chan + 1) seen from each galaxy's rest frame
        (`internal_velocity`: the exact relativistic composition of the systemic and
        internal velocities), so that dispersions and motions are physical."""
        return internal_velocity(params["v_sys"][:, None], self._edges[None, :],
                                 origin=self._velocity_origin)

    @property
    def _ring_spacing(self):
        """The ring quadrature's sample spacing, in rendered pixels: ``1 / oversample``, and
        half that without a beam, whose pixels must be integrated without the beam's help
        (`galcubecraft.rings`)."""
        return 1.0 / self.oversample if self._beam is not None else 0.5 / self.oversample

    @property
    def _cloud(self):
        """Width (rendered pixels) of the clouds the ring quadrature deposits: one (the
        cloud-in-cell tent, which the beam's readout undoes), or without a beam the
        samples' own spacing."""
        return 1.0 if self._beam is not None else self._ring_spacing

    def _project_rings(self, params, model):
        """Disks that are more than plain, by the ring quadrature (`galcubecraft.rings`): the
        padded model, as `project`'s, its light in clouds of `_cloud` pixels."""
        resolution = (self._beam[1] if self._beam is not None else 0.5) * self.pixel
        # the padded field's corners, plus two clouds: no sample beyond lands on it
        ny_p, nx_p = self.padded_shape
        corners = np.array([[sx * nx_p / 2, sy * ny_p / 2] for sx in (-1, 1) for sy in (-1, 1)])
        reach = float(np.hypot(*(corners @ np.asarray(self._sky_matrix).T).T).max()
                      + 2 * self._cloud * self.pixel)
        plan = rings.plan_rings(params, model, self.pixel * self._ring_spacing, resolution,
                                reach=reach)
        flux = params["flux"] * self._compression(params["v_sys"])
        cube = rings.project_rings(
            params, model, plan, pixel=self.pixel, sky_matrix=self._sky_matrix,
            shape=self.pixels.shape, margin=self.margin, edges=self._rest_frame_edges(params),
            flux=flux, cloud=self._cloud, max_chunk_elements=self.max_chunk_elements,
            line_nodes_per_sigma=self.line_nodes_per_sigma,
            line_integration=self.line_integration)
        return cube[..., :-1].reshape(*cube.shape[:2], ny_p, nx_p) * self._inv_widths

    def _project_group(self, params, plan, kinematics, out, rows, multipoles=False,
                       blocks=False):
        """The pixel cells of a group added to its ``rows`` of ``out``, a batch's flat padded
        cube (`_new_cube`: (batch, n_chan, pixels + 1)); returns ``out``.

        With ``multipoles``, their light as its K `F.MULTIPOLES`, into ``out`` of (batch, K,
        n_chan, pixels + 1).  With ``blocks``, ``plan``'s pixels are blocks of
        ``outer_block``^2 rendered pixels (`outer_block_side`), whose light is spread evenly
        over them."""
        batch = params["flux"].shape[0]
        use = self._use_nodes(params, plan.cells.double()**2 * (plan.minor.double() + 2))
        if not multipoles:
            split = self._split_by_lines(params, plan, kinematics, use, partial(
                self._project_group, blocks=blocks), out, rows)
            if split is not None:
                return split
        n_cells = int(plan.cells.max())
        n_minor = int(plan.minor.max())
        side = self.outer_block if blocks else 1            # a pixel's side, rendered pixels
        cell_east, cell_north, cell_used, offsets = self._cells(plan.cells, n_cells, side)
        shaped, sigma = self._shape(params, plan)
        shaped.update(n_minor=plan.minor.to(self.device, self.dtype).reshape(batch, 1, 1, 1),
                      cell=(side * self.pixel / plan.cells).to(self.device, self.dtype)
                      .reshape(batch, 1, 1, 1),
                      cell_east=cell_east, cell_north=cell_north, cell_used=cell_used)
        if multipoles:
            shaped["offset_x"], shaped["offset_y"] = offsets
        if plan.bands is not None and plan.bands.any:
            # the pixel cells integrate the envelope, Sigma (1 - w(R; a_0))
            shaped["inv_outer"] = None                  # (no outer edge: `refine.band_taper`)
            shaped["inv_inner"] = torch.as_tensor(
                refine.envelope_inverse_radius(plan.bands), device=self.device,
                dtype=self.dtype).reshape(batch, 1, 1, 1)

        # each galaxy integrates only the pixels that can hold its light (its own footprint,
        # padded to the group's longest with a spare pixel that is dropped)
        pixels = plan.pixels
        shaped["pixel_used"] = plan.pixel_used[:, :, None, None].to(self.dtype)
        where = (self._block_east, self._block_north) if blocks else (self._east, self._north)
        lookup = pixels.clamp_max(where[0].numel() - 1)        # the spare reads a real pixel
        east, north = where[0][lookup], where[1][lookup]                 # (B, P)
        lines = None if multipoles else self._line_nodes(shaped["edges"], sigma, bool(use[0]))
        spectra, _ = self._integrate(east, north, shaped, ("pixel_used",), kinematics,
                                     n_minor, n_cells**2, lines)
        if blocks:
            # each block's light spread evenly over its rendered pixels
            fine = self._block_pixels[pixels.to(self.device)]            # (B, P, side^2)
            spectra = (spectra / side**2).unsqueeze(2).expand(-1, -1, side**2, -1)
            return self._deposit(spectra.flatten(1, 2), fine.flatten(1, 2), out, rows)
        return self._deposit(spectra, pixels, out, rows)

    def _deposit(self, spectra, pixels, out, rows):
        """Spectra (batch, P, n_chan), or (batch, P, K, n_chan) of multipoles, added at their
        ``pixels`` (batch, P) to the ``rows`` (batch,) of ``out``, a flat padded cube
        (`_new_cube`: its last pixel is the spare that padding writes to); returns ``out``.

        On the CPU without autograd each galaxy's spectra go straight into its row; else
        the group's are summed into a cube of its own, then added to ``out`` (one kernel on
        a GPU; under autograd, no in-place change of a view of ``out``)."""
        spectra = spectra.movedim(1, -1)                       # (batch, [K,] n_chan, P)
        lead = (pixels.shape[0],) + (1,) * (spectra.dim() - 2) + (pixels.shape[1],)
        index = pixels.to(self.device).reshape(lead).expand_as(spectra)
        if self.device.type == "cpu" and not (torch.is_grad_enabled() and
                                              (spectra.requires_grad or out.requires_grad)):
            for i, row in enumerate(rows.tolist()):
                out[row].scatter_add_(-1, index[i], spectra[i])
            return out
        cube = spectra.new_zeros((*spectra.shape[:-1], out.shape[-1]))
        return out.index_add_(0, rows.to(out.device), cube.scatter_add_(-1, index, spectra))

    def _band_group(self, params, plan, kinematics, out, rows, multipoles=False):
        """The central bands (`galcubecraft.refine`) of a group, each scaled to its exact flux,
        added to its ``rows`` of ``out`` (as `_project_group`'s light), or with ``multipoles``
        their light as its K `F.MULTIPOLES`; returns ``out``."""
        entries = plan.entries
        batch = params["flux"].shape[0]
        # each galaxy's samples (each cell its band's bins and two tails) per row (a pixel's
        # cells of one band share one)
        n_used = torch.where(entries.used, entries.row, -1).amax(dim=1).clamp_min(0) + 1
        samples = torch.where(entries.used, entries.bins + 2, 0).sum(dim=1)
        use = self._use_nodes(params, samples.double() / n_used)
        if not multipoles:
            split = self._split_by_lines(params, plan, kinematics, use, self._band_group,
                                         out, rows)
            if split is not None:
                return split
        shaped, sigma = self._shape(params, plan)

        def per_entry(t):
            return t.to(self.device, self.dtype)[:, :, None, None]
        cell = per_entry(entries.cell)
        clip = per_entry(entries.clip)
        p = dict(shaped)
        p["tail"] = per_entry(entries.tail)
        p.update(cell=cell, rmax=torch.minimum(clip, shaped["rmax"]),
                 stretch=torch.maximum(4 * cell, clip),
                 inv_outer=per_entry(entries.inv_outer), inv_inner=per_entry(entries.inv_inner),
                 n_minor=per_entry(entries.bins),
                 cell_east=torch.zeros_like(shaped["sigma"]),
                 cell_north=torch.zeros_like(shaped["sigma"]),
                 cell_used=torch.ones_like(shaped["sigma"]),
                 pixel_used=per_entry(entries.used))
        east = entries.east.to(self.device, self.dtype)
        north = entries.north.to(self.device, self.dtype)
        sliced = ("cell", "rmax", "stretch", "inv_outer", "inv_inner", "pixel_used", "tail",
                  "n_minor")
        if multipoles:
            # each cell's offset from its pixel's centre, in rendered pixels
            pixel = entries.pixel.clamp_max(self._east.numel() - 1).to(self.device)
            sky = torch.stack([east - self._east[pixel], north - self._north[pixel]], dim=-1)
            inverse = torch.linalg.inv(torch.as_tensor(self._sky_matrix, dtype=torch.float64))
            offset = sky @ inverse.T.to(self.device, self.dtype)
            p.update(offset_x=per_entry(offset[..., 0]), offset_y=per_entry(offset[..., 1]))
            sliced = sliced + ("offset_x", "offset_y")
        # a pixel's cells of one band are summed into one row before the channels
        n_rows = entries.row_pixel.shape[1]
        lines = None if multipoles else self._line_nodes(shaped["edges"], sigma, bool(use[0]))
        # each band its own bins: the cells come in order of decreasing counts, and each chunk
        # of them is padded to its first's
        spectra, weights = self._integrate(
            east, north, p, sliced, kinematics, entries.bins, 1, lines, weights=True,
            rows=entries.row.to(self.device), n_rows=n_rows)
        # each band's sampled flux scaled to its exact flux
        # (a band of two resolutions measures its flux on its coarse cells, and deposits its
        # fine ones, their light near the grid scaled to what the coarse cells hold there)
        n_levels = entries.n_levels
        slot = 3 * entries.level.to(self.device) + entries.part.to(self.device)
        sums = weights.new_zeros((batch, 3 * n_levels)).scatter_add(1, slot, weights) \
            .reshape(batch, n_levels, 3)
        fine, near = sums[..., refine.NEAR_FINE], sums[..., refine.NEAR_COARSE]
        sampled = sums[..., 0] + near
        bands, cores = refine.band_fluxes(shaped["amplitude"].reshape(-1),
                                          shaped["r_eff"].reshape(-1), shaped["n"].reshape(-1),
                                          shaped["b_n"].reshape(-1), plan.bands.outer, n_levels)
        last = torch.as_tensor(plan.bands.levels - 1, device=self.device)[:, None]
        k = torch.arange(n_levels, device=self.device)[None, :]
        exact = torch.where(k == last, cores, bands)
        safe = torch.where(sampled > 0, sampled, torch.ones_like(sampled))
        scale = torch.where(sampled > 0, exact / safe, torch.zeros_like(sampled))
        scale = torch.where(fine > 0, scale * near / torch.where(fine > 0, fine,
                                                                 torch.ones_like(fine)), scale)
        row_level = entries.row_level.to(self.device)
        factor = torch.gather(scale, 1, row_level)
        spectra = spectra * factor.reshape(*factor.shape, *(1,) * (spectra.dim() - 2))
        return self._deposit(spectra, entries.row_pixel, out, rows)

    def _integrate(self, east, north, p, sliced, kinematics, n_minor, per_point, lines,
                   weights=False, rows=None, n_rows=None):
        """Spectra (batch, P, n_chan) of the points ``(east, north)`` (pixels or band cells),
        in chunks of at most ``max_chunk_elements`` (checkpointed under autograd); with
        ``weights``, also each point's sampled flux (batch, P).  ``sliced`` names the entries
        of ``p`` that have one row per point.  With ``rows`` (batch, P), the points' spectra
        are summed into ``n_rows`` rows: (batch, n_rows, n_chan).  ``n_minor``: the bins
        along each point's window, the most of the batch (an int), or each point's (a CPU
        tensor (batch, P), in decreasing order along P; each chunk is padded to the most of
        its first points); a point costs ``per_point`` times its bins and tails."""
        batch, n_pts = east.shape
        need_grad = torch.is_grad_enabled() and any(
            isinstance(v, torch.Tensor) and v.requires_grad for v in p.values())
        pieces, sums = [], []
        start = 0
        while start < n_pts:
            bins = n_minor if isinstance(n_minor, int) else int(n_minor[:, start].max())
            chunk = max(1, self.max_chunk_elements
                        // (batch * per_point * (bins + 2) * self._edges.numel()))
            part = slice(start, start + chunk)
            start += chunk
            q = {**p, **{name: p[name][:, part] for name in sliced}}
            args = (east[:, part], north[:, part], q, kinematics, bins, lines, weights,
                    None if rows is None else rows[:, part], n_rows)
            out = (checkpoint(self._integrate_chunk, *args, use_reentrant=False) if need_grad
                   else self._integrate_chunk(*args))
            spectra, wsum = out if weights else (out, None)
            pieces.append(spectra)
            sums.append(wsum)
        shape = ((len(F.MULTIPOLES),) if "offset_x" in p else ()) + (self._edges.numel() - 1,)
        if rows is not None:
            spectra = sum(pieces) if pieces else east.new_zeros((batch, n_rows, *shape))
        else:
            spectra = torch.cat(pieces, dim=1) if pieces else east.new_zeros((batch, 0, *shape))
        wsum = (torch.cat(sums, dim=1) if pieces else east.new_zeros((batch, 0))) \
            if weights else None
        return spectra, wsum

    def footprint(self, params, plan=None, zone=None):
        """Each galaxy's pixels: indices into the padded grid, ``(batch, P)``, and a mask.

        A galaxy's light lies within ``rmax`` of its centre in the disk plane
        and within ``FOOTPRINT_HEIGHTS`` scale heights of it (all but ~1e-6 of
        the flux), so on the sky within ``rmax`` of the centre along its major
        axis and ``rmax cos i + 15 h sin i`` along its minor axis.  Pixels whose
        centre is further than that plus half a pixel diagonal are skipped (their
        flux is zero); with ``footprint=False`` none is.  ``zone`` 'inner' keeps the
        pixels within that box drawn for the plan's ``zone`` radius instead of ``rmax``,
        'outer' the others (None: both).  Where ``outer_block`` > 1 (`outer_block_side`)
        the zones are drawn on blocks of that many rendered pixels a side, and the 'outer'
        zone's indices are of those blocks, whose light is spread over them.
        Rows shorter than the group's longest are padded with the index one past the grid
        (masked out, and dropped after the scatter).  ``plan`` is `sampling`'s (computed
        when not given).
        """
        with torch.no_grad():
            plan = self.sampling(params) if plan is None else plan
            inc = params["inclination"].detach()
            h = params["scale_height"].detach()

            def disk(east, north):
                """Each galaxy's disk-plane (xi, eta) of the points (east, north)."""
                return F.sky_to_disk(east[None, :], north[None, :],
                                     params["x0"].detach()[:, None],
                                     params["y0"].detach()[:, None],
                                     params["position_angle"].detach()[:, None])

            def within(radius, xi, eta, side=1):
                """The points within ``radius`` (None: all), for pixels of ``side``."""
                if radius is None:
                    return torch.ones_like(xi, dtype=bool)
                pad = 0.5 * math.sqrt(2) * side * self.pixel
                radius = radius.to(self.device, self.dtype)
                along = (radius + pad)[:, None]
                across = (radius * torch.cos(inc) + FOOTPRINT_HEIGHTS * h * torch.sin(inc)
                          + pad)[:, None]
                return (xi.abs() <= along) & (eta.abs() <= across)
            reach = plan.rmax if self.use_footprint else None
            zoned = zone is not None and plan.zone is not None
            if zoned and self.outer_block > 1:
                side = self.outer_block
                blocks = disk(self._block_east, self._block_north)
                core = within(plan.zone, *blocks, side)
                if zone == "inner":
                    inside = within(reach, *disk(self._east, self._north)) \
                        & core[:, self._pixel_block]
                else:
                    inside = within(reach, *blocks, side) & ~core
            else:
                pixels = disk(self._east, self._north)
                inside = within(reach, *pixels)
                if zoned:
                    core = within(plan.zone, *pixels)
                    inside = inside & (core if zone == "inner" else ~core)
            if plan.bands is not None and self.use_footprint:
                # a galaxy wholly in its bands has no envelope for the pixel cells
                envelope = torch.as_tensor(plan.bands.envelope, device=inside.device)
                inside = inside & envelope[:, None]
            counts = inside.sum(dim=1)
            n_pix = int(counts.max()) if counts.numel() else 0
            # a stable sort puts each row's pixels first, in grid order
            order = torch.sort((~inside).to(torch.uint8), dim=1, stable=True).indices[:, :n_pix]
            valid = torch.arange(n_pix, device=inside.device)[None, :] < counts[:, None]
            spare = inside.shape[1]
            return torch.where(valid, order, torch.full_like(order, spare)), valid

    def band_entries(self, params, plan):
        """The cells of each galaxy's central bands (`galcubecraft.refine.band_entries`), whose
        windows reach as far as the galaxy's own or as the steps of the band's partition
        (``a_k / 8``, its inner step's scale) need, whichever is further (`_window_tail`)."""
        with torch.no_grad():
            inc = params["inclination"].detach().double().cpu()
            lam = params["scale_height"].detach().double().cpu() * torch.sin(inc) / \
                torch.cos(inc).clamp_min(_COS_FLOOR)
            levels = max(int(plan.bands.levels.max()), 1)
            radii = torch.as_tensor(plan.bands.outer)[:, None] / 2.0 ** torch.arange(levels)
            tails = torch.maximum(plan.tail[:, None], self._window_tail(lam[:, None], radii / 8))
        return refine.band_entries(
            plan.bands, x0=params["x0"], y0=params["y0"],
            position_angle=params["position_angle"], inclination=params["inclination"],
            scale_height=params["scale_height"], pixel=self.pixel, sky_matrix=self._sky_matrix,
            shape=self.pixels.shape, margin=self.margin,
            cos_floor=_COS_FLOOR, minor_density=self.minor_density,
            max_minor_samples=self.max_minor_samples,
            footprint=torch.where(plan.trapezoid, sum(self._footprint_sides(
                params["position_angle"].detach().double().cpu())), 0.0)
            if plan.trapezoid is not None else None, tails=tails)

    def _cells(self, cells, n_cells, side=1):
        """Cell-centre offsets within a pixel of ``side`` rendered pixels, (B, 1, C, 1) each,
        and a mask of the cells in use; and the offsets in rendered pixels along the columns
        and the rows."""
        batch = cells.numel()
        k = torch.arange(n_cells, dtype=torch.float64)
        s = cells.to(torch.float64).reshape(batch, 1)
        frac = side * ((k + 0.5) / s - 0.5)                          # (B, n_cells), pixels
        used = (k < s)
        fx = frac[:, None, :].expand(batch, n_cells, n_cells)        # along the columns
        fy = frac[:, :, None].expand(batch, n_cells, n_cells)        # along the rows
        m = self._sky_matrix
        east = m[0, 0] * fx + m[0, 1] * fy
        north = m[1, 0] * fx + m[1, 1] * fy
        mask = used[:, None, :] & used[:, :, None]

        def shaped(t):
            return t.reshape(batch, 1, -1, 1).to(self.device, self.dtype)
        return shaped(east), shaped(north), shaped(mask), (shaped(fx), shaped(fy))

    def _use_nodes(self, params, samples_per_pixel):
        """Per galaxy (a CPU bool tensor): whether its lines go through the velocity nodes
        (`_line_nodes`) rather than ``erf``, decided on its own node count and samples per
        pixel (``(batch,)``) so that it renders the same in any batch or group.  Nodes pay
        off when their grid is small against the samples x edges of a pixel."""
        batch = params["flux"].shape[0]
        if self.line_nodes_per_sigma is None or self.line_integration == "erf":
            return torch.zeros(batch, dtype=torch.bool)
        if self.line_integration == "nodes":
            return torch.ones(batch, dtype=torch.bool)
        counts = F.line_node_counts(self._rest_frame_edges(params),
                                    params["dispersion"].clamp_min(1e-6),
                                    self.line_nodes_per_sigma).detach().cpu()
        pay_off = _NODES_PAY_OFF if self.device.type == "cpu" else _NODES_PAY_OFF_GPU
        return counts <= pay_off * samples_per_pixel.detach().cpu().double() * \
            self._edges.numel()

    def _split_by_lines(self, params, plan, kinematics, use, render, out, rows):
        """``render`` on the galaxies whose lines take the nodes and on the others apart
        (`_use_nodes`), into their ``rows`` of ``out`` (`_by_groups`); None where they all
        agree."""
        if bool(use.all()) or not bool(use.any()):
            return None
        groups = [torch.nonzero(use).flatten(), torch.nonzero(~use).flatten()]
        return self._by_groups(params, plan, kinematics, groups, render, out, rows)

    def _line_nodes(self, edges, sigma, nodes):
        """The velocity nodes and node-to-channel matrix of a group, or None for ``erf``
        (``nodes``: whether its galaxies take them, `_use_nodes`).

        Multipoles (`_project`) are integrated with ``erf``: the K weights of a sample share
        its differences of erf, where the nodes would cost K times (the one-galaxy cubes of
        ``benchmarks.dataset``: 36 cubes/s with ``erf``, 32 with the nodes)."""
        if not nodes:
            return None
        origin, step, n_nodes = F.line_nodes(edges, sigma, self.line_nodes_per_sigma)
        # each channel's brightness per unit flux (`_inv_widths`) folded into the matrix
        matrix = F.node_to_channel_matrix(edges, origin, step, n_nodes, sigma) * \
            self._inv_widths.reshape(-1)
        shape = (-1, 1, 1, 1)
        return origin.reshape(shape), step.reshape(shape), n_nodes, matrix

    def _integrate_chunk(self, east, north, p, kinematics, n_minor, lines=None, weights=False,
                         rows=None, n_rows=None):
        cell = p["cell"]
        # sky_to_disk: cells (B, P, C, 1) -> galaxy frame
        e = east[:, :, None, None] + p["cell_east"]
        n = north[:, :, None, None] + p["cell_north"]
        xi, eta = F.sky_to_disk(e, n, p["x0"], p["y0"], p["position_angle"])
        sin_i, cos_i = p["sin_i"], p["cos_i"]
        # vertical window: the cell's sky strip seen in the disk plane, integrated over Z
        lam = (p["scale_height"] * sin_i / cos_i).clamp_min(1e-6 * cell)
        # the cell is a sky-aligned square: across the minor axis its footprint is a box of
        # width a = d max(|cos PA|, |sin PA|) convolved with one of width b = d min(...), a
        # trapezoid, integrated with the Laplace window analytically (`bin_window_integrals`)
        wide, narrow = self._footprint_sides(p["position_angle"])
        a, b = cell * wide, cell * narrow
        y1, y2 = (eta - 0.5 * a) / cos_i, (eta + 0.5 * a) / cos_i
        reach = 0.5 * b / cos_i + p["tail"] * lam
        lo_free, hi_free = y1 - reach, y2 + reach
        lo = torch.clamp(lo_free, min=-p["rmax"], max=p["rmax"])
        hi = torch.clamp(hi_free, min=-p["rmax"], max=p["rmax"])
        stretch = p["stretch"] if "stretch" in p else self._stretch(p["r_eff"], cell)
        # the bins are uniform in asinh((Y - Y_0) / s): symmetric about the window's middle
        # (midpoint errors cancel) unless the window is longer than 2 _PEAK_STRETCHES s, where
        # Y_0 is the point nearest the centre (the light's peak along the sight line) at least
        # _PEAK_STRETCHES s inside it; their u-range is at most 2 asinh((hi - lo) / 2s)
        inner_lo, inner_hi = lo + _PEAK_STRETCHES * stretch, hi - _PEAK_STRETCHES * stretch
        peak = torch.where(inner_lo <= inner_hi,
                           torch.maximum(torch.minimum(torch.zeros_like(hi), inner_hi), inner_lo),
                           0.5 * (lo + hi))
        u_lo = torch.asinh((lo - peak) / stretch)
        u_span = torch.asinh((hi - peak) / stretch) - u_lo
        # this galaxy's own p["n_minor"] bins; any further bins of the batch have zero width
        j = torch.arange(n_minor + 1, device=east.device, dtype=east.dtype)
        frac = torch.clamp(j / p["n_minor"], max=1.0)
        edges = peak + stretch * torch.sinh(u_lo + u_span * frac)     # (B, P, C, M + 1)
        start, width = edges[..., :-1], edges[..., 1:] - edges[..., :-1]
        g, at_edges, tail_lo, tail_hi = self._footprint_window(p, y1, y2, b / cos_i, edges, lo,
                                                               hi, lam)
        tail_lo = torch.where(lo_free >= -p["rmax"], tail_lo, torch.zeros_like(lo))
        tail_hi = torch.where(hi_free <= p["rmax"], tail_hi, torch.zeros_like(hi))
        # beyond the bins the window is exactly exponential (scale lam): each tail becomes one
        # more sample at its centroid, with the width (sqrt(12) lam) that gives its variance
        lam_b = lam.expand_as(lo)
        # each bin's sample at its window's centroid: its midpoint moved by w^2 dW / 12 g, dW
        # the window's change across the bin (from its values at the bin's edges; exact where
        # the window is linear across the bin), so that the window's slope within a bin (a
        # trapezoid's ramps, a box's smoothed edges) does not meet the light's as the midpoint
        # rule's first-order error (a thin n = 1 disk of r_eff = 2.3 pixels at 68 deg and PA 45
        # deg was 0.43% L1 from the converged render; 0.05% now)
        # (|width|: float32 rounding can leave consecutive edges a hair out of order)
        held = F.positive_mask(g - _HELD_WINDOW * width.abs())
        change = at_edges[..., 1:] - at_edges[..., :-1]
        shift = (width * width / 12) * change / F.pick(held, g, 1.0)
        shift = torch.maximum(torch.minimum(shift, 0.5 * width), -0.5 * width) * held[0]
        g = torch.cat([g, tail_lo, tail_hi], dim=-1)
        y = torch.cat([start + 0.5 * width + shift, lo - lam_b, hi + lam_b], dim=-1)
        width = torch.cat([width, _SQRT12 * lam_b, _SQRT12 * lam_b], dim=-1)
        radius = torch.sqrt(xi**2 + y**2 + (1e-4 * cell) ** 2)
        # surface_density x area -> flux of each sample (Jy km/s)
        # this pass's share of the light, T: the whole disk, its envelope or a central band
        # (refine), and the midpoint rule's leading error for Sigma T along the major axis
        # (the cell) and the bins (the tails too: their variance is lam^2)
        taper = None
        if "inv_inner" in p:
            taper = refine.band_taper(radius, p["inv_outer"], p["inv_inner"])
        power = F.sersic_power(radius, p["r_eff"], p["n"])
        q, dq = F.sersic_log_slope(radius, p["r_eff"], p["n"], p["b_n"], power=power)
        directions = F.radial_directions(xi, y, radius)
        along, across = F.midpoint_corrections(xi, y, radius, cell, width, q, dq, taper,
                                               directions)
        # a tail's correction holds where its Laplace scale is within the light's e-folding
        # length (where it is not, the tail's light is below _TAIL_ERROR by the choice of T)
        across = torch.cat([across[..., :-2], across[..., -2:].clamp(max=_TAIL_CORRECTION)], -1)
        share = (1.0 if taper is None else taper[0]) + along + across
        weight = (F.sersic(radius, p["amplitude"], p["r_eff"], p["n"], b_n=p["b_n"],
                           power=power) * g
                  * share.clamp_min(0.0) * (cell**2 / a * p["cell_used"] * p["pixel_used"]))
        # line_of_sight_velocity at the mean over the area each sample stands for, and its
        # spread there, in the galaxy's rest frame (the channel edges p["edges"] are too)
        v_circ, dv_dr, d2v = kinematics.circular_velocity_derivatives(radius, p)
        shift, spread2 = F.velocity_moments(xi, y, radius, v_circ, dv_dr, d2v, sin_i, cell,
                                            width, q, dq, share, taper, directions)
        v_los = F.line_of_sight_velocity(xi, radius, v_circ, 0.0, sin_i) + shift
        batch, n_pix = weight.shape[:2]
        flux = weight.sum(dim=(-2, -1)) if weights else None
        # with multipoles, each sample's light is also weighted by where in its pixel it lies:
        # (batch, P, K, C, M), whose K spectra are summed like the light's
        moments = F.cell_multipoles(weight, p["offset_x"], p["offset_y"], cell / self.pixel) \
            if "offset_x" in p else None
        if lines is not None:           # (never with moments: `_line_nodes`)
            # line_profile and integrate_los through the velocity nodes: deposit, then one
            # channel-integrated Gaussian per node
            origin, step, n_nodes, matrix = lines
            nodes = F.deposit_lines(weight, v_los.expand_as(weight),
                                    spread2.expand_as(weight), origin, step, n_nodes,
                                    rows=rows, n_rows=n_rows)
            spectra = torch.matmul(nodes, matrix)
            return (spectra, flux) if weights else spectra
        disp = torch.sqrt(p["sigma"] ** 2 + spread2)
        # line_profile: channel-integrated Gaussian; integrate_los: weighted sum over samples
        erf = F.erf_at_edges(p["edges"], v_los.reshape(batch, n_pix, -1),
                             disp.expand_as(v_los).reshape(batch, n_pix, -1),
                             out=self._erf_buffer(v_los.numel() * self._edges.numel()))
        light = weight.reshape(batch, n_pix, 1, -1) if moments is None else \
            moments.reshape(batch, n_pix, moments.shape[2], -1)
        summed = torch.matmul(light, erf)
        # half the differences of erf: each channel's flux; times `_inv_widths`: its brightness
        spectra = (summed[..., 1:] - summed[..., :-1]) * self._half_inv_widths
        if moments is None:
            spectra = spectra.squeeze(-2)
        if rows is not None:
            spectra = spectra.new_zeros((batch, n_rows, *spectra.shape[2:])).scatter_add_(
                1, rows.reshape(*rows.shape, *(1,) * (spectra.dim() - 2)).expand_as(spectra),
                spectra)
        return (spectra, flux) if weights else spectra

    @staticmethod
    def _footprint_window(p, y1, y2, ramp, edges, lo, hi, lam):
        """The window of each cell's footprint across the minor axis ([y1, y2] in the disk
        plane, ramps of ``ramp``) over its bins (between ``edges``), at their edges, and its
        tails below ``lo`` and above ``hi``: the trapezoid for the galaxies of
        ``p["trapezoid"]``, the box for the others (only what the group needs is computed)."""
        parts = []
        for kind in ("box", "trapezoid"):
            if kind not in p["footprints"]:
                continue
            # ramps at least _MIN_RAMP of the bins' span (rounding: see window_integral)
            r = torch.maximum(ramp, _MIN_RAMP * (hi - lo)) if kind == "trapezoid" else None
            parts.append((*F.bin_window_integrals(edges, y1, y2, lam, ramp=r),
                          F.window_tail(lo - y1, lo - y2, lam, "lower", ramp=r),
                          F.window_tail(hi - y1, hi - y2, lam, "upper", ramp=r)))
        if len(parts) == 1:
            return parts[0]
        return tuple(torch.where(p["trapezoid"], t, b) for b, t in zip(*parts))

    def project_streams(self, params):
        """Streams (`galcubecraft.diffuse.Stream`) on the padded grid, like `project`.

        ``params`` holds tensors of shape ``(batch,)`` (``points``: ``(batch, 3, 2)``,
        the Bézier control points in arcsec); see `galcubecraft.streams.project_streams`.
        """
        p = {k: (self._relative_velocity(v) if k in ("v_start", "v_end")
                 else torch.as_tensor(v, device=self.device, dtype=self.dtype))
             for k, v in params.items()}
        return streams.project_streams(
            p, pixel=self.pixel, sky_matrix=self._sky_matrix, shape=self.pixels.shape,
            margin=self.margin, edges=self._edges,
            velocity_origin=self._velocity_origin) * self._inv_widths

    def _erf_buffer(self, n):
        """A reused scratch tensor of at least ``n`` elements for `erf_at_edges` (no autograd)."""
        if torch.is_grad_enabled() or _RENDER.group:     # (one buffer, one thread)
            return None
        buf = self._erf_work
        if buf is None or buf.numel() < n or buf.device != self.device or buf.dtype != self.dtype:
            buf = torch.empty(n, device=self.device, dtype=self.dtype)
            self._erf_work = buf
        return buf

    def observe(self, model, cloud=0.0):
        """Convolve a padded model with the beam and spectral response; cut to the grid.

        The beam is two matrix products when it lies along the pixel axes, else an FFT
        (`galcubecraft.functional.beam_matrices`, `~galcubecraft.functional.convolve_beam`).
        ``cloud``: the width (rendered pixels) of the clouds the model's light was
        deposited in, which the readout takes back out: 0 for `project`'s models of plain
        disks, and, for the others (`galcubecraft.rings`), the projector's own.
        """
        with self._render_threads(model.shape[0] if model.dim() == 4 else 1):
            return self._observe(model, cloud=cloud)

    def cloud_for(self, kinematics):
        """The ``cloud`` of `observe` for `project`'s model of galaxies of ``kinematics`` (a
        rotation law or a `~galcubecraft.rings.DiskModel`)."""
        return 0.0 if self._model_of(kinematics)[0] is None or self._beam is None \
            else self._cloud

    def _readout(self, shift=None, cloud=0.0):
        """The beam operators' readout settings: the rendered pixels' step, what the grid's
        pixels hold, the moves (if any), the clouds' width, device and dtype."""
        return {"step": self.supersampling, "sampling": self.observed.sampling,
                "shift": shift, "cloud": cloud, "device": self.device, "dtype": self.dtype}

    def _observe_multipoles(self, model, moments, shift):
        """`_observe` of `_model`'s moved galaxies, their pixel integrals ``model`` and their
        ``moments`` (or None), moved by ``shift``: for a beam along the pixel axes, by
        matrices (`F.beam_matrices`, one pair per multipole, on the pixels that hold
        multipoles), else by the FFT (`F.multipole_spectrum`)."""
        if moments is None:
            return self._observe(model, shift=shift)
        if self._beam_matrices is None:
            spectrum = torch.fft.rfft2(model, s=self._translate_shape) + \
                F.multipole_spectrum(moments, self._translate_shape)
            transfer = F.beam_transfer_function(self._translate_shape, *self._beam,
                                                **self._readout(shift))
            out = F.read_pixels(F.from_spectrum(spectrum * transfer, self._translate_shape,
                                                self.padded_shape),
                                self.margin, self.supersampling, self.observed.shape[1:],
                                self.observed.sampling)
        else:
            out = F.convolve_beam_separable(model, self._operators(shift, 0.0, separable=True))
            with torch.no_grad():       # the rows and columns that hold multipoles (light)
                held = moments[:, 0].detach().sum(dim=(0, 1)) > 0
                rows = torch.nonzero(held.any(dim=1)).reshape(-1)
                cols = torch.nonzero(held.any(dim=0)).reshape(-1)
            if rows.numel():
                rows = slice(int(rows[0]), int(rows[-1]) + 1)
                cols = slice(int(cols[0]), int(cols[-1]) + 1)
                patch = moments[..., rows, cols]
                # the matrices of each order along y and along x
                pairs = [F.beam_matrices(self._translate_shape, self.padded_shape,
                                         self.margin, *self._beam, multipole=(j, j),
                                         **self._readout(shift))
                         for j in range(1 + max(max(order) for order in F.MULTIPOLES))]
                for k, (a, b) in enumerate(F.MULTIPOLES):
                    out = out + F.convolve_beam_separable(
                        patch[:, k], (pairs[b][0][..., rows], pairs[a][1][..., cols]))
        if self._kernel is not None:
            out = F.convolve_spectral(out, self._kernel)
        return out

    def _observe(self, model, shift=None, cloud=0.0):
        """`observe`; ``shift`` (``(dy, dx)``, ``(batch,)`` each, rendered pixels) also moves
        each model (`galcubecraft.functional.translate`) within the readout."""
        _, ny, nx = self.observed.shape
        matrices, transfer = self._beam_matrices, self._transfer
        if cloud and self._beam is None:
            cloud = 0.0                 # no readout: the clouds are the samples' own size
        if (shift is not None or cloud) and matrices is not None:
            matrices = self._operators(shift, cloud, separable=True)
        elif (shift is not None or cloud) and transfer is not None:
            transfer = self._operators(shift, cloud, separable=False)
        if matrices is not None:
            model = F.convolve_beam_separable(model, matrices)   # read out too
        elif transfer is not None:
            model = F.read_pixels(F.convolve_beam(model, transfer, self.fft_shape),
                                  self.margin, self.supersampling, (ny, nx),
                                  self.observed.sampling)
        if self._kernel is not None:
            model = F.convolve_spectral(model, self._kernel)
        return model
