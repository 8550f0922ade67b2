"""Parameters declared once: name, kind of unit, default, bounds and description.

A model class (a component, a `~galcubecraft.Galaxy`, a `~galcubecraft.diffuse.Stream`)
declares each of its parameters as a class attribute, on the model of
`astropy.modeling.Parameter`::

    class ArctanRotationCurve(RotationCurve):
        v_max = Parameter("velocity", nonnegative=True, description="asymptotic speed")
        r_turn = Parameter("size", positive=True, description="turnover radius")

Everything that lists parameters is derived from these declarations: validation
(every error names the parameter), ``repr``, equality, ``replace``, ``tensors()``,
the flat dictionaries of TOML files and truth tables, command-line flags, priors keys and
catalogue columns.  Adding a parameter touches one class.

A `Parameter` is a data descriptor: assigning to it validates the value, and a value
once set cannot be changed (models are values; make a changed copy with ``replace``).
"""
import math
import warnings

import astropy.units as u
import numpy as np

from .units import C_KMS, INTERNAL, validate_number

__all__ = ["Parameter", "Declared", "REQUIRED", "parse_quantity", "declared_parameters",
           "resolve_aliases"]

_KMS = u.km / u.s


class _Required:
    def __repr__(self):
        return "REQUIRED"


#: Marks a parameter that has no default.
REQUIRED = _Required()

#: kind: (units a value may convert to, internal unit, unit of table columns, example)
KINDS = {
    "size": ((u.arcsec, u.kpc), INTERNAL["angle"], u.arcsec, "2 arcsec"),
    "angle": ((u.deg,), INTERNAL["orientation"], u.deg, "30 deg"),
    "velocity": ((_KMS,), INTERNAL["velocity"], _KMS, "100 km/s"),
    "line_flux": ((INTERNAL["line_flux"],), INTERNAL["line_flux"], INTERNAL["line_flux"],
                  "10 Jy km/s"),
    "distance": ((u.Mpc,), u.Mpc, u.Mpc, "20 Mpc"),
    "velocity_gradient": ((_KMS / u.arcsec, _KMS / u.kpc), _KMS / u.arcsec, _KMS / u.arcsec,
                          "15 km/(s kpc)"),
    "dimensionless": ((), None, None, "1.5"),
}
#: What a user reads for each kind in an error message (astropy's physical-type names, such
#: as 'yank' for a line flux, mean nothing to an astronomer).
_DESCRIBED = {"size": "an angle or a length", "angle": "an angle", "velocity": "a speed",
              "line_flux": "a line flux (flux density x speed)",
              "distance": "a length", "dimensionless": "a number",
              "velocity_gradient": "a speed per angle or per length"}


def parse_quantity(name, text):
    """A user's text (``'8.4 arcsec'``, ``'20 km/s'``) as a `~astropy.units.Quantity`.

    The one place where strings from command lines, TOML files and catalogues become
    Quantities.  A Quantity is returned unchanged; a bare number is refused, since its
    unit would be a guess.
    """
    if isinstance(text, u.Quantity):
        return text
    if isinstance(text, (int, float, np.integer, np.floating)) and not isinstance(text, bool):
        raise ValueError(f"{name} needs a unit, e.g. '{text} arcsec' or '{text} km/s'; got the "
                         f"bare number {text}")
    try:
        value = u.Quantity(str(text))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot read {name}={text!r} as a quantity with units: {exc}") from None
    if value.unit == u.one and not str(text).strip().endswith(("dimensionless", "one")):
        raise ValueError(f"{name} needs a unit, e.g. '{text} arcsec' or '{text} km/s'; got "
                         f"{text!r}")
    return value


