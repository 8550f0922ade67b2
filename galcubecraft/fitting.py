"""Fit a model to a cube, with gradients: best fit and posterior in seconds.

The model is the priors language (`~galcubecraft.priors.ParameterPriors`): every flat galaxy
parameter fixed or given a prior, each node of a table too.  The free parameters move in the
unconstrained space of their priors' supports (`torch.distributions.biject_to`); the
log-posterior is the whitened log-likelihood of the residual
(`~galcubecraft.noise.NoiseModel.whitened_chi2`: the noise's correlation by the beam and by
the spectral response taken into account exactly, not the independent-pixel chi-squared,
which makes error bars several times too small) plus the priors' log-densities, and is
differentiated by autograd through the projector.

Methods:

- ``'map'``: L-BFGS from several starts drawn from the priors, rendered as one batch; the
  best is kept.
- ``'laplace'``: the MAP and the posterior's Gaussian approximation there, the inverse
  Hessian of the negative log-posterior in the unconstrained space (by autograd), sampled
  and mapped back through the supports (so the samples respect the bounds); its evidence is
  the Gaussian's.
- ``'nested'``: the MAP, and the posterior and evidence of nautilus (Lange 2023), an
  importance nested sampler whose bounds are learnt by neural networks, on the batched
  likelihood (the optional ``fit`` extra): for posteriors that are not Gaussian and for
  comparing models (warp or not) by their evidences.
"""
import errno
import math
import time
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import torch
from astropy.stats import mad_std
from astropy.table import QTable
from spectral_cube import SpectralCube
from tqdm.auto import tqdm

from ._files import atomic_path, read_toml
from .components import Warp
from .cube import to_spectral_cube
from .galaxy import Galaxy
from .grid import CubeGrid
from .noise import NoiseModel
from .priors import Fixed, ParameterPriors
from .projector import Projector
from .render import stack_parameters
from .units import FWHM_PER_SIGMA

__all__ = ["fit", "read_model", "FitResult", "FitSpace", "METHODS", "estimate_rms", "signal_mask",
           "moment_guess"]

#: The methods of `fit`.
METHODS = ("map", "laplace", "nested")


#: Candidates rendered at once without gradients, on a GPU (on the CPU one at a time: a
#: batch is padded to its largest plan, and the CPU gains nothing from batching).
_SCREEN_BATCH = 8
#: The unconstrained parameters are held within this.
_REACH = 30.0
#: L-BFGS stops when a step changes the log-posterior by less than this (a hundredth of
#: what one sigma is worth, 1/2), or the gradient of the loss per datum is below
#: `_GRADIENT_TOLERANCE`.
_TOLERANCE = 0.005
_GRADIENT_TOLERANCE = 1e-9


