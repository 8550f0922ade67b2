"""Where a model sits: its distance or redshift, and the conversion of its sizes to angles.

`Placed` is the base of everything that goes into a scene (`~galcubecraft.Galaxy`,
`~galcubecraft.diffuse.Stream`): sizes may be angles or, with a distance or a
redshift, physical lengths, and `Placed.to_arcsec` is the one place that turns them
into angles.
"""
import astropy.units as u
from astropy.cosmology import Cosmology

from .parameters import Declared, Parameter

__all__ = ["Placed", "default_cosmology"]


def default_cosmology():
    """The cosmology used to turn a redshift into a distance: `astropy.cosmology.Planck18`."""
    from astropy.cosmology import Planck18
    return Planck18


class Placed(Declared):
    """A model with an optional distance (or redshift), which converts its lengths to angles."""

    distance = Parameter("distance", positive=True, optional=True, default=None,
                         description="angular-diameter distance, for sizes given as lengths")
    redshift = Parameter("dimensionless", positive=True, optional=True, default=None,
                         description="redshift (Planck18 distance), for sizes given as lengths")

    def _place(self, distance, redshift, cosmology):
        """Validate and set the distance, redshift and cosmology (in ``__init__``)."""
        if distance is not None and redshift is not None:
            raise ValueError("give a distance or a redshift, not both")
        if cosmology is not None and not isinstance(cosmology, Cosmology):
            raise TypeError(f"cosmology must be an astropy Cosmology, got {cosmology!r}")
        self.distance = distance
        self.redshift = redshift
        self.cosmology = cosmology

    def _init_arguments(self):
        return {**self.parameters, "cosmology": self.cosmology}

    @property
    def is_placed(self):
        """Whether the model has a distance or a redshift of its own."""
        return self.distance is not None or self.redshift is not None

    @property
    def angular_diameter_distance(self):
        """The distance that converts lengths into angles (None without distance or redshift)."""
        if self.distance is not None:
            return self.distance
        if self.redshift is not None:
            cosmo = self.cosmology or default_cosmology()
            return cosmo.angular_diameter_distance(self.redshift).to(u.Mpc)
        return None

    def to_arcsec(self, name, value):
        """The size ``name`` (an angle, or a length at this model's distance) in arcsec."""
        if value.unit.is_equivalent(u.arcsec):
            return value.to_value(u.arcsec)
        distance = self.angular_diameter_distance
        if distance is None:
            raise ValueError(f"{name} is a physical length ({value}); give the "
                             f"{type(self).__name__} (or its Scene) a distance or a redshift, or "
                             "give it as an angle")
        return (value / distance).to_value(u.arcsec, equivalencies=u.dimensionless_angles())

    def with_distance(self, distance=None, redshift=None, cosmology=None):
        """A copy placed at another distance (or redshift)."""
        return self.replace(distance=distance, redshift=redshift, cosmology=cosmology)
