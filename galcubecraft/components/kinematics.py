"""Rotation curves: circular velocity as a function of disk-plane radius.

A new law is one small class: declare ``param_names`` (and which are sizes),
validate in ``__init__`` and write a torch ``evaluate(radius, ...)`` with radii
in arcsec and velocities in km/s.  A law may also give its slope
``evaluate_slope(radius, ...)`` (dv/dR, km/s per arcsec); without one the
projector takes a central difference.
"""
import math

import astropy.units as u
import numpy as np
import torch

from .. import functional as F
from ..parameters import Parameter
from .base import Component

__all__ = ["RotationCurve", "AnalyticRotationCurve", "ArctanRotationCurve",
           "FlatRotationCurve", "TabulatedRotationCurve"]

_KMS = u.km / u.s


class RotationCurve(Component):
    """Base class of rotation laws ``v_c(R)``.

    Each concrete law has a short ``law`` name (``'arctan'``, ``'flat'``, ...): the
    value of ``rotation`` in TOML files, truth tables and ``--rotation``.
    `RotationCurve.laws` maps the names to the classes.
    """

    #: name -> class of every concrete law (filled as laws are defined).
    laws = {}

    @classmethod
    def circular_velocity(cls, radius, params):
        """Circular velocity (*km/s*) at ``radius`` (*arcsec*) from a galaxy's parameter tensors.

        ``params`` holds every parameter of the galaxy (so laws tied to the
        surface profile can read ``r_eff`` and ``n``).
        """
        return cls.evaluate(radius, *(params[name] for name in cls.param_names))

    #: ``evaluate_slope(radius, *params)``: dv_c/dR, where the law knows it in closed form.
    evaluate_slope = None

    @classmethod
    def solid_body_radius(cls, params):
        """Radius (*arcsec*, one per galaxy) within which ``v_c`` rises linearly with R.

        The projector's cells integrate a linear velocity field exactly; where the curve
        turns over within a few cells of the centre it refines the centre
        (`galcubecraft.refine`).  The default, zero, is right for any law that is not
        linear at the centre (a flat curve, a power law).
        """
        return torch.zeros_like(params["r_eff"])

    @classmethod
    def circular_velocity_and_slope(cls, radius, params):
        """``v_c(R)`` and ``dv_c/dR`` (*km/s*, *km/s per arcsec*), from the same parameters.

        The slope is the law's closed form when it has one, else a central
        difference over 1e-3 of the radius.
        """
        v = cls.circular_velocity(radius, params)
        if cls.evaluate_slope is not None:
            return v, cls.evaluate_slope(radius, *(params[name] for name in cls.param_names))
        step = 1e-3 * radius
        return v, (cls.circular_velocity(radius + step, params)
                   - cls.circular_velocity(radius - step, params)) / (2 * step)

    #: ``evaluate_curvature(radius, *params)``: d^2 v_c / dR^2 (None: zero).
    evaluate_curvature = None

    @classmethod
    def circular_velocity_derivatives(cls, radius, params):
        """``v_c``, ``dv_c/dR`` and ``d^2 v_c/dR^2`` (*km/s*, per arcsec, per arcsec^2).

        The projector uses the curvature to place each sample's line at the mean velocity
        of the area it stands for (`galcubecraft.functional.velocity_moments`).
        """
        v, slope = cls.circular_velocity_and_slope(radius, params)
        if cls.evaluate_curvature is None:
            return v, slope, torch.zeros_like(v)
        return v, slope, cls.evaluate_curvature(radius,
                                                *(params[name] for name in cls.param_names))

    def __call__(self, radius, *, r_eff=None, n=None):
        """Evaluate the law at ``radius`` (Quantity, same kind as the law's sizes).

        ``r_eff`` and ``n`` are only needed by laws tied to the surface profile.
        """
        sizes = [v for k, v in self.parameters.items() if k in self.size_names and v is not None]
        if r_eff is not None:
            sizes.append(r_eff)
        physical = radius.unit.is_equivalent(u.kpc)
        if any(s.unit.is_equivalent(u.kpc) != physical for s in sizes):
            raise u.UnitsError("radius and the rotation curve's sizes must all be angles "
                               "or all be lengths")
        unit = u.kpc if physical else u.arcsec

        def to_common(name, value):
            return value.to_value(unit)

        params = self.tensors(to_common, dtype=torch.float64)
        if r_eff is not None:
            params["r_eff"] = torch.tensor(r_eff.to_value(unit), dtype=torch.float64)
        if n is not None:
            params["n"] = torch.tensor(float(n), dtype=torch.float64)
        r = torch.as_tensor(np.asarray(radius.to_value(unit), dtype=float))
        return self.circular_velocity(r, params).numpy() * _KMS


