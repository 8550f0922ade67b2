"""Base class of the units-aware model components."""
import astropy.units as u
import numpy as np
import torch

__all__ = ["Component", "to_tensor"]


def to_tensor(value, device=None, dtype=torch.float32):
    """A float or array as a tensor on ``device`` with ``dtype``."""
    return torch.as_tensor(np.asarray(value, dtype=np.float64), device=device).to(dtype)


class Component:
    """A small, immutable, units-aware piece of a galaxy model.

    Subclasses list their parameters in ``param_names`` (in the order of their
    ``evaluate`` signature) and say which of them are *sizes* in ``size_names``:
    sizes may be given as angles or, for a galaxy with a distance, as physical
    lengths.  Parameters are validated once, in ``__init__``, and stored as
    Quantities (plain floats for dimensionless ones).
    """

    param_names = ()
    size_names = ()
    #: Internal unit of each non-size parameter (sizes are always arcsec).
    internal_units = {}

    @property
    def parameters(self):
        """Mapping of parameter name to value (Quantity or float)."""
        return {name: getattr(self, name) for name in self.param_names}

    def tensors(self, to_arcsec, device=None, dtype=torch.float32):
        """The parameters as plain tensors in internal units.

        Parameters
        ----------
        to_arcsec : callable
            Converts a size Quantity (angle or length) to arcsec; supplied by
            the `~galcubecraft.Galaxy`, which knows the distance.
        """
        out = {}
        for name, value in self.parameters.items():
            if value is None:
                continue
            if name in self.size_names:
                out[name] = to_tensor(to_arcsec(name, value), device, dtype)
            elif isinstance(value, u.Quantity):
                out[name] = to_tensor(value.to_value(self.internal_units[name]), device, dtype)
            else:
                out[name] = to_tensor(value, device, dtype)
        return out

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.parameters.items())
        return f"<{type(self).__name__}({args})>"

    def __eq__(self, other):
        if type(self) is not type(other):
            return NotImplemented
        for name in self.param_names:
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None):
                return False
            if a is not None and not np.all(np.asanyarray(a == b)):
                return False
        return True

    __hash__ = None
