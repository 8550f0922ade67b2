"""Central refinement: the light a galaxy's pixel cells cannot resolve, on cells of its own scale.

The projector integrates a disk on cells of a fixed fraction of a pixel
(`Projector.sampling`).  They resolve the light and the velocity field wherever
these vary slowly over a cell.  Near the centre of a small galaxy, of a
concentrated (high Sérsic n) profile, or of a disk whose rotation curve rises
within a cell (a flat curve's singular centre), they do not, however many
cells a pixel has.  There the surface density is split by a partition of unity
in radius::

    Sigma = Sigma (1 - w(R; a_0))                         the envelope: the pixel cells
          + sum_k Sigma (w(R; a_k) - w(R; a_k / 2))       band k = 0 .. K - 2
          + Sigma w(R; a_{K-1})                           the core

with ``w(R; a)`` one inside ``a / 2``, zero beyond ``a`` and a quintic smooth
step between (`radial_window`).  Band ``k`` lies within ``a_k / 4 < R < a_k``
and is integrated on square cells (a power of two below the pixel, so each lies
in one pixel) no larger than the scales it holds: ``a_k / band_cells`` (the
step), the light's e-folding length at its inner edge, and half the radius over
which its rotation curve bends (`band_cell`); over the sky box that holds its
light, with the projector's exact vertical windows and channel integrals.  Its
total flux is then set to its exact value, a one-dimensional quadrature of
``Sigma`` over the band (`band_fluxes`), so that the sampling of a cusp costs no
flux at any scale.  The bands halve down to the radius that encloses
`CORE_LIGHT` of the light: an unresolved source, however small, is a handful of
bands, each integrated on cells of its own size.

This module only plans and builds the bands (plain tensors, no units); the
projector integrates them.
"""
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import gammainc

from . import functional as F

__all__ = ["BandPlan", "BandEntries", "plan_bands", "envelope_inverse_radius", "band_entries",
           "band_fluxes", "radial_window", "radial_window_derivatives", "band_taper",
           "RESOLVE_CELLS", "band_cell", "RESOLVE_LIGHT_CELLS", "CORE_LIGHT", "BAND_CELLS",
           "BAND_HEIGHTS", "MAX_BAND_ENTRIES", "THICK_BANDS", "band_cells_for",
           "BAND_WINDOW_BINS", "BAND_STEP_BINS", "FOOTPRINT_BINS", "footprint_bin",
           "RESOLVE_VELOCITY", "VELOCITY_REFINEMENT"]

#: The pixel cells resolve the velocity field where the rotation curve is linear over this many
#: cells.
RESOLVE_CELLS = 2.0
#: The envelope's step (from a_0 / 2 to a_0) is at least this many pixel cells wide.
STEP_CELLS = 3.0
#: ... and the light where its e-folding length is at least this many cells (the projector
#: corrects the midpoint rule's leading error, so the error left is fourth order).
RESOLVE_LIGHT_CELLS = 1.0
#: The bands halve until the innermost encloses no more than this fraction of the light.
CORE_LIGHT = 1e-4
#: A band of outer radius a is integrated on cells of at most a / BAND_CELLS (finer where its
#: light or its velocity field needs them: `band_cell`).
BAND_CELLS = 4
#: A band's cells resolve its line-of-sight velocity field: across a cell the velocity changes
#: by at most this many line dispersions (each sample's line is broadened by the spread of the
#: velocities over its area, `galcubecraft.functional.velocity_moments`: exact in the variance,
#: and for a uniform gradient within 4e-4 of the line's L1 at 1.5 dispersions a cell, 3e-3 at
#: 2, 2e-2 at 3).  Steep rotation curves under narrow lines need it at the centre.
RESOLVE_VELOCITY = 1.5
#: ... but no finer than this many times `band_cell`'s other limits (the cost of a band grows
#: as the square): narrower lines are left at that (docs/rendering.rst, *Where it stops*).
VELOCITY_REFINEMENT = 4.0
#: Disks whose projected thickness ``h sin i`` exceeds this fraction of r_eff have band cells
#: twice finer (`band_cells_for`): their bands' light spreads along the minor axis, and on
#: coarser cells thick cusps were 0.3-1% L1 from the Monte Carlo cube (0.06-0.2% finer).
THICK_BANDS = 0.2
#: A band's cells reach this many scale heights from the plane (e^-8 = 3e-4 of its light lies
#: beyond; the band's flux is exact whatever its cells hold).
BAND_HEIGHTS = 8.0
#: Bins per band cell along windows longer than the band's inner step (thick or inclined
#: disks): with one, the pixels near a thick disk's projected axis were 4% off (0.1% of the
#: flux moved out of the field; tests/test_accuracy.py's sweep, case 41).
BAND_WINDOW_BINS = 2.0
#: ... and at most a / BAND_STEP_BINS (a band of outer radius a; its steps are a / 4 wide),
#: whatever its cells: the inner bands of thick disks have cells coarsened to a / 2
#: (`MAX_BAND_ENTRIES`), and with bins of half a cell an n = 7.4 disk (h = 0.44 r_eff, 89 deg)
#: was 0.40% L1 from the 4x finer render, 0.25% at a / 16 (as when every band had its
#: galaxy's most bins).
BAND_STEP_BINS = 16.0
#: Least bins across a cell's footprint where it is a trapezoid (a position angle between the
#: pixel axes): a bin's window is not flat across the trapezoid's ramps.  With bins of a cell
#: (1.5 across a face-on cell's window) and each sample at its bin's midpoint, a face-on n = 0.5
#: disk of r_eff = 3 pixels at PA 45 deg was 1.4% of its peak off in the central pixels, 0.37%
#: with a third of the footprint.  Since each sample sits at its window's centroid
#: (`galcubecraft.projector`), half of it does as well (0.19% of the peak, 0.045% L1; a third
#: 0.19% and 0.060%; tests/test_accuracy.py's thin disks at oblique position angles all within
#: 0.062% L1 and 0.21% of their peaks at a half, up to 0.097% and 0.50% with one), and renders
#: the dataset's cubes 4-7% faster than a third.
FOOTPRINT_BINS = 2.0
#: Most cells of one band over its box, and most more near the grid (more are needed only by
#: bands much thinner than the disk is thick, seen inclined; their cells are then coarsened by
#: powers of two, the band's flux staying exact, and finer near the grid: `band_entries`).
#: At 4096, thick cusps larger than the field (h ~ 0.7-0.9 r_eff, 56-90 deg) were 0.25-1.0% L1
#: from the 4x finer render; 0.09-0.21% at 8192 (twice the time for them), and one with a
#: band's box 140 times wider than the field 0.49%: 0.011% with the finer cells near the grid.
MAX_BAND_ENTRIES = 8192
#: `BandEntries.part` of a band's cells where it has two resolutions (`band_entries`): its
#: fine cells near the grid, whose light there is scaled to what its coarse cells measure
#: there, those coarse cells (counted, not deposited), and (0) every other cell.
NEAR_FINE, NEAR_COARSE = 1, 2
#: Bands beyond the radius holding all but this fraction of the light are not refined for it.
DIM_LIGHT = 1e-4
#: Light beyond the resolved radius below which the envelope is left out.
_NEGLIGIBLE = 1e-6
#: Stand-in for an infinite inverse radius (w = 0 everywhere; float32-safe).
_NONE = 1e30
_MAX_LEVELS = 48


