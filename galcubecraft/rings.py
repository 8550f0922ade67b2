"""Disks as sets of tilted rings: any profile, flow or warp, rendered by quadrature.

The projector integrates a plain galaxy (a Sérsic disk, exponential in height, on circular
orbits, one orientation) with its exact sky-plane cells.  Every other disk (rings,
tabulated profiles, other vertical laws, radial, vertical, lagging and harmonic flows, a
dispersion profile, warps) is integrated here, in the frame of the disk, the way tilted-ring
codes see it (Rogstad et al. 1974; 3D-Barolo's GALMOD, KinMS), but deterministically:

- **Quadrature, not random clouds.**  The disk is cut into rings on a grid fixed in radius
  (a whole fraction of the sample spacing wide, and at most a quarter of the profile's
  smallest radial scale; twice as wide and twice as sparse beyond the radius holding 97% of
  the light); ring ``k`` holds ``2 pi R_k / s`` samples evenly spaced in azimuth, and each
  sample stands for a few heights: the Gaussian quadrature of the vertical profile
  (`~galcubecraft.components.VerticalProfile.gauss_nodes`) where no motion depends on
  height, else bins of the profile at their light-weighted mean heights
  (`~galcubecraft.components.VerticalProfile.height_bins`).  Its weight is
  ``Sigma(R) R dR dphi`` times its height's share of the light; the weights are scaled so
  that they add up to the galaxy's flux exactly.
- **Each sample's line.**  The line-of-sight velocity is evaluated at the sample
  (`galcubecraft.components.flows` gives the formula) and its Gaussian integrated over every
  channel (differences of erf, or velocity nodes where they cost less), so the flux is
  exact for any dispersion and channel width.  The samples are a midpoint rule: their own
  spread of velocities is the field's wherever the line is wider than about half the step
  between neighbours; where it is narrower, each line is widened towards the spread of the
  field over the area and height its sample stands for (``step^2 / 12 - sigma^2 / 3``), so
  that a narrow line does not become a comb of lines.
- **Each sample's place.**  A sample's light goes to the four rendered pixels around it
  with cloud-in-cell weights (`galcubecraft.functional.cloud_weights`), which keep its
  flux and its centroid: what lies inside a pixel is kept to first order, and the
  rendered image is the sky convolved with a one-pixel tent, which the beam's readout
  takes back out (its transfer is divided by ``sinc``; ``cloud=1`` of
  `galcubecraft.functional.beam_matrices`).  On a grid without a beam the clouds are
  as small as the samples' spacing and nothing is taken out.

Everything is differentiable in every parameter, tabulated nodes included (the sampling
counts are step functions of the parameters, taken without gradients).  No astropy here.
"""
import functools
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

from . import functional as F

__all__ = ["DiskModel", "RingPlan", "plan_rings", "project_rings", "merge", "MAX_RINGS",
           "MAX_SIDE_NODES"]

#: Most rings (radial samples) of one galaxy, and most height bins on each side of the plane.
MAX_RINGS = 4096
MAX_SIDE_NODES = 24
#: Beyond the radius holding all but _ZONE_LIGHT of the light the samples are _OUTER_SPACING
#: times further apart.
_ZONE_LIGHT = 3e-2
_OUTER_SPACING = 2.0
#: Least azimuthal samples of a ring.
_MIN_AZIMUTHS = 8
#: Rings are at most this fraction of the profile's smallest radial scale wide.
_RADIAL_RESOLUTION = 0.25


