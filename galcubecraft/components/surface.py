"""Face-on surface-brightness profiles of the disk.

A profile is one small class: declare its parameters, and give the projector
``density(radius, params)`` (the shape of the profile, any normalisation: the galaxy's
``flux`` sets it), ``radial_range(params)`` (where its light is) and
``radial_scale(params)`` (the smallest radial scale its samples must resolve), all in
arcsec on plain tensors.
"""
import numpy as np
import torch

from .. import functional as F
from ..parameters import Declared, Parameter
from ..units import validate_line_flux, validate_number, validate_size
from .base import Component, check_table_nodes, to_tensor

__all__ = ["Surface", "SersicDisk", "ExponentialDisk", "SersicBulge", "GaussianRing",
           "TabulatedSurface", "SurfaceSum"]

#: Fraction of a profile's light left beyond the radii where its samples stop.
_RANGE_LIGHT = 1e-6


def _detached(params, key):
    return params[key].detach().double().cpu()


class Surface(Component):
    r"""Base class of the face-on surface-brightness profiles :math:`\Sigma(R)`."""

    #: The projector's switch to its exact integral of Sersic disks.
    plain = False
    #: A galaxy without this profile may be rendered beside galaxies with it, holding a copy
    #: of theirs at no share of the flux (`galcubecraft.rings.merge`): its parameters are
    #: scalars, and a profile with no share takes no part in the sampling.
    neutral = False
    #: name -> class of every named profile (``surface = 'ring'``).
    laws = {}
    #: key prefix -> class of every profile that may be added to another in a `SurfaceSum`
    #: (those whose parameters have keys of their own: ``'ring_'``, ``'table_'``, ``'bulge_'``).
    addends = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("key_prefix"):
            Surface.addends[cls.key_prefix] = cls

    @classmethod
    def fraction_declaration(cls):
        """The `Parameter` of this profile's share of the flux in a `SurfaceSum`, under its
        key (``'bulge_flux_fraction'``)."""
        return Parameter("dimensionless", minimum=0.0, maximum=1.0,
                         name=cls.key("flux_fraction"),
                         description=f"{cls.__name__}'s share of the flux in a sum")

    @classmethod
    def density(cls, radius, params):
        r""":math:`\Sigma` at ``radius`` (*arcsec*), up to a constant factor (torch)."""
        raise NotImplementedError

    @classmethod
    def radial_range(cls, params):
        """``(r_min, r_max)`` (*arcsec*, float64 CPU tensors, one per galaxy): all but
        `_RANGE_LIGHT` of the light lies between them."""
        raise NotImplementedError

    @classmethod
    def radial_scale(cls, params):
        """The smallest radial scale of the profile (*arcsec*, one per galaxy): the
        projector's radial samples are at most a quarter of it apart."""
        raise NotImplementedError

    @classmethod
    def local_scale(cls, radius, params):
        """The profile's radial scale at ``radius`` (*arcsec*; ``radius`` a (batch, M) float64
        CPU tensor, ``params`` detached (batch, 1)): rings at ``radius`` are at most a quarter
        of it wide.  By default `radial_scale` everywhere."""
        return cls.radial_scale(params).reshape(-1, 1).expand_as(radius)

    @property
    def main(self):
        """The profile that sets the galaxy's scale: this one (a `SurfaceSum`'s first term)."""
        return self

    def surface_brightness(self, radius, flux):
        """Surface brightness at ``radius`` of a disk of total flux ``flux``.

        ``radius`` must have the same kind of unit as the profile's sizes (angle or
        length); the result is ``flux`` per unit area of that kind.  The normalisation is
        the profile's integral, by quadrature on a fine grid.
        """
        flux = validate_line_flux("flux", flux)
        unit = next(getattr(self, n).unit for n in self.size_names
                    if getattr(self, n) is not None)
        params = {self.key(n): torch.as_tensor(np.atleast_1d(
            getattr(self, n).to_value(unit) if n in self.size_names else getattr(self, n)),
            dtype=torch.float64)[None] for n in self.param_names}
        params = {k: (v[:, 0] if v.shape[-1] == 1 and k not in self._tables() else v)
                  for k, v in params.items()}
        lo, hi = self.radial_range(params)
        grid = torch.linspace(float(lo[0]), float(hi[0]), 200001, dtype=torch.float64)
        shaped = {k: (v[:, None] if v.dim() == 1 else v) for k, v in params.items()}
        norm = torch.trapezoid(2 * np.pi * grid * self.density(grid[None], shaped)[0], grid)
        r = torch.as_tensor(np.asarray(radius.to_value(unit), dtype=float))
        sb = (self.density(r.reshape(1, -1), shaped)[0] / norm).numpy().reshape(r.shape)
        return sb * flux / unit**2

    @classmethod
    def _tables(cls):
        return {cls.key(n) for n, p in cls.declarations.items() if p.shape == "1d"}


