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
  and mapped back through the supports (so the samples respect the bounds).
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

from ._files import atomic_path
from .cube import to_spectral_cube
from .galaxy import Galaxy
from .grid import CubeGrid
from .noise import NoiseModel
from .priors import Fixed, ParameterPriors
from .projector import Projector
from .render import stack_parameters

__all__ = ["fit", "FitResult", "FitSpace", "METHODS"]

#: The methods of `fit`.
METHODS = ("map", "laplace")


#: The unconstrained parameters are held within this.
_REACH = 30.0
#: L-BFGS stops when the loss per datum (or its gradient) changes by less than this.
_TOLERANCE = 1e-9


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
        self._targets = []
        for (key, j), d in zip(self._slots, self.distributions):
            p = declared[key]
            factor = float(np.asarray(p.to_internal(1 * d.unit, self.galaxy.to_arcsec)))
            if key == "offset":
                self._targets.append(("x0" if j == 0 else "y0", None, factor))
            else:
                self._targets.append((key, j, factor))
        self.transforms = [torch.distributions.biject_to(d.constraint())
                           for d in self.distributions]

    @property
    def size(self):
        return len(self.names)

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
        return sum(d.log_density(theta[:, k]) for k, d in enumerate(self.distributions))

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

    def galaxy_at(self, theta):
        """The `~galcubecraft.Galaxy` of one row of free values (values in `units`)."""
        values = self.galaxy.to_dict()
        for k, ((key, j), d) in enumerate(zip(self._slots, self.distributions)):
            value = float(theta[k]) * d.unit
            if j is None:
                values[key] = value
            else:
                table = u.Quantity(values[key]).copy()
                table[j] = value.to(table.unit)
                values[key] = table
        return Galaxy.from_dict(values, where="fit")


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
    method : str
    seconds : dict
        Wall time of each step.
    """

    def __init__(self, *, table, samples, galaxy, grid, data, model, residual, chi2, n_modes,
                 method, seconds):
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
        ``data > 3 * rms``).  Returns the three figures."""
        from .visualise import overview
        offset = u.Quantity([self.galaxy.to_arcsec("offset", c) for c in self.galaxy.offset],
                            u.arcsec)
        centre = self.data.wcs.celestial.pixel_to_world(*self.grid.pixel_of(offset))
        return [overview(cube, self.galaxy.position_angle, title=title, center=centre,
                         mask=mask)
                for cube, title in ((self.data, "data"), (self.model, "model"),
                                    (self.residual, "residual"))]

    def write(self, directory, overwrite=False):
        """``fit.ecsv`` (the table), ``model.fits``, ``residual.fits`` and, with samples,
        ``samples.ecsv`` in ``directory`` (made if needed); each file is written atomically
        and an existing one is replaced only with ``overwrite``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = {"fit.ecsv": self.table}
        if self.samples is not None:
            files["samples.ecsv"] = QTable(self.samples)
        for name in (*files, "model.fits", "residual.fits"):
            if (directory / name).exists() and not overwrite:
                raise FileExistsError(errno.EEXIST, "file exists; pass overwrite=True to "
                                      "replace it", str(directory / name))
        for name, table in files.items():
            with atomic_path(directory / name, overwrite=True) as tmp:
                table.write(tmp, format="ascii.ecsv", overwrite=True)
        self.model.write(directory / "model.fits", overwrite=True)
        self.residual.write(directory / "residual.fits", overwrite=True)
        return directory

    def __repr__(self):
        return f"<FitResult {self.method}: chi2 {self.chi2:.1f} / {self.n_modes}\n{self.table}>"


def _read(cube, grid):
    """``(data array float64, grid)`` of a cube: a path, a `~spectral_cube.SpectralCube`, or
    an array with its ``grid``."""
    if isinstance(cube, (str, Path)):
        cube = SpectralCube.read(str(cube))
    if isinstance(cube, SpectralCube):
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
    return data, grid


def estimate_rms(data):
    """The noise per channel: the sigma-clipped median absolute deviation of each channel
    (`astropy.stats.mad_std`), robust to the emission in it."""
    from astropy.stats import sigma_clip
    clipped = sigma_clip(data, sigma=3, maxiters=5, axis=(1, 2), stdfunc=mad_std)
    return np.asarray(mad_std(clipped, axis=(1, 2), ignore_nan=True), dtype=float)


def fit(cube, model, *, method="laplace", grid=None, noise=None, likelihood="whitened",
        starts=8, draws=4000, seed=0, device=None, progress=False, max_iter=500):
    """Fit ``model`` to ``cube``.

    Parameters
    ----------
    cube : str, `~pathlib.Path`, `~spectral_cube.SpectralCube` or array
        The data (an array needs ``grid``, and is in its unit); a cube is converted to the
        grid's unit (Jy/beam, from K too) by spectral-cube.
    model : `~galcubecraft.priors.ParameterPriors` or dict
        Every flat galaxy parameter fixed or with a prior (see the module docstring).
    method : {'map', 'laplace'}
    grid : `~galcubecraft.CubeGrid`, optional
        The data's grid (default: read from the cube's header).
    noise : `~astropy.units.Quantity`, float or array, optional
        The noise rms (one, or one per channel; a float in the grid's unit, Jy/beam);
        default `estimate_rms`.  Correlated by the grid's beam and spectral response.
    likelihood : {'whitened', 'independent'}
        ``'independent'`` is the plain chi-squared over pixels, for comparison only: it
        ignores the noise's correlation and its error bars are too small.
    starts : int
        L-BFGS starts drawn from the priors (rendered as one batch).
    draws : int
        Posterior draws of ``'laplace'``.
    seed : int
        Seeds the starts and the draws: the same seed, the same result.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if likelihood not in ("whitened", "independent"):
        raise ValueError(f"likelihood must be 'whitened' or 'independent', got {likelihood!r}")
    seconds = {}
    t0 = time.perf_counter()
    data, grid = _read(cube, grid)
    if not np.isfinite(data).any():
        raise ValueError("the cube holds no finite value")
    if not np.isfinite(data).all():
        raise ValueError("the cube has blank (NaN) pixels: fit a sub-cube without them")
    if grid.beam is None and likelihood == "whitened":
        warnings.warn("the cube has no beam: its noise is taken as independent pixels")
    space = FitSpace(model, device=device)
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
    z = space.unconstrained(space.sample_prior(rng, starts)).detach().requires_grad_(True)
    # the loss per datum: L-BFGS stops when a step changes it, or its gradient is, below
    # _TOLERANCE (a chi-squared change of _TOLERANCE times the number of data)
    n_data = float(np.prod(data.shape))
    optimiser = torch.optim.LBFGS([z], max_iter=max_iter, line_search_fn="strong_wolfe",
                                  tolerance_grad=_TOLERANCE, tolerance_change=_TOLERANCE,
                                  history_size=20)
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
    samples = None
    if method == "laplace":
        t0 = time.perf_counter()
        hessian = torch.autograd.functional.hessian(lambda x: -log_post(x[None])[0], z_best[0])
        cov = _covariance(hessian.detach())
        draw = torch.as_tensor(rng.multivariate_normal(z_best[0].cpu().numpy(),
                                                       cov.cpu().numpy(), size=draws),
                               dtype=space.dtype, device=space.device)
        with torch.no_grad():
            theta = space.constrained(draw)[0].cpu().numpy()
        samples = {name: theta[:, k] * unit
                   for k, (name, unit) in enumerate(zip(space.names, space.units))}
        seconds["laplace"] = time.perf_counter() - t0
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
                      n_modes=int(n_modes), seed=seed)
    return FitResult(table=table, samples=samples, galaxy=space.galaxy_at(theta_best),
                     grid=grid, data=to_spectral_cube(data, grid),
                     model=to_spectral_cube(best_cube, grid),
                     residual=to_spectral_cube(data - best_cube, grid),
                     chi2=float(best_chi2), n_modes=int(n_modes), method=method, seconds=seconds)


def _covariance(hessian):
    """The inverse of a Hessian, its non-positive curvatures lifted (with a warning)."""
    values, vectors = torch.linalg.eigh(0.5 * (hessian + hessian.T))
    if bool((values <= 0).any()):
        warnings.warn("the posterior is not peaked in every direction at the best fit (a "
                      "parameter is unconstrained or at a bound): those directions take "
                      "unit variance in the unconstrained space")
        values = torch.where(values > 0, values, torch.ones_like(values))
    return (vectors / values) @ vectors.T
