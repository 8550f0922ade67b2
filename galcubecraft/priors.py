"""Priors: a distribution for every galaxy parameter, in Python or in a TOML file.

A priors file describes a population once (inline tables stay on one line, as TOML
requires); `GalaxyPriors.from_toml` reads it and
checks it completely (unknown parameters, wrong units, empty or impossible ranges)
before any work starts.  Each value is either a fixed quantity (``"10 km/s"``) or
a table naming a distribution::

    [galaxy]
    r_eff = {distribution = "loguniform", low = "1 arcsec", high = "4 arcsec"}
    inclination = {distribution = "isotropic", low = "20 deg", high = "80 deg"}
    v_max = {distribution = "uniform", low = "100 km/s", high = "300 km/s"}
    dispersion = {distribution = "uniform", low = "8 km/s", high = "20 km/s"}
    flux = {distribution = "loguniform", low = "0.5 Jy km/s", high = "5 Jy km/s"}
    n = {distribution = "choice", values = [0.5, 1, 1.5], weights = [1, 2, 1]}

    # real galaxies: each part in a fraction of the galaxies (drawn only when given)
    warp_fraction = 0.5
    bar_fraction = 0.6
    bar_v_2t = {distribution = "uniform", low = "5 km/s", high = "30 km/s"}

    [placement]              # for galcubecraft inject
    n = 10
    seed = 1
    edge = "8 arcsec"
    min_separation = "12 arcsec"
"""
import math


import astropy.units as u
import numpy as np
import torch

from ._files import read_toml
from .components import (ArctanRotationCurve, AsymmetricDrift, BisymmetricFlow, Flow,
                         GaussianRing, LopsidedFlow, RadialFlow, SersicBulge, SersicDisk,
                         SurfaceSum, Warp)
from .galaxy import Galaxy
from .parameters import Parameter, resolve_aliases
from .units import validate_number, validate_quantity

__all__ = ["Distribution", "Fixed", "Uniform", "LogUniform", "Normal", "TruncatedNormal",
           "Isotropic", "Choice", "GalaxyPriors", "distribution_from_spec", "read_priors_file"]

_KMS = u.km / u.s