class SersicDisk(Surface):
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

    plain = True
    neutral = True
    law = "sersic"
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

    @classmethod
    def density(cls, radius, params):
        return F.sersic(radius, 1.0, params[cls.key("r_eff")], params[cls.key("n")])

    @classmethod
    def _r_eff_n(cls, params):
        return (_detached(params, cls.key("r_eff")).reshape(-1).numpy(),
                _detached(params, cls.key("n")).reshape(-1).numpy())

    @classmethod
    def radial_range(cls, params):
        r_eff, n = cls._r_eff_n(params)
        rmax = F.sersic_enclosing_radius(1 - _RANGE_LIGHT, r_eff, n)
        return torch.zeros(len(r_eff), dtype=torch.float64), torch.as_tensor(rmax)

    @classmethod
    def radial_scale(cls, params):
        """The radius holding 10% of the light (a cusp's scale for n > 1)."""
        r_eff, n = cls._r_eff_n(params)
        return torch.as_tensor(F.sersic_enclosing_radius(0.1, r_eff, n))

    @classmethod
    def local_scale(cls, radius, params):
        r"""`radial_scale` :math:`r_{10}` within it; beyond, for n > 1, as the profile's
        e-folding length :math:`|d\ln\Sigma/dR|^{-1} \propto R^{1 - 1/n}` grows (so that a
        cuspy profile's extended wings take rings as wide as their slope allows)."""
        r10 = cls.radial_scale(params).reshape(-1, 1)
        _, n = cls._r_eff_n(params)
        power = torch.as_tensor(1 - 1 / np.maximum(n, 1.0)).reshape(-1, 1)
        return r10 * (radius / r10).clamp_min(1.0) ** power

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


class SersicBulge(SersicDisk):
    r"""A Sérsic profile added to another in a `SurfaceSum`: a bulge (de Vaucouleurs by
    default, n = 4) beside a disk.

    The same law as `SersicDisk` (its parameters keyed ``bulge_r_eff``, ``bulge_n`` in flat
    dictionaries and files), for the second Sérsic term of a sum; its share of the flux is
    the sum's (the bulge-to-total ratio B/T).  Projected like the disk: flat, with the
    galaxy's inclination, vertical profile and rotation.

    Parameters
    ----------
    r_eff : `~astropy.units.Quantity` [angle or length]
        Half-light radius.
    n : float
        Sérsic index, 0 < n <= 20 (default 4).

    Examples
    --------
    >>> import astropy.units as u
    >>> from galcubecraft import SersicBulge
    >>> SersicBulge(r_eff=1.5 * u.arcsec)
    <SersicBulge(r_eff=1.5 arcsec, n=4.0)>
    """

    plain = False
    law = None
    key_prefix = "bulge_"
    r_eff = Parameter("size", positive=True, description="half-light radius of the bulge")
    n = Parameter("dimensionless", positive=True, maximum=20.0, default=4.0,
                  description="Sersic index of the bulge (4: de Vaucouleurs)")

    def __init__(self, r_eff, n=4.0):
        super().__init__(r_eff=r_eff, n=n)


class GaussianRing(Surface):
    r"""A ring: a Gaussian in radius, :math:`\Sigma(R) \propto \exp[-(R - R_0)^2 / 2 w^2]`.

    Molecular rings such as NGC 4324's, resonance rings of barred galaxies.  With
    :math:`R_0 = 0` it is a Gaussian disk.

    Parameters
    ----------
    radius : `~astropy.units.Quantity` [angle or length]
        :math:`R_0`, where the ring peaks (>= 0).
    width : `~astropy.units.Quantity` [angle or length]
        :math:`w`, its Gaussian sigma in radius (> 0; FWHM = 2.355 w).

    Examples
    --------
    >>> import astropy.units as u
    >>> from galcubecraft import GaussianRing
    >>> GaussianRing(radius=20 * u.arcsec, width=3 * u.arcsec)
    <GaussianRing(radius=20.0 arcsec, width=3.0 arcsec)>
    """

    key_prefix = "ring_"
    law = "ring"
    neutral = True
    radius = Parameter("size", nonnegative=True, description="radius where the ring peaks")
    width = Parameter("size", positive=True, description="Gaussian sigma of the ring in radius")

    def __init__(self, radius, width):
        self.radius = radius
        self.width = width

    #: The ring is sampled within this many widths of its radius (e^-24.5 beyond).
    REACH = 7.0

    @classmethod
    def density(cls, radius, params):
        return torch.exp(-0.5 * ((radius - params[cls.key("radius")])
                                 / params[cls.key("width")]) ** 2)

    @classmethod
    def radial_range(cls, params):
        r0 = _detached(params, cls.key("radius")).reshape(-1)
        w = _detached(params, cls.key("width")).reshape(-1)
        return (r0 - cls.REACH * w).clamp_min(0.0), r0 + cls.REACH * w

    @classmethod
    def radial_scale(cls, params):
        return _detached(params, cls.key("width")).reshape(-1)