def radial_window(radius, inv_a):
    """The partition's smooth step ``w(R; a)``: 1 for ``R <= a/2``, 0 for ``R >= a``.

    ``inv_a`` is ``1 / a`` (0 gives 1 everywhere; a huge value gives 0 for R > 0).  The
    step between is the quintic ``t^3 (10 - 15 t + 6 t^2)``, ``t = 2 - 2 R / a``, twice
    continuously differentiable.
    """
    t = torch.clamp(2.0 - 2.0 * radius * inv_a, 0.0, 1.0)
    return t * t * t * (10.0 + t * (6.0 * t - 15.0))


def radial_window_derivatives(radius, inv_a):
    """``w(R; a)`` (`radial_window`) and its first and second derivatives in R."""
    t = torch.clamp(2.0 - 2.0 * radius * inv_a, 0.0, 1.0)
    one = 1.0 - t
    w = t * t * t * (10.0 + t * (6.0 * t - 15.0))
    scaled = inv_a * t              # finite for inv_a = 1e30 (t is then 0): no inf * 0
    dw = -60.0 * scaled * t * one * one
    ddw = 240.0 * scaled * (inv_a * one) * (1.0 - 2.0 * t)
    return w, dw, ddw


def band_taper(radius, inv_outer, inv_inner):
    """A pass's share of the light, ``T = w(R; a_k) - w(R; a_{k+1})`` (`radial_window`), and
    its first and second derivatives in R: a tuple.  ``inv_outer`` None is the envelope's
    (``w = 1`` without an outer edge: ``1 - w(R; a_0)``), which then costs one window, not
    two."""
    inner = radial_window_derivatives(radius, inv_inner)
    if inv_outer is None:
        return 1.0 - inner[0], -inner[1], -inner[2]
    outer = radial_window_derivatives(radius, inv_outer)
    return tuple(o - i for o, i in zip(outer, inner))


@dataclass(frozen=True)
class BandPlan:
    """Which galaxies of a batch are refined, and how (one row per galaxy).

    Attributes
    ----------
    outer : ndarray (batch,)
        ``a_0`` (arcsec): the envelope is ``Sigma (1 - w(R; a_0))``; inf for no bands.
    levels : ndarray (batch,), int
        Number of bands K (0: none).
    envelope : ndarray (batch,), bool
        Whether the envelope holds light (False: the whole galaxy is in its bands).
    cell : ndarray (batch, max(levels))
        Each band's largest cell side (arcsec, `band_cell`; NaN past a galaxy's bands).
    light : ndarray (batch, max(levels))
        ... and that side were its velocities not refined for (`band_cell` of an infinite
        ``velocity``): the scale of its light, which its minor-axis bins resolve.
    across : ndarray (batch, max(levels))
        Each band's largest minor-axis bin (arcsec) for its velocities: across which the
        line-of-sight velocity changes by `RESOLVE_VELOCITY` line dispersions along the sight
        line, within the band (inf where not refined for; `band_entries`).
    """

    outer: np.ndarray
    levels: np.ndarray
    envelope: np.ndarray
    cell: np.ndarray
    light: np.ndarray
    across: np.ndarray

    @property
    def any(self):
        return bool(np.any(self.levels > 0))

    def select(self, idx):
        """The plan of the galaxies ``idx`` (an integer array)."""
        idx = np.asarray(idx)
        return BandPlan(outer=self.outer[idx], levels=self.levels[idx],
                        envelope=self.envelope[idx], cell=self.cell[idx],
                        light=self.light[idx], across=self.across[idx])


