"""Conventions and constants as plain numbers: the velocity convention, c, FWHM / sigma.

The one home of each; this module depends on nothing, so that the projector (which sees no
units) and the units-aware layers share it.  `galcubecraft.units` re-exports it.

Radio velocity is linear in observed frequency, ``v = c (1 - f / f0)``; a line emitted at
redshift ``z`` is observed at ``f = f0 / (1 + z)``.  The functions below take floats, NumPy
arrays or torch tensors, velocities in km/s.
"""
import math

__all__ = ["C_KMS", "FWHM_PER_SIGMA", "velocity_compression", "redshift_of_radio_velocity",
           "observed_velocity", "internal_velocity"]

#: Speed of light in km/s (exact by the SI definition), the unit of velocities inside the package.
C_KMS = 299792.458
#: FWHM of a Gaussian in units of its standard deviation, sqrt(8 ln 2).
FWHM_PER_SIGMA = math.sqrt(8 * math.log(2))


def velocity_compression(v_sys):
    """``f_sys / f0 = 1 - v_sys / c = 1 / (1 + z)``: how velocities in a galaxy's frame shrink.

    A galaxy at radio velocity ``v_sys`` has its internal velocities (rotation, dispersion)
    compressed by this factor on a radio-velocity (or frequency) axis.
    """
    return 1 - v_sys / C_KMS


def redshift_of_radio_velocity(v):
    """The redshift ``z`` whose line lands at radio velocity ``v``: ``1 / (1 - v / c) - 1``."""
    return 1 / velocity_compression(v) - 1


def observed_velocity(v_sys, v):
    """The radio velocity at which gas moving at ``v`` along the line of sight in the rest
    frame of a galaxy at radio velocity ``v_sys`` is seen (km/s).

    Redshifts compose, ``1 + z = (1 + z_sys)(1 + z_v)``, with the relativistic Doppler
    shift ``1 + z_v = sqrt((1 + b) / (1 - b))``, ``b = v / c``; in radio velocity this is
    ``v_sys + (1 - v_sys / c) c (1 - sqrt((1 - b) / (1 + b)))``: to first order in ``b``
    the internal velocity compressed by `velocity_compression`, to second order also moved
    by ``-v^2 / 2c`` (0.15 km/s at 300 km/s).  Written without cancellation, so float32
    keeps it.
    """
    b = v / C_KMS
    root = ((1 - b) / (1 + b)) ** 0.5
    return v_sys + velocity_compression(v_sys) * C_KMS * (2 * b / (1 + b)) / (1 + root)


def internal_velocity(v_sys, v_obs, origin=0.0):
    """The inverse of `observed_velocity`: the line-of-sight velocity in the galaxy's rest
    frame (km/s) that a galaxy at radio velocity ``v_sys`` shows at radio velocity
    ``v_obs``.  Both may be given relative to a radio velocity ``origin`` (what keeps
    float32 precise at high redshift: the projector's band centre)."""
    a = (v_obs - v_sys) / (velocity_compression(v_sys + origin) * C_KMS)
    return C_KMS * a * (2 - a) / (2 - 2 * a + a * a)