@dataclass(frozen=True)
class DiskModel:
    """The classes of a galaxy's parts: what galaxies rendered in one batch share.

    Attributes
    ----------
    surface, vertical, kinematics : type
        `~galcubecraft.components.Surface`, `~galcubecraft.components.VerticalProfile`
        and `~galcubecraft.RotationCurve` subclasses.
    flows : tuple of type
        `~galcubecraft.components.Flow` subclasses, in the galaxy's order.
    warp : type or None
        `~galcubecraft.Warp`, or None for a flat disk.
    """

    surface: type
    vertical: type
    kinematics: type
    flows: Tuple[type, ...] = ()
    warp: Optional[type] = None
    terms: Tuple[type, ...] = ()

    @property
    def plain(self):
        """A Sérsic disk, exponential in height, on circular orbits, unwarped: the
        projector's exact sky-cell integral renders it."""
        return (getattr(self.surface, "plain", False) and getattr(self.vertical, "plain", False)
                and not self.flows and self.warp is None and not self.terms)

    def describe(self):
        """What makes this model more than a plain disk, in words."""
        parts = []
        if not getattr(self.surface, "plain", False) or self.terms:
            parts.append(" + ".join(s.__name__ for s in self.surfaces))
        if not getattr(self.vertical, "plain", False):
            parts.append(self.vertical.__name__)
        parts += [f.__name__ for f in self.flows]
        if self.warp is not None:
            parts.append(self.warp.__name__)
        return ", ".join(parts) or "plain disk"

    @property
    def surfaces(self):
        """The surface profiles: the galaxy's, then those of a `~galcubecraft.SurfaceSum`."""
        return (self.surface, *self.terms)

    def fractions(self, params):
        """Each profile's share of the flux (tensors shaped as ``params``' scalars): a sum's
        later terms their ``<prefix>flux_fraction``, the first the rest."""
        later = [params[t.key("flux_fraction")] for t in self.terms]
        return [(1.0 - sum(later)).clamp_min(0.0) if later else 1.0, *later]

    def _active(self, params):
        """Per profile, the galaxies (flat bool, batch) where it has a share of the flux: a
        profile without one takes no part in the sampling."""
        return [torch.as_tensor(f).reshape(-1) > 0 if torch.is_tensor(f) else None
                for f in self.fractions(params)]

    def _reduce(self, values, params, fill, op):
        """``op`` (amin or amax) over the profiles' per-galaxy ``values``, skipping those with
        no share (``fill`` there)."""
        stacked = []
        for value, active in zip(values, self._active(params)):
            if active is not None:
                shape = (-1,) + (1,) * (value.dim() - 1)
                value = torch.where(active.reshape(shape), value, torch.full_like(value, fill))
            stacked.append(value)
        return getattr(torch.stack(stacked), op)(0)

    def radial_range(self, params):
        """``(r_min, r_max)`` holding the light of every profile (*arcsec*, per galaxy)."""
        ranges = [s.radial_range(params) for s in self.surfaces]
        return (self._reduce([r[0] for r in ranges], params, math.inf, "amin"),
                self._reduce([r[1] for r in ranges], params, 0.0, "amax"))

    def radial_scale(self, params):
        """The smallest radial scale of any profile (*arcsec*, per galaxy)."""
        return self._reduce([s.radial_scale(params) for s in self.surfaces], params, math.inf,
                            "amin")

    def local_scale(self, radius, params):
        """The smallest radial scale of any profile at ``radius`` (*arcsec*)."""
        return self._reduce([s.local_scale(radius, params) for s in self.surfaces], params,
                            math.inf, "amin")

    def norms(self, radius, params, element, densities=None):
        """Each profile's light summed over the samples at ``radius``, each standing for
        ``element`` (its area): the normalisations of `light` and `surface_density`
        (``densities``: the profiles' at ``radius``, if already evaluated)."""
        if densities is None:
            densities = [s.density(radius, params) for s in self.surfaces]
        out = []
        for density in densities:
            light = density * element
            out.append(light.sum(dim=tuple(range(1, light.dim())), keepdim=True).clamp_min(
                torch.finfo(light.dtype).tiny))
        return out

    def surface_density(self, radius, params, norms, densities=None):
        """The face-on surface density at ``radius``, each profile at its share of the flux
        over its ``norms`` (a sum's terms in their right proportions)."""
        if densities is None:
            densities = [s.density(radius, params) for s in self.surfaces]
        if not self.terms:
            return densities[0] / norms[0]
        return sum(fraction * density / norm for density, fraction, norm
                   in zip(densities, self.fractions(params), norms))

    def light(self, radius, params, element):
        """Each galaxy's surface density times ``element`` (the area a sample at ``radius``
        stands for), normalised so that its sum over the samples is one for each profile
        times its share of the flux: a sum's terms keep their shares exactly."""
        densities = [s.density(radius, params) for s in self.surfaces]
        norms = self.norms(radius, params, element, densities)
        return self.surface_density(radius, params, norms, densities) * element

    @property
    def drift(self):
        """The flow that corrects the rotation for pressure support (an asymmetric drift),
        or None."""
        return next((f for f in self.flows if getattr(f, "corrects_rotation", False)), None)

    def needs_two_sides(self):
        """Whether the gas above and below the plane differ (vertical motions)."""
        return any(getattr(f, "two_sided", False) for f in self.flows)

    def uses_height(self):
        """Whether any motion depends on the height above the plane."""
        return any(getattr(f, "uses_height", False) for f in self.flows)


@dataclass(frozen=True)
class RingPlan:
    """Where each galaxy of a batch is sampled (CPU tensors, one row per galaxy).

    Attributes
    ----------
    ring, azimuth : Tensor (batch, T), float64
        Each sample's ring radius (*arcsec*) and azimuth (*rad*).
    d_radius, d_azimuth : Tensor (batch, T), float64
        The width of its ring and of its segment.
    used : Tensor (batch, T), bool
        The samples in use (rows are padded to the batch's longest).
    heights, spreads, height_weights : Tensor (batch, Z), float64
        Heights of the vertical nodes in units of the scale height, their variances and
        their shares of the light (zero for padding).
    """

    ring: torch.Tensor
    azimuth: torch.Tensor
    d_radius: torch.Tensor
    d_azimuth: torch.Tensor
    used: torch.Tensor
    heights: torch.Tensor
    spreads: torch.Tensor
    height_weights: torch.Tensor

    @property
    def samples(self):
        """Samples per galaxy (including padding): rings x azimuths x heights."""
        return self.ring.shape[1] * self.heights.shape[1]