def band_cell(outer, r_eff, n, b_n, solid_body, bright, band_cells=BAND_CELLS,
              velocity=np.inf):
    """The largest cell side (arcsec) that resolves a band of outer radius ``outer``.

    The smallest of ``outer / band_cells`` (the band's step), the light's shortest e-folding
    length within the band (at its inner edge for a cusp, ``n > 1``, at its outer edge for
    ``n < 1``; none if the band lies beyond ``bright``,
    the radius holding all but `DIM_LIGHT` of the light) over `RESOLVE_LIGHT_CELLS`, the
    scale on which the rotation curve bends over `RESOLVE_CELLS`: ``outer / 4`` beyond the
    solid-body radius, the solid-body radius within it, and ``velocity``, the cell across
    which the line-of-sight velocity changes by `RESOLVE_VELOCITY` line dispersions at the
    band's inner edge (`plan_bands`; at most `VELOCITY_REFINEMENT` times finer than the
    others).  All but the first shrink with ``band_cells`` in proportion, so a finer
    ``band_cells`` refines everything.  NumPy arrays or floats.
    """
    scale = BAND_CELLS / band_cells
    # the e-folding length is a power of the radius: shortest at the band's inner edge for a
    # cusp (n > 1), at its outer edge for a flat-topped profile (n < 1)
    efold = np.minimum(F.sersic_efold(np.minimum(outer / 4, bright), r_eff, n, b_n),
                       F.sersic_efold(np.minimum(outer, bright), r_eff, n, b_n))
    light = np.where(outer / 4 < bright, efold / RESOLVE_LIGHT_CELLS, np.inf)
    bend = np.maximum(solid_body, outer / 4) / RESOLVE_CELLS
    side = np.minimum(outer / band_cells, scale * np.minimum(light, bend))
    return np.minimum(side, np.maximum(scale * velocity, side / VELOCITY_REFINEMENT))


def band_cells_for(band_cells, r_eff, scale_height, sin_i):
    """Each galaxy's cells per band radius: ``band_cells``, doubled for disks thick as seen
    (``h sin i > THICK_BANDS r_eff``).  NumPy arrays."""
    thick = np.asarray(scale_height) * np.asarray(sin_i) > THICK_BANDS * np.asarray(r_eff)
    return np.where(thick, 2 * band_cells, band_cells)


def plan_bands(r_eff, n, b_n, rmax, cell, solid_body, band_cells=BAND_CELLS,
               velocity_cell=None):
    """Plan each galaxy's bands (NumPy arrays of shape (batch,), arcsec).

    The pixel cells (``cell`` wide) resolve the light where its e-folding length
    ``n R / (b_n (R / r_eff)^(1/n))`` is at least `RESOLVE_LIGHT_CELLS` cells, and the
    velocity field beyond `RESOLVE_CELLS` cells or where the rotation curve is still
    linear (``R < solid_body``).  Bands start at twice the largest unresolved radius
    beyond which light remains (and at least ``2 STEP_CELLS`` cells, so that the
    envelope's step is resolved), and halve until the core encloses `CORE_LIGHT`, or until
    the core lies within the solid-body radius with its light resolved by its cells (from
    a quarter of its radius down to where `CORE_LIGHT` of the light is enclosed).  Each
    band's cell is `band_cell`'s (`band_entries` coarsens a band whose box would need more
    than `MAX_BAND_ENTRIES` of them, except near the grid: a band much thinner than the disk
    is thick, seen inclined; its flux stays exact).  ``velocity_cell``: a function of the
    radius (arcsec, (batch, m)) giving each galaxy's cells across which the line-of-sight
    velocity changes by `RESOLVE_VELOCITY` line dispersions there, a pair: along the major
    axis (`band_cell`) and across it in the disk plane, which the minor-axis bins resolve
    (`BandPlan.across`, the least within each band); none: the bands' velocities are not
    refined for.  It refines the bands, not where they start: bands out to where the pixel
    cells resolve the velocities made the reference render (10 km/s lines) 3.2 times slower.
    """
    r_eff, n, b_n, rmax, cell, solid_body = (
        np.asarray(v, dtype=float) for v in (r_eff, n, b_n, rmax, cell, solid_body))
    band_cells = np.broadcast_to(np.asarray(band_cells, dtype=float), r_eff.shape)
    x = np.logspace(-12, 0, 400)[None, :] * (rmax / r_eff)[:, None]          # R / r_eff
    radius = r_eff[:, None] * x
    efold = F.sersic_efold(radius, r_eff[:, None], n[:, None], b_n[:, None])
    enclosed = gammainc(2 * n[:, None], b_n[:, None] * x ** (1 / n[:, None]))
    reach = RESOLVE_CELLS * cell[:, None]
    unresolved = (efold < RESOLVE_LIGHT_CELLS * cell[:, None]) | (
        (radius < reach) & (solid_body[:, None] < reach))
    relevant = unresolved & (1 - enclosed > _NEGLIGIBLE)
    needed = relevant.any(axis=1)
    last = np.where(relevant, radius, 0.0).max(axis=1)
    outer = np.where(needed, np.maximum(2 * last, 2 * STEP_CELLS * cell), np.inf)
    envelope = ~needed | (1 - _enclosed(outer / 2, r_eff, n, b_n) > _NEGLIGIBLE)
    bright = F.sersic_enclosing_radius(1 - DIM_LIGHT, r_eff, n)
    # within this radius the light's shape no longer matters (the bands' own floor)
    floor = F.sersic_enclosing_radius(CORE_LIGHT, r_eff, n)
    levels = np.zeros(len(r_eff), dtype=np.int64)
    # each band's cell, its light's cell and its largest bin across for its velocities
    sides, light, across = (np.full((len(r_eff), _MAX_LEVELS), fill)
                            for fill in (np.nan, np.nan, np.inf))
    # the velocity-resolving cells on a log grid reaching every band's inner edge
    if velocity_cell is not None and needed.any():
        grid = np.logspace(-14, 0, 300)[None, :] * np.where(needed, outer, rmax)[:, None]
        log_velocity, log_across = (np.log(np.asarray(v, dtype=float).clip(1e-300, 1e300))
                                    for v in velocity_cell(grid))
    for row in np.flatnonzero(needed):
        a, k = outer[row], 1
        scale = BAND_CELLS / band_cells[row]

        def side(k, radius):
            # never coarser than the pixel cells the band stands in for
            def limit(velocity):
                return min(cell[row], band_cell(radius, r_eff[row], n[row], b_n[row],
                                                solid_body[row], bright[row], band_cells[row],
                                                velocity))
            light[row, k] = limit(np.inf)
            if velocity_cell is None:
                sides[row, k] = light[row, k]
                return
            sides[row, k] = limit(float(np.exp(np.interp(np.log(radius / 2), np.log(grid[row]),
                                                         log_velocity[row]))))
            # the band's light lies within radius / 4 .. radius of the centre
            ends = np.log([radius / 4, radius])
            inside = (np.log(grid[row]) > ends[0]) & (np.log(grid[row]) < ends[1])
            least = min(np.interp(ends, np.log(grid[row]), log_across[row]).min(),
                        log_across[row][inside].min(initial=np.inf))
            across[row, k] = scale * float(np.exp(least))
        side(0, a)
        while k < _MAX_LEVELS and _enclosed(a, r_eff[row], n[row], b_n[row]) > CORE_LIGHT:
            inner = a / 2
            if a <= solid_body[row] and _resolves_core(a, floor[row], sides[row, k - 1],
                                                       r_eff[row], n[row], b_n[row]):
                # within the solid-body radius, with the light resolved by the band's cells:
                # the core (this band and all within) is integrated as well as further bands
                break
            side(k, inner)
            a, k = inner, k + 1
        levels[row] = k
    width = max(int(levels.max()) if len(levels) else 0, 1)
    return BandPlan(outer=outer, levels=levels, envelope=envelope, cell=sides[:, :width],
                    light=light[:, :width], across=across[:, :width])


