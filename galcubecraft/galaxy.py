"""A galaxy (components + geometry + flux) and a scene of galaxies."""
import astropy.units as u
import torch
from astropy.cosmology import Cosmology

from .components.base import to_tensor
from .components.kinematics import RotationCurve
from .components.surface import SersicDisk
from .components.vertical import ExponentialVertical
from .units import (C_KMS, INTERNAL, validate_line_flux, validate_number, validate_quantity,
                    validate_velocity)

__all__ = ["Galaxy", "Scene", "default_cosmology", "radio_velocity"]

_KMS = u.km / u.s


def radio_velocity(redshift):
    """The radio velocity ``c z / (1 + z)`` of a line emitted at ``redshift`` (km/s).

    Radio velocity is linear in observed frequency, ``v = c (1 - f / f0)``, and
    ``f = f0 / (1 + z)``; it is the velocity the projector and VRAD axes use.
    """
    z = validate_number("redshift", redshift)
    if z <= -1:
        raise ValueError(f"redshift must be > -1, got {z}")
    return C_KMS * z / (1 + z) * _KMS


def default_cosmology():
    """The cosmology used to turn a redshift into a distance: `astropy.cosmology.Planck18`."""
    from astropy.cosmology import Planck18
    return Planck18


def _validate_distance(distance, redshift, cosmology):
    if distance is not None and redshift is not None:
        raise ValueError("give a distance or a redshift, not both")
    if distance is not None:
        distance = validate_quantity("distance", distance, u.Mpc, positive=True)
    if redshift is not None:
        redshift = validate_number("redshift", redshift, positive=True)
    if cosmology is not None and not isinstance(cosmology, Cosmology):
        raise TypeError(f"cosmology must be an astropy Cosmology, got {cosmology!r}")
    return distance, redshift


def _angular_diameter_distance(obj):
    """The angular-diameter distance of anything placed by ``distance`` or ``redshift``."""
    if obj.distance is not None:
        return obj.distance
    if obj.redshift is not None:
        cosmo = obj.cosmology or default_cosmology()
        return cosmo.angular_diameter_distance(obj.redshift).to(u.Mpc)
    return None


def _to_arcsec(obj, name, value):
    """A size (an angle, or a length at ``obj``'s distance) in arcsec."""
    if value.unit.is_equivalent(u.arcsec):
        return value.to_value(u.arcsec)
    distance = _angular_diameter_distance(obj)
    if distance is None:
        raise ValueError(f"{name} is a physical length ({value}); give the {type(obj).__name__} "
                         "(or its Scene) a distance or a redshift, or give it as an angle")
    return (value / distance).to_value(u.arcsec, equivalencies=u.dimensionless_angles())