def plan_rings(params, model, spacing, resolution=None, reach=None):
    """The samples of a batch of disks: rings, azimuths and heights (`RingPlan`).

    ``spacing`` (*arcsec*) is the most the samples are apart on the sky along the rings and
    across them; rings are narrower where the profile's own radial scale asks for it.
    ``resolution`` (*arcsec*, default ``spacing``) is the finest scale the image shows (the
    beam's sigma): it sets the height nodes of disks whose motions do not depend on height.
    ``reach`` (*arcsec*, optional): no sample further than this from the field's centre
    lands on the rendered pixels; a ring that lies wholly beyond it on the sky (an inclined
    disk's far wings) is one sample, which carries its light off the image.
    """
    with torch.no_grad():
        detached = {k: v.detach().double().cpu() for k, v in params.items()}
        rmin, rmax = model.radial_range(detached)
        scale = model.radial_scale(detached)
        zone = _zone_radius(detached, model, rmin, rmax)
        shaped = {k: (v[:, None] if v.dim() == 1 else v) for k, v in detached.items()}
        heights, spreads, weights = _height_nodes(params, model, spacing,
                                                  spacing if resolution is None else resolution)
        inner = (_nearest_on_sky(detached, model, heights) if reach is not None
                 else torch.zeros(len(rmin), 3, dtype=torch.float64))
        rows = []
        for b in range(len(rmin)):
            one = {k: v[b:b + 1] for k, v in shaped.items()}
            radius, widths, outer = _ring_cells(
                lambda r: model.local_scale(r[None], one)[0].numpy(), float(rmin[b]),
                float(rmax[b]), float(zone[b]), float(scale[b]), spacing)
            # rings whose nearest point on the sky is beyond the reach: one sample each
            cos_i, lift, shift = (float(x) for x in inner[b])
            away = ((radius - 0.5 * widths) * cos_i - lift - shift > reach if reach is not None
                    else np.zeros(radius.size, dtype=bool))
            if int((~away).sum()) > MAX_RINGS:
                raise ValueError(f"galaxy {b} of the batch needs {int((~away).sum())} rings "
                                 f"(most {MAX_RINGS}): its profile's radial scale "
                                 f"({float(scale[b]):.3g} arcsec) is too small for its extent "
                                 f"({float(rmax[b]):.3g} arcsec)")
            step = np.where(outer, _OUTER_SPACING * spacing, spacing)
            n_phi = np.maximum(_MIN_AZIMUTHS, np.ceil(2 * math.pi * radius / step)).astype(int)
            n_phi[away] = 1
            ring = np.repeat(radius, n_phi)
            start = np.repeat(np.cumsum(n_phi) - n_phi, n_phi)
            j = np.arange(ring.size) - start
            d_phi = np.repeat(2 * math.pi / n_phi, n_phi)
            rows.append((ring, (j + 0.5) * d_phi, d_phi, np.repeat(widths, n_phi)))
        longest = max(r[0].size for r in rows)

        def padded(index, fill=0.0):
            out = np.full((len(rows), longest), fill)
            for b, r in enumerate(rows):
                out[b, :r[0].size] = r[index]
            return torch.as_tensor(out)
        ring, azimuth, d_azimuth, d_r = padded(0), padded(1), padded(2, 1.0), padded(3)
        used = torch.as_tensor(np.stack([np.arange(longest) < r[0].size for r in rows]))
    return RingPlan(ring=ring, azimuth=azimuth, d_radius=d_r, d_azimuth=d_azimuth, used=used,
                    heights=heights, spreads=spreads, height_weights=weights)


def _ring_cells(local_scale, rmin, rmax, zone, scale, spacing):
    """One galaxy's rings: ``(radius, width, outer)`` arrays (*arcsec*; ``outer``: beyond the
    zone radius, where the azimuths are sparser).

    The rings are cells of a binary tree over radius, on a grid fixed in radius: the finest
    width is ``w0 = spacing / split``, a whole fraction of the spacing and at most a quarter
    of the profile's smallest scale (``scale``); a ring is ``2^m w0`` wide and starts at a
    multiple of its width, as wide as a quarter of the local scale (``local_scale(radius)``,
    the narrowest of the profiles') allows, at most ``spacing`` within ``zone`` and twice that
    beyond it.  Rings cover ``[0, r_max)`` from the one holding ``r_min``.  Only step functions
    of the parameters choose them, so gradients through the samples are exact.
    """
    split = int(math.ceil(spacing / min(spacing, _RADIAL_RESOLUTION * scale) - 1e-9))
    w0 = spacing / split
    top_inner = int(math.floor(math.log2(split) + 1e-9))
    top = top_inner + 1
    block = w0 * 2 ** top
    n_fine = int(math.ceil(rmax / block)) * 2 ** top
    if n_fine > _MAX_FINE_CELLS:
        raise ValueError(f"a profile's radial scale ({scale:.3g} arcsec) is too small for its "
                         f"extent ({rmax:.3g} arcsec): it would need {n_fine} radial cells")
    edges = np.arange(n_fine) * w0
    # the zone's edge on the grid of rings twice the finest width
    zone = math.ceil(zone / (2 * w0) - 1e-9) * 2 * w0
    # the coarsest level each fine cell allows: floor(log2(needed / w0)), needed a quarter of
    # the local scale at either edge of the cell, one level more beyond the zone
    needed = _RADIAL_RESOLUTION * np.minimum(local_scale(torch.as_tensor(edges)),
                                             local_scale(torch.as_tensor(edges + w0)))
    allowed = np.floor(np.log2(np.maximum(needed / w0, 1.0)) + 1e-9).astype(int)
    allowed = np.minimum(allowed, top_inner) + (edges >= zone)
    covered = np.zeros(n_fine, dtype=bool)
    starts, levels = [], []
    for m in range(top, -1, -1):
        size = 2 ** m
        fits = allowed.reshape(-1, size).min(axis=1) >= m
        new = fits & ~covered.reshape(-1, size)[:, 0]
        index = np.nonzero(new)[0] * size
        starts.append(index)
        levels.append(np.full(index.size, m))
        covered.reshape(-1, size)[new] = True
    starts, levels = np.concatenate(starts), np.concatenate(levels)
    order = np.argsort(starts)
    starts, levels = starts[order], levels[order]
    width = w0 * 2.0 ** levels
    lower = starts * w0
    keep = lower + width > rmin
    return (lower + 0.5 * width)[keep], width[keep], (lower >= zone)[keep]


