"""Vertical (perpendicular to the disk plane) emission profiles.

Each profile is normalised to unit integral over height, so that a galaxy's face-on
surface brightness is its surface profile.  Besides its density, a profile gives the
projector the heights at which to sample it: `VerticalProfile.height_bins` cuts its
upper half into bins and returns each bin's light, mean height and spread, so that the
samples keep the light and its mean distance from the plane exactly.
"""
import functools
import math

import astropy.units as u
import numpy as np

from .. import functional as F
from ..parameters import Parameter
from .base import Component

__all__ = ["VerticalProfile", "ExponentialVertical", "Sech2Vertical", "GaussianVertical"]


class VerticalProfile(Component):
    """Base class of the vertical profiles :math:`\\rho(z) = f(z / h) / h`, all with a
    ``scale_height`` :math:`h` (zero: a razor-thin disk)."""

    scale_height = Parameter("size", nonnegative=True, default=0 * u.arcsec,
                             description="scale height of the disk")

    def __init__(self, scale_height=0 * u.arcsec):
        self.scale_height = scale_height

    #: The projector's switch to the exact vertical integral of a plain exponential disk.
    plain = False
    #: name -> class of every named profile (``vertical = 'sech2'``).
    laws = {}

    @classmethod
    def half_pdf(cls, t):
        """The density of ``|z| / h`` at ``t >= 0`` (numpy)."""
        raise NotImplementedError

    @classmethod
    def half_integrals(cls, t):
        """The light within ``|z| < t h`` and its first and second moments in ``|z| / h``:
        ``int_0^t t'^k p(t') dt'`` for k = 0, 1, 2 (numpy, three arrays like ``t``; ``t`` may
        be infinite).  From a table of the integrals made once per profile (Simpson's rule
        on 2^17 intervals out to t = 64, where every profile here holds all its light)."""
        table = _integral_table(cls)
        t = np.minimum(np.asarray(t, dtype=float), table[0][-1])
        return tuple(np.interp(t, table[0], column) for column in table[1:])

    @classmethod
    def height_bins(cls, step, n_side):
        """``n_side`` bins of height above the plane, ``step`` (in units of ``h``) wide but
        the last, which reaches to infinity: each bin's share of the upper half's light, its
        light-weighted mean height and its variance about it (numpy arrays)."""
        edges = np.append(np.arange(n_side) * step, np.inf)
        mass, first, second = (np.diff(x) for x in cls.half_integrals(edges))
        mean = first / np.maximum(mass, 1e-300)
        variance = np.maximum(second / np.maximum(mass, 1e-300) - mean**2, 0.0)
        return mass, mean, variance

    @classmethod
    def gauss_nodes(cls, n):
        """The ``n``-point Gaussian quadrature of the upper half's light: heights (in units
        of ``h``) and weights (adding up to 1) that give ``int t^k p(t) dt`` exactly for
        k < 2n (Laguerre's nodes for the exponential).  Seen through a beam wider than the
        disk's projected thickness, a few of them are the profile to high order."""
        return _gauss_nodes(cls, int(n))


@functools.lru_cache(maxsize=None)
def _gauss_nodes(cls, n):
    # the discretised Stieltjes procedure on the profile's own fine grid (Gautschi 2004),
    # then the Golub-Welsch eigenproblem of the Jacobi matrix
    t = _integral_table(cls)[0]
    w = np.full_like(t, t[1] - t[0]) * cls.half_pdf(t)          # the trapezoid rule
    w[0] *= 0.5
    w[-1] *= 0.5
    w /= w.sum()
    alpha, beta = np.zeros(n), np.zeros(n)
    q_prev, q = np.zeros_like(t), np.ones_like(t)
    for k in range(n):
        alpha[k] = np.sum(w * t * q * q)
        nxt = (t - alpha[k]) * q - (np.sqrt(beta[k]) * q_prev if k else 0.0)
        norm = np.sqrt(np.sum(w * nxt * nxt))
        if k + 1 < n:
            beta[k + 1] = norm**2
        q_prev, q = q, nxt / norm
    jacobi = np.diag(alpha) + np.diag(np.sqrt(beta[1:]), 1) + np.diag(np.sqrt(beta[1:]), -1)
    nodes, vectors = np.linalg.eigh(jacobi)
    return tuple(nodes.tolist()), tuple((vectors[0] ** 2).tolist())


