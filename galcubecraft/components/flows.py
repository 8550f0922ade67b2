r"""Motions besides rotation, and warps: what makes a disk a real one.

A galaxy's gas moves, in the disk frame (radius :math:`R`, azimuth :math:`\phi` in the
plane from the receding major axis towards the far side, height :math:`z`), with

.. math::

    v_\phi = v_c(R) - \sum_m v_{m,t}(R)\cos m(\phi - \phi_m) - \frac{dv}{dz}|z|, \quad
    v_R = v_{\rm rad}(R) - \sum_m v_{m,r}(R)\sin m(\phi - \phi_m), \quad
    v_z = v_{\rm vert}(R)\,{\rm sgn}(z)

(Spekkens & Sellwood 2007, ApJ 664, 204, eq. 5, for m = 2; its m = 1 analogue for lopsided
flows), seen along the line of sight as

.. math:: v = v_{\rm sys} + \sin i\,(v_\phi\cos\phi + v_R\sin\phi) - v_z\cos i.

So an outflow (:math:`v_{\rm rad} > 0`) recedes on the far side, and gas leaving the plane
(:math:`v_{\rm vert} > 0`) approaches on the near side.  The far side of the disk lies at
position angle PA - 90 deg (east of north; the receding major axis at PA).

Each amplitude is a constant or, with ``radius``, a table over radius (linearly
interpolated, constant beyond its ends, as KinMS and 3D-Barolo's rings).  A flow is one
small class: declare its parameters and give ``velocities(radius, phi, z, params)``,
returning the terms it adds (``'v_R'``, ``'v_phi'``, ``'v_z'``, km/s) or the dispersion
it sets (``'sigma'``, with ``sets_dispersion = True``).
"""
import numpy as np
import torch

from .. import functional as F
from ..parameters import Parameter
from .base import Component, check_table_nodes

__all__ = ["Flow", "RadialFlow", "VerticalFlow", "LaggingHalo", "BisymmetricFlow",
           "LopsidedFlow", "DispersionProfile", "AsymmetricDrift", "Warp", "amplitude_at"]


def amplitude_at(radius, params, cls, name):
    """A flow's amplitude ``name`` at ``radius`` (*arcsec*): its constant, or its table
    interpolated linearly over the flow's ``radius`` nodes."""
    value = params[cls.key(name)]
    if cls.key("radius") not in params:
        return value.reshape(-1, *([1] * (radius.dim() - 1)))
    return F.interpolate_linear(radius, params[cls.key("radius")], value)


def _check_table(owner, radius, amplitudes, least=1):
    """Validate ``radius`` (optional nodes) against the amplitudes: scalars without it,
    1-D tables of its length with it."""
    name = type(owner).__name__
    if radius is None:
        for key, value in amplitudes.items():
            if value is not None and np.ndim(value) != 0:
                raise ValueError(f"{name}: {key} is a table ({np.shape(value)}); give the "
                                 "radius of its nodes too")
        return
    check_table_nodes(name, radius, amplitudes, least)


class Flow(Component):
    """Base class of a disk's motions besides rotation (and of its dispersion profile)."""

    #: Every kind of flow, in the order galaxies list them in flat dictionaries.
    kinds = []
    #: With its amplitudes zero it changes nothing, and how the disk is sampled does not
    #: depend on it: a galaxy without it may be rendered beside galaxies with it
    #: (`galcubecraft.rings.merge`).
    neutral = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("key_prefix"):
            Flow.kinds.append(cls)

    radius = Parameter("size", nonnegative=True, shape="1d", optional=True, default=None,
                       description="radii of the nodes of a tabulated amplitude, increasing")

    def __init__(self, radius=None, **values):
        self.radius = radius
        for key, value in values.items():
            setattr(self, key, value)
        _check_table(self, self.radius, {k: getattr(self, k) for k, p in
                                         self.declarations.items() if isinstance(p, _Amplitude)})

    @classmethod
    def velocities(cls, radius, phi, z, params):
        """The terms this flow adds: ``{'v_R': ..., 'v_phi': ..., 'v_z': ...}`` (km/s)."""
        raise NotImplementedError

    def __repr__(self):
        if self.radius is None:
            return super().__repr__()
        tables = ", ".join(f"{k}={v}" for k, v in self.parameters.items()
                           if v is not None and k != "radius")
        return (f"<{type(self).__name__}({self.radius.size} nodes, R <= {self.radius[-1]}: "
                f"{tables})>")