def _nearest_on_sky(params, model, heights):
    """Per galaxy, ``(cos i, lift, shift)`` (*arcsec*) such that every point of a ring of radius
    ``R`` lies at least ``R cos i - lift - shift`` from the field's centre on the sky: ``i``
    the largest inclination of any ring, ``lift`` the highest node's height times
    ``sin i``, ``shift`` the centre's offset plus any ring's (a warp's centres)."""
    inc = params["inclination"]
    h = params["scale_height"]
    shift = torch.hypot(params["x0"], params["y0"])
    warp = model.warp
    if warp is not None:
        tables = {n: params[warp.key(n)] for n in warp.declarations if warp.key(n) in params}
        if "inclination" in tables:
            inc = torch.maximum(inc, tables["inclination"].amax(dim=-1))
        if "scale_height" in tables:
            h = torch.maximum(h, tables["scale_height"].amax(dim=-1))
        moved = [tables[n].abs().amax(dim=-1) for n in ("centre_east", "centre_north")
                 if n in tables]
        if moved:
            shift = shift + torch.hypot(*moved) if len(moved) == 2 else shift + moved[0]
    inc = inc.clamp(0.0, math.pi / 2)
    lift = h * heights.abs().amax(dim=-1) * torch.sin(inc)
    return torch.stack([torch.cos(inc), lift, shift], dim=-1)


#: Most fine radial cells of one galaxy's ring tree.
_MAX_FINE_CELLS = 2**24


def _zone_radius(params, model, rmin, rmax):
    """The radius within which all but `_ZONE_LIGHT` of each galaxy's light lies, from its
    profiles on a fine grid."""
    t = torch.linspace(0.0, 1.0, 4097, dtype=torch.float64)
    radius = rmin[:, None] + (rmax - rmin)[:, None] * t                 # (B, 4097)
    detached = {k: v.detach().double().cpu() for k, v in params.items()}
    shaped = {k: (v[:, None] if v.dim() == 1 else v) for k, v in detached.items()}
    middle = 0.5 * (radius[:, 1:] + radius[:, :-1])
    light = model.light(middle, shaped, middle * torch.diff(radius, dim=-1))
    cumulative = torch.cumsum(light, dim=-1)
    cumulative = cumulative / cumulative[:, -1:].clamp_min(1e-300)
    index = torch.searchsorted(cumulative, torch.full((len(rmin), 1), 1 - _ZONE_LIGHT,
                                                      dtype=torch.float64)).clamp(max=4095)
    return torch.gather(radius[:, 1:], 1, index)[:, 0]


def _height_nodes(params, model, spacing, resolution):
    """Vertical nodes per galaxy: ``(heights, variances, weights)``, heights and variances in
    units of the scale height.

    - A razor-thin disk without vertical motions: one node in the plane.
    - Where no motion depends on height, only where the light lies matters, and the image
      resolves it no finer than ``resolution`` (the beam's sigma, or half a pixel without a
      beam): the Gaussian quadrature of the profile (`VerticalProfile.gauss_nodes`), mirrored
      below the plane, with enough nodes that the disk's projected thickness
      ``h sin i`` is spanned at ``resolution`` (moments of the height exact to order 2n - 1).
    - With lags or vertical motions the velocities must be resolved too: bins at most
      ``spacing`` apart on the sky out to the height holding all but `_HEIGHT_LIGHT` of the
      light (the last bin reaches to infinity), each at its light-weighted mean height.
    """
    h = params["scale_height"].detach().double().cpu()
    if model.warp is not None and model.warp.key("scale_height") in params:
        # a flare: its thickest ring's
        h = torch.maximum(h, params[model.warp.key("scale_height")].detach().double().cpu()
                          .amax(dim=-1))
    if model.warp is not None and model.warp.key("inclination") in params:
        # the most inclined ring's (the table's largest inclination)
        sin_i = torch.sin(params[model.warp.key("inclination")].detach().double().cpu()
                          .amax(dim=-1))
    else:
        sin_i = torch.sin(params["inclination"].detach().double().cpu())
    thick = h > 0
    if not bool(thick.any()) and not model.needs_two_sides():
        one = torch.ones((len(h), 1), dtype=torch.float64)
        return torch.zeros_like(one), torch.zeros_like(one), one
    reach = _reach(model.vertical)
    gauss = not model.uses_height()
    if gauss:
        n_side = torch.ceil(_GAUSS_SPAN * h * sin_i / resolution) + 1
    else:
        n_side = torch.ceil(reach * h * sin_i / spacing)
    n_side = torch.where(thick, n_side.clamp(1, MAX_SIDE_NODES), torch.ones_like(n_side)).long()
    width = 2 * int(n_side.max())
    heights = torch.zeros((len(h), width), dtype=torch.float64)
    spreads, weights = torch.zeros_like(heights), torch.zeros_like(heights)
    for b in range(len(h)):
        side = int(n_side[b])
        if gauss:
            mean, mass = (np.asarray(x) for x in model.vertical.gauss_nodes(side))
            variance = np.zeros_like(mean)
        else:
            mass, mean, variance = model.vertical.height_bins(reach / side, side)
        heights[b, :2 * side] = torch.as_tensor(np.concatenate([mean, -mean]))
        spreads[b, :2 * side] = torch.as_tensor(np.concatenate([variance, variance]))
        weights[b, :2 * side] = torch.as_tensor(np.concatenate([mass, mass]) / 2)
    return heights, spreads, weights