@functools.lru_cache(maxsize=None)
def _integral_table(cls):
    t = np.linspace(0.0, 64.0, 2**17 + 1)
    pdf = cls.half_pdf(t)
    h = t[1] - t[0]
    out = [t]
    for k in range(3):
        f = pdf * t**k
        # cumulative Simpson's rule over pairs of intervals; the odd nodes by the
        # three-point rule over the first interval of each pair
        pairs = (f[:-2:2] + 4 * f[1:-1:2] + f[2::2]) * h / 3
        even = np.concatenate([[0.0], np.cumsum(pairs)])
        odd = even[:-1] + (5 * f[:-2:2] + 8 * f[1:-1:2] - f[2::2]) * h / 12
        cum = np.empty_like(t)
        cum[::2], cum[1::2] = even, odd
        out.append(cum)
    return tuple(out)


class ExponentialVertical(VerticalProfile):
    r"""Exponential vertical profile, normalised to unit integral.

    .. math::

        \rho(z) = \frac{1}{2 h_z}\exp\left(-\frac{|z|}{h_z}\right)

    so that the emission density of a galaxy is
    :math:`\Sigma(R)\,\rho(z)` and its face-on surface brightness is
    :math:`\Sigma(R)`.

    Parameters
    ----------
    scale_height : `~astropy.units.Quantity` [angle or length]
        :math:`h_z`, >= 0; zero makes a razor-thin disk.

    Examples
    --------
    >>> import astropy.units as u
    >>> from galcubecraft import ExponentialVertical
    >>> ExponentialVertical(scale_height=0.5 * u.arcsec)
    <ExponentialVertical(scale_height=0.5 arcsec)>
    """

    scale_height = Parameter("size", nonnegative=True, default=0 * u.arcsec,
                             description="exponential scale height of the disk")

    @staticmethod
    def evaluate(z, scale_height):
        """Torch kernel: see `galcubecraft.functional.exponential_vertical`."""
        return F.exponential_vertical(z, scale_height)

    plain = True
    law = "exponential"

    @classmethod
    def half_pdf(cls, t):
        return np.exp(-t)


class Sech2Vertical(VerticalProfile):
    r"""The isothermal sheet (Spitzer 1942; van der Kruit & Searle 1981):
    :math:`\rho(z) = \mathrm{sech}^2(z / z_0) / 2 z_0`.

    Parameters
    ----------
    scale_height : `~astropy.units.Quantity` [angle or length]
        :math:`z_0`, >= 0 (far from the plane the profile falls as
        :math:`e^{-2|z|/z_0}`: an exponential of scale :math:`z_0 / 2`).
    """

    law = "sech2"
    scale_height = Parameter("size", nonnegative=True, default=0 * u.arcsec,
                             description="z0 of the sech^2 vertical profile")

    @classmethod
    def half_pdf(cls, t):
        return 1.0 / np.cosh(np.minimum(t, 350.0)) ** 2


class GaussianVertical(VerticalProfile):
    r"""A Gaussian vertical profile, :math:`\rho(z) = e^{-z^2 / 2 h^2} / \sqrt{2\pi} h`.

    Parameters
    ----------
    scale_height : `~astropy.units.Quantity` [angle or length]
        :math:`h`, the Gaussian sigma in height, >= 0.
    """

    law = "gaussian"
    scale_height = Parameter("size", nonnegative=True, default=0 * u.arcsec,
                             description="Gaussian sigma of the vertical profile")

    @classmethod
    def half_pdf(cls, t):
        return math.sqrt(2.0 / math.pi) * np.exp(-0.5 * t * t)