class AnalyticRotationCurve(RotationCurve):
    r"""The rotation law of GalCubeCraft 0.1.0 (``milky_way_rot_curve_analytical``).

    .. math::

        v_c(R) = 1.022\,v_0 \left(\frac{R}{R_0}\right)^{0.0803},
        \qquad R_0 = 2 R_e / b_n^{\,n}

    :math:`R_0` is twice the Sérsic scale radius of the galaxy's surface
    profile unless given explicitly.

    Parameters
    ----------
    v_0 : `~astropy.units.Quantity` [speed]
        Characteristic velocity (the seed uses 200 km/s), >= 0.
    r_0 : `~astropy.units.Quantity` [angle or length], optional
        Reference radius; by default tied to the surface profile as above
        (and then differentiable through ``r_eff`` and ``n``).
    """

    law = "analytic"
    v_0 = Parameter("velocity", nonnegative=True, default=200 * _KMS,
                    description="characteristic speed of GalCubeCraft 0.1.0's law",
                    aliases=("v_max",))
    r_0 = Parameter("size", positive=True, optional=True, default=None,
                    description="reference radius of the analytic law (default tied to r_eff "
                                "and n)")

    def __init__(self, v_0=200 * _KMS, r_0=None):
        self.v_0 = v_0
        self.r_0 = r_0

    @staticmethod
    def evaluate(radius, v_0, r_0):
        return 1.022 * v_0 * (radius / r_0) ** 0.0803

    @classmethod
    def circular_velocity(cls, radius, params):
        return cls.evaluate(radius, params["v_0"], cls._r_0(params))

    @classmethod
    def circular_velocity_and_slope(cls, radius, params):
        v = cls.evaluate(radius, params["v_0"], cls._r_0(params))
        return v, 0.0803 * v / radius

    @classmethod
    def circular_velocity_derivatives(cls, radius, params):
        v, slope = cls.circular_velocity_and_slope(radius, params)
        return v, slope, (0.0803 - 1.0) * slope / radius

    @staticmethod
    def _r_0(params):
        r_0 = params.get("r_0")
        if r_0 is None:
            n = params["n"]
            b_n = params.get("b_n")          # the projector solves it once per batch
            r_0 = 2 * params["r_eff"] / (F.sersic_bn(n) if b_n is None else b_n) ** n
        return r_0

    def __call__(self, radius, *, r_eff=None, n=None):
        if self.r_0 is None and (r_eff is None or n is None):
            raise ValueError("AnalyticRotationCurve without r_0 is tied to the surface profile: "
                             "pass r_eff and n")
        return super().__call__(radius, r_eff=r_eff, n=n)


class ArctanRotationCurve(RotationCurve):
    r"""Arctangent rotation curve (Courteau 1997).

    .. math:: v_c(R) = \frac{2}{\pi} v_{\max} \arctan\left(\frac{R}{r_t}\right)

    Parameters
    ----------
    v_max : `~astropy.units.Quantity` [speed]
        Asymptotic circular velocity, >= 0.
    r_turn : `~astropy.units.Quantity` [angle or length]
        Turnover radius, > 0.

    Examples
    --------
    >>> import astropy.units as u
    >>> from galcubecraft import ArctanRotationCurve
    >>> rc = ArctanRotationCurve(v_max=200 * u.km / u.s, r_turn=2 * u.arcsec)
    >>> rc(2 * u.arcsec)  # doctest: +FLOAT_CMP
    <Quantity 100. km / s>
    """

    law = "arctan"
    v_max = Parameter("velocity", nonnegative=True, description="asymptotic rotation speed")
    r_turn = Parameter("size", positive=True, description="turnover radius")

    def __init__(self, v_max, r_turn):
        self.v_max = v_max
        self.r_turn = r_turn

    @staticmethod
    def evaluate(radius, v_max, r_turn):
        return (2 / math.pi) * v_max * torch.atan(radius / r_turn)

    @staticmethod
    def evaluate_slope(radius, v_max, r_turn):
        return (2 / math.pi) * v_max * r_turn / (r_turn**2 + radius**2)

    @staticmethod
    def evaluate_curvature(radius, v_max, r_turn):
        return -(4 / math.pi) * v_max * r_turn * radius / (r_turn**2 + radius**2) ** 2

    @classmethod
    def solid_body_radius(cls, params):
        """The turnover radius: within it the curve is nearly linear."""
        return params["r_turn"]