def _resolves_core(outer, floor, cell, r_eff, n, b_n):
    """Whether cells of side ``cell`` resolve the light within ``outer`` down to ``floor``:
    the e-folding length, a power of the radius, at least a cell at both ends (a cusp's,
    ``n > 1``, shrinks inwards without bound, so only a floor within which the light's shape
    no longer matters bounds it)."""
    ends = np.array([outer / 4, min(floor, outer / 4)])
    return bool(np.all(F.sersic_efold(ends, r_eff, n, b_n) >= cell))


def envelope_inverse_radius(bands):
    """``1 / a_0`` of each galaxy's envelope, ``Sigma (1 - w(R; a_0))`` (a huge number where
    there are no bands: the envelope is then the whole disk)."""
    return np.where(bands.levels > 0, 1.0 / bands.outer, _NONE)


def _enclosed(radius, r_eff, n, b_n):
    """Fraction of a Sérsic disk's light within ``radius``."""
    return gammainc(2 * n, b_n * (np.asarray(radius) / r_eff) ** (1 / n))


@dataclass(frozen=True)
class BandEntries:
    """The cells of every band of a batch, padded to the longest row.

    Every field is ``(batch, E)``: ``east``, ``north`` (cell centre, arcsec), ``cell`` (its
    side, arcsec), ``inv_outer``, ``inv_inner`` (the band's ``1/a_k`` and ``1/a_{k+1}``,
    `_NONE` for the core), ``clip`` (the band's reach ``a_k``), ``tail`` (its windows' reach
    in Laplace scales, ``tails``), ``level`` (band index),
    ``pixel`` (index into the padded grid; one past it for cells outside, which count
    towards the band's flux but are not deposited), ``used`` (mask) and ``row`` (the cell's
    (pixel, band) pair: its spectrum is summed into that row's before the channels are
    integrated), ``bins`` (the minor-axis bins of the cell: each band's cells get what their
    windows need, not the galaxy's most), ``part`` (0, or `NEAR_FINE` / `NEAR_COARSE` where the
    band has two resolutions: `band_entries`).  A galaxy's cells come in order of decreasing
    ``bins``, so that chunks of them are padded to similar counts.  ``row_pixel`` and
    ``row_level`` (batch, R) are each row's pixel and band.
    """

    east: torch.Tensor
    north: torch.Tensor
    cell: torch.Tensor
    inv_outer: torch.Tensor
    inv_inner: torch.Tensor
    clip: torch.Tensor
    tail: torch.Tensor
    level: torch.Tensor
    pixel: torch.Tensor
    used: torch.Tensor
    row: torch.Tensor
    bins: torch.Tensor
    part: torch.Tensor
    row_pixel: torch.Tensor
    row_level: torch.Tensor
    n_levels: int

    _PER_CELL = ("east", "north", "cell", "inv_outer", "inv_inner", "clip", "tail", "level",
                 "pixel", "used", "row", "bins", "part")

    @property
    def minor(self):
        """The most minor-axis bins of any of each galaxy's cells, (batch,) (one where it has
        none)."""
        return torch.where(self.used, self.bins, 1).amax(dim=1) if self.bins.shape[1] else \
            torch.ones(self.bins.shape[0], dtype=torch.int64)

    def select(self, idx):
        rows = {name: getattr(self, name)[idx] for name in
                self._PER_CELL + ("row_pixel", "row_level")}
        longest = max(int(rows["used"].sum(dim=1).max()), 1) if len(idx) else 1
        for name in self._PER_CELL:
            rows[name] = rows[name][:, :longest]
        n_rows = int(rows["row"].max()) + 1 if rows["row"].numel() else 1
        rows["row_pixel"] = rows["row_pixel"][:, :n_rows]
        rows["row_level"] = rows["row_level"][:, :n_rows]
        return BandEntries(**rows, n_levels=self.n_levels)