class FitSpace:
    """The free parameters of a model and the map from them to the projector's tensors.

    Parameters
    ----------
    priors : `~galcubecraft.priors.ParameterPriors` or dict
        The model: every flat galaxy parameter fixed or drawn (tables node by node).
    device, dtype
        Where the tensors live.

    Attributes
    ----------
    names : list of str
        The free parameters (``'inclination'``, ``'warp_inclination[2]'``, ``'offset[0]'``).
    units : list of `~astropy.units.Unit`
        The unit each is fitted in (its prior's).
    """

    def __init__(self, priors, device=None, dtype=torch.float64):
        self.priors = priors if isinstance(priors, ParameterPriors) else ParameterPriors(priors)
        self.device, self.dtype = torch.device(device or "cpu"), dtype
        declared = Galaxy.flat_parameters()
        centre = dict(self.priors.laws)
        self.names, self.units, self.distributions, self._slots = [], [], [], []
        for key, dist in self.priors.distributions.items():
            nodes = dist if isinstance(dist, list) else [dist]
            values = [_centre(d) for d in nodes]
            centre[key] = u.Quantity(values) if isinstance(dist, list) else values[0]
            for j, d in enumerate(nodes):
                if isinstance(d, Fixed):
                    continue
                d.log_density(torch.zeros(1))          # refuses what cannot be fitted
                self.names.append(f"{key}[{j}]" if isinstance(dist, list) else key)
                self.units.append(d.unit)
                self.distributions.append(d)
                self._slots.append((key, j if isinstance(dist, list) else None))
        if not self.names:
            raise ValueError("the model has no free parameter: give at least one a "
                             "distribution")
        if "flux" not in centre:
            raise ValueError("the model needs a flux (fixed or with a prior)")
        self.galaxy = Galaxy.from_dict(centre, where="model")
        (self.model, self.template), = stack_parameters([self.galaxy], self.device, dtype)
        # a node's place in the galaxy's own table: a model may add nodes before the given
        # ones (a rotation table that does not give R = 0 starts at (0, 0))
        own = self.galaxy.to_dict()
        self._nodes = []
        for key, j in self._slots:
            lead = 0
            if j is not None and key != "offset":
                lead = u.Quantity(own[key]).size - len(self.priors.distributions[key])
                given = u.Quantity(centre[key])
                if lead < 0 or not np.allclose(u.Quantity(own[key])[lead:].to_value(given.unit),
                                               given.value, rtol=1e-9, atol=0):
                    raise ValueError(f"{key}: the model's table does not hold the given nodes "
                                     "as given; cannot fit its nodes")
            self._nodes.append(None if j is None else j + lead)
        self._targets = []
        for (key, j), node, d in zip(self._slots, self._nodes, self.distributions):
            p = declared[key]
            factor = float(np.asarray(p.to_internal(1 * d.unit, self.galaxy.to_arcsec)))
            if key == "offset":
                self._targets.append(("x0" if j == 0 else "y0", None, factor))
            else:
                self._targets.append((key, node, factor))
        self.transforms = [torch.distributions.biject_to(d.constraint())
                           for d in self.distributions]

    @property
    def size(self):
        return len(self.names)

    @property
    def batch(self):
        """How many points to render at once without gradients."""
        return 1 if self.device.type == "cpu" else _SCREEN_BATCH

    def constrained(self, z):
        """``(theta, log |d theta / d z|)`` of unconstrained ``z`` (batch, size)."""
        columns, jac = [], 0.0
        # beyond +-_REACH a bounded prior's transform is flat to rounding: held there
        z = z.clamp(-_REACH, _REACH)
        for k, t in enumerate(self.transforms):
            x = t(z[:, k])
            columns.append(x)
            jac = jac + t.log_abs_det_jacobian(z[:, k], x)
        return torch.stack(columns, dim=1), jac

    def unconstrained(self, theta):
        """``z`` of ``theta`` (batch, size), values in `units`."""
        return torch.stack([t.inv(theta[:, k]) for k, t in enumerate(self.transforms)], dim=1)

    def log_prior(self, theta):
        """The priors' log-density at each row of ``theta``, up to `log_normaliser`."""
        return sum(d.log_density(theta[:, k]) for k, d in enumerate(self.distributions))

    def log_normaliser(self):
        """What makes `log_prior` normalised (an evidence needs it)."""
        return sum(d.log_normaliser() for d in self.distributions)

    def tensors(self, theta):
        """The projector's tensors for each row of ``theta`` (batch, size)."""
        batch = theta.shape[0]
        out = {k: v.expand(batch, *v.shape[1:]).clone() for k, v in self.template.items()}
        for k, (key, j, factor) in enumerate(self._targets):
            value = theta[:, k].to(out[key].dtype) * factor
            if j is None:
                out[key] = value
            else:
                column = torch.zeros_like(out[key])
                column[:, j] = 1.0
                out[key] = out[key] * (1 - column) + value[:, None] * column
        return out

    def sample_prior(self, rng, n):
        """``n`` draws of the free parameters from their priors (batch, size)."""
        return torch.as_tensor(np.stack([d.sample(rng, n).to_value(d.unit)
                                         for d in self.distributions], axis=1),
                               dtype=self.dtype, device=self.device)

    def initial(self, guess, rng, n):
        """``n`` starting points (batch, size): the first half with every parameter that
        ``guess`` (flat values, e.g. `moment_guess`) names at its guess and the others drawn
        from their priors (the first of them at the priors' centres), the rest drawn
        wholly from the priors (in case the guesses mislead).  A guess outside a prior's
        support is moved inside it (an angle by whole turns first)."""
        theta = self.sample_prior(rng, n)
        theta[0] = torch.as_tensor([_centre(d).to_value(d.unit) for d in self.distributions],
                                   dtype=self.dtype)
        speeds = self._speed_guesses(guess.get("rotation_curve"))
        for k, ((key, j), d) in enumerate(zip(self._slots, self.distributions)):
            value = guess.get(key)
            if (key, j) in speeds:
                value, j = speeds[key, j], None
            if value is None and key.startswith(Warp.key_prefix):
                # a warp's table of an orientation starts flat, at the galaxy's guess
                value = guess.get(key[len(Warp.key_prefix):])
                j = None
            if value is None:
                continue
            value = u.Quantity(value)
            if j is not None:
                if value.isscalar or j >= value.size:
                    continue
                value = value[j]
            try:
                value = value.to_value(d.unit)
            except u.UnitsError:
                continue
            low, high = (b.to_value(d.unit) for b in d.support())
            if d.unit.physical_type == "angle" and not low <= value <= high:
                turn = (360 * u.deg).to_value(d.unit)
                value = value + turn * np.ceil((low - value) / turn)
            # inside, by a hair, so that the transform to unconstrained space is finite
            span = high - low if np.isfinite(high - low) else 0.0
            value = min(max(value, low + 1e-3 * span), high - 1e-3 * span)
            theta[:max(1, n // 2), k] = value
        return theta

    def _speed_guesses(self, curve):
        """``{(key, node): speed}`` for the free speeds of the rotation law from a guessed
        rotation curve ``(radii, speeds)``: a table's nodes at their radii, a scalar speed
        (``v_flat``, ``v_max``, ``v_0``) at the curve's outer half's median."""
        if curve is None:
            return {}
        law = self.galaxy.kinematics
        radii, speeds = (np.asarray(q.value, dtype=float) for q in curve)
        out = {}
        for (key, j), node in zip(self._slots, self._nodes):
            if key not in law.param_names or law.declarations[key].kind != "velocity":
                continue
            if j is None:
                out[key, j] = np.median(speeds[len(speeds) // 2:]) * u.km / u.s
            else:
                table = [n for n, p in law.declarations.items()
                         if p.kind == "size" and p.shape == "1d"]
                if table:
                    r = self.galaxy.to_arcsec(table[0], getattr(law, table[0])[node])
                    out[key, j] = np.interp(r, radii, speeds) * u.km / u.s
        return out

    def galaxy_at(self, theta):
        """The `~galcubecraft.Galaxy` of one row of free values (values in `units`)."""
        values = self.galaxy.to_dict()
        for k, ((key, j), node, d) in enumerate(zip(self._slots, self._nodes,
                                                    self.distributions)):
            value = float(theta[k]) * d.unit
            if j is None:
                values[key] = value
            else:
                table = u.Quantity(values[key]).copy()
                table[node] = value.to(table.unit)
                values[key] = table
        return Galaxy.from_dict(values, where="fit")


def read_model(path):
    """The model of a TOML file's ``[galaxy]`` table (`~galcubecraft.priors.ParameterPriors`),
    checked completely: what ``galcubecraft fit --model`` reads."""
    config = read_toml(path)
    unknown = set(config) - {"galaxy"}
    if unknown or "galaxy" not in config:
        raise ValueError(f"{path}: a model file holds one [galaxy] table, got "
                         f"{sorted(config) or 'nothing'}")
    return ParameterPriors(config["galaxy"], where=f"{path} [galaxy]")


def _centre(dist):
    """A point inside a distribution's support: its value, mean or middle."""
    if isinstance(dist, Fixed):
        return dist.value
    mean = getattr(dist, "mean", None)
    low, high = dist.support()
    if mean is not None and low <= mean <= high:
        return mean
    if np.isfinite(low.value) and np.isfinite(high.value):
        return 0.5 * (low + high)
    return mean


class FitResult:
    """What `fit` found.

    Attributes
    ----------
    table : `~astropy.table.QTable`
        One row per free parameter: ``name``, ``unit``, ``best`` (the MAP), and with
        samples ``median``, ``p16``, ``p84`` (percentiles) and ``std``.
    samples : dict of name -> `~astropy.units.Quantity`, or None
        Posterior draws (``'laplace'``).
    galaxy : `~galcubecraft.Galaxy`
        The best fit.
    grid : `~galcubecraft.CubeGrid`
        The data's grid.
    data, model, residual : `~galcubecraft.SyntheticCube`
        The data, the best fit's cube on its grid, and data minus model.
    chi2, n_modes : float, int
        The whitened chi-squared at the best fit and its number of independent variables.
    log_evidence : float or None
        The log marginal likelihood (``'nested'``: nautilus's; ``'laplace'``: the Gaussian
        approximation's), up to the likelihood's normalising constant, which is the same for
        every model of the same data and noise: differences between models are their log
        Bayes factors.
    method : str
    seconds : dict
        Wall time of each step.
    """

    def __init__(self, *, table, samples, galaxy, grid, data, model, residual, chi2, n_modes,
                 method, seconds, log_evidence=None):
        self.log_evidence = log_evidence
        self.table, self.samples, self.galaxy, self.grid = table, samples, galaxy, grid
        self.data, self.model, self.residual = data, model, residual
        self.chi2, self.n_modes, self.method, self.seconds = chi2, n_modes, method, seconds

    def __getitem__(self, name):
        """The best fit of a free parameter, as a Quantity."""
        row = self.table[list(self.table["name"]).index(name)]
        return row["best"] * u.Unit(row["unit"])

    def plot(self, mask=None):
        """Data, model and residual, one figure each: moment 0, moment 1 and the
        position-velocity diagram along the fitted major axis through the fitted centre
        (`galcubecraft.visualise.overview`; ``mask``: the voxels of the data's moments, e.g.
        ``data > 3 * rms``), the fitted rotation curve drawn over each PV diagram
        (`~galcubecraft.visualise.galaxy_pv_curve`); and with samples, the corner plot
        (`corner`).  Returns the figures."""
        from .visualise import galaxy_pv_curve, overview
        offset = u.Quantity([self.galaxy.to_arcsec("offset", c) for c in self.galaxy.offset],
                            u.arcsec)
        centre = self.data.wcs.celestial.pixel_to_world(*self.grid.pixel_of(offset))
        _, ny, nx = self.grid.shape
        reach = 0.5 * math.hypot(nx, ny) * self.grid.pixel_scale
        curve = galaxy_pv_curve(self.galaxy, np.linspace(-1, 1, 401) * reach)
        figures = [overview(cube, self.galaxy.position_angle, title=title, center=centre,
                            mask=mask, curve=curve)
                   for cube, title in ((self.data, "data"), (self.model, "model"),
                                       (self.residual, "residual"))]
        if self.samples is not None:
            figures.append(self.corner())
        return figures

    def corner(self, **kwargs):
        """The posterior's corner plot (the ``corner`` package, the ``fit`` extra): every
        free parameter in its unit, the best fit marked.  ``kwargs`` go to
        `corner.corner`."""
        if self.samples is None:
            raise ValueError(f"a {self.method!r} fit has no samples: fit with method="
                             "'laplace' or 'nested'")
        try:
            import corner
        except ImportError:
            raise ImportError("the corner plot needs corner: pip install "
                              "'galcubecraft[fit]'") from None
        names = list(self.table["name"])
        values = np.stack([self.samples[n].value for n in names], axis=1)
        labels = [f"{n} [{unit}]" if unit else n for n, unit in zip(names, self.table["unit"])]
        options = dict(labels=labels, truths=list(self.table["best"]), quantiles=[0.16, 0.5, 0.84],
                       show_titles=True, title_fmt=".3g", label_kwargs={"fontsize": 8},
                       title_kwargs={"fontsize": 8}, truth_color="tab:red")
        options.update(kwargs)
        return corner.corner(values, **options)

    #: What `write` writes (the figures with ``plots``, the samples when there are some).
    FILES = ("fit.ecsv", "samples.ecsv", "model.fits", "residual.fits")
    FIGURES = ("data.png", "model.png", "residual.png", "corner.png")

    def write(self, directory, overwrite=False, plots=False):
        """``fit.ecsv`` (the table, its metadata the method, chi-squared and evidence),
        ``model.fits``, ``residual.fits`` and, with samples, ``samples.ecsv`` in
        ``directory`` (made if needed); with ``plots``, `plot`'s figures as PNG files
        (`FIGURES`).  Each file is written atomically, and none is written if one would
        replace an existing file without ``overwrite``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tables = {"fit.ecsv": self.table}
        if self.samples is not None:
            tables["samples.ecsv"] = QTable(self.samples)
        names = [*tables, "model.fits", "residual.fits"]
        figures = {}
        if plots:
            import matplotlib.pyplot as plt
            figures = dict(zip(self.FIGURES, self.plot()))
            names += list(figures)
        try:
            for name in names:
                if (directory / name).exists() and not overwrite:
                    raise FileExistsError(errno.EEXIST, "file exists; pass overwrite=True to "
                                          "replace it", str(directory / name))
            for name, table in tables.items():
                with atomic_path(directory / name, overwrite=True) as tmp:
                    table.write(tmp, format="ascii.ecsv", overwrite=True)
            self.model.write(directory / "model.fits", overwrite=True)
            self.residual.write(directory / "residual.fits", overwrite=True)
            for name, figure in figures.items():
                with atomic_path(directory / name, overwrite=True) as tmp:
                    figure.savefig(tmp, dpi=110, format="png")
        finally:
            if figures:
                for figure in figures.values():
                    plt.close(figure)
        return directory

    def __repr__(self):
        return f"<FitResult {self.method}: chi2 {self.chi2:.1f} / {self.n_modes}\n{self.table}>"


def _read(cube, grid, region=None):
    """``(data array float64, grid)`` of a cube: a path, a `~spectral_cube.SpectralCube`, or
    an array with its ``grid``; ``region`` (slices ``(channels, y, x)``) cuts it before the
    data are read (a file is memory-mapped: only the sub-cube is loaded)."""
    if region is not None:
        region = tuple(region) + (slice(None),) * (3 - len(tuple(region)))
        if len(region) != 3 or not all(isinstance(r, slice) for r in region):
            raise TypeError(f"region must be up to three slices (channels, y, x), got {region!r}")
    if isinstance(cube, (str, Path)):
        cube = SpectralCube.read(str(cube))
    if isinstance(cube, SpectralCube):
        if region is not None:
            cube = cube[region]
            grid = None if grid is None else grid.subgrid(*region)
        grid = grid if grid is not None else CubeGrid.from_fits(cube)
        # in the unit the model is rendered in (spectral-cube's conversions, K included)
        try:
            cube = cube.to(grid.unit)
        except (u.UnitsError, ValueError, TypeError) as exc:
            raise ValueError(f"the cube's unit {cube.unit} cannot be converted to "
                             f"{grid.unit}, the model's: {exc}") from None
        data = np.asarray(cube.unitless_filled_data[:], dtype=float)
    elif grid is None:
        raise TypeError("an array needs its grid: fit(array, model, grid=CubeGrid(...))")
    else:
        data = np.asarray(getattr(cube, "value", cube), dtype=float)
        if data.shape != tuple(grid.shape):
            raise ValueError(f"the cube's shape {data.shape} is not its grid's {grid.shape}")
        if region is not None:
            data, grid = data[region], grid.subgrid(*region)
    if data.shape != tuple(grid.shape):
        raise ValueError(f"the cube's shape {data.shape} is not its grid's {grid.shape}")
    return data, grid


def _check_coverage(space, grid):
    """Refuse a model that cannot reach the data: a systemic velocity whose every allowed
    value lies outside the cube's band, or a centre whose every allowed value lies outside
    its field."""
    edges = grid.channel_edges.to_value(u.km / u.s)
    band = (min(edges[0], edges[-1]), max(edges[0], edges[-1]))
    ranges = {}
    for key in ("v_sys", "offset"):
        if key in space.priors.distributions:
            nodes = space.priors.distributions[key]
            ranges[key] = [d.support() for d in (nodes if isinstance(nodes, list) else [nodes])]
    if "v_sys" not in ranges and space.galaxy.v_sys is not None:
        ranges["v_sys"] = [(space.galaxy.v_sys, space.galaxy.v_sys)]
    low, high = (q.to_value(u.km / u.s) for q in ranges["v_sys"][0])
    if high < band[0] or low > band[1]:
        what = f"{low:g} km/s" if low == high else f"[{low:g}, {high:g}] km/s"
        raise ValueError(f"the model's v_sys ({what}) lies outside the cube's band "
                         f"[{band[0]:.6g}, {band[1]:.6g}] km/s (radio)")
    _, ny, nx = grid.shape
    half = 0.5 * np.array([nx, ny]) * grid.pixel_scale.to_value(u.arcsec)
    for k, (low, high) in enumerate(ranges.get("offset", [])):
        try:
            low, high = low.to_value(u.arcsec), high.to_value(u.arcsec)
        except u.UnitsError:
            continue                          # a length: checked by the render
        reach = math.hypot(*half)
        if high < -reach or low > reach:
            raise ValueError(f"the model's offset[{k}] ([{low:g}, {high:g}] arcsec) lies "
                             f"outside the cube's field (+-{reach:.3g} arcsec)")


def signal_mask(data, grid, rms=None, clip=5.0, grow_to=2.5):
    """The voxels that hold the line: smooth, clip and grow (a dilated mask, as Dame 2011's).

    Each channel is smoothed by a circular Gaussian of the beam's geometric-mean sigma, and
    the cube by a three-channel Hanning window.  Where the smoothed cube exceeds ``clip``
    times its own robust noise (`estimate_rms` of the smoothed cube, channel by channel) are
    the seeds; the mask is every connected region above ``grow_to`` times that noise that
    holds a seed (noise peaks, which reach ``grow_to`` but rarely ``clip``, are left out),
    grown by one beam sigma and one channel.  ``rms`` (per channel) stands in where the
    smoothed noise cannot be measured.  Returns a boolean array of ``data``'s shape."""
    from scipy import ndimage
    sigma = 1.0
    if grid.beam is not None:
        major, minor, _ = grid.beam_pixels()
        sigma = math.sqrt(major * minor)
    smooth = ndimage.gaussian_filter(np.nan_to_num(data), (0, sigma, sigma), mode="constant")
    if data.shape[0] >= 3:
        smooth = ndimage.convolve1d(smooth, [0.25, 0.5, 0.25], axis=0, mode="constant")
    noise = estimate_rms(smooth)
    fallback = np.broadcast_to(np.inf if rms is None else np.asarray(rms) / sigma,
                               noise.shape)
    noise = np.where(np.isfinite(noise) & (noise > 0), noise, fallback)[:, None, None]
    regions, _ = ndimage.label(smooth > grow_to * noise)
    seeded = np.unique(regions[(smooth > clip * noise) & (regions > 0)])
    mask = np.isin(regions, seeded)
    grow = max(1, int(round(sigma)))
    structure = np.zeros((3, 2 * grow + 1, 2 * grow + 1), dtype=bool)
    yy, xx = np.mgrid[-grow:grow + 1, -grow:grow + 1]
    structure[:, yy ** 2 + xx ** 2 <= grow ** 2] = True
    return ndimage.binary_dilation(mask, structure=structure)


def moment_guess(data, grid, mask):
    """First guesses of a galaxy's parameters from the moments of the data in ``mask``
    (`signal_mask`).

    - ``flux``: the integrated flux in the mask (`CubeGrid.integrated_flux`);
    - ``offset``: the flux-weighted centroid;
    - ``v_sys``: the flux-weighted mean velocity;
    - ``position_angle``: the direction of the velocity field's gradient (a plane fitted to
      moment 1, weighted by moment 0), towards the receding side;
    - ``inclination``: from the axis ratio of moment 0's second moments along and across
      that direction, the beam's removed (a thin disk: cos i = b / a);
    - ``rotation_curve``: ``(radii, speeds)``, moment 1 near the major axis deprojected in
      rings a beam wide (what `FitSpace.initial` starts a rotation law's speeds from).

    Returns a dict of flat-parameter Quantities (empty if the mask is empty)."""
    weights = np.where(mask, np.nan_to_num(data), 0.0).clip(min=0.0)
    total = weights.sum()
    if not total > 0:
        return {}
    v = grid.spectral_axis.to_value(u.km / u.s)
    _, ny, nx = data.shape
    y, x = np.mgrid[:ny, :nx]
    east, north = (grid.sky_matrix @ np.stack([x.ravel() - (nx - 1) / 2,
                                              y.ravel() - (ny - 1) / 2]))
    east, north = east.reshape(ny, nx), north.reshape(ny, nx)
    m0 = weights.sum(axis=0)
    e0, n0 = (float((m0 * c).sum() / total) for c in (east, north))
    v_sys = float((weights * v[:, None, None]).sum() / total)
    guess = {"flux": grid.integrated_flux(np.where(mask, np.nan_to_num(data), 0.0)),
             "offset": u.Quantity([e0, n0], u.arcsec),
             "v_sys": v_sys * u.km / u.s}
    seen = m0 > 0
    if seen.sum() < 3:
        return guess
    m1 = (weights * v[:, None, None]).sum(axis=0)[seen] / m0[seen]
    de, dn, w = east[seen] - e0, north[seen] - n0, m0[seen]
    design = np.stack([de, dn, np.ones_like(de)], axis=1) * np.sqrt(w)[:, None]
    (a, b, _), *_ = np.linalg.lstsq(design, (m1 - v_sys) * np.sqrt(w), rcond=None)
    pa = math.atan2(a, b)                      # east of north, towards the receding side
    guess["position_angle"] = (math.degrees(pa) % 360) * u.deg
    along = de * math.sin(pa) + dn * math.cos(pa)
    across = -de * math.cos(pa) + dn * math.sin(pa)
    var_along, var_across = ((w * c ** 2).sum() / w.sum() for c in (along, across))
    bmaj = bmin = 0.0
    if grid.beam is not None:
        bmaj, bmin = (q.to_value(u.arcsec) / FWHM_PER_SIGMA
                      for q in (grid.beam.major, grid.beam.minor))
        angle = pa - grid.beam.pa.to_value(u.rad)
        var_along -= (bmaj * math.cos(angle)) ** 2 + (bmin * math.sin(angle)) ** 2
        var_across -= (bmaj * math.sin(angle)) ** 2 + (bmin * math.cos(angle)) ** 2
    if var_along > 0:
        ratio = math.sqrt(max(var_across, 0.0) / var_along)
        guess["inclination"] = math.degrees(math.acos(min(max(ratio, 0.0), 1.0))) * u.deg
    # the rotation curve: moment 1 within 45 deg of the major axis, deprojected at the
    # guessed inclination (clipped to 25-80 deg, where the deprojection is stable), in
    # rings one beam wide; beam smearing makes its rise too slow, which is good enough to
    # start from
    inc = math.radians(min(max(guess.get("inclination", 60 * u.deg).to_value(u.deg), 25), 80))
    radius = np.hypot(along, across / math.cos(inc))
    cos_phi = np.divide(along, radius, out=np.zeros_like(radius), where=radius > 0)
    near = np.abs(cos_phi) > math.cos(math.radians(45))
    if near.sum() >= 3:
        speed = (m1 - v_sys)[near] / (math.sin(inc) * cos_phi[near])
        width = (max(math.sqrt(bmaj * bmin), 1e-3) * FWHM_PER_SIGMA if grid.beam is not None
                 else 2 * grid.pixel_scale.to_value(u.arcsec))
        edges = np.arange(0.0, radius[near].max() + width, width)
        which = np.digitize(radius[near], edges) - 1
        rings = [(0.5 * (edges[k] + edges[k + 1]), np.median(speed[which == k]))
                 for k in range(len(edges) - 1) if (which == k).sum() >= 3]
        if rings:
            r, v = np.array(rings).T
            guess["rotation_curve"] = (r * u.arcsec, np.clip(v, 0, None) * u.km / u.s)
    return guess


def estimate_rms(data):
    """The noise per channel: the sigma-clipped median absolute deviation of each channel
    (`astropy.stats.mad_std`), robust to the emission in it."""
    from astropy.stats import sigma_clip
    clipped = sigma_clip(data, sigma=3, maxiters=5, axis=(1, 2), stdfunc=mad_std)
    return np.asarray(mad_std(clipped, axis=(1, 2), ignore_nan=True), dtype=float)


def fit(cube, model, *, method="laplace", grid=None, region=None, noise=None,
        likelihood="whitened", guess=None, screen=16, starts=1, draws=4000, live=1000,
        seed=0, device=None, progress=False, max_iter=500):
    """Fit ``model`` to ``cube``.

    Parameters
    ----------
    cube : str, `~pathlib.Path`, `~spectral_cube.SpectralCube` or array
        The data (an array needs ``grid``, and is in its unit); a cube is converted to the
        grid's unit (Jy/beam, from K too) by spectral-cube.
    model : `~galcubecraft.priors.ParameterPriors` or dict
        Every flat galaxy parameter fixed or with a prior (see the module docstring).
    method : {'map', 'laplace', 'nested'}
        ``'nested'`` needs the ``fit`` extra (nautilus-sampler).
    grid : `~galcubecraft.CubeGrid`, optional
        The data's grid (default: read from the cube's header).
    region : tuple of slices, optional
        The sub-cube fitted, ``(channels, y, x)`` (e.g. ``(slice(3, 18), slice(20, 80),
        slice(20, 80))``); a cube from a file is cut before its data are read.  Offsets are
        then measured from the region's centre.
    noise : `~astropy.units.Quantity`, float or array, optional
        The noise rms (one, or one per channel; a float in the grid's unit, Jy/beam);
        default `estimate_rms`.  Correlated by the grid's beam and spectral response.
    likelihood : {'whitened', 'independent'}
        ``'independent'`` is the plain chi-squared over pixels, for comparison only: it
        ignores the noise's correlation and its error bars are too small.
    guess : dict, optional
        First guesses of flat parameters (Quantities; ``offset`` as 2 values), over those
        the data's moments give (`moment_guess` of `signal_mask`: centre, v_sys, position
        angle, inclination, flux, a rotation curve); ``False`` for none (every start from
        the priors).
    screen : int
        Candidate starts (`FitSpace.initial`: half at the guesses, half from the priors),
        rendered without gradients, of which the best ``starts`` are followed.
    starts : int
        L-BFGS starts followed to convergence (one batch).
    draws : int
        Posterior draws of ``'laplace'`` and ``'nested'`` (whose run goes on until its
        effective sample size reaches this).
    live : int
        Live points of ``'nested'``.
    seed : int
        Seeds the starts and the draws: the same seed, the same result.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if likelihood not in ("whitened", "independent"):
        raise ValueError(f"likelihood must be 'whitened' or 'independent', got {likelihood!r}")
    for name, value in (("screen", screen), ("starts", starts), ("draws", draws),
                        ("live", live), ("max_iter", max_iter)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    seconds = {}
    t0 = time.perf_counter()
    data, grid = _read(cube, grid, region)
    where = "the cube" if region is None else f"the region {region} of the cube"
    if not np.isfinite(data).any():
        raise ValueError(f"{where} holds no finite value")
    if not np.isfinite(data).all():
        raise ValueError(f"{where} has blank (NaN) voxels: fit a region without them "
                         f"(region=(channels, y, x) slices; --region on the command line)")
    if grid.beam is None and likelihood == "whitened":
        raise ValueError("the cube has no beam (no BMAJ, BMIN, BPA): give its beam "
                         "(CubeGrid.from_fits(..., beam=...); --beam on the command line), "
                         "or likelihood='independent' for data whose noise is independent "
                         "from pixel to pixel")
    space = FitSpace(model, device=device)
    _check_coverage(space, grid)
    projector = Projector(grid, device=space.device, dtype=space.dtype)
    if isinstance(noise, u.Quantity):
        noise = noise.to_value(grid.unit)             # the data's unit (_read)
    rms = estimate_rms(data) if noise is None else np.broadcast_to(
        np.asarray(noise, dtype=float), (data.shape[0],))
    if not np.all(np.isfinite(rms) & (rms > 0)):
        raise ValueError(f"the noise must be positive and finite in every channel, got {rms}")
    correlation = "beam" if grid.beam is not None and likelihood == "whitened" else "white"
    noise_model = NoiseModel(rms=1 * u.one, correlation=correlation,
                             spectral=likelihood == "whitened")
    target = torch.as_tensor(data, dtype=space.dtype, device=space.device)
    chi2, n_modes = noise_model.chi2(grid, data.shape, rms, dtype=space.dtype,
                                     device=space.device)

    def chi2_of(theta):
        return chi2(target - projector(space.tensors(theta), space.model)), n_modes

    def log_post(z):
        theta, jac = space.constrained(z)
        chi2, _ = chi2_of(theta)
        return -0.5 * chi2 + space.log_prior(theta) + jac

    seconds["setup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    if guess is not False:
        guess = {**moment_guess(data, grid, signal_mask(data, grid, rms)), **(guess or {})}
    # the starts: the best of `screen` candidates (guesses and prior draws), one batch
    # after another without gradients
    candidates = space.initial(guess or {}, rng, max(screen, starts))
    with torch.no_grad():
        scores = torch.cat([log_post(space.unconstrained(c)) for c in
                            candidates.split(space.batch)])
    scores = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -math.inf))
    chosen = torch.argsort(scores, descending=True)[:starts]
    z = space.unconstrained(candidates[chosen]).detach().requires_grad_(True)
    seconds["screen"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # the loss per datum (its scale independent of the cube's size); L-BFGS stops when a
    # step changes the log-posterior by less than _TOLERANCE
    n_data = float(np.prod(data.shape))
    optimiser = torch.optim.LBFGS([z], max_iter=max_iter, line_search_fn="strong_wolfe",
                                  tolerance_grad=_GRADIENT_TOLERANCE,
                                  tolerance_change=_TOLERANCE / n_data, history_size=20)
    evaluations = [0]
    bar = tqdm(desc="fit: best fit", unit="eval", disable=not progress)

    def closure():
        optimiser.zero_grad()
        values = log_post(z)
        # a start that wanders where the model is not finite is held back, not followed
        values = torch.where(torch.isfinite(values), values, torch.full_like(values, -1e300))
        loss = -values.sum() / n_data
        loss.backward()
        z.grad.nan_to_num_(0.0, posinf=0.0, neginf=0.0)
        evaluations[0] += 1
        bar.update()
        return loss
    optimiser.step(closure)
    bar.close()
    seconds["evaluations"] = evaluations[0]
    with torch.no_grad():
        values = log_post(z)
        values = torch.where(torch.isfinite(values), values, torch.full_like(values, -math.inf))
        best = int(torch.argmax(values))
    z_best = z.detach()[best:best + 1]
    seconds["map"] = time.perf_counter() - t0
    theta_best = space.constrained(z_best)[0].detach()[0]
    theta = None
    samples, evidence = None, {}
    if method == "laplace":
        t0 = time.perf_counter()
        hessian = torch.autograd.functional.hessian(lambda x: -log_post(x[None])[0], z_best[0])
        cov = _covariance(hessian.detach())
        draw = torch.as_tensor(rng.multivariate_normal(z_best[0].cpu().numpy(),
                                                       cov.cpu().numpy(), size=draws),
                               dtype=space.dtype, device=space.device)
        with torch.no_grad():
            theta = space.constrained(draw)[0].cpu().numpy()
            # the Laplace evidence: the normalised posterior density at the peak (in the
            # unconstrained space) times the Gaussian's volume
            peak = float(log_post(z_best)[0]) + space.log_normaliser()
        evidence["log_evidence"] = (peak + 0.5 * space.size * math.log(2 * math.pi)
                                    + 0.5 * float(torch.logdet(cov)))
        seconds["laplace"] = time.perf_counter() - t0
    elif method == "nested":
        t0 = time.perf_counter()

        def log_like(theta):
            return -0.5 * chi2_of(theta)[0]
        theta, evidence = _nested(space, log_like, rng, draws, live, progress)
        seconds["nested"] = time.perf_counter() - t0
    if theta is not None and method != "map":
        samples = {name: theta[:, k] * unit
                   for k, (name, unit) in enumerate(zip(space.names, space.units))}
    with torch.no_grad():
        best_chi2 = chi2_of(theta_best[None])[0]
        best_cube = projector(space.tensors(theta_best[None]), space.model)[0].cpu().numpy()
    table = QTable()
    table["name"] = space.names
    table["unit"] = [str(unit) for unit in space.units]
    table["best"] = theta_best.cpu().numpy()
    if samples is not None:
        values = np.stack([samples[n].value for n in space.names])
        p16, p50, p84 = np.percentile(values, [16, 50, 84], axis=1)
        table["median"], table["p16"], table["p84"] = p50, p16, p84
        table["std"] = values.std(axis=1)
    table.meta.update(method=method, likelihood=likelihood, chi2=float(best_chi2),
                      n_modes=int(n_modes), seed=seed, **evidence)
    return FitResult(table=table, samples=samples, galaxy=space.galaxy_at(theta_best),
                     grid=grid, data=to_spectral_cube(data, grid),
                     model=to_spectral_cube(best_cube, grid),
                     residual=to_spectral_cube(data - best_cube, grid),
                     chi2=float(best_chi2), n_modes=int(n_modes), method=method, seconds=seconds,
                     log_evidence=evidence.get("log_evidence"))


def _nested(space, log_like, rng, draws, live, progress):
    """``(theta draws (draws, size), {'log_evidence', 'n_eff', 'n_like'})`` by nautilus, the
    neural-network-boosted importance nested sampler (Lange 2023), on the batched
    likelihood: the priors' quantiles map its unit cube to the parameters."""
    try:
        from nautilus import Sampler
    except ImportError:
        raise ImportError("method='nested' needs nautilus-sampler: pip install "
                          "'galcubecraft[fit]'") from None

    def prior(cube):
        return np.stack([d.quantile(cube[:, k]) for k, d in enumerate(space.distributions)],
                        axis=1)

    def likelihood(theta):
        with torch.no_grad():
            t = torch.as_tensor(np.atleast_2d(theta), dtype=space.dtype, device=space.device)
            out = torch.cat([log_like(c) for c in t.split(space.batch)]).cpu().numpy()
        return np.where(np.isfinite(out), out, -np.inf)
    sampler = Sampler(prior, likelihood, n_dim=space.size, n_live=live, vectorized=True,
                      seed=int(rng.integers(2**31)))
    sampler.run(n_eff=max(draws, 1), discard_exploration=True, verbose=progress)
    points, log_w, _ = sampler.posterior()
    weights = np.exp(log_w - log_w.max())
    pick = rng.choice(len(points), size=draws, p=weights / weights.sum())
    return points[pick], {"log_evidence": float(sampler.log_z), "n_eff": float(sampler.n_eff),
                          "n_like": int(sampler.n_like)}


def _covariance(hessian):
    """The inverse of a Hessian, its non-positive curvatures lifted (with a warning)."""
    values, vectors = torch.linalg.eigh(0.5 * (hessian + hessian.T))
    if bool((values <= 0).any()):
        warnings.warn("the posterior is not peaked in every direction at the best fit (a "
                      "parameter is unconstrained or at a bound): those directions take "
                      "unit variance in the unconstrained space")
        values = torch.where(values > 0, values, torch.ones_like(values))
    return (vectors / values) @ vectors.T
