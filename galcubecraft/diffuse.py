"""Diffuse structures beyond a single disk: halos, bridges and tidal tails.

GalCubeCraft 1.2 added faint emission around and between its galaxies.  Here each
structure is a units-aware object that goes into a scene beside the galaxies and is
rendered by the same projector (same grid, beam, spectral response; exact flux;
differentiable):

* a **halo** (`halo`) is extra-planar gas: a thick, extended disk around its host that
  rotates more slowly (a *lag*) and with a larger dispersion, the way the HI halos
  of nearby spirals are modelled (e.g. Oosterloo, Fraternali & Sancisi 2007, AJ 134,
  1019).  It is a `~galcubecraft.Galaxy`, so it is rendered exactly like one;
* a **stream** (`Stream`) is gas along a curve on the sky: a quadratic Bézier
  curve with a Gaussian cross-section, its line-of-sight velocity changing
  linearly along the curve, its own dispersion, and its flux spread along its
  length (optionally tapered).  `bridge` joins a galaxy to a satellite (the
  velocity runs from one systemic velocity to the other); `tail` trails from a
  satellite away from its host, curving, fading, and continuing the bridge's
  velocity gradient.

A stream is rendered as a chain of circular Gaussian clouds, at most half a width
(and half a pixel) apart, each integrated exactly over the pixels (erf differences
along the grid's pixel axes) and over the channels (erf differences of its line),
so its flux is exact and smooth in every parameter.
"""
import math

import astropy.units as u
import numpy as np
import torch

from .components import ExponentialVertical, SersicDisk
from .components.base import to_tensor
from .distance import Placed
from .galaxy import Galaxy
from .parameters import Parameter
from .units import FWHM_PER_SIGMA, validate_number, validate_quantity, validate_velocity

__all__ = ["Stream", "halo", "bridge", "tail"]

_KMS = u.km / u.s


class Stream(Placed):
    """Gas along a curve on the sky, with a velocity gradient along it.

    Parameters
    ----------
    start, end : `~astropy.units.Quantity` [angle or length], shape (2,)
        ``(east, north)`` offsets of the ends from the grid's field centre.
    control : `~astropy.units.Quantity` [angle or length], shape (2,), optional
        Control point of the quadratic Bézier curve (default: the midpoint, a
        straight stream).
    width : `~astropy.units.Quantity` [angle or length]
        FWHM of the Gaussian cross-section.
    flux : `~astropy.units.Quantity` [flux density x speed]
        Total line flux, e.g. Jy km/s (>= 0).
    v_start, v_end : `~astropy.units.Quantity` [speed]
        Radio velocity of the gas at each end (linear along the curve's
        parameter in between).
    dispersion : `~astropy.units.Quantity` [speed]
        Gas velocity dispersion (default 15 km/s).
    taper : float
        Brightness gradient along the stream in [-1, 1]: the flux per unit
        length goes from ``1 + taper`` to ``1 - taper`` times its mean (default 0).
    distance, redshift, cosmology
        For positions and widths given as lengths (as `~galcubecraft.Galaxy`).
    """

    start = Parameter("size", shape=(2,), description="(east, north) offset of the start")
    end = Parameter("size", shape=(2,), description="(east, north) offset of the end")
    control = Parameter("size", shape=(2,), optional=True, default=None,
                        description="control point of the Bezier curve (default: midpoint)")
    width = Parameter("size", positive=True, description="FWHM of the cross-section")
    flux = Parameter("line_flux", nonnegative=True, description="total line flux")
    v_start = Parameter("velocity", description="radio velocity at the start")
    v_end = Parameter("velocity", description="radio velocity at the end")
    dispersion = Parameter("velocity", nonnegative=True, default=15 * _KMS,
                           description="velocity dispersion (Gaussian sigma)")
    taper = Parameter("dimensionless", minimum=-1, maximum=1, default=0.0,
                      description="brightness gradient along the stream")

    def __init__(self, *, start, end, width, flux, v_start, v_end, control=None,
                 dispersion=15 * _KMS, taper=0.0, distance=None, redshift=None,
                 cosmology=None):
        self.start = start
        self.end = end
        self.control = control
        self.width = width
        self.flux = flux
        self.v_start = v_start
        self.v_end = v_end
        self.dispersion = dispersion
        self.taper = taper
        self._place(distance, redshift, cosmology)

    @property
    def points(self):
        """The three Bézier control points ``(start, control, end)`` in arcsec, shape (3, 2)."""
        start = [self.to_arcsec("start", c) for c in self.start]
        end = [self.to_arcsec("end", c) for c in self.end]
        if self.control is None:
            control = [(a + b) / 2 for a, b in zip(start, end)]
        else:
            control = [self.to_arcsec("control", c) for c in self.control]
        return np.array([start, control, end])

    def tensors(self, device=None, dtype=torch.float32):
        """Parameters as plain tensors in internal units (the projector's input)."""
        return {
            "points": to_tensor(self.points, device, dtype),
            "sigma": to_tensor(self.to_arcsec("width", self.width) / FWHM_PER_SIGMA,
                               device, dtype),
            **{name: to_tensor(self.declarations[name].to_internal(getattr(self, name)),
                               device, dtype)
               for name in ("flux", "dispersion", "taper")},
            # radio velocities keep float64 (the projector subtracts the band's centre)
            **{name: to_tensor(self.declarations[name].to_internal(getattr(self, name)),
                               device, torch.float64)
               for name in ("v_start", "v_end")},
        }

    def __repr__(self):
        return (f"<Stream start={self.start} end={self.end} control={self.control} "
                f"width={self.width} flux={self.flux} v={self.v_start}..{self.v_end} "
                f"dispersion={self.dispersion} taper={self.taper}>")


