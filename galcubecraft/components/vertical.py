"""Vertical (perpendicular to the disk plane) emission profiles."""
import astropy.units as u

from .. import functional as F
from ..parameters import Parameter
from .base import Component

__all__ = ["ExponentialVertical"]


class ExponentialVertical(Component):
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

    def __init__(self, scale_height=0 * u.arcsec):
        self.scale_height = scale_height

    @staticmethod
    def evaluate(z, scale_height):
        """Torch kernel: see `galcubecraft.functional.exponential_vertical`."""
        return F.exponential_vertical(z, scale_height)