class TabulatedSurface(Surface):
    """Any radial profile, given as a table: e.g. azimuthally averaged from a moment-0 map.

    Interpolated by monotone piecewise-cubic Hermite polynomials (PCHIP, Fritsch & Carlson
    1980, as `scipy.interpolate.PchipInterpolator`): smooth, and never negative nor
    overshooting between nodes.  Inside the first radius the profile is flat at its
    first value; beyond the last it is zero.  Only its shape matters: the galaxy's
    ``flux`` sets its normalisation.  Differentiable in the node values.

    Parameters
    ----------
    radius : `~astropy.units.Quantity` [angle or length], 1-D
        Strictly increasing radii (>= 0), at least two.
    surface_density : `~astropy.units.Quantity` or array, 1-D
        The profile at each radius (>= 0, not all zero), in any unit (e.g. Jy/beam km/s
        from a moment map, or Msun/pc2).

    Examples
    --------
    >>> import astropy.units as u
    >>> from galcubecraft import TabulatedSurface
    >>> TabulatedSurface([0, 10, 20, 30] * u.arcsec, [0.2, 1.0, 0.5, 0.0])
    <TabulatedSurface(4 nodes, R <= 30.0 arcsec)>
    """

    key_prefix = "table_"
    law = "tabulated"
    radius = Parameter("size", nonnegative=True, shape="1d",
                       description="radii of the surface-density table, increasing")
    surface_density = Parameter("dimensionless", shape="1d", nonnegative=True,
                                description="surface density at each radius (any unit)")

    def __init__(self, radius, surface_density):
        radius = type(self).radius.validate(radius, "radius")
        values = np.asarray(getattr(surface_density, "value", surface_density), dtype=float)
        check_table_nodes("TabulatedSurface", radius, {"surface_density": values}, least=2)
        if not np.all(np.isfinite(values)) or np.any(values < 0) or not np.any(values > 0):
            raise ValueError("surface_density must be finite, >= 0 and not all zero, got "
                             f"{values}")
        self.radius = radius
        self.surface_density = values

    def __repr__(self):
        return f"<TabulatedSurface({self.radius.size} nodes, R <= {self.radius[-1]})>"

    @classmethod
    def density(cls, radius, params):
        nodes, values = params[cls.key("radius")], params[cls.key("surface_density")]
        inside = torch.maximum(radius, nodes[..., :1].expand_as(radius[..., :1]))
        sigma = F.interpolate_pchip(inside, nodes, values)
        return torch.where(radius <= nodes[..., -1:], sigma, torch.zeros_like(sigma))

    @classmethod
    def radial_range(cls, params):
        nodes = _detached(params, cls.key("radius"))
        return torch.zeros(nodes.shape[0], dtype=torch.float64), nodes[:, -1]

    @classmethod
    def radial_scale(cls, params):
        nodes = _detached(params, cls.key("radius"))
        return torch.diff(nodes, dim=-1).amin(dim=-1)