def _q(name, value, unit):
    """A Quantity in ``unit``'s physical type (strings like '3 arcsec' allowed)."""
    if isinstance(value, str):
        try:
            value = u.Quantity(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: cannot read {value!r} as a quantity") from exc
        if unit is None:
            return value
    if unit == u.one and not isinstance(value, u.Quantity):
        return u.Quantity(validate_number(name, value), u.one)
    return validate_quantity(name, value, unit)


class Distribution:
    """A distribution of one quantity: ``sample(rng, size)`` returns a Quantity array."""

    unit = u.one

    def sample(self, rng, size=None):
        raise NotImplementedError

    def support(self):
        """``(low, high)`` Quantities the samples lie within (inclusive)."""
        raise NotImplementedError

    def log_density(self, x):
        """The log probability density at ``x`` (a torch tensor of values in `unit`), up to a
        constant: what a fit adds to the log-likelihood.  Fixed values and choices have
        none (they cannot be fitted)."""
        raise TypeError(f"a {type(self).__name__} distribution cannot be fitted")

    def quantile(self, q):
        """The values (in `unit`, a numpy array) below which lie the fractions ``q`` (an array
        in [0, 1]) of the distribution: the map from the unit cube that a nested sampler
        draws in."""
        raise TypeError(f"a {type(self).__name__} distribution cannot be fitted")

    def log_normaliser(self):
        """The constant that makes `log_density` the normalised log-density (a float): what
        an evidence needs."""
        raise TypeError(f"a {type(self).__name__} distribution cannot be fitted")

    def constraint(self):
        """The support as a `torch.distributions.constraints` constraint (values in `unit`):
        a fit moves in the unconstrained space of ``torch.distributions.biject_to`` of it."""
        low, high = (v.to_value(self.unit) for v in self.support())
        if math.isinf(low) and math.isinf(high):
            return torch.distributions.constraints.real
        return torch.distributions.constraints.interval(low, high)


class Fixed(Distribution):
    """Always ``value``."""

    def __init__(self, value, name="value", unit=None):
        if isinstance(value, str):
            value = _q(name, value, None)
        self.value = _q(name, value, unit or getattr(value, "unit", u.one))
        self.unit = self.value.unit

    def sample(self, rng, size=None):
        if size is None:
            return self.value.copy()
        return np.broadcast_to(self.value.value, size) * self.unit

    def support(self):
        return self.value, self.value

    def __repr__(self):
        return f"Fixed({self.value})"


class _Range(Distribution):
    def __init__(self, low, high, name="value"):
        self.low = _q(f"{name} low", low, getattr(low, "unit", None) or u.Quantity(low).unit)
        self.unit = self.low.unit
        self.high = _q(f"{name} high", high, self.unit).to(self.unit)
        if not self.high > self.low:
            raise ValueError(f"{name}: empty range, low {self.low} >= high {self.high}")

    def support(self):
        return self.low, self.high

    def __repr__(self):
        return f"{type(self).__name__}({self.low}, {self.high})"


class Uniform(_Range):
    """Uniform between ``low`` and ``high``."""

    def sample(self, rng, size=None):
        return rng.uniform(self.low.value, self.high.value, size) * self.unit

    def log_density(self, x):
        return torch.zeros_like(x)

    def quantile(self, q):
        return self.low.value + np.asarray(q) * (self.high.value - self.low.value)

    def log_normaliser(self):
        return -math.log(self.high.value - self.low.value)


class LogUniform(_Range):
    """Uniform in log between ``low`` and ``high`` (both > 0)."""

    def __init__(self, low, high, name="value"):
        super().__init__(low, high, name)
        if not self.low.value > 0:
            raise ValueError(f"{name}: a log-uniform range must be positive, got low {self.low}")

    def sample(self, rng, size=None):
        lo, hi = math.log(self.low.value), math.log(self.high.value)
        return np.exp(rng.uniform(lo, hi, size)) * self.unit

    def log_density(self, x):
        return -torch.log(x)

    def quantile(self, q):
        lo, hi = math.log(self.low.value), math.log(self.high.value)
        return np.exp(lo + np.asarray(q) * (hi - lo))

    def log_normaliser(self):
        return -math.log(math.log(self.high.value / self.low.value))


class Isotropic(_Range):
    """Inclinations of randomly oriented disks: ``cos i`` uniform, ``i`` within [low, high]."""

    def __init__(self, low=0 * u.deg, high=90 * u.deg, name="inclination"):
        super().__init__(low, high, name)
        if self.low < 0 * u.deg or self.high > 90 * u.deg:
            raise ValueError(f"{name}: an isotropic inclination range lies within [0, 90] deg, "
                             f"got [{self.low}, {self.high}]")

    def sample(self, rng, size=None):
        c_hi, c_lo = self._cosines()
        return np.arccos(rng.uniform(c_lo, c_hi, size)) * u.rad.to(self.unit) * self.unit

    def log_density(self, x):
        return torch.log(torch.sin(x * self.unit.to(u.rad)).clamp_min(1e-300))

    def _cosines(self):
        return np.cos(self.low.to_value(u.rad)), np.cos(self.high.to_value(u.rad))

    def quantile(self, q):
        c_lo, c_hi = self._cosines()
        return (np.arccos(c_lo - np.asarray(q) * (c_lo - c_hi)) * u.rad).to_value(self.unit)

    def log_normaliser(self):
        # p(i) = sin i / (cos low - cos high), i in rad; per unit of `unit`
        c_lo, c_hi = self._cosines()
        return math.log(u.Unit(self.unit).to(u.rad) / (c_lo - c_hi))


class Normal(Distribution):
    """Gaussian of ``mean`` and ``std``."""

    def __init__(self, mean, std, name="value"):
        self.mean = _q(f"{name} mean", mean, u.Quantity(mean).unit)
        self.unit = self.mean.unit
        self.std = _q(f"{name} std", std, self.unit).to(self.unit)
        if not self.std.value > 0:
            raise ValueError(f"{name}: std must be positive, got {self.std}")

    def sample(self, rng, size=None):
        return rng.normal(self.mean.value, self.std.value, size) * self.unit

    def log_density(self, x):
        # a truncated normal's too: its normalisation is a constant
        return -0.5 * ((x - self.mean.value) / self.std.value) ** 2

    def quantile(self, q):
        from scipy.stats import norm
        return norm.ppf(q, loc=self.mean.value, scale=self.std.value)

    def log_normaliser(self):
        return -math.log(self.std.value * math.sqrt(2 * math.pi))

    def support(self):
        return -np.inf * self.unit, np.inf * self.unit

    def __repr__(self):
        return f"Normal({self.mean}, {self.std})"


class TruncatedNormal(Normal):
    """Gaussian of ``mean`` and ``std`` cut to [``low``, ``high``] (`scipy.stats.truncnorm`)."""

    def __init__(self, mean, std, low, high, name="value"):
        super().__init__(mean, std, name)
        self.low = _q(f"{name} low", low, self.unit).to(self.unit)
        self.high = _q(f"{name} high", high, self.unit).to(self.unit)
        if not self.high > self.low:
            raise ValueError(f"{name}: empty range, low {self.low} >= high {self.high}")

    def sample(self, rng, size=None):
        from scipy.stats import truncnorm
        a, b = self._standard_bounds()
        return truncnorm.rvs(a, b, loc=self.mean.value, scale=self.std.value, size=size,
                             random_state=rng) * self.unit

    def _standard_bounds(self):
        return ((self.low.value - self.mean.value) / self.std.value,
                (self.high.value - self.mean.value) / self.std.value)

    def quantile(self, q):
        from scipy.stats import truncnorm
        a, b = self._standard_bounds()
        return truncnorm.ppf(q, a, b, loc=self.mean.value, scale=self.std.value)

    def log_normaliser(self):
        from scipy.stats import norm
        a, b = self._standard_bounds()
        return super().log_normaliser() - math.log(norm.cdf(b) - norm.cdf(a))

    def support(self):
        return self.low, self.high

    def __repr__(self):
        return f"TruncatedNormal({self.mean}, {self.std}, {self.low}, {self.high})"


class Choice(Distribution):
    """One of ``values`` (with optional ``weights``)."""

    def __init__(self, values, weights=None, name="value"):
        q = u.Quantity([_q(name, v, getattr(v, "unit", None) or u.Quantity(v).unit)
                        for v in values]) if len(values) else None
        if q is None or q.size == 0:
            raise ValueError(f"{name}: a choice needs at least one value")
        self.values, self.unit = q, q.unit
        if weights is not None:
            w = np.asarray(weights, dtype=float)
            if w.shape != (q.size,) or np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise ValueError(f"{name}: weights must be {q.size} non-negative numbers with a "
                                 f"positive sum, got {weights!r}")
            self.weights = w / w.sum()
        else:
            self.weights = None

    def sample(self, rng, size=None):
        return rng.choice(self.values.value, size=size, p=self.weights) * self.unit

    def support(self):
        return self.values.min(), self.values.max()

    def __repr__(self):
        return f"Choice({self.values})"


_KINDS = {
    "fixed": (Fixed, ("value",)), "uniform": (Uniform, ("low", "high")),
    "loguniform": (LogUniform, ("low", "high")), "log-uniform": (LogUniform, ("low", "high")),
    "normal": (Normal, ("mean", "std")),
    "truncnormal": (TruncatedNormal, ("mean", "std", "low", "high")),
    "truncated_normal": (TruncatedNormal, ("mean", "std", "low", "high")),
    "isotropic": (Isotropic, ("low", "high")), "choice": (Choice, ("values", "weights")),
}


def distribution_from_spec(name, spec):
    """A `Distribution` from a priors-file value: a quantity (string or number) or a table."""
    if isinstance(spec, Distribution):
        return spec
    if isinstance(spec, dict):
        spec = dict(spec)
        kind = str(spec.pop("distribution", "")).lower()
        if kind not in _KINDS:
            raise ValueError(f"{name}: distribution must be one of {sorted(set(_KINDS))}, "
                             f"got {kind or 'nothing'!r}")
        cls, keys = _KINDS[kind]
        unknown = set(spec) - set(keys)
        if unknown:
            raise ValueError(f"{name}: a {kind} distribution takes {list(keys)}, "
                             f"not {sorted(unknown)}")
        required = [k for k in keys if k != "weights"]
        missing = [k for k in required if k not in spec]
        if missing and cls is not Isotropic:
            raise ValueError(f"{name}: a {kind} distribution needs {missing}")
        return cls(name=name, **spec)
    if isinstance(spec, (list, tuple)):
        raise ValueError(f"{name}: give a range as a table, e.g. {{distribution = \"uniform\", "
                         f"low = ..., high = ...}}, not a bare list {spec!r}")
    return Fixed(spec, name=name)


class ParameterPriors:
    """Distributions of any of a galaxy's flat parameters (`Galaxy.flat_parameters`), each
    fixed or drawn, and of each node of a table.

    Each value is a fixed quantity, a `Distribution` (or a priors-file table naming one),
    or, for a parameter that is a table (a warp's nodes, a tabulated profile, a flow's
    amplitudes), a list with one such value per node.  Law names (``surface``,
    ``vertical``, ``rotation``) are fixed strings.  Every value is checked against the
    parameter's declaration (units, bounds, shape) before any is drawn.

    Examples
    --------
    >>> import numpy as np
    >>> from galcubecraft.priors import ParameterPriors
    >>> priors = ParameterPriors({
    ...     "warp_radius": ["0 arcsec", "10 arcsec", "20 arcsec"],
    ...     "warp_inclination": ["60 deg", "60 deg",
    ...                          {"distribution": "uniform", "low": "60 deg", "high": "80 deg"}]})
    >>> draw = priors.sample(np.random.default_rng(1))
    >>> draw["warp_inclination"]  # doctest: +FLOAT_CMP
    <Quantity [60.        , 60.        , 70.23643946] deg>
    """

    def __init__(self, values, where="galaxy.parameters"):
        declared = Galaxy.flat_parameters()
        self.laws = {}
        self.distributions = {}
        for name, spec in dict(values).items():
            if name in Galaxy.LAWS:
                base = Galaxy.LAWS[name][0]
                if not isinstance(spec, str) or spec.lower() not in base.laws:
                    raise ValueError(f"{where}: {name} must be one of {sorted(base.laws)}, got "
                                     f"{spec!r}")
                self.laws[name] = spec.lower()
                continue
            if name not in declared:
                raise ValueError(f"{where}: unknown galaxy parameter {name!r}; known: "
                                 f"{sorted([*Galaxy.LAWS, *declared])}")
            p = declared[name]
            if isinstance(spec, (list, tuple)):
                fixed = p.shape if p.shape not in (None, "1d") else None
                if not p.may_be_table and fixed is None:
                    raise ValueError(f"{where}: {name} is one number, not a table; got {spec!r}")
                if fixed is not None and len(spec) != fixed[0]:
                    raise ValueError(f"{where}: {name} holds {fixed[0]} values, got {spec!r}")
                if not spec:
                    raise ValueError(f"{where}: {name}: a table needs at least one node")
                nodes = [distribution_from_spec(f"{name}[{k}]", x) for k, x in enumerate(spec)]
            else:
                if p.shape == "1d":
                    raise ValueError(f"{where}: {name} is a table: give a list, one value per "
                                     "node")
                nodes = distribution_from_spec(name, spec)
            for k, dist in enumerate(nodes if isinstance(nodes, list) else [nodes]):
                label = f"{name}[{k}]" if isinstance(nodes, list) else name
                low, high = dist.support()
                _declared_range(p, low, high, label)
            self.distributions[name] = nodes

    def sample(self, rng):
        """One draw of every value (a flat dictionary: Quantities, floats, arrays, law
        names), in a fixed order."""
        out = dict(self.laws)
        for name, dist in self.distributions.items():
            if isinstance(dist, list):
                out[name] = u.Quantity([d.sample(rng) for d in dist])
            else:
                out[name] = dist.sample(rng)
        return out

    def supports(self, name):
        """``(low, high)`` over every node of ``name``'s distributions (Quantities)."""
        dist = self.distributions[name]
        ranges = [d.support() for d in (dist if isinstance(dist, list) else [dist])]
        return (min(r[0] for r in ranges), max(r[1] for r in ranges))

    def __repr__(self):
        return f"<ParameterPriors {dict(self.laws, **self.distributions)!r}>"


def _declared_range(p, low, high, name):
    """`Parameter.check_range`, with a plain number read in a dimensionless parameter."""
    if p.kind == "dimensionless" and isinstance(low, u.Quantity):
        low, high = low.to_value(u.one), high.to_value(u.one)
    p.check_range(low, high, name)


class GalaxyPriors:
    """Distributions of the parameters of one galaxy, with checked units and bounds.

    Each parameter is a `Distribution`, a fixed Quantity, or a priors-file spec.

    Parameters
    ----------
    r_eff : angle or length
        Half-light radius (default log-uniform 2-6 arcsec).
    n : number
        Sérsic index (default 1; ``sersic_n`` is its old spelling).
    thickness : number
        Scale height over ``r_eff`` (default 0.1).
    inclination : angle
        Default isotropic over 20-80 deg.
    position_angle : angle
        Default uniform in [0, 360) deg.
    v_max : speed
        Arctan rotation curve's asymptotic speed (default uniform 100-300 km/s).
    turnover : number
        Arctan turnover radius over ``r_eff`` (default 1/3).
    dispersion : speed
        Gas velocity dispersion (default 10 km/s).
    flux : line flux
        Integrated line flux (default log-uniform 1-10 Jy km/s).
    parameters : dict, optional
        Any of the galaxy's flat parameters (`ParameterPriors`: fixed, drawn, or a table
        with a distribution per node; a priors file's ``[galaxy.parameters]`` table), drawn
        after the rest and replacing what they drew (``scale_height``, a warp's tables,
        ``lag_dv_dz``, ...).
    """

    #: name -> `~galcubecraft.parameters.Parameter`: what each distribution draws, with its
    #: units and bounds.  The galaxy's own declarations, and two sizes relative to r_eff.
    PARAMETERS = {
        "r_eff": SersicDisk.r_eff,
        "n": SersicDisk.n,
        "thickness": Parameter("dimensionless", nonnegative=True, name="thickness",
                               description="scale height over r_eff"),
        "inclination": Galaxy.inclination,
        "position_angle": Galaxy.position_angle,
        "v_max": ArctanRotationCurve.v_max,
        "turnover": Parameter("dimensionless", positive=True, name="turnover",
                              description="arctan turnover radius over r_eff"),
        "dispersion": Galaxy.dispersion,
        "flux": Galaxy.flux,
    }
    DEFAULTS = {
        "r_eff": LogUniform(2 * u.arcsec, 6 * u.arcsec, name="r_eff"),
        "n": Fixed(1.0, name="n"),
        "thickness": Fixed(0.1, name="thickness"),
        "inclination": Isotropic(20 * u.deg, 80 * u.deg),
        "position_angle": Uniform(0 * u.deg, 360 * u.deg, name="position_angle"),
        "v_max": Uniform(100 * _KMS, 300 * _KMS, name="v_max"),
        "turnover": Fixed(1 / 3, name="turnover"),
        "dispersion": Fixed(10 * _KMS, name="dispersion"),
        "flux": LogUniform(1 * u.Jy * _KMS, 10 * u.Jy * _KMS, name="flux"),
    }

    #: The parts of real galaxies (`galcubecraft.rings`): each ``<part>_fraction`` of the
    #: galaxies has the part, with the part's own distributions (`FEATURE_DEFAULTS` where
    #: not given).  A part is drawn only when its fraction is given, so priors without them
    #: draw the same galaxies as before.  Sizes are multiples of ``r_eff``.
    FEATURES = {
        "warp": {
            "warp_inclination": Parameter("angle", name="warp_inclination", description=(
                "change of inclination from warp_start to twice as far out")),
            "warp_position_angle": Parameter("angle", name="warp_position_angle",
                                             description="change of position angle likewise"),
            "warp_start": Parameter("dimensionless", positive=True, name="warp_start",
                                    description="radius where the warp starts, over r_eff")},
        "bar": {
            "bar_v_2t": BisymmetricFlow.v_2t, "bar_v_2r": BisymmetricFlow.v_2r,
            "bar_angle": BisymmetricFlow.angle,
            "bar_length": Parameter("dimensionless", positive=True, name="bar_length",
                                    description="radius of the bar's end, over r_eff")},
        "lopsided": {
            "lopsided_v_1t": LopsidedFlow.v_1t, "lopsided_v_1r": LopsidedFlow.v_1r,
            "lopsided_angle": LopsidedFlow.angle},
        "radial": {"radial_v_rad": RadialFlow.v_rad},
        "ring": {
            "ring_radius": Parameter("dimensionless", positive=True, name="ring_radius",
                                     description="the ring's radius, over r_eff"),
            "ring_width": Parameter("dimensionless", positive=True, name="ring_width",
                                    description="the ring's Gaussian width, over r_eff")},
        "bulge": {
            "bulge_flux_fraction": SersicBulge.fraction_declaration(),
            "bulge_r_eff": Parameter("dimensionless", positive=True, name="bulge_r_eff",
                                     description="the bulge's half-light radius, over r_eff"),
            "bulge_n": SersicBulge.flat_declarations()["bulge_n"]},
        "drift": {},
    }
    FEATURE_DEFAULTS = {
        "warp_inclination": Normal(0 * u.deg, 10 * u.deg, name="warp_inclination"),
        "warp_position_angle": Uniform(-20 * u.deg, 20 * u.deg, name="warp_position_angle"),
        "warp_start": Fixed(2.0, name="warp_start"),
        "bar_v_2t": Uniform(5 * _KMS, 30 * _KMS, name="bar_v_2t"),
        "bar_v_2r": Uniform(5 * _KMS, 30 * _KMS, name="bar_v_2r"),
        "bar_angle": Uniform(0 * u.deg, 180 * u.deg, name="bar_angle"),
        "bar_length": Fixed(1.0, name="bar_length"),
        "lopsided_v_1t": Uniform(0 * _KMS, 15 * _KMS, name="lopsided_v_1t"),
        "lopsided_v_1r": Uniform(0 * _KMS, 15 * _KMS, name="lopsided_v_1r"),
        "lopsided_angle": Uniform(0 * u.deg, 360 * u.deg, name="lopsided_angle"),
        "radial_v_rad": Uniform(-20 * _KMS, 10 * _KMS, name="radial_v_rad"),
        "ring_radius": Uniform(1.0, 2.0, name="ring_radius"),
        "ring_width": Uniform(0.15, 0.4, name="ring_width"),
        "bulge_flux_fraction": Uniform(0.05, 0.4, name="bulge_flux_fraction"),
        "bulge_r_eff": Uniform(0.1, 0.3, name="bulge_r_eff"),
        "bulge_n": Fixed(4.0, name="bulge_n"),
    }

    def __init__(self, *, parameters=None, **distributions):
        self.parameters = (parameters if isinstance(parameters, ParameterPriors) else
                           ParameterPriors(parameters or {}))
        features = {k: p for part in self.FEATURES.values() for k, p in part.items()}
        fractions = {f"{part}_fraction" for part in self.FEATURES}
        distributions = resolve_aliases(distributions, self.PARAMETERS, "priors")
        unknown = set(distributions) - set(self.PARAMETERS) - set(features) - fractions
        if unknown:
            raise ValueError(f"unknown galaxy parameter(s) {sorted(unknown)}; known: "
                             f"{sorted({*self.PARAMETERS, *features, *fractions})}")
        self.distributions = dict(self.DEFAULTS)
        self.fractions = {}
        for part, params in self.FEATURES.items():
            key = f"{part}_fraction"
            if key not in distributions:
                stray = sorted(set(params) & set(distributions))
                if stray:
                    raise ValueError(f"priors: {stray} describe a part no galaxy has; give "
                                     f"{key} (the fraction of galaxies with it) too")
                continue
            fraction = distributions.pop(key)
            try:
                fraction = float(fraction)
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be a number in [0, 1], got {fraction!r}") from None
            if not 0 <= fraction <= 1:
                raise ValueError(f"{key} must be in [0, 1], got {fraction}")
            self.fractions[part] = fraction
            self.distributions.update({k: self.FEATURE_DEFAULTS[k] for k in params})
        for name, spec in distributions.items():
            dist = distribution_from_spec(name, spec)
            self._check(name, dist)
            self.distributions[name] = dist

    def _check(self, name, dist):
        """The distribution's unit and support against the parameter's declaration."""
        low, high = dist.support()
        declared = self.PARAMETERS.get(name) or next(
            part[name] for part in self.FEATURES.values() if name in part)
        declared.check_range(low, high, name)

    @classmethod
    def from_dict(cls, table):
        return cls(**table)

    def sample(self, rng):
        """One draw of every parameter, in a fixed order (a dict of Quantities); for each
        part of real galaxies whose fraction is given, whether this galaxy has it
        (``'warp'``: bool, ...) and its values (drawn either way, so that every galaxy
        takes as many numbers from ``rng``)."""
        out = {name: self.distributions[name].sample(rng) for name in self.PARAMETERS}
        for part, params in self.FEATURES.items():
            if part in self.fractions:
                out[part] = bool(rng.random() < self.fractions[part])
                out.update({k: self.distributions[k].sample(rng) for k in params})
        if self.parameters.distributions or self.parameters.laws:
            out["parameters"] = self.parameters.sample(rng)
        return out

    def extra_speed(self):
        """The most the parts' motions add to a line's reach beyond ``v_max sin i``
        (km/s), and the most a warp adds to the inclination (deg): for the band's room."""
        speed, tilt = 0.0, 0.0
        if "bar" in self.fractions:
            speed += sum(abs(x.to_value(_KMS)) for k in ("bar_v_2t", "bar_v_2r")
                         for x in self.distributions[k].support())
        if "lopsided" in self.fractions:
            speed += sum(abs(x.to_value(_KMS)) for k in ("lopsided_v_1t", "lopsided_v_1r")
                         for x in self.distributions[k].support())
        if "radial" in self.fractions:
            speed += max(abs(x.to_value(_KMS))
                         for x in self.distributions["radial_v_rad"].support())
        if "warp" in self.fractions:
            tilt = max(abs(x.to_value(u.deg))
                       for x in self.distributions["warp_inclination"].support())
        # what the flat parameters set: flows' amplitudes, and a warp's inclinations beyond
        # the galaxies' own
        for name in self.parameters.distributions:
            owner = next((f for f in Flow.kinds if name in f.flat_declarations()), None)
            if owner is not None and owner.flat_declarations()[name].kind == "velocity":
                reach = max(abs(x.to_value(_KMS)) for x in self.parameters.supports(name))
                speed += 4 * reach if getattr(owner, "sets_dispersion", False) else reach
            if name == "warp_inclination":
                low = self.distributions["inclination"].support()[0]
                tilt = max(tilt, (self.parameters.supports(name)[1] - low).to_value(u.deg))
        return speed, tilt

    @staticmethod
    def with_parameters(galaxy, draw):
        """``galaxy`` with the flat parameters of ``draw['parameters']`` (a `ParameterPriors`
        draw) in place of its own: a law they name replaces the galaxy's, with its keys."""
        values = draw.get("parameters")
        if not values:
            return galaxy
        flat = galaxy.to_dict()
        for key, (base, _, _) in Galaxy.LAWS.items():
            if key in values and values[key] != flat[key]:
                for name in base.laws[flat[key]].flat_declarations():
                    flat.pop(name, None)
        flat.update(values)
        return Galaxy.from_dict(flat, where="galaxy.parameters")

    @staticmethod
    def parts(draw):
        """The `~galcubecraft.Galaxy` arguments of a draw's surface and real-galaxy parts:
        ``surface`` (the Sersic disk, or a ring, with a bulge added where the draw has
        one), ``flows`` and ``warp`` where the draw has them."""
        r_eff = draw["r_eff"]
        out, flows = {}, []
        out["surface"] = SersicDisk(r_eff=r_eff, n=float(draw["n"].value))
        if draw.get("ring"):
            out["surface"] = GaussianRing(radius=float(draw["ring_radius"].value) * r_eff,
                                          width=float(draw["ring_width"].value) * r_eff)
        if draw.get("bulge"):
            main = out["surface"]
            share = float(draw["bulge_flux_fraction"].value)
            bulge = SersicBulge(r_eff=float(draw["bulge_r_eff"].value) * r_eff,
                                n=float(draw["bulge_n"].value))
            out["surface"] = SurfaceSum([main, bulge], fractions=[1 - share, share])
        if draw.get("bar"):
            end = float(draw["bar_length"].value) * r_eff
            nodes = u.Quantity([0 * end, end, 1.25 * end])
            flows.append(BisymmetricFlow(
                draw["bar_v_2t"] * [1, 1, 0], draw["bar_v_2r"] * [1, 1, 0],
                draw["bar_angle"] % (180 * u.deg), radius=nodes))
        if draw.get("lopsided"):
            flows.append(LopsidedFlow(draw["lopsided_v_1t"], draw["lopsided_v_1r"],
                                      draw["lopsided_angle"] % (360 * u.deg)))
        if draw.get("radial"):
            flows.append(RadialFlow(draw["radial_v_rad"]))
        if draw.get("drift"):
            flows.append(AsymmetricDrift())
        if flows:
            out["flows"] = flows
        if draw.get("warp"):
            start = float(draw["warp_start"].value) * r_eff
            inc = draw["inclination"]
            outer = np.clip((inc + draw["warp_inclination"]).to_value(u.deg), 0, 90) * u.deg
            pa = draw["position_angle"] % (360 * u.deg)
            out["warp"] = Warp(u.Quantity([0 * start, start, 2 * start]),
                               inclination=u.Quantity([inc, inc, outer]),
                               position_angle=u.Quantity([pa, pa,
                                                          pa + draw["warp_position_angle"]]))
        return out

    def __repr__(self):
        body = ", ".join(f"{k}={v!r}" for k, v in self.distributions.items())
        fractions = "".join(f", {k}_fraction={v}" for k, v in self.fractions.items())
        return f"<GalaxyPriors {body}{fractions}>"


def read_priors_file(path):
    """``(GalaxyPriors, placement dict)`` from a TOML priors file (see the module docstring)."""
    cfg = read_toml(path)
    unknown = set(cfg) - {"galaxy", "placement"}
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {sorted(unknown)}; expected [galaxy] "
                         "and [placement]")
    priors = GalaxyPriors(**cfg.get("galaxy", {}))
    placement = dict(cfg.get("placement", {}))
    allowed = {"n", "seed", "edge", "min_separation", "avoid_threshold"}
    bad = set(placement) - allowed
    if bad:
        raise ValueError(f"{path}: unknown [placement] key(s) {sorted(bad)}; known: "
                         f"{sorted(allowed)}")
    for key in ("edge", "min_separation"):
        if key in placement:
            placement[key] = _q(key, placement[key], u.arcsec)
    if "n" in placement:
        n = placement["n"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{path}: [placement] n must be a positive integer, got {n!r}")
    return priors, placement