def _table_of(declaration):
    """The declaration's checks for a 1-D table of values."""
    table = Parameter(declaration.kind, default=declaration.default,
                      positive=declaration.positive, nonnegative=declaration.nonnegative,
                      minimum=declaration.minimum, maximum=declaration.maximum, shape="1d",
                      optional=declaration.optional, description=declaration.description,
                      name=declaration.name)
    return table


class _Amplitude(Parameter):
    """An amplitude that is a constant, or a 1-D table over the flow's ``radius``."""

    may_be_table = True

    def validate(self, value, name=None):
        if value is not None and np.ndim(getattr(value, "value", value)) == 1:
            return _table_of(self).validate(value, name or self.name)
        return super().validate(value, name)


class RadialFlow(Flow):
    """Radial motion in the plane of the disk: inflow (``v_rad < 0``) or outflow.

    Parameters
    ----------
    v_rad : `~astropy.units.Quantity` [speed]
        Radial velocity, positive outwards: a constant, or one value per ``radius`` node.
    radius : `~astropy.units.Quantity` [angle or length], 1-D, optional
        Nodes of a tabulated ``v_rad``.

    Examples
    --------
    >>> import astropy.units as u
    >>> from galcubecraft import RadialFlow
    >>> RadialFlow(v_rad=-20 * u.km / u.s)
    <RadialFlow(v_rad=-20.0 km / s)>
    """

    key_prefix = "radial_"
    neutral = True
    v_rad = _Amplitude("velocity", description="radial velocity in the plane, outwards > 0")

    def __init__(self, v_rad, radius=None):
        super().__init__(radius, v_rad=v_rad)

    @classmethod
    def velocities(cls, radius, phi, z, params):
        return {"v_R": amplitude_at(radius, params, cls, "v_rad")}


class VerticalFlow(Flow):
    """Motion perpendicular to the disk, away from the plane on both sides (a fountain or
    wind; ``v_vert < 0``: gas falling onto the disk), as 3D-Barolo's VVERT.

    Parameters
    ----------
    v_vert : `~astropy.units.Quantity` [speed]
        Speed away from the plane: a constant, or one value per ``radius`` node.
    radius : `~astropy.units.Quantity` [angle or length], 1-D, optional
        Nodes of a tabulated ``v_vert``.
    """

    key_prefix = "vertical_"
    #: The gas above and below the plane moves apart: the projector samples both sides.
    two_sided = True
    uses_height = True
    v_vert = _Amplitude("velocity", description="speed away from the plane (> 0: outflow)")

    def __init__(self, v_vert, radius=None):
        super().__init__(radius, v_vert=v_vert)

    @classmethod
    def velocities(cls, radius, phi, z, params):
        return {"v_z": amplitude_at(radius, params, cls, "v_vert") * torch.sign(z)}


class LaggingHalo(Flow):
    """Extra-planar gas that rotates more slowly the higher it is:
    :math:`v_\\phi = v_c(R) - (dv/dz)\\,|z|` (3D-Barolo's DVDZ; NGC 891's lag is about
    15 km/s/kpc, Oosterloo et al. 2007).

    Parameters
    ----------
    dv_dz : `~astropy.units.Quantity` [speed / angle or speed / length]
        The lag per height (>= 0): a constant, or one value per ``radius`` node.
    radius : `~astropy.units.Quantity` [angle or length], 1-D, optional
        Nodes of a tabulated ``dv_dz``.
    """

    key_prefix = "lag_"
    uses_height = True
    dv_dz = _Amplitude("velocity_gradient", nonnegative=True,
                       description="rotation lag per height above the plane")

    def __init__(self, dv_dz, radius=None):
        super().__init__(radius, dv_dz=dv_dz)

    @classmethod
    def velocities(cls, radius, phi, z, params):
        return {"v_phi": -amplitude_at(radius, params, cls, "dv_dz") * z.abs()}