#: Gaussian height nodes per side: one more than this many times the projected scale height
#: over the image's resolution.
_GAUSS_SPAN = 6.0


#: The vertical bins are uniform out to the height holding all but this fraction of the light;
#: the last bin holds the rest, at its mean height (its spread is in each sample's line).
_HEIGHT_LIGHT = 1e-3


@functools.lru_cache(maxsize=None)
def _reach(vertical):
    """The height (in scale heights) holding all but `_HEIGHT_LIGHT` of a profile's light."""
    t = np.linspace(0.0, 64.0, 4097)
    light = vertical.half_integrals(t)[0]
    return float(t[np.searchsorted(light, 1 - _HEIGHT_LIGHT)])


def _shaped(params):
    """Per-galaxy scalars as (batch, 1, 1), tables as they are (batch, K)."""
    return {k: (v.reshape(-1, 1, 1) if v.dim() == 1 else v) for k, v in params.items()}


def _ring_value(name, radius, params, model):
    """A galaxy's ``name`` (inclination, position angle, scale height) at ``radius``: its
    warp's table where it has one, else the galaxy's own value."""
    if model.warp is None:
        return params[name]
    return model.warp.at(name, radius, params, params[name])


def _orientation(radius, params, model):
    return (_ring_value("inclination", radius, params, model),
            _ring_value("position_angle", radius, params, model))


def _velocity_nodes(params, model, edges, samples, rows, nodes_per_sigma, force=False):
    """``(origin, step, n_nodes)`` of the velocity nodes (`galcubecraft.functional.line_nodes`)
    for a batch, or None where integrating each of the ``samples`` lines over the channels
    (four pixels each) costs less than eight scatters each and a spectrum per node of the
    ``rows`` pixels (with ``force``: wherever they fit), where the nodes would not fit (lines
    far narrower than the channels), or where the dispersion varies across the disk: the
    nodes apply one Gaussian per galaxy, and a sample's own spread of velocities only as a
    box of the same variance, which is its shape only for the spread over its own area."""
    if nodes_per_sigma is None or any(getattr(f, "sets_dispersion", False)
                                      for f in model.flows):
        return None
    origin, step, n_nodes = F.line_nodes(edges, params["dispersion"].clamp_min(1e-3),
                                         nodes_per_sigma)
    n_chan = edges.shape[-1] - 1
    node_cost = n_nodes * rows * (n_chan + 2) + samples * 4 * 16
    if (node_cost > samples * 4 * n_chan and not force) or n_nodes * rows > _MAX_NODE_ELEMENTS:
        return None
    return origin, step, n_nodes


#: The velocity nodes of a batch hold at most this many elements (rows x nodes).
_MAX_NODE_ELEMENTS = 2**26


def line_of_sight(radius, phi, z, params, model, density=None):
    """The line-of-sight velocity (*km/s*, in the galaxy's rest frame) and the dispersion
    at disk-frame ``(radius, phi, z)`` (see `galcubecraft.components.flows`).  ``density``
    (radius -> face-on surface density, any normalisation) is needed by an asymmetric
    drift."""
    v_c = model.kinematics.circular_velocity(radius, params)
    v_phi = 0.0
    v_r = torch.zeros_like(v_c)
    v_z = torch.zeros_like(v_c)
    sigma = params["dispersion"]
    for flow in model.flows:
        if getattr(flow, "corrects_rotation", False):
            continue
        terms = flow.velocities(radius, phi, z, params)
        v_phi = v_phi + terms.get("v_phi", 0.0)
        v_r = v_r + terms.get("v_R", 0.0)
        v_z = v_z + terms.get("v_z", 0.0)
        sigma = terms.get("sigma", sigma)
    drift = model.drift
    if drift is not None:
        def dispersion(r):
            out = params["dispersion"]
            for flow in model.flows:
                if getattr(flow, "sets_dispersion", False):
                    out = flow.velocities(r, phi, z, params)["sigma"]
            return out
        v_c = drift.rotation(v_c, radius, params, density, dispersion)
    v_phi = v_c + v_phi
    inc, _ = _orientation(radius, params, model)
    v = torch.sin(inc) * (v_phi * torch.cos(phi) + v_r * torch.sin(phi)) - v_z * torch.cos(inc)
    shift = None if model.warp is None else model.warp.at("v_shift", radius, params)
    return (v if shift is None else v + shift), sigma