def footprint_bin(footprint, side, cos_i):
    """The widest bin (disk-plane arcsec along the minor axis) across the trapezoid footprint
    of a cell of ``side`` whose width across the minor axis is ``footprint`` sides on the sky:
    1 / `FOOTPRINT_BINS` of it, seen at ``cos i``."""
    return footprint * side / (cos_i * FOOTPRINT_BINS)


def _band_bins(side, lit, a, tail, h, sin_i, cos_i, across, footprint, minor_density,
               max_minor_samples):
    """The minor-axis bins of a band's cells of ``side`` (each row a galaxy; all arcsec).

    The window (1.5 cells / cos i + its Laplace tails, ``tail`` scales of ``h sin i / cos
    i``), at most the band's width ``2 a``, in bins where they are finest (asinh stretch as the
    disk's) of a cell of its light (``lit``: the cells without their halvings for the
    velocities, which change along the major axis), of 1 / `BAND_WINDOW_BINS` of it and at
    most a / `BAND_STEP_BINS` where the window is longer than the band's inner step (a / 4:
    thick or inclined disks, whose windows cross the band's edges, not its cells), at most
    the band's bin for the velocities along the sight line (``across``; no finer than
    `VELOCITY_REFINEMENT` times the others, as the cells), and at most `footprint_bin` where
    the cell's ``footprint`` is a trapezoid (> 0)."""
    window = 1.5 * side / cos_i + 2 * tail * h * sin_i / cos_i
    span = torch.minimum(window, 2 * a)
    stretch = torch.maximum(4 * side, a)
    lit = torch.maximum(side, lit)
    finest = torch.where(window > a / 4, torch.minimum(lit / BAND_WINDOW_BINS,
                                                       a / BAND_STEP_BINS), lit)
    finest = torch.minimum(finest, torch.maximum(across, finest / VELOCITY_REFINEMENT))
    if footprint is not None:
        finest = torch.where(footprint > 0, torch.minimum(
            finest, footprint_bin(footprint, side, cos_i)), finest)
    return torch.ceil(2 * torch.asinh(span / (2 * stretch)) * stretch * minor_density
                      / finest - 1e-3).clamp(1, max_minor_samples).to(torch.int64)