class FlatRotationCurve(RotationCurve):
    r"""A flat rotation curve, :math:`v_c(R) = v_{\rm flat}` (solid body nowhere).

    Parameters
    ----------
    v_flat : `~astropy.units.Quantity` [speed]
        Circular velocity at every radius, >= 0.
    """

    law = "flat"
    v_flat = Parameter("velocity", nonnegative=True, description="rotation speed at every radius",
                       aliases=("v_max",))

    def __init__(self, v_flat):
        self.v_flat = v_flat

    @staticmethod
    def evaluate(radius, v_flat):
        return v_flat * torch.ones_like(radius)

    @staticmethod
    def evaluate_slope(radius, v_flat):
        return torch.zeros_like(radius)


class TabulatedRotationCurve(RotationCurve):
    """A rotation curve given as a table, linearly interpolated.

    The curve starts at ``v_c(0) = 0`` when the table does not give R = 0, and
    stays flat at the last tabulated velocity beyond the last radius.

    Parameters
    ----------
    radius : `~astropy.units.Quantity` [angle or length], 1-D
        Strictly increasing radii, >= 0.
    velocity : `~astropy.units.Quantity` [speed], 1-D
        Circular velocity at each radius, >= 0.

    Examples
    --------
    >>> import astropy.units as u
    >>> from galcubecraft import TabulatedRotationCurve
    >>> rc = TabulatedRotationCurve([1, 2, 4] * u.kpc, [100, 150, 160] * u.km / u.s)
    >>> rc([0.5, 3, 10] * u.kpc)  # doctest: +FLOAT_CMP
    <Quantity [ 50., 155., 160.] km / s>
    """

    law = "tabulated"
    radius = Parameter("size", nonnegative=True, shape="1d",
                       description="radii of the rotation-curve table, increasing")
    velocity = Parameter("velocity", nonnegative=True, shape="1d",
                         description="circular speed at each radius of the table")

    def __init__(self, radius, velocity):
        radius = type(self).radius.validate(radius)
        velocity = type(self).velocity.validate(velocity)
        if radius.ndim != 1 or velocity.shape != radius.shape or radius.size < 1:
            raise ValueError("radius and velocity must be 1-D of the same, non-zero length, got "
                             f"shapes {radius.shape} and {velocity.shape}")
        if np.any(np.diff(radius.value) <= 0):
            raise ValueError(f"radius must be strictly increasing, got {radius}")
        if radius[0].value > 0:
            radius = np.concatenate([[0] * radius.unit, radius])
            velocity = np.concatenate([[0] * velocity.unit, velocity])
        if radius.size < 2:
            raise ValueError(f"radius must reach beyond R = 0, got {radius}")
        self.radius = radius
        self.velocity = velocity

    def __repr__(self):
        return f"<TabulatedRotationCurve({self.radius.size} points, R <= {self.radius[-1]})>"

    @staticmethod
    def evaluate(radius, radius_table, velocity_table):
        return F.interpolate_linear(radius, radius_table, velocity_table)

    @staticmethod
    def evaluate_curvature(radius, radius_table, velocity_table):
        """The curvature the table samples: at each inner node the change of slope over the
        nodes' spacing (zero at the ends), interpolated linearly.  A cell's mean velocity
        over a kink is then that of the curve the table was drawn from, for dense tables."""
        dr = radius_table[..., 1:] - radius_table[..., :-1]
        slope = (velocity_table[..., 1:] - velocity_table[..., :-1]) / dr
        inner = 2 * (slope[..., 1:] - slope[..., :-1]) / (dr[..., 1:] + dr[..., :-1])
        zero = torch.zeros_like(velocity_table[..., :1])
        return F.interpolate_linear(radius, radius_table, torch.cat([zero, inner, zero], -1))

    @classmethod
    def solid_body_radius(cls, params):
        """The table's second radius where it starts at (0, 0), else zero."""
        radius, velocity = params["radius"], params["velocity"]
        return torch.where(velocity[..., 0] == 0, radius[..., 1], torch.zeros_like(radius[..., 1]))
