"""Face-on surface-brightness profiles of the disk."""
import numpy as np
import torch

from .. import functional as F
from ..parameters import Parameter
from ..units import validate_line_flux, validate_size
from .base import Component

__all__ = ["SersicDisk", "ExponentialDisk"]


class SersicDisk(Component):
    r"""A Sérsic surface-brightness profile in the plane of the disk.

    .. math::

        \Sigma(R) = \Sigma_e \exp\left[-b_n\left(\left(\frac{R}{R_e}\right)^{1/n} - 1\right)\right]

    with :math:`b_n` exact, the root of :math:`P(2n, b_n) = 1/2`
    (``scipy.special.gammaincinv(2n, 0.5)``; GalCubeCraft 0.1.0 used the
    Ciotti & Bertin series).  The amplitude :math:`\Sigma_e` is not a parameter
    of the component: the `~galcubecraft.Galaxy` sets it from its total line
    flux, :math:`F = 2\pi n R_e^2 \Sigma_e e^{b_n}\Gamma(2n)/b_n^{2n}`.

    Parameters
    ----------
    r_eff : `~astropy.units.Quantity` [angle or length]
        Half-light radius, in the disk plane.  A length (e.g. kpc) needs the
        galaxy's distance or redshift.
    n : float
        Sérsic index, 0 < n <= 20 (1: exponential disk, 4: de Vaucouleurs).

    See Also
    --------
    astropy.modeling.functional_models.Sersic1D

    Examples
    --------
    >>> import astropy.units as u
    >>> from galcubecraft import SersicDisk
    >>> disk = SersicDisk(r_eff=8.4 * u.arcsec, n=1.0)
    >>> disk
    <SersicDisk(r_eff=8.4 arcsec, n=1.0)>
    >>> round(disk.b_n, 4)
    1.6783
    """

    r_eff = Parameter("size", positive=True,
                      description="half-light radius in the disk plane")
    n = Parameter("dimensionless", positive=True, maximum=20.0, default=1.0,
                  description="Sersic index (1: exponential, 4: de Vaucouleurs)",
                  aliases=("sersic_n",))

    def __init__(self, r_eff, n=1.0):
        self.r_eff = r_eff
        self.n = n

    @property
    def b_n(self):
        """The exact :math:`b_n` of this profile (float)."""
        return float(F.sersic_bn(self.n))

    @staticmethod
    def evaluate(radius, amplitude, r_eff, n):
        """Torch kernel: see `galcubecraft.functional.sersic`."""
        return F.sersic(radius, amplitude, r_eff, n)

    def surface_brightness(self, radius, flux):
        """Surface brightness at ``radius`` of a disk of total flux ``flux``.

        ``radius`` must have the same kind of unit as ``r_eff`` (angle or
        length); the result is ``flux`` per unit area of that kind.
        """
        flux = validate_line_flux("flux", flux)
        unit = self.r_eff.unit
        radius = np.asarray(radius.to_value(unit), dtype=float)
        r = torch.as_tensor(radius, dtype=torch.float64)
        re = torch.tensor(self.r_eff.value, dtype=torch.float64)
        n = torch.tensor(self.n, dtype=torch.float64)
        norm = F.sersic_total_flux(torch.tensor(1.0, dtype=torch.float64), re, n)
        sb = F.sersic(r, 1.0 / norm, re, n).numpy()
        return sb * flux / unit**2


class ExponentialDisk(SersicDisk):
    r"""An exponential disk, :math:`\Sigma \propto \exp(-R/h)`: a Sérsic disk with n = 1.

    Parameters
    ----------
    scale_length : `~astropy.units.Quantity` [angle or length]
        Exponential scale length :math:`h`; the half-light radius is
        :math:`R_e = b_1 h \approx 1.678\,h`.  (Or give ``r_eff`` instead.)

    Examples
    --------
    >>> import astropy.units as u
    >>> from galcubecraft import ExponentialDisk
    >>> ExponentialDisk(scale_length=5 * u.arcsec).r_eff  # doctest: +FLOAT_CMP
    <Quantity 8.39173459 arcsec>
    """

    def __init__(self, scale_length=None, *, r_eff=None, n=1.0):
        if (scale_length is None) == (r_eff is None):
            raise TypeError("give an ExponentialDisk its scale_length or its r_eff (one of them)")
        if n != 1.0:
            raise ValueError(f"an ExponentialDisk has n = 1, got n={n!r}; use SersicDisk")
        if scale_length is not None:
            r_eff = validate_size("scale_length", scale_length) * float(F.sersic_bn(1.0))
        super().__init__(r_eff=r_eff, n=1.0)

    @property
    def scale_length(self):
        return self.r_eff / self.b_n