def _sizes_in_arcsec(galaxy, value, name):
    return galaxy.to_arcsec(name, value) * u.arcsec


def _scaled_kinematics(kinematics, factor):
    """The same rotation law with all its speeds multiplied by ``factor``."""
    return kinematics.replace(**{
        name: value * factor for name, value in kinematics.parameters.items()
        if value is not None and kinematics.declarations[name].kind == "velocity"})


def halo(host, *, flux, scale=3.0, thickness=1.0, lag=0.5, dispersion=30 * _KMS):
    """A faint, thick, lagging gas halo around ``host`` (a `~galcubecraft.Galaxy`).

    Parameters
    ----------
    host : `~galcubecraft.Galaxy`
    flux : `~astropy.units.Quantity` [flux density x speed]
        The halo's total line flux.
    scale : float
        Its half-light radius over the host's (default 3); an exponential disk.
    thickness : float
        Its exponential scale height over the host's half-light radius (default 1).
    lag : float
        Fractional lag of its rotation behind the host's, in [0, 1] (default 0.5:
        half the host's rotation speed at every radius).
    dispersion : `~astropy.units.Quantity` [speed]
        Its velocity dispersion (default 30 km/s).

    Returns
    -------
    `~galcubecraft.Galaxy`
        Centred on the host, with the host's inclination, position angle,
        systemic velocity and distance.
    """
    if not isinstance(host, Galaxy):
        raise TypeError(f"host must be a Galaxy, got {host!r}")
    scale = validate_number("scale", scale, positive=True)
    thickness = validate_number("thickness", thickness, positive=True)
    lag = validate_number("lag", lag, minimum=0, maximum=1)
    r_eff = host.surface.main.r_eff
    return Galaxy(surface=SersicDisk(r_eff=scale * r_eff, n=1.0),
                  vertical=ExponentialVertical(thickness * r_eff),
                  kinematics=_scaled_kinematics(host.kinematics, 1 - lag),
                  inclination=host.inclination, position_angle=host.position_angle,
                  flux=flux, dispersion=dispersion, v_sys=host.v_sys, offset=host.offset,
                  distance=host.distance, redshift=host.redshift, cosmology=host.cosmology)


def _centre(galaxy):
    return u.Quantity([galaxy.to_arcsec("offset", c) for c in galaxy.offset], u.arcsec)


def bridge(host, satellite, *, flux, width=None, curvature=0.0, dispersion=20 * _KMS):
    """A gas bridge from ``host`` to ``satellite`` (both `~galcubecraft.Galaxy`).

    Runs from the host's centre to the satellite's, its velocity from the host's
    systemic velocity to the satellite's.  ``width`` (FWHM) defaults to the
    satellite's half-light radius; ``curvature`` bends it sideways by that
    fraction of its length (the control point's offset, to the left looking from
    host to satellite).
    """
    for name, g in (("host", host), ("satellite", satellite)):
        if not isinstance(g, Galaxy):
            raise TypeError(f"{name} must be a Galaxy, got {g!r}")
    curvature = validate_number("curvature", curvature)
    a, b = _centre(host), _centre(satellite)
    width = _sizes_in_arcsec(satellite, satellite.surface.main.r_eff if width is None else
                             validate_quantity("width", width, (u.arcsec, u.kpc)), "width")
    d = b - a
    left = u.Quantity([-d[1], d[0]])
    control = (a + b) / 2 + curvature * left
    return Stream(start=a, end=b, control=control, width=width, flux=flux,
                  v_start=host.v_sys, v_end=satellite.v_sys, dispersion=dispersion)


def tail(satellite, *, host, length, flux, curvature=0.3, width=None, dispersion=15 * _KMS,
         velocity_extent=None, taper=1.0):
    """A tidal tail trailing from ``satellite`` away from ``host``.

    It starts at the satellite's centre and points away from the host, ``length``
    long (an angle, or a length with the satellite's distance), bent sideways by
    ``curvature`` of its length; it fades along its length (``taper``, default 1:
    from twice the mean brightness to nothing).  Its velocity runs from the
    satellite's systemic velocity by ``velocity_extent`` (default: continuing the
    host-to-satellite velocity gradient over the tail's length).  ``width`` (FWHM)
    defaults to half the satellite's half-light radius.
    """
    for name, g in (("host", host), ("satellite", satellite)):
        if not isinstance(g, Galaxy):
            raise TypeError(f"{name} must be a Galaxy, got {g!r}")
    length = _sizes_in_arcsec(satellite, validate_quantity(
        "length", length, (u.arcsec, u.kpc), positive=True), "length")
    curvature = validate_number("curvature", curvature)
    a, s = _centre(host), _centre(satellite)
    d = s - a
    separation = math.hypot(*d.to_value(u.arcsec))
    if separation == 0:
        raise ValueError("the satellite sits on its host: a tail has no direction")
    direction = d / separation
    end = s + direction * length.to_value(u.arcsec)
    left = u.Quantity([-direction[1], direction[0]])
    control = (s + end) / 2 + curvature * length.to_value(u.arcsec) * left
    if velocity_extent is None:
        velocity_extent = (satellite.v_sys - host.v_sys) * length.to_value(u.arcsec) / separation
    velocity_extent = validate_velocity("velocity_extent", velocity_extent)
    width = _sizes_in_arcsec(satellite, 0.5 * satellite.surface.main.r_eff if width is None else
                             validate_quantity("width", width, (u.arcsec, u.kpc)), "width")
    return Stream(start=s, end=end, control=control, width=width, flux=flux,
                  v_start=satellite.v_sys, v_end=satellite.v_sys + velocity_extent,
                  dispersion=dispersion, taper=taper)