class Parameter:
    """A declared parameter of a model class.

    Parameters
    ----------
    kind : {'size', 'angle', 'velocity', 'line_flux', 'distance', 'velocity_gradient', \
'dimensionless'}
        What the value measures.  A ``'size'`` is an angle or, for a galaxy with a
        distance or redshift, a physical length; it is handed to the projector in arcsec
        (a ``'velocity_gradient'``, per angle or per length, in km/s per arcsec).
    default : optional
        The value when none is given (`REQUIRED` if there is none).
    positive, nonnegative : bool
        Require ``value > 0`` or ``value >= 0``.
    minimum, maximum : float, optional
        Inclusive bounds, in the kind's table unit (deg, km/s, ...) or plain numbers.
    shape : tuple, optional
        Required shape (e.g. ``(2,)`` for an offset); ``'1d'`` for a table of any length.
    optional : bool
        ``None`` is a legal value (the parameter is then unset).
    description : str
        One line, used in help texts and docs.
    aliases : tuple of str
        Old spellings still accepted in dictionaries, files and flags (with a
        `DeprecationWarning`).
    name : str, optional
        The name, for a parameter that is not a class attribute (a class attribute
        takes its attribute's name).
    """

    def __init__(self, kind, *, default=REQUIRED, positive=False, nonnegative=False,
                 minimum=None, maximum=None, shape=None, optional=False, description="",
                 aliases=(), name=None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
        self.kind = kind
        self.units, self.internal_unit, self.table_unit, self.example = KINDS[kind]
        self.default = default
        self.positive, self.nonnegative = positive, nonnegative
        self.minimum, self.maximum = minimum, maximum
        self.shape, self.optional = shape, optional
        self.description, self.aliases = description, tuple(aliases)
        self.name = name

    # ------------------------------------------------------------------ descriptor
    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        try:
            return obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(f"{type(obj).__name__}.{self.name} is not set") from None

    def __set__(self, obj, value):
        if self.name in obj.__dict__:
            raise AttributeError(f"{type(obj).__name__} is a value: {self.name} cannot be "
                                 f"changed; make a changed copy with .replace({self.name}=...)")
        obj.__dict__[self.name] = self.validate(value)

    # ------------------------------------------------------------------ checks
    @property
    def required(self):
        return self.default is REQUIRED

    def validate(self, value, name=None):
        """The checked value (a Quantity in the user's unit, or a float); raises naming it."""
        name = name or self.name
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"{name} is required ({self.description or self.kind})")
        if self.kind == "dimensionless" and self.shape == "1d":
            return self._validate_numbers(name, value)
        if self.kind == "dimensionless":
            return validate_number(name, value, positive=self.positive, minimum=(
                0.0 if self.nonnegative and self.minimum is None else self.minimum),
                maximum=self.maximum)
        if not isinstance(value, u.Quantity):
            raise u.UnitTypeError(
                f"{name} must be {_DESCRIBED[self.kind]}, an astropy Quantity (e.g. "
                f"{self.example}), got {value!r}")
        ref = self._reference_unit(value.unit)
        if ref is None:
            raise u.UnitsError(f"{name} must be {_DESCRIBED[self.kind]} (e.g. {self.example}), "
                               f"got {value}")
        if self.shape == "1d" and value.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {value.shape}")
        if self.shape not in (None, "1d") and value.shape != tuple(self.shape):
            raise ValueError(f"{name} must have shape {tuple(self.shape)}, got {value.shape}")
        # every check needs only the least and the largest value (a scalar's own: galaxies
        # are made by the thousand when a dataset draws its scenes)
        v = value.to_value(ref)
        scalar = np.ndim(v) == 0
        if not (math.isfinite(v) if scalar else np.isfinite(v).all()):
            raise ValueError(f"{name} must be finite, got {value}")
        least, most = (float(v), float(v)) if scalar else \
            (float(np.min(v)), float(np.max(v))) if np.size(v) else (math.inf, -math.inf)
        if self.positive and least <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
        if self.nonnegative and least < 0:
            raise ValueError(f"{name} must not be negative, got {value}")
        if self.kind == "velocity" and max(-least, most) >= C_KMS:     # (ref: km/s)
            raise ValueError(f"{name} must be below the speed of light, got {value}")
        low, high = self._bounds(ref)
        if low is not None and least < low:
            raise ValueError(f"{name} must be >= {self.minimum * self.table_unit}, got {value}")
        if high is not None and most > high:
            raise ValueError(f"{name} must be <= {self.maximum * self.table_unit}, got {value}")
        return value

    def _validate_numbers(self, name, value):
        """A 1-D table of plain numbers (a Quantity's values in its own unit), checked."""
        v = np.array(getattr(value, "value", value), dtype=float)
        if v.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be finite, got {v}")
        if self.positive and np.any(v <= 0):
            raise ValueError(f"{name} must be positive, got {v}")
        if self.nonnegative and np.any(v < 0):
            raise ValueError(f"{name} must not be negative, got {v}")
        return v

    def _reference_unit(self, unit):
        """The one of this kind's units ``unit`` converts to (None if none), remembered."""
        cache = self.__dict__.setdefault("_matches", {})
        if unit not in cache:
            cache[unit] = next((x for x in self.units if unit.is_equivalent(x)), None)
        return cache[unit]

    def _bounds(self, ref):
        """``(minimum, maximum)`` as floats in ``ref`` (None where unbounded), remembered."""
        cache = self.__dict__.setdefault("_bound_values", {})
        if ref not in cache:
            cache[ref] = tuple(None if b is None else (b * self.table_unit).to_value(ref)
                               for b in (self.minimum, self.maximum))
        return cache[ref]

    def parse(self, text, name=None):
        """A value from a file or a command line: text (``'8.4 arcsec'``), a number, a list."""
        name = name or self.name
        if text is None:
            return self.validate(None, name)
        if self.kind == "dimensionless":
            if isinstance(text, str):
                try:
                    text = float(text)
                except ValueError:
                    raise ValueError(f"{name} must be a number, got {text!r}") from None
            return self.validate(text, name)
        items = text if isinstance(text, (list, tuple)) else [text]
        values = [parse_quantity(name, t) for t in items]
        if any(v.unit == u.one and not isinstance(t, u.Quantity) for v, t in zip(values, items)):
            raise ValueError(f"{name} needs a unit, e.g. '{self.example}'; got {text!r}")
        value = u.Quantity(values) if isinstance(text, (list, tuple)) else values[0]
        return self.validate(value, name)

    def check_range(self, low, high, name=None):
        """Raise `ValueError` if values in [low, high] (Quantities or floats) can be illegal.

        The check a distribution's support gets before any value is drawn.
        """
        name = name or self.name
        unit = self.table_unit
        if unit is not None:
            base = next((x for x in self.units if low.unit.is_equivalent(x)), None)
            if base is None:
                raise u.UnitsError(f"{name} must be {_DESCRIBED[self.kind]} (e.g. "
                                   f"{self.example}), got {low.unit or 'no unit'}")
            unit = base if base in (u.arcsec, u.kpc) else unit
            lo, hi = low.to_value(unit), high.to_value(unit)
        else:
            if isinstance(low, u.Quantity):
                if not low.unit.is_equivalent(u.one):
                    raise u.UnitsError(f"{name} must be a number, got {low.unit}")
                low, high = low.to_value(u.one), high.to_value(u.one)
            lo, hi = float(low), float(high)
        label = "" if unit is None else f" {unit}"
        if self.positive and lo <= 0:
            raise ValueError(f"{name} must be > 0{label}, but its distribution reaches {lo:g}")
        if self.nonnegative and lo < 0:
            raise ValueError(f"{name} must be >= 0{label}, but its distribution reaches {lo:g}")
        if self.minimum is not None and lo < self.minimum:
            raise ValueError(f"{name} must be >= {self.minimum}{label}, but its distribution "
                             f"reaches {lo:g}")
        if self.maximum is not None and hi > self.maximum:
            raise ValueError(f"{name} must be <= {self.maximum}{label}, but its distribution "
                             f"reaches {hi:g}")
        if self.kind == "velocity" and max(abs(lo), abs(hi)) >= C_KMS:
            raise ValueError(f"{name} must be below the speed of light, but its distribution "
                             f"reaches {max(abs(lo), abs(hi)):g}{label}")
        if not (math.isfinite(lo) or lo == -math.inf) or math.isnan(hi):
            raise ValueError(f"{name}: its distribution's support is not finite")

    # ------------------------------------------------------------------ conversions
    def to_internal(self, value, to_arcsec=None):
        """``value`` in the projector's internal unit, as floats (sizes through ``to_arcsec``)."""
        if value is None:
            return None
        if self.kind == "size":
            return to_arcsec(self.name, value)
        if self.kind == "dimensionless":
            return value
        if self.kind == "velocity_gradient":
            return self._per_arcsec(value, to_arcsec)
        return value.to_value(self.internal_unit)

    def _per_arcsec(self, value, to_arcsec):
        """A velocity gradient in km/s per arcsec (per length through ``to_arcsec``)."""
        if value.unit.is_equivalent(self.internal_unit):
            return value.to_value(self.internal_unit)
        return value.to_value(_KMS / u.kpc) / to_arcsec(self.name, 1 * u.kpc)

    #: Whether a value may be a 1-D table (a ``'1d'`` shape, or a flow's amplitude that is a
    #: constant or a table): truth tables give such a parameter an array column.
    @property
    def may_be_table(self):
        return self.shape == "1d"

    def to_table(self, value, to_arcsec=None):
        """``value`` as a number (a 1-D table: an array) in the kind's table unit (arcsec, deg,
        km/s, Jy km/s; sizes through ``to_arcsec``), NaN for an unset value: a truth-table
        cell."""
        if value is None:
            return math.nan
        if self.kind == "size":
            out = to_arcsec(self.name, value)
        elif self.kind == "dimensionless":
            out = getattr(value, "value", value)
        elif self.kind == "velocity_gradient":
            out = self._per_arcsec(value, to_arcsec)
        else:
            out = value.to_value(self.table_unit)
        out = np.asarray(out, dtype=float)
        return float(out) if out.ndim == 0 else out

    @property
    def flag(self):
        """The command-line option of this parameter, e.g. ``--r-eff``."""
        return "--" + self.name.replace("_", "-")

    def help(self):
        """One line for ``--help``: the description and what the value is."""
        example = "" if self.kind == "dimensionless" else f", e.g. '{self.example}'"
        return f"{self.description}{example}"

    def __repr__(self):
        bounds = []
        if self.positive:
            bounds.append("> 0")
        if self.nonnegative:
            bounds.append(">= 0")
        if self.minimum is not None:
            bounds.append(f">= {self.minimum}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum}")
        default = "" if self.required else f", default={self.default!r}"
        return (f"Parameter({self.name!r}, kind={self.kind!r}{default}"
                f"{', ' + ' '.join(bounds) if bounds else ''})")