def sky_position(radius, phi, z, params, model):
    """Sky offsets (east, north; *arcsec*) of disk-frame ``(radius, phi, z)``: ``xi`` along
    each ring's receding major axis, ``eta = R sin(phi) cos(i) + z sin(i)`` towards
    PA - 90 deg (the far side), turned by the ring's position angle, about the ring's
    centre."""
    inc, pa = _orientation(radius, params, model)
    xi = radius * torch.cos(phi)
    eta = radius * torch.sin(phi) * torch.cos(inc) + z * torch.sin(inc)
    s, c = torch.sin(pa), torch.cos(pa)
    east, north = params["x0"] + xi * s - eta * c, params["y0"] + xi * c + eta * s
    if model.warp is not None:
        east = east + model.warp.at("centre_east", radius, params, 0.0)
        north = north + model.warp.at("centre_north", radius, params, 0.0)
    return east, north


def project_rings(params, model, plan, *, pixel, sky_matrix, shape, margin, edges, flux,
                  cloud, max_chunk_elements=2**23, line_nodes_per_sigma=2.0,
                  line_integration="auto"):
    """The padded model of a batch of disks: ``(batch, n_chan, pixels + 1)`` (the last
    column catches what falls outside), in Jy km/s per rendered pixel and channel.

    ``params``: the batch's tensors (`~galcubecraft.Galaxy.tensors`, stacked);
    ``plan``: `plan_rings`'s; ``pixel`` (*arcsec*), ``sky_matrix`` (east, north per
    column, row step), ``shape`` ``(n_chan, ny, nx)`` and ``margin`` describe the rendered
    pixels; ``edges`` ``(batch, n_chan + 1)`` are the channel edges in each galaxy's rest
    frame; ``flux`` ``(batch,)`` the line flux on the grid's axis; ``cloud`` the width of
    the clouds in rendered pixels.  With ``line_nodes_per_sigma`` (None: never), the lines go
    through velocity nodes where that costs less than integrating every sample's line over
    every channel (`_velocity_nodes`; ``line_integration`` ``'nodes'`` or ``'erf'`` forces
    one way, as `~galcubecraft.Projector`'s).
    """
    p = _shaped(params)
    device, dtype = flux.device, flux.dtype
    batch = flux.shape[0]
    _, ny, nx = shape
    ny_p, nx_p = ny + 2 * margin, nx + 2 * margin
    n_pix = ny_p * nx_p
    n_edges = edges.shape[-1]

    def put(t):
        return t.to(device=device, dtype=dtype)
    radius = put(plan.ring)[:, :, None]                       # (B, T, 1)
    phi = put(plan.azimuth)[:, :, None]
    d_r, d_phi = put(plan.d_radius)[:, :, None], put(plan.d_azimuth)[:, :, None]
    t = put(plan.heights)[:, None, :]                          # (B, 1, Z)

    # the weights: Sigma R dR dphi x the height's share, scaled to the flux (each profile of
    # a sum to its share)
    element = radius * d_r * d_phi * put(plan.used)[:, :, None]
    densities = [s.density(radius, p) for s in model.surfaces]
    norms = model.norms(radius, p, element, densities)
    area = model.surface_density(radius, p, norms, densities) * element

    def los(r, ph, zz):
        return line_of_sight(r, ph, zz, p, model,
                             density=lambda x: model.surface_density(x, p, norms))
    weight = area * put(plan.height_weights)[:, None, :]
    total = weight.sum(dim=(1, 2), keepdim=True)
    weight = weight * (flux.reshape(-1, 1, 1) / total.clamp_min(torch.finfo(dtype).tiny))

    inverse = torch.as_tensor(np.linalg.inv(sky_matrix), device=device, dtype=dtype)
    centre_x, centre_y = (nx - 1) / 2 + margin, (ny - 1) / 2 + margin
    n_t = radius.shape[1]
    n_z = t.shape[-1]
    # without motions that depend on height, every height of a sample shares its line
    shared = not model.uses_height()
    nodes = _velocity_nodes(params, model, edges, batch * n_t * n_z, batch * (n_pix + 1),
                            None if line_integration == "erf" else line_nodes_per_sigma,
                            force=line_integration == "nodes")
    if nodes is None:
        out = flux.new_zeros((batch * (n_pix + 1), n_edges - 1))
    else:
        origin, step, n_nodes = nodes
        out = F.node_accumulator(batch * (n_pix + 1) * n_nodes, flux)
    base = (torch.arange(batch, device=device) * (n_pix + 1))[:, None]
    # the largest temporaries per sample: its lines (erf at every edge) and its corners'
    # indices and shares, or its node scatters
    width = (n_z * 4 * 6 if nodes is not None else
             (1 if shared else n_z) * 2 * n_edges + n_z * 4 * 3)
    chunk = max(1, int(max_chunk_elements // max(1, batch * width)))
    for start in range(0, n_t, chunk):
        sl = slice(start, start + chunk)
        r, ph, dr, dph = radius[:, sl], phi[:, sl], d_r[:, sl], d_phi[:, sl]
        h = _ring_value("scale_height", r, p, model)      # a flare's table, or the profile's
        z = h * t                                                # (B, n or 1, Z)
        zz = z[..., :1] if shared else z.expand(batch, r.shape[1], n_z)
        # the line: velocity at the sample, widened by the field's spread over its segment
        # (ring width, azimuth step) and its height bin
        v, sigma = los(r, ph, zz)
        spread2 = (los(r + 0.5 * dr, ph, zz)[0]
                   - los((r - 0.5 * dr).clamp_min(0.0), ph, zz)[0]) ** 2
        spread2 = spread2 + (los(r, ph + 0.5 * dph, zz)[0] - los(r, ph - 0.5 * dph, zz)[0]) ** 2
        spread2 = spread2 / 12.0
        if not shared:
            dz = 1e-3 * h + 1e-9
            slope = (los(r, ph, zz + dz * torch.sign(zz))[0] - v) / dz
            spread2 = spread2 + slope ** 2 * h ** 2 * put(plan.spreads)[:, None, :]
        # the samples are a midpoint rule: their own spread of velocities is the field's
        # wherever the line is wider than about half the step between neighbours; below,
        # each sample's line is widened towards its area's spread (what the step hides),
        # so that a line narrower than the step does not become a comb of lines
        spread2 = (spread2 - sigma ** 2 / 3).clamp_min(0.0)
        lines_shape = (batch, r.shape[1], 1 if shared else n_z)
        # the place: cloud-in-cell weights on the rendered pixels, for every height
        full = (batch, r.shape[1], n_z)
        east, north = (c.expand(full) for c in sky_position(r, ph, z.expand(full), p, model))
        col = inverse[0, 0] * east + inverse[0, 1] * north + centre_x
        row = inverse[1, 0] * east + inverse[1, 1] * north + centre_y
        c0, wc = F.cloud_weights(col, cloud)
        r0, wr = F.cloud_weights(row, cloud)
        w = weight[:, sl]
        indices, shares = [], []
        for dr_i, share_r in ((0, wr), (1, 1 - wr)):
            for dc_i, share_c in ((0, wc), (1, 1 - wc)):
                rr, cc = r0 + dr_i, c0 + dc_i
                inside = (rr >= 0) & (rr < ny_p) & (cc >= 0) & (cc < nx_p)
                indices.append(torch.where(inside, rr * nx_p + cc, torch.full_like(rr, n_pix)))
                shares.append(w * share_r * share_c)
        index = torch.stack(indices, dim=1)                                  # (B, 4, n, Z)
        share = torch.stack(shares, dim=1)
        if nodes is not None:
            # each sample's flux onto the velocity nodes of its pixels (keeping its mean and
            # the variance of its area's velocities), then one channel-integrated Gaussian
            # of the galaxy's dispersion per node
            v4 = v.expand(full)[:, None].expand_as(share)
            var4 = spread2.expand(full)[:, None].expand_as(share)
            out = F.deposit_lines(share.reshape(batch, -1, 1), v4.reshape(batch, -1, 1),
                                  var4.reshape(batch, -1, 1), origin.reshape(-1, 1, 1),
                                  step.reshape(-1, 1, 1), n_nodes, rows=index.reshape(batch, -1),
                                  n_rows=n_pix + 1, out=out)
            continue
        v = v.expand(lines_shape)
        disp = torch.sqrt(sigma ** 2 + spread2).clamp_min(1e-6).expand(lines_shape)
        erf = F.erf_at_edges(edges, v.reshape(batch, -1), disp.reshape(batch, -1))
        lines = 0.5 * (erf[..., 1:] - erf[..., :-1])                     # (B, n [x Z], C)
        # pixels x lines as a sparse matrix of the cloud-in-cell shares: one product, no
        # (samples x corners x heights x channels) temporary
        # lines in the order (galaxy, sample[, height]); each one's rows: its 4 corners [x
        # the heights that share it]
        index = index + base[:, :, None, None]
        order = (1, 3, 0, 2) if shared else (1, 0, 2, 3)
        groups = 4 * n_z if shared else 4
        product = F.deposit_rows(index.permute(order).reshape(groups, -1),
                                 share.permute(order).reshape(groups, -1),
                                 lines.reshape(-1, n_edges - 1), batch * (n_pix + 1))
        out = out + product if torch.is_grad_enabled() else out.add_(product)
    if nodes is not None:
        matrix = F.node_to_channel_matrix(edges, origin, step, n_nodes,
                                          params["dispersion"].clamp_min(1e-3))
        spectra = F.node_weights(out, batch, n_pix + 1, n_nodes, flux.dtype)
        return torch.matmul(spectra, matrix).transpose(1, 2)
    return out.reshape(batch, n_pix + 1, n_edges - 1).transpose(1, 2)


def _neutral(model, params):
    """Whether a galaxy of ``model`` can be rendered as part of a larger model with zero parts:
    profiles, flows and warp tables that take no part in the sampling when absent."""
    if model.plain or not all(getattr(s, "neutral", False) for s in model.surfaces):
        return False
    if not all(getattr(f, "neutral", False) for f in model.flows):
        return False
    if model.warp is not None:
        tables = {k for k in params if k.startswith(model.warp.key_prefix)}
        return tables <= {model.warp.key(n) for n in model.warp.NEUTRAL}
    return True


def merge(groups, index=None):
    """Groups of ring-path galaxies ``[(DiskModel, params), ...]`` rendered as fewer groups,
    each galaxy holding the parts of the others at no amplitude: a profile at no share of the
    flux (a copy of another galaxy's), a flow with zero amplitudes, a warp whose tables hold
    the galaxy's own inclination and position angle.  Only parts that take no part in the
    sampling when so held are merged (`neutral`: Sersic and ring profiles, radial and harmonic
    flows, warps of orientation), and only galaxies with the same vertical profile, rotation
    law and table lengths; a galaxy renders the same cube to rounding either way, whatever
    the others.  Fewer groups are fewer launches: on a GPU a batch of mixed real galaxies is
    bound by them.  Returns the new list of ``(model, params)`` (other groups unchanged); with
    ``index`` (one tensor per group: which galaxies of a caller's list its rows are), also
    the merged groups' indices, row for row."""
    tags = [None] * len(groups) if index is None else list(index)
    buckets, out, out_index = {}, [], []
    for (model, params), tag in zip(groups, tags):
        if not isinstance(model, DiskModel) or not _neutral(model, params):
            out.append((model, params))
            out_index.append(tag)
            continue
        own = set()
        for part in (*model.surfaces, *model.flows,
                     *(() if model.warp is None else (model.warp,))):
            own |= {part.key(n) for n in part.declarations}
        own |= {t.key("flux_fraction") for t in model.terms}
        rest = tuple(sorted((k, tuple(v.shape[1:]), v.dtype) for k, v in params.items()
                            if k not in own))
        buckets.setdefault((model.vertical, model.kinematics, rest), []).append(
            (model, params, tag))
    for members in buckets.values():
        merged = _merged([m[:2] for m in members]) if len(members) > 1 else None
        if merged is None:
            out.extend(m[:2] for m in members)
            out_index.extend(m[2] for m in members)
        else:
            out.append(merged)
            out_index.append(None if index is None else torch.cat([m[2] for m in members]))
    return out if index is None else (out, out_index)


def _merged(members):
    """One ``(model, params)`` for ``members`` (see `merge`), or None if their parts' tables
    differ in length."""
    # one order whatever the members' (flows in the order galaxies keep them, Flow.kinds:
    # they add, and each galaxy's own then add in its own order)
    surfaces = sorted({s for m, _ in members for s in m.surfaces},
                      key=lambda c: (c.key_prefix, c.__name__))
    mains = [s for s in surfaces if not s.key_prefix]
    # the unprefixed profile (a Sersic disk; an exponential disk is one) leads the sum
    main = (min(mains, key=lambda c: len(c.__mro__)) if mains else surfaces[0])
    if any(not issubclass(c, main) for c in mains):
        return None
    terms = tuple(s for s in surfaces if s.key_prefix and s is not main)
    flows = {f for m, _ in members for f in m.flows}
    flows = tuple(sorted(flows, key=lambda f: f.kinds.index(f) if f in f.kinds else len(f.kinds)))
    warp = next((m.warp for m, _ in members if m.warp is not None), None)
    first = members[0][0]
    union = DiskModel(surface=main, vertical=first.vertical, kinematics=first.kinematics,
                      flows=flows, warp=warp, terms=terms)
    templates = {}
    for _, params in members:
        for k, v in params.items():
            if k in templates and templates[k].shape[1:] != v.shape[1:]:
                return None
            templates.setdefault(k, v[:1])
    lifted = [_lift(model, params, union, templates) for model, params in members]
    keys = lifted[0].keys()
    if any(p.keys() != keys for p in lifted):
        return None
    return union, {k: torch.cat([p[k] for p in lifted]) for k in keys}


def _lift(model, params, union, templates):
    """``params`` of a galaxy of ``model`` as a galaxy of ``union`` (see `merge`)."""
    batch = params["flux"].shape[0]
    out = dict(params)

    def copy(key):
        return templates[key].expand(batch, *templates[key].shape[1:]).clone()
    # profiles: the member's own at their shares; the others copied, at none
    shares = dict(zip(model.surfaces, model.fractions(params)))
    for surface in union.surfaces:
        for name in surface.declarations:
            if surface.key(name) not in out:
                out[surface.key(name)] = copy(surface.key(name))
    for surface in union.terms:
        share = shares.get(surface, None)
        out[surface.key("flux_fraction")] = (
            torch.zeros_like(params["flux"]) if share is None else
            torch.as_tensor(share, dtype=params["flux"].dtype,
                            device=params["flux"].device).expand(batch).clone())
    # flows: the others' at zero amplitude
    for flow in union.flows:
        if flow in model.flows:
            continue
        for name, declaration in flow.declarations.items():
            key = flow.key(name)
            if key in templates:
                value = copy(key)
                # its amplitudes (constants or tables) zero; its nodes and angles as copied
                amplitude = declaration.may_be_table and declaration.shape is None
                out[key] = torch.zeros_like(value) if amplitude else value
    # a warp: the galaxy's own orientation at every node
    if union.warp is not None:
        for name in union.warp.NEUTRAL:
            key = union.warp.key(name)
            if key in templates and key not in out:
                value = copy(key)
                out[key] = value if name == "radius" else params[name].reshape(-1, 1).expand_as(
                    value).clone()
    return out