class Galaxy:
    r"""A rotating disk galaxy: components, orientation, position and flux.

    The emission density is :math:`\Sigma(R)\,\rho(z)` in the disk frame,
    with :math:`\Sigma` the surface profile normalised so that the galaxy's
    total line flux is ``flux`` and :math:`\rho` the vertical profile.  The
    gas moves on circular orbits with the speed of the rotation curve and an
    isotropic Gaussian velocity dispersion; the line-of-sight velocity is

    .. math:: v = v_{\rm sys} + v_c(R)\,\sin i\,\cos\phi

    with :math:`\phi` the azimuth in the disk plane, measured from the receding
    half of the major axis.

    Parameters
    ----------
    surface : `~galcubecraft.SersicDisk`
        Face-on surface-brightness profile.
    kinematics : `~galcubecraft.RotationCurve`
        Rotation law.
    inclination : `~astropy.units.Quantity` [angle]
        0 deg (face-on) to 90 deg (edge-on).
    position_angle : `~astropy.units.Quantity` [angle]
        Angle of the *receding* half of the major axis, measured from north
        through east (the radio convention, as `radio_beam.Beam.pa`).
    flux : `~astropy.units.Quantity` [spectral flux density x speed]
        Total line flux, e.g. in Jy km/s (>= 0).
    vertical : `~galcubecraft.ExponentialVertical`, optional
        Vertical profile; razor-thin by default.
    dispersion : `~astropy.units.Quantity` [speed]
        Line-of-sight velocity dispersion (Gaussian sigma, not FWHM), >= 0;
        default 10 km/s.
    v_sys : `~astropy.units.Quantity` [speed], optional
        Systemic velocity in the radio convention, ``c (1 - f / f0)``, with ``f0``
        the grid's rest frequency.  Default: the radio velocity of ``redshift``,
        ``c z / (1 + z)``, when a redshift is given, else 0 km/s.  The rotation and
        dispersion are physical velocities in the galaxy's frame; in radio
        velocity they appear compressed by ``1 - v_sys / c = 1 / (1 + z)``.
    offset : `~astropy.units.Quantity` [angle or length], shape (2,)
        ``(east, north)`` offset of the centre from the grid's field centre, in
        the grid's tangent plane (default ``(0, 0) arcsec``).
    distance : `~astropy.units.Quantity` [length], optional
        Angular-diameter distance, needed for sizes given as lengths.
    redshift : float, optional
        Redshift; the distance is then the angular-diameter distance of
        ``cosmology`` (default `~galcubecraft.default_cosmology`, Planck18).
    cosmology : `~astropy.cosmology.Cosmology`, optional
        Cosmology for ``redshift``.

    Examples
    --------
    >>> import astropy.units as u
    >>> import galcubecraft as gcc
    >>> galaxy = gcc.Galaxy(
    ...     surface=gcc.SersicDisk(r_eff=5 * u.kpc, n=1),
    ...     kinematics=gcc.ArctanRotationCurve(v_max=200 * u.km / u.s, r_turn=1 * u.kpc),
    ...     inclination=60 * u.deg, position_angle=30 * u.deg,
    ...     flux=30 * u.Jy * u.km / u.s, distance=20 * u.Mpc)
    >>> round(float(galaxy.to_arcsec("r_eff", galaxy.surface.r_eff)), 3)
    51.566
    """

    def __init__(self, *, surface, kinematics, inclination, position_angle, flux,
                 vertical=None, dispersion=10 * _KMS, v_sys=None, offset=None,
                 distance=None, redshift=None, cosmology=None):
        if not isinstance(surface, SersicDisk):
            raise TypeError(f"surface must be a SersicDisk, got {surface!r}")
        if not isinstance(kinematics, RotationCurve):
            raise TypeError(f"kinematics must be a RotationCurve, got {kinematics!r}")
        if vertical is None:
            vertical = ExponentialVertical(0 * u.arcsec)
        if not isinstance(vertical, ExponentialVertical):
            raise TypeError(f"vertical must be an ExponentialVertical, got {vertical!r}")
        self.surface, self.kinematics, self.vertical = surface, kinematics, vertical
        self.inclination = validate_quantity("inclination", inclination, u.deg,
                                             minimum=0 * u.deg, maximum=90 * u.deg)
        self.position_angle = validate_quantity("position_angle", position_angle, u.deg)
        self.flux = validate_line_flux("flux", flux, nonnegative=True)
        self.dispersion = validate_velocity("dispersion", dispersion, nonnegative=True)
        self._v_sys_given = v_sys is not None
        self.v_sys = validate_velocity("v_sys", v_sys) if v_sys is not None else 0 * _KMS
        if offset is None:
            offset = [0.0, 0.0] * u.arcsec
        self.offset = validate_quantity("offset", offset, (u.arcsec, u.kpc), shape=(2,))
        self.distance, self.redshift = _validate_distance(distance, redshift, cosmology)
        self.cosmology = cosmology
        self._follow_redshift()

    def _follow_redshift(self):
        if not self._v_sys_given and self.redshift is not None:
            self.v_sys = radio_velocity(self.redshift)

    @property
    def components(self):
        return {"surface": self.surface, "vertical": self.vertical,
                "kinematics": self.kinematics}

    @property
    def angular_diameter_distance(self):
        """The distance that converts lengths into angles (None without distance or redshift)."""
        return _angular_diameter_distance(self)

    def to_arcsec(self, name, value):
        """Convert the size ``name`` (an angle, or a length and the distance) to arcsec."""
        return _to_arcsec(self, name, value)

    def tensors(self, device=None, dtype=torch.float32):
        """All parameters as plain tensors in internal units, the projector's input.

        Keys: ``x0``, ``y0`` (east and north offset, arcsec), ``inclination``,
        ``position_angle`` (rad), ``flux`` (Jy km/s), ``dispersion``, ``v_sys``
        (km/s), and each component's parameters (sizes in arcsec).
        """
        out = {
            "x0": to_tensor(self.to_arcsec("offset", self.offset[0]), device, dtype),
            "y0": to_tensor(self.to_arcsec("offset", self.offset[1]), device, dtype),
            "inclination": to_tensor(self.inclination.to_value(u.rad), device, dtype),
            "position_angle": to_tensor(self.position_angle.to_value(u.rad), device, dtype),
            "flux": to_tensor(self.flux.to_value(INTERNAL["line_flux"]), device, dtype),
            "dispersion": to_tensor(self.dispersion.to_value(_KMS), device, dtype),
            "v_sys": to_tensor(self.v_sys.to_value(_KMS), device, dtype),
        }
        for component in self.components.values():
            out.update(component.tensors(self.to_arcsec, device, dtype))
        return out

    def with_distance(self, distance=None, redshift=None, cosmology=None):
        """A copy placed at another distance (or redshift)."""
        new = object.__new__(Galaxy)
        new.__dict__.update(self.__dict__)
        new.distance, new.redshift = _validate_distance(distance, redshift, cosmology)
        new.cosmology = cosmology
        new._follow_redshift()
        return new

    def __repr__(self):
        where = ""
        if self.distance is not None:
            where = f", distance={self.distance}"
        elif self.redshift is not None:
            where = f", redshift={self.redshift}"
        return (f"<Galaxy surface={self.surface!r} vertical={self.vertical!r} "
                f"kinematics={self.kinematics!r} inclination={self.inclination} "
                f"position_angle={self.position_angle} flux={self.flux} "
                f"dispersion={self.dispersion} v_sys={self.v_sys} offset={self.offset}{where}>")