class _HarmonicFlow(Flow):
    """The m-fold harmonic flow of Spekkens & Sellwood (2007)."""

    m = None
    neutral = True

    @classmethod
    def velocities(cls, radius, phi, z, params):
        t = amplitude_at(radius, params, cls, cls._names[0])
        r = amplitude_at(radius, params, cls, cls._names[1])
        angle = cls.m * (phi - params[cls.key("angle")].reshape(-1, *([1] * (phi.dim() - 1))))
        return {"v_phi": -t * torch.cos(angle), "v_R": -r * torch.sin(angle)}


class BisymmetricFlow(_HarmonicFlow):
    """The bisymmetric (m = 2) flow of a bar or an oval (Spekkens & Sellwood 2007, eq. 5).

    Parameters
    ----------
    v_2t, v_2r : `~astropy.units.Quantity` [speed]
        Tangential and radial amplitudes: constants, or one value per ``radius`` node.
    angle : `~astropy.units.Quantity` [angle]
        The bar's major axis in the plane of the disk, from the receding major axis
        towards the far side (S&S's :math:`\\phi_b`).
    radius : `~astropy.units.Quantity` [angle or length], 1-D, optional
        Nodes of tabulated amplitudes (S&S fit them ring by ring out to the bar's end).
    """

    key_prefix = "bar_"
    m = 2
    _names = ("v_2t", "v_2r")
    v_2t = _Amplitude("velocity", description="tangential amplitude of the m = 2 flow")
    v_2r = _Amplitude("velocity", description="radial amplitude of the m = 2 flow")
    angle = Parameter("angle", description="bar angle in the disk plane from the receding "
                                           "major axis")

    def __init__(self, v_2t, v_2r, angle, radius=None):
        super().__init__(radius, v_2t=v_2t, v_2r=v_2r, angle=angle)


class LopsidedFlow(_HarmonicFlow):
    """The lopsided (m = 1) flow: Spekkens & Sellwood's harmonic form with m = 1.

    Parameters
    ----------
    v_1t, v_1r : `~astropy.units.Quantity` [speed]
        Tangential and radial amplitudes: constants, or one value per ``radius`` node.
    angle : `~astropy.units.Quantity` [angle]
        The flow's axis in the plane of the disk, from the receding major axis towards
        the far side.
    radius : `~astropy.units.Quantity` [angle or length], 1-D, optional
        Nodes of tabulated amplitudes.
    """

    key_prefix = "lopsided_"
    m = 1
    _names = ("v_1t", "v_1r")
    v_1t = _Amplitude("velocity", description="tangential amplitude of the m = 1 flow")
    v_1r = _Amplitude("velocity", description="radial amplitude of the m = 1 flow")
    angle = Parameter("angle", description="axis of the m = 1 flow in the disk plane")

    def __init__(self, v_1t, v_1r, angle, radius=None):
        super().__init__(radius, v_1t=v_1t, v_1r=v_1r, angle=angle)


class DispersionProfile(Flow):
    """A velocity dispersion that varies with radius (it replaces the galaxy's
    ``dispersion``), as 3D-Barolo's VDISP per ring.

    Parameters
    ----------
    dispersion : `~astropy.units.Quantity` [speed], 1-D
        Gaussian sigma at each node (>= 0).
    radius : `~astropy.units.Quantity` [angle or length], 1-D
        Its nodes (linearly interpolated, constant beyond the ends).
    """

    key_prefix = "profile_"
    #: The line's width changes across the disk (the projector integrates each sample's own).
    sets_dispersion = True
    dispersion = _Amplitude("velocity", nonnegative=True,
                            description="velocity dispersion at each node")

    def __init__(self, dispersion, radius):
        if radius is None:
            raise ValueError("DispersionProfile: give the radius of the nodes")
        super().__init__(radius, dispersion=dispersion)

    @classmethod
    def velocities(cls, radius, phi, z, params):
        return {"sigma": amplitude_at(radius, params, cls, "dispersion")}


