"""Conventions and constants as plain numbers: the velocity convention, c, FWHM / sigma.

The one home of each; this module depends on nothing, so that the projector (which sees no
units) and the units-aware layers share it.  `galcubecraft.units` re-exports it.

Radio velocity is linear in observed frequency, ``v = c (1 - f / f0)``; a line emitted at
redshift ``z`` is observed at ``f = f0 / (1 + z)``.  The functions below take floats, NumPy
arrays or torch tensors, velocities in km/s.
"""
import math

__all__ = ["C_KMS", "FWHM_PER_SIGMA", "velocity_compression", "redshift_of_radio_velocity"]

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