def declared_parameters(cls):
    """The `Parameter` declarations of a class and its bases, in declaration order (a
    subclass that sets an inherited parameter's name to None has no such parameter)."""
    out = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, Parameter):
                out.pop(name, None)
                out[name] = value
            elif value is None and name in out:
                del out[name]
    return out


def resolve_aliases(values, parameters, where):
    """``values`` with old spellings renamed to the declared names (warning once for each)."""
    values = dict(values)
    for name, p in parameters.items():
        for alias in p.aliases:
            if alias in values:
                if name in values:
                    raise ValueError(f"{where}: give {name} or its old spelling {alias}, not both")
                warnings.warn(f"{where}: {alias!r} is now called {name!r}; the old spelling "
                              "will be removed in a future version", DeprecationWarning,
                              stacklevel=3)
                values[name] = values.pop(alias)
    return values


class Declared:
    """Base of the model classes whose parameters are declared with `Parameter`.

    Gives them, from the declarations alone: ``parameters`` (name -> value),
    ``param_names``, ``size_names``, a readable ``repr``, equality and ``replace``.
    Subclasses validate by assigning each parameter once in ``__init__``.
    """

    #: name -> `Parameter`, in declaration order (set for each subclass).
    declarations = {}
    param_names = ()
    size_names = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.declarations = declared_parameters(cls)
        cls.param_names = tuple(cls.declarations)
        cls.size_names = tuple(n for n, p in cls.declarations.items() if p.kind == "size")

    @property
    def parameters(self):
        """Mapping of parameter name to value (Quantity, float or None)."""
        return {name: getattr(self, name) for name in self.param_names}

    def _init_arguments(self):
        """The constructor's keyword arguments that re-create this object."""
        return self.parameters

    def _values(self):
        """What equality compares (by default the constructor's arguments)."""
        return self._init_arguments()

    def replace(self, **changes):
        """A copy with some parameters changed, built (and validated) by the constructor."""
        unknown = set(changes) - set(self._init_arguments())
        if unknown:
            raise TypeError(f"{type(self).__name__} has no parameter(s) {sorted(unknown)}; it "
                            f"has {sorted(self._init_arguments())}")
        return type(self)(**{**self._init_arguments(), **changes})

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.parameters.items() if v is not None)
        return f"<{type(self).__name__}({args})>"

    def __eq__(self, other):
        if type(self) is not type(other):
            return NotImplemented
        mine, theirs = self._values(), other._values()
        for name, a in mine.items():
            b = theirs[name]
            if (a is None) != (b is None):
                return False
            if a is None:
                continue
            if isinstance(a, (u.Quantity, float, int, np.ndarray)):
                try:
                    if np.shape(a) != np.shape(b) or not np.all(np.asanyarray(a == b)):
                        return False
                except u.UnitsError:
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None