class AsymmetricDrift(Flow):
    r"""Pressure support: the gas rotates more slowly than the circular speed (asymmetric
    drift), by the radial Jeans equation of a thin disk (Binney & Tremaine 2008, eq. 4.228,
    without the tilt term; as used for gas by Iorio et al. 2017, MNRAS 466, 4159, eq. 11):

    .. math::

        v_\phi^2 = v_c^2 + \sigma^2\left[\frac{\partial\ln(\Sigma\sigma^2)}{\partial\ln R}
                   + 1 - \left(\frac{\sigma_\phi}{\sigma_R}\right)^2\right]

    with :math:`\Sigma` the galaxy's surface profile (all its terms), :math:`\sigma` its
    dispersion (a `DispersionProfile` where it has one), and :math:`v_\phi = 0` where the
    bracket would make it imaginary.  The galaxy's rotation law is then :math:`v_c`, the
    circular speed of the potential; what the gas shows is :math:`v_\phi`.

    Parameters
    ----------
    azimuthal_ratio : float
        :math:`\sigma_\phi / \sigma_R` (> 0): 1 for gas, whose dispersion is isotropic
        (default); about 0.7 for stars in a flat rotation curve (the epicyclic
        :math:`\kappa / 2\Omega`).

    Examples
    --------
    >>> from galcubecraft import AsymmetricDrift
    >>> AsymmetricDrift()
    <AsymmetricDrift(azimuthal_ratio=1.0)>
    """

    key_prefix = "drift_"
    #: The rotation is corrected (`rotation`), not added to.
    corrects_rotation = True
    radius = None
    azimuthal_ratio = Parameter("dimensionless", positive=True, default=1.0,
                                description="sigma_phi / sigma_R (1: isotropic gas)")

    def __init__(self, azimuthal_ratio=1.0):
        self.azimuthal_ratio = azimuthal_ratio

    #: The logarithmic derivative is a central difference over R exp(+-_STEP).
    _STEP = 1e-3

    @classmethod
    def rotation(cls, v_c, radius, params, density, dispersion):
        """:math:`v_\\phi` at ``radius`` from the circular speed ``v_c``; ``density`` and
        ``dispersion`` are callables of radius (the surface profile, any normalisation, and
        the dispersion)."""
        if density is None:
            raise ValueError("AsymmetricDrift needs the galaxy's surface profile")
        tiny = torch.finfo(v_c.dtype).tiny
        r = radius.clamp_min(1e-6)
        up, down = r * np.exp(cls._STEP), r * np.exp(-cls._STEP)

        def log_pressure(x):
            sigma = dispersion(x)
            return torch.log((density(x) * sigma ** 2).clamp_min(tiny))
        slope = (log_pressure(up) - log_pressure(down)) / (2 * cls._STEP)
        ratio = params[cls.key("azimuthal_ratio")].reshape(-1, *([1] * (v_c.dim() - 1)))
        sigma = dispersion(r)
        v2 = v_c ** 2 + sigma ** 2 * (slope + 1 - ratio ** 2)
        return torch.sign(v_c) * torch.sqrt(v2.clamp_min(1e-12))