def band_entries(bands, *, x0, y0, position_angle, inclination, scale_height, pixel,
                 sky_matrix, shape, margin, cos_floor, minor_density, max_minor_samples,
                 band_heights=BAND_HEIGHTS, max_entries=None, footprint=None,
                 tails=None):
    """The cells of every galaxy's bands (`BandEntries`), built on the CPU in float64.

    Band ``k`` of outer radius ``a`` holds light within ``a`` of the centre in the disk
    plane and within ``band_heights`` scale heights of it: on the sky within ``a``
    along the major axis and ``a cos i + band_heights h sin i`` along the minor
    axis.  Its cells are squares of ``pixel / 2^j``, the largest power of two at most
    the band's ``bands.cell``, nested in the pixels; the cells whose centres lie within that box
    (widened by half a cell diagonal) are kept.

    A band whose box would need more than ``max_entries`` (default `MAX_BAND_ENTRIES`) such
    cells (a thick disk's, seen inclined: its box reaches ``band_heights`` scale heights along
    the minor axis, mostly beyond the field) has two resolutions.  Its box is covered by cells
    coarsened by powers of two to fit ``max_entries`` (at most a pixel), which measure its
    light; the blocks of those coarse cells that meet the padded grid are split into cells as
    fine as up to ``max_entries`` more of them allow, which place it (`NEAR_FINE`; the coarse
    cells there, `NEAR_COARSE`, are counted, not deposited): the projector scales the fine
    cells' light to what the coarse ones measure there, and the band's to its exact flux.

    ``footprint`` (batch,): the width of a
    cell's footprint across the minor axis per unit of its side where it is a trapezoid (0
    where it is a box), which gets bins of at most 1 / `FOOTPRINT_BINS` of it.  ``tails``
    (batch, levels): how many Laplace scales each band's windows reach before their tails
    are one sample (default 3), which their bins cover.
    """
    x0, y0, pa, inc, h = (torch.as_tensor(v, dtype=torch.float64).detach().cpu().reshape(-1)
                          for v in (x0, y0, position_angle, inclination, scale_height))
    max_entries = MAX_BAND_ENTRIES if max_entries is None else max_entries
    batch = x0.numel()
    m = torch.as_tensor(np.asarray(sky_matrix, dtype=float))
    m_inv = torch.linalg.inv(m)
    _, ny, nx = shape
    ny_p, nx_p = ny + 2 * margin, nx + 2 * margin
    spare = ny_p * nx_p
    sin_i, cos_i = torch.sin(inc), torch.cos(inc).clamp_min(cos_floor)
    sin_pa, cos_pa = torch.sin(pa), torch.cos(pa)
    parts = {k: [] for k in ("east", "north", "cell", "inv_outer", "inv_inner", "clip", "tail",
                             "level", "pixel", "used", "bins", "part")}
    n_levels = int(bands.levels.max()) if batch else 0
    for k in range(n_levels):
        rows = np.flatnonzero(bands.levels > k)
        a = torch.as_tensor(bands.outer[rows] / 2.0**k)
        last = torch.as_tensor(bands.levels[rows] == k + 1)
        r = torch.as_tensor(rows)
        tail = torch.full_like(a, 3.0) if tails is None else \
            torch.as_tensor(tails, dtype=torch.float64)[r, k]
        along = a
        across = a * cos_i[r] + band_heights * h[r] * sin_i[r]
        # cells: the largest power-of-two fraction of a pixel within the band's cell; where the
        # band's box would need more than max_entries of them, coarsened by powers of two (at
        # most to a pixel) over the box, and over the blocks of those coarse cells that meet
        # the padded grid as fine as max_entries more of them allow: a thick disk's band
        # reaches far beyond the field along the minor axis, and its cells there only count
        # towards the band's flux

        def halvings(limit):
            return torch.clamp(torch.ceil(torch.log2(pixel / torch.as_tensor(limit)) - 1e-9),
                               min=0)

        def fitted(split, area):
            """``split`` less the halvings that fit ``area`` (pixels^2) in max_entries."""
            cells = area * 4.0**split
            return (split - torch.ceil(0.5 * torch.log2(cells / max_entries)).clamp_min(0)
                    ).clamp_min(0)
        wanted = halvings(bands.cell[rows, k])
        # the cells were their velocities not refined for (the bins need that only where the
        # velocities change along the sight line: `BandPlan.across`)
        lit = pixel / 2.0**halvings(bands.light[rows, k])
        fine = pixel / 2.0**wanted
        coarse = fitted(wanted, 4 * (along + fine) * (across + fine) / pixel**2)
        half = 0.5 * math.sqrt(2) * pixel / 2.0**coarse            # a coarse cell's
        lo, hi = _pixel_box(x0[r], y0[r], sin_pa[r], cos_pa[r], m_inv, along + half,
                            across + half)
        # in pixel indices (pixel j spans j - 1/2 .. j + 1/2), shifted by a half, so that
        # cells of side 2^-s pixels start at multiples of it and nest in the pixels
        centre = torch.tensor([(nx - 1) / 2, (ny - 1) / 2], dtype=torch.float64)[:, None]
        lo, hi = lo + centre + 0.5, hi + centre + 0.5
        step_c = 2.0**-coarse                                         # pixels
        grid_lo = torch.tensor([-margin, -margin], dtype=torch.float64)[:, None]
        grid_hi = torch.tensor([nx + margin, ny + margin], dtype=torch.float64)[:, None]
        # the coarse cells over the box's bounding rectangle, from cell ``start`` to ``end``,
        # and the blocks of them that meet the padded grid
        start, end = torch.floor(lo / step_c), torch.ceil(hi / step_c)
        near_lo = torch.maximum(torch.floor(grid_lo / step_c), start) * step_c
        near_hi = torch.minimum(torch.ceil(grid_hi / step_c), end) * step_c
        across_bin = torch.as_tensor(bands.across[rows, k])
        width = None if footprint is None else \
            torch.as_tensor(footprint, dtype=torch.float64).reshape(-1)[r]

        def cells(split, sx, sy, valid):
            """The cells of side ``2^-split`` pixels (rows,) centred at ``sx - 1/2``, ``sy -
            1/2`` (rows, N; pixel indices) where ``valid``: a dict of (rows, N) tensors,
            ``keep`` those in the box."""
            side = pixel / 2.0**split                                 # arcsec
            col = torch.round(sx - 0.5).to(torch.int64) + margin
            row = torch.round(sy - 0.5).to(torch.int64) + margin
            cx, cy = sx - 0.5 - (nx - 1) / 2, sy - 0.5 - (ny - 1) / 2   # from the centre
            east = m[0, 0] * cx + m[0, 1] * cy
            north = m[1, 0] * cx + m[1, 1] * cy
            xi, eta = F.sky_to_disk(east, north, x0[r][:, None], y0[r][:, None], pa[r][:, None])
            half = 0.5 * math.sqrt(2) * side
            keep = valid & (xi.abs() <= (along + half)[:, None]) & \
                (eta.abs() <= (across + half)[:, None])
            on_grid = (col >= 0) & (col < nx_p) & (row >= 0) & (row < ny_p)
            bins = _band_bins(side, lit, a, tail, h[r], sin_i[r], cos_i[r], across_bin, width,
                              minor_density, max_minor_samples)
            return {"east": east, "north": north, "keep": keep,
                    "pixel": torch.where(on_grid, row * nx_p + col, torch.full_like(col, spare)),
                    "cell": side[:, None].expand_as(east),
                    "bins": bins[:, None].expand_as(east)}
        count = (end - start).clamp_min(1).to(torch.int64)
        ix = torch.arange(int(count[0].max()), dtype=torch.float64)
        iy = torch.arange(int(count[1].max()), dtype=torch.float64)
        sx = ((start[0][:, None, None] + ix[None, None, :] + 0.5) * step_c[:, None, None])
        sy = ((start[1][:, None, None] + iy[None, :, None] + 0.5) * step_c[:, None, None])
        sx, sy = (t.reshape(len(rows), -1) for t in torch.broadcast_tensors(sx, sy))
        valid = ((ix[None, None, :] < count[0][:, None, None])
                 & (iy[None, :, None] < count[1][:, None, None])).reshape(len(rows), -1)
        outer = cells(coarse, sx, sy, valid)
        # those near the grid, and the area they cover in the box
        near = outer["keep"] & (sx > near_lo[0][:, None]) & (sx < near_hi[0][:, None]) & \
            (sy > near_lo[1][:, None]) & (sy < near_hi[1][:, None])
        area = near.sum(dim=1) * step_c**2
        split_f = torch.maximum(fitted(wanted, area), coarse)
        two = (split_f > coarse) & (area > 0)
        # there, where the band has two resolutions, the coarse cells only measure the light
        # that their fine cells place
        near = near & two[:, None]
        outer["part"] = torch.where(near, NEAR_COARSE, 0)
        outer["pixel"] = torch.where(near, spare, outer["pixel"])
        full = {name: [v] for name, v in outer.items()}
        if bool(two.any()):     # the fine cells: each of those coarse cells split into d^2
            order = torch.sort((~near).to(torch.uint8), dim=1, stable=True).indices
            order = order[:, :int(near.sum(dim=1).max())]
            d = torch.where(two, 2.0**(split_f - coarse), 1.0)
            j = torch.arange(int(d.max()), dtype=torch.float64)
            offset = ((j[None, :] + 0.5) / d[:, None] - 0.5) * step_c[:, None]  # (rows, d)
            inside = j[None, :] < d[:, None]
            fx = torch.gather(sx, 1, order)[:, :, None, None] + offset[:, None, None, :]
            fy = torch.gather(sy, 1, order)[:, :, None, None] + offset[:, None, :, None]
            fine_valid = torch.gather(near, 1, order)[:, :, None, None] & \
                inside[:, None, None, :] & inside[:, None, :, None]
            fx, fy, fine_valid = (t.reshape(len(rows), -1) for t in
                                  torch.broadcast_tensors(fx, fy, fine_valid))
            inner = cells(split_f, fx, fy, fine_valid)
            inner["part"] = torch.full_like(inner["pixel"], NEAR_FINE)
            for name in full:
                full[name].append(inner[name])
        full = {name: torch.cat(v, dim=1) for name, v in full.items()}
        keep = full.pop("keep")
        order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
        longest = int(keep.sum(dim=1).max())
        order = order[:, :longest]
        used = torch.gather(keep, 1, order)
        level_parts = {name: torch.gather(v, 1, order) for name, v in full.items()}
        per_row = {"inv_outer": 1.0 / a,
                   "inv_inner": torch.where(last, torch.full_like(a, _NONE), 2.0 / a),
                   "clip": a, "tail": tail, "level": torch.full_like(a, float(k))}
        # scatter this level's rows into the batch, padded
        for name in parts:
            if name in level_parts:
                v = level_parts[name]
            elif name == "used":
                v = used
            else:
                v = per_row[name][:, None].expand(len(rows), longest)
            dtype = torch.bool if name == "used" else (
                torch.int64 if name in ("pixel", "bins", "part") else torch.float64)
            # padding: a harmless cell (no zero sizes: its weight is masked, not NaN)
            fill = {"pixel": spare, "cell": pixel, "clip": pixel, "inv_inner": _NONE,
                    "bins": 1}.get(name, 0)
            full_v = torch.full((batch, longest), fill, dtype=dtype)
            full_v[r] = v.to(dtype)
            parts[name].append(full_v)
    if not n_levels:
        empty = torch.zeros(batch, 0, dtype=torch.float64)
        none = torch.zeros(batch, 0, dtype=torch.int64)
        return BandEntries(east=empty, north=empty, cell=empty, inv_outer=empty,
                           inv_inner=empty, clip=empty, tail=empty, level=none, pixel=none,
                           used=empty.bool(), row=none, bins=none, part=none, row_pixel=none,
                           row_level=none, n_levels=0)
    cat = {name: torch.cat(v, dim=1) for name, v in parts.items()}
    # each row's cells first (all levels), so that rows can be trimmed, those of the most
    # bins first, so that chunks of cells are padded to similar counts
    order = torch.sort(torch.where(cat["used"], -cat["bins"], 1), dim=1, stable=True).indices
    longest = max(int(cat["used"].sum(dim=1).max()), 1)
    order = order[:, :longest]
    out = {name: torch.gather(v, 1, order) for name, v in cat.items()}
    out["level"] = out["level"].to(torch.int64)
    out.update(_pixel_rows(out["pixel"], out["level"], out["used"], n_levels, spare))
    return BandEntries(**out, n_levels=n_levels)