class SurfaceSum(Declared):
    """A sum of surface-brightness profiles, each with its share of the flux: bulge + disk,
    disk + ring.

    Each term is normalised to its share of the galaxy's ``flux`` (its ``fraction``) and the
    terms add; the galaxy's vertical profile, rotation, flows and warp apply to all of them.
    Rendered by the ring quadrature (`galcubecraft.rings`), which keeps each term's share
    exactly.

    Parameters
    ----------
    terms : sequence of `Surface`
        Two or more profiles.  The first is any profile (its parameters keep their plain
        names: ``r_eff``, ``n``); each later one is a profile whose parameters have keys of
        their own (`Surface.addends`: `SersicBulge` ``bulge_``, `GaussianRing` ``ring_``,
        `TabulatedSurface` ``table_``), at most one of each.
    fractions : sequence of float
        Each term's share of the flux, in [0, 1], adding up to 1.  In flat dictionaries and
        files each later term's share is its ``<prefix>flux_fraction`` (the bulge's is B/T);
        the first term has the rest.

    Examples
    --------
    >>> import astropy.units as u
    >>> import galcubecraft as gcc
    >>> total = gcc.SurfaceSum([gcc.SersicDisk(r_eff=8 * u.arcsec, n=1),
    ...                         gcc.SersicBulge(r_eff=1 * u.arcsec, n=4)], fractions=[0.7, 0.3])
    >>> total.fractions
    (0.7, 0.3)
    >>> total.flat()["bulge_flux_fraction"]
    0.3
    """

    def __init__(self, terms, fractions):
        terms = tuple(terms)
        if len(terms) < 2:
            raise ValueError(f"SurfaceSum: terms must hold at least two profiles, got "
                             f"{len(terms)}")
        for term in terms:
            if not isinstance(term, Surface):
                raise TypeError(f"SurfaceSum: terms must be Surface profiles (SersicDisk, "
                                f"SersicBulge, GaussianRing, TabulatedSurface), got {term!r}")
        prefixes = [type(t).key_prefix for t in terms]
        for term in terms[1:]:
            if type(term).key_prefix not in Surface.addends:
                raise ValueError(
                    f"SurfaceSum: terms after the first need keys of their own "
                    f"({', '.join(f'{c.__name__} {p!r}' for p, c in Surface.addends.items())}); "
                    f"got a {type(term).__name__} (a second Sersic profile is a SersicBulge)")
        if len(set(prefixes)) != len(prefixes):
            raise ValueError(f"SurfaceSum: at most one profile of each kind, got "
                             f"{[type(t).__name__ for t in terms]}")
        try:
            fractions = list(fractions)
        except TypeError:
            raise TypeError(f"SurfaceSum: fractions must be a sequence of numbers, got "
                            f"{fractions!r}") from None
        fractions = np.array([validate_number("fractions", f, minimum=0.0, maximum=1.0)
                              for f in fractions])
        if fractions.shape != (len(terms),):
            raise ValueError(f"SurfaceSum: fractions must hold one share per term "
                             f"({len(terms)}), got {fractions.size}")
        if abs(fractions.sum() - 1.0) > 1e-6:
            raise ValueError(f"SurfaceSum: fractions must add up to 1, got {list(fractions)} "
                             f"(sum {fractions.sum():.6g})")
        self.terms = terms
        self.fractions = tuple(float(f) for f in fractions)

    def _init_arguments(self):
        return {"terms": self.terms, "fractions": np.array(self.fractions)}

    @property
    def main(self):
        """The first term: the profile that sets the galaxy's scale (its ``r_eff``)."""
        return self.terms[0]

    def flat(self):
        """Every term's parameters under their keys, and each later term's flux fraction."""
        out = {}
        for term, fraction in zip(self.terms, self.fractions):
            out.update(term.flat())
        for term, fraction in zip(self.terms[1:], self.fractions[1:]):
            out[type(term).key("flux_fraction")] = fraction
        return out

    @classmethod
    def from_flat(cls, main, values):
        """``main`` (a `Surface`) alone, or the sum of it and every profile of `Surface.addends`
        whose ``<prefix>flux_fraction`` is in ``values`` (checked flat values)."""
        added = [c for c in Surface.addends.values()
                 if c.key("flux_fraction") in values and c is not type(main)]
        if not added:
            return main
        shares = [float(values[c.key("flux_fraction")]) for c in added]
        if sum(shares) > 1 + 1e-9:
            raise ValueError(f"the flux fractions {[c.key('flux_fraction') for c in added]} "
                             f"add up to {sum(shares):.6g} > 1")
        return cls([main, *(c.from_flat(values) for c in added)],
                   fractions=[max(0.0, 1 - sum(shares)), *shares])

    def numbers(self, to_arcsec):
        """Every term's numbers (`Component.numbers`), and each later term's flux fraction
        (``bulge_flux_fraction``)."""
        out = {}
        for term in self.terms:
            out.update(term.numbers(to_arcsec))
        for term, fraction in zip(self.terms[1:], self.fractions[1:]):
            out[type(term).key("flux_fraction")] = float(fraction)
        return out

    def tensors(self, to_arcsec, device=None, dtype=torch.float32):
        """`numbers` as plain tensors."""
        return {k: to_tensor(v, device, dtype) for k, v in self.numbers(to_arcsec).items()}

    def surface_brightness(self, radius, flux):
        """The terms' surface brightnesses (each `Surface.surface_brightness` at its share
        of ``flux``), added."""
        flux = validate_line_flux("flux", flux)
        return sum(term.surface_brightness(radius, fraction * flux)
                   for term, fraction in zip(self.terms, self.fractions))

    def __repr__(self):
        return "<SurfaceSum(" + " + ".join(f"{f:g} {t!r}" for t, f in zip(self.terms,
                                                                          self.fractions)) + ")>"
