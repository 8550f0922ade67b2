"""Base class of the units-aware model components."""
import copy

import numpy as np
import torch

from ..parameters import Declared

__all__ = ["Component", "to_tensor", "check_table_nodes"]


def to_tensor(value, device=None, dtype=torch.float32):
    """A float or array as a tensor on ``device`` with ``dtype``."""
    return torch.as_tensor(np.asarray(value, dtype=np.float64), device=device).to(dtype)


class Component(Declared):
    """A small, immutable, units-aware piece of a galaxy model.

    Subclasses declare their parameters as `~galcubecraft.parameters.Parameter`
    class attributes, in the order of their ``evaluate`` signature; the
    ``'size'`` ones may be given as angles or, for a galaxy with a distance, as
    physical lengths.  Parameters are validated once, when ``__init__`` assigns
    them, and stored as Quantities (plain floats for dimensionless ones).

    A component whose parameter names would be ambiguous beside others' (a ring's
    ``radius``, a warp's ``inclination``) sets ``key_prefix``: its tensors are then keyed
    ``key_prefix + name`` (``'ring_radius'``, ``'warp_inclination'``).
    """

    #: Prepended to the parameter names in `tensors` (and the projector's keys).
    key_prefix = ""
    #: A named law's name in flat dictionaries and TOML files (``rotation = 'flat'``,
    #: ``surface = 'ring'``); a family of laws (a class whose own ``laws`` dict maps the
    #: names to the classes: `RotationCurve`, `Surface`, `VerticalProfile`) registers each
    #: subclass that names one.
    law = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("law"):
            family = next((k for k in cls.__mro__[1:] if "laws" in k.__dict__), None)
            if family is not None:
                family.laws[cls.law] = cls

    @classmethod
    def key(cls, name):
        """The projector's key of the parameter ``name``."""
        return cls.key_prefix + name

    @classmethod
    def flat_declarations(cls):
        """The declarations under their keys (``'ring_radius'``): how flat dictionaries, TOML
        tables, flags and truth tables name them."""
        if not cls.key_prefix:
            return dict(cls.declarations)
        out = {}
        for name, p in cls.declarations.items():
            q = copy.copy(p)
            q.name = cls.key(name)
            q.aliases = ()
            out[q.name] = q
        return out

    @classmethod
    def from_flat(cls, values):
        """The component from a flat dictionary's checked values (keys as `flat_declarations`)."""
        return cls(**{name: values[cls.key(name)] for name in cls.declarations
                      if cls.key(name) in values})

    def flat(self):
        """The parameters under their keys (`flat_declarations`)."""
        return {self.key(name): value for name, value in self.parameters.items()}

    def numbers(self, to_arcsec):
        """The parameters in internal units under their keys: floats, and numpy arrays for
        tables (what `tensors` makes tensors of; many galaxies' are stacked at once).

        Parameters
        ----------
        to_arcsec : callable
            Converts a size Quantity (angle or length) to arcsec; supplied by
            the `~galcubecraft.Galaxy`, which knows the distance.
        """
        out = {}
        for name, declaration in self.declarations.items():
            value = getattr(self, name)
            if value is not None:
                value = declaration.to_internal(value, to_arcsec)
                # (a table of its own: a view would let a change write into this value)
                out[self.key(name)] = np.array(value, dtype=np.float64) if np.ndim(value) \
                    else value
        return out

    def tensors(self, to_arcsec, device=None, dtype=torch.float32):
        """The parameters as plain tensors in internal units (`numbers`)."""
        return {k: to_tensor(v, device, dtype) for k, v in self.numbers(to_arcsec).items()}


def check_table_nodes(owner, radius, tables, least=1):
    """Raise `ValueError` naming ``owner`` unless ``radius`` is a 1-D, strictly increasing
    table of at least ``least`` nodes and each of ``tables`` (name -> values or None) has one
    value per node."""
    if radius.ndim != 1 or radius.size < least:
        raise ValueError(f"{owner}: radius must be 1-D with at least {least} node(s), got "
                         f"shape {radius.shape}")
    if np.any(np.diff(radius.value) <= 0):
        raise ValueError(f"{owner}: radius must be strictly increasing, got {radius}")
    for key, value in tables.items():
        if value is not None and np.shape(value) != radius.shape:
            raise ValueError(f"{owner}: {key} must have one value per radius node "
                             f"{radius.shape}, got shape {np.shape(value)}")
