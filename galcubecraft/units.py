"""The internal unit system and the one place where Quantities are checked.

Everything that crosses the public API is an `~astropy.units.Quantity`.  It is
checked once, here, and converted once (in ``tensors()`` methods) to plain
floats in the internal units below.  The projector and the kernels in
:mod:`galcubecraft.functional` never see units.
"""
import math

import numpy as np
import astropy.units as u

from .conventions import (C_KMS, FWHM_PER_SIGMA, redshift_of_radio_velocity,
                          velocity_compression)

__all__ = ["FWHM_PER_SIGMA", "C_KMS", "INTERNAL", "validate_quantity", "validate_number",
           "validate_size", "validate_velocity", "validate_line_flux", "check_finite",
           "radio_velocity", "redshift_of_radio_velocity", "velocity_compression"]


#: Internal unit of each physical quantity handled by the projector.
INTERNAL = {
    "angle": u.arcsec,         # sky and disk-plane lengths once converted to angles
    "orientation": u.rad,      # inclination and position angle
    "velocity": u.km / u.s,    # radio-convention velocities, dispersions
    "line_flux": u.Jy * u.km / u.s,
}

_LINE_FLUX = INTERNAL["line_flux"]


def _describe(value):
    return f"{value!r}" if not isinstance(value, u.Quantity) else f"{value}"


def check_finite(name, value):
    """Raise `ValueError` naming ``name`` if any element of ``value`` is NaN or infinite."""
    arr = np.asanyarray(getattr(value, "value", value), dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {_describe(value)}")


def validate_quantity(name, value, unit, *, positive=False, nonnegative=False,
                      minimum=None, maximum=None, equivalencies=(), shape=None):
    """Check that ``value`` is a finite Quantity convertible to ``unit``.

    Parameters
    ----------
    name : str
        Parameter name used in error messages.
    value : `~astropy.units.Quantity`
        The value to check.
    unit : `~astropy.units.UnitBase` or sequence of them
        Acceptable unit(s); the value must be convertible to one of them.
    positive, nonnegative : bool
        Require ``value > 0`` or ``value >= 0``.
    minimum, maximum : `~astropy.units.Quantity`, optional
        Inclusive bounds.
    equivalencies : list
        Unit equivalencies allowed in the conversion.
    shape : tuple, optional
        Required shape.

    Returns
    -------
    `~astropy.units.Quantity`
        The value (a Quantity, unchanged unit).

    Raises
    ------
    astropy.units.UnitTypeError
        If ``value`` is not a Quantity (a bare number where a unit is needed).
    astropy.units.UnitsError
        If ``value`` has units of the wrong physical type.
    ValueError
        If ``value`` is NaN, infinite, or out of range.
    """
    units = unit if isinstance(unit, (list, tuple)) else (unit,)
    # units by name ('Jy km / s'), not astropy's physical types (a line flux is a 'yank' there)
    expected = " or ".join(f"{un.to_string()}-compatible units" for un in units)
    if not isinstance(value, u.Quantity):
        raise u.UnitTypeError(
            f"{name} must be an astropy Quantity with {expected} "
            f"(e.g. 1 * {units[0]}), got {_describe(value)}")
    if not any(value.unit.is_equivalent(un, equivalencies=equivalencies) for un in units):
        raise u.UnitsError(f"{name} must have {expected}, got {value}")
    if shape is not None and value.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {value.shape}")
    check_finite(name, value)
    ref = next(un for un in units if value.unit.is_equivalent(un, equivalencies=equivalencies))
    v = value.to_value(ref, equivalencies=equivalencies)
    if positive and np.any(v <= 0):
        raise ValueError(f"{name} must be positive, got {_describe(value)}")
    if nonnegative and np.any(v < 0):
        raise ValueError(f"{name} must not be negative, got {_describe(value)}")
    if minimum is not None and np.any(v < minimum.to_value(ref, equivalencies=equivalencies)):
        raise ValueError(f"{name} must be >= {minimum}, got {_describe(value)}")
    if maximum is not None and np.any(v > maximum.to_value(ref, equivalencies=equivalencies)):
        raise ValueError(f"{name} must be <= {maximum}, got {_describe(value)}")
    return value


def validate_number(name, value, *, positive=False, minimum=None, maximum=None):
    """Check a dimensionless parameter (a plain number or a dimensionless Quantity)."""
    if isinstance(value, u.Quantity):
        if not value.unit.is_equivalent(u.dimensionless_unscaled):
            raise u.UnitsError(f"{name} must be dimensionless, got {value.unit!s}")
        value = value.to_value(u.dimensionless_unscaled)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return value


def validate_size(name, value, *, allow_zero=False):
    """A size given either as an angle or as a physical length (converted later with a distance)."""
    return validate_quantity(name, value, (u.arcsec, u.kpc),
                             positive=not allow_zero, nonnegative=allow_zero)


def validate_velocity(name, value, **kwargs):
    """A speed (e.g. km/s); keywords as `validate_quantity`."""
    return validate_quantity(name, value, u.km / u.s, **kwargs)


def validate_line_flux(name, value, **kwargs):
    """A line flux (flux density times speed, e.g. Jy km/s); keywords as `validate_quantity`."""
    return validate_quantity(name, value, _LINE_FLUX, **kwargs)


def radio_velocity(redshift):
    """The radio velocity ``c z / (1 + z)`` of a line emitted at ``redshift`` (km/s).

    Radio velocity is linear in observed frequency, ``v = c (1 - f / f0)``, and
    ``f = f0 / (1 + z)``; it is the velocity the projector and VRAD axes use.
    """
    z = validate_number("redshift", redshift)
    if z <= -1:
        raise ValueError(f"redshift must be > -1, got {z}")
    return C_KMS * z / (1 + z) * (u.km / u.s)