class Warp(Component):
    """Tilted rings: orientation, thickness, centre and velocity that change with radius.

    The disk is a set of concentric rings, each with its own orientation (Rogstad et al.
    1974; KinMS's ``inc``/``posAng`` arrays, 3D-Barolo's INC, PA and Z0 per ring), linearly
    interpolated between the nodes and constant beyond the ends.  A table replaces the
    galaxy's own ``inclination``, ``position_angle`` or vertical profile's ``scale_height``
    (a flaring disk); what the warp does not give keeps the galaxy's value.  The flux is
    still exactly the galaxy's.

    Parameters
    ----------
    radius : `~astropy.units.Quantity` [angle or length], 1-D
        Strictly increasing radii of the nodes (>= 0), at least two.
    inclination : `~astropy.units.Quantity` [angle], 1-D, optional
        Inclination at each node, 0 to 90 deg.
    position_angle : `~astropy.units.Quantity` [angle], 1-D, optional
        Position angle of each ring's receding major axis at each node, east of north.
    scale_height : `~astropy.units.Quantity` [angle or length], 1-D, optional
        Scale height of the vertical profile at each node (>= 0): a flare.
    centre_east, centre_north : `~astropy.units.Quantity` [angle or length], 1-D, optional
        Each ring's centre, east and north of the galaxy's (3D-Barolo's XPOS, YPOS per
        ring, relative): a ring that drifts off centre.
    v_shift : `~astropy.units.Quantity` [speed], 1-D, optional
        Each ring's systemic velocity less the galaxy's, in the galaxy's frame (3D-Barolo's
        VSYS per ring, relative).

    Examples
    --------
    >>> import astropy.units as u
    >>> from galcubecraft import Warp
    >>> Warp([0, 30, 60] * u.arcsec, inclination=[60, 60, 75] * u.deg)
    <Warp(3 nodes, R <= 60.0 arcsec: inclination 60.0 -> 75.0 deg)>
    """

    #: Tables that a flat disk can hold at its own value (`galcubecraft.rings.merge`).
    NEUTRAL = ("radius", "inclination", "position_angle")
    key_prefix = "warp_"
    radius = Parameter("size", nonnegative=True, shape="1d",
                       description="radii of the warp's nodes, increasing")
    inclination = Parameter("angle", minimum=0, maximum=90, shape="1d", optional=True,
                            default=None, description="inclination at each node of the warp")
    position_angle = Parameter("angle", shape="1d", optional=True, default=None,
                               description="position angle at each node of the warp")
    scale_height = Parameter("size", nonnegative=True, shape="1d", optional=True, default=None,
                             description="scale height at each node of the warp (a flare)")
    centre_east = Parameter("size", shape="1d", optional=True, default=None,
                            description="east offset of each ring's centre from the galaxy's")
    centre_north = Parameter("size", shape="1d", optional=True, default=None,
                             description="north offset of each ring's centre from the galaxy's")
    v_shift = Parameter("velocity", shape="1d", optional=True, default=None,
                        description="each ring's systemic velocity less the galaxy's")

    def __init__(self, radius, inclination=None, position_angle=None, scale_height=None,
                 centre_east=None, centre_north=None, v_shift=None):
        self.radius = radius
        self.inclination = inclination
        self.position_angle = position_angle
        self.scale_height = scale_height
        self.centre_east = centre_east
        self.centre_north = centre_north
        self.v_shift = v_shift
        tables = {name: getattr(self, name) for name in self.param_names if name != "radius"}
        if all(v is None for v in tables.values()):
            raise ValueError(f"Warp: give at least one table of {sorted(tables)} "
                             "(an inclination, a position_angle or a scale_height table, ...)")
        _check_table(self, self.radius, tables, least=2)

    def __repr__(self):
        parts = [f"{k} {v[0].value} -> {v[-1]}" for k, v in self.parameters.items()
                 if v is not None and k != "radius"]
        return (f"<Warp({self.radius.size} nodes, R <= {self.radius[-1]}: "
                f"{', '.join(parts)})>")

    @classmethod
    def at(cls, name, radius, params, default=None):
        """The table ``name`` interpolated at ``radius`` (*arcsec*), or ``default`` (the
        galaxy's own value, or None) where the warp gives none."""
        key = cls.key(name)
        if key not in params:
            return default
        return F.interpolate_linear(radius, params["warp_radius"], params[key])