class Scene:
    """Several galaxies rendered into one cube, optionally sharing a distance.

    Galaxies without a distance or redshift of their own take the scene's.

    Parameters
    ----------
    galaxies : sequence of `~galcubecraft.Galaxy`
    distance : `~astropy.units.Quantity` [length], optional
    redshift : float, optional
    cosmology : `~astropy.cosmology.Cosmology`, optional
    """

    def __init__(self, galaxies, *, distance=None, redshift=None, cosmology=None):
        if isinstance(galaxies, Galaxy):
            galaxies = [galaxies]
        galaxies = list(galaxies)
        if not galaxies:
            raise ValueError("a Scene needs at least one galaxy, got none")
        from .diffuse import Stream
        for g in galaxies:
            if not isinstance(g, (Galaxy, Stream)):
                raise TypeError(f"Scene holds Galaxy and Stream objects, got {g!r}")
        self.distance, self.redshift = _validate_distance(distance, redshift, cosmology)
        self.cosmology = cosmology
        placed = []
        for g in galaxies:
            placed_here = distance is not None or redshift is not None
            if g.distance is None and g.redshift is None and placed_here:
                g = g.with_distance(distance, redshift, cosmology)
            placed.append(g)
        self.galaxies = placed

    def __iter__(self):
        return iter(self.galaxies)

    def __len__(self):
        return len(self.galaxies)

    def __repr__(self):
        return f"<Scene of {len(self)} galaxies>"