def _pixel_rows(pixel, level, used, n_levels, spare):
    """Number each galaxy's distinct (pixel, band) pairs: ``row`` (batch, E) per cell, and
    ``row_pixel``, ``row_level`` (batch, R) per pair (padding: the spare pixel, band 0).

    A pixel's cells of one band share a spectrum, so the channels are integrated once per
    pair rather than once per cell (the band's flux scale still applies per band).
    """
    key = torch.where(used, pixel * n_levels + level, torch.full_like(pixel, -1))
    ordered, order = torch.sort(key, dim=1, descending=True, stable=True)   # padding last
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    sorted_row = torch.cumsum(new.to(torch.int64), dim=1) - 1
    row = torch.empty_like(sorted_row).scatter_(1, order, sorted_row)
    n_rows = int(sorted_row.max()) + 1 if sorted_row.numel() else 1
    row_key = torch.full((pixel.shape[0], n_rows), -1, dtype=torch.int64)
    row_key.scatter_(1, sorted_row, ordered)
    real = row_key >= 0
    row_pixel = torch.where(real, row_key // max(n_levels, 1), torch.full_like(row_key, spare))
    row_level = torch.where(real, row_key % max(n_levels, 1), torch.zeros_like(row_key))
    return {"row": row, "row_pixel": row_pixel, "row_level": row_level}


def _pixel_box(x0, y0, sin_pa, cos_pa, m_inv, box_xi, box_eta):
    """Bounds (2, rows) in pixel offsets from the field centre of the galaxy-frame boxes
    ``|xi| <= box_xi, |eta| <= box_eta``."""
    corners = []
    for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        xi, eta = sx * box_xi, sy * box_eta
        east = x0 + xi * sin_pa - eta * cos_pa
        north = y0 + xi * cos_pa + eta * sin_pa
        corners.append(m_inv @ torch.stack([east, north]))
    corners = torch.stack(corners)                                    # (4, 2, rows)
    return corners.min(dim=0).values, corners.max(dim=0).values


#: Gauss-Legendre nodes per piece of a band's radial quadrature (in ln R).
_QUADRATURE_NODES = 24
#: The core's quadrature starts this many e-foldings of radius below a / 2.
_CORE_DEPTH = 16.0


def band_fluxes(amplitude, r_eff, n, b_n, outer, n_levels):
    """Exact flux of each band, ``(batch, n_levels)`` (torch, differentiable).

    ``outer`` (batch,) is ``a_0``; band ``k`` has ``a_k = a_0 / 2^k``.  The bands are
    ``Sigma (w(R; a_k) - w(R; a_k / 2))``, and the core (the last band of each galaxy, where
    ``k = levels - 1``) is ``Sigma w(R; a_k)``: both are returned for every k (the caller
    picks the core's value at each galaxy's last level).  Each is the integral of
    ``2 pi R Sigma(R) x window`` by Gauss-Legendre in ``ln R`` over the pieces where the
    window is a polynomial: ``(a/4, a/2)`` and ``(a/2, a)`` for a band, ``(a e^-16, a/2)`` (in
    sixteen pieces) and ``(a/2, a)`` for a core.
    Returns ``(bands, cores)``.
    """
    dtype, device = amplitude.dtype, amplitude.device
    x, w = np.polynomial.legendre.leggauss(_QUADRATURE_NODES)
    x = torch.as_tensor(x, dtype=dtype, device=device)
    w = torch.as_tensor(w, dtype=dtype, device=device)
    k = torch.arange(n_levels, dtype=dtype, device=device)
    a = torch.as_tensor(outer, dtype=dtype, device=device)[:, None] / 2.0**k     # (B, K)
    inv_a = 1.0 / a

    def piece(lo, hi):
        """Nodes (B, K, Q) in R and weights of dR over (lo, hi), by Gauss-Legendre in ln R."""
        llo, lhi = torch.log(lo), torch.log(hi)
        t = 0.5 * (lhi + llo)[..., None] + 0.5 * (lhi - llo)[..., None] * x
        radius = torch.exp(t)
        return radius, 0.5 * (lhi - llo)[..., None] * w * radius

    def integral(radius, dr, window):
        shape = (-1, 1, 1)
        sigma = F.sersic(radius, amplitude.reshape(shape), r_eff.reshape(shape), n.reshape(shape),
                         b_n=b_n.reshape(shape))
        return (2 * math.pi * radius * sigma * window * dr).sum(dim=-1)

    inv = inv_a[..., None]
    r1, d1 = piece(a / 4, a / 2)
    r2, d2 = piece(a / 2, a)
    outer_step = integral(r2, d2, radial_window(r2, inv))
    bands = integral(r1, d1, 1 - radial_window(r1, 2 * inv)) + outer_step
    # the core's inside, in pieces one e-folding of radius long (a profile with n < 1 falls
    # off within one)
    steps = torch.arange(int(_CORE_DEPTH) + 1, dtype=dtype, device=device)
    ends = (a / 2)[..., None] * torch.exp(-steps)                         # (B, K, D + 1)
    r0, d0 = piece(ends[..., 1:], ends[..., :-1])                         # (B, K, D, Q)
    r0, d0 = r0.flatten(-2), d0.flatten(-2)
    cores = integral(r0, d0, torch.ones_like(r0)) + outer_step
    return bands, cores
