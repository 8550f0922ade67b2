"""Units-aware model components: surface profiles, vertical profiles, rotation curves."""
from .base import Component
from .kinematics import (AnalyticRotationCurve, ArctanRotationCurve, FlatRotationCurve,
                         RotationCurve, TabulatedRotationCurve)
from .surface import ExponentialDisk, SersicDisk
from .vertical import ExponentialVertical

__all__ = ["Component", "SersicDisk", "ExponentialDisk", "ExponentialVertical", "RotationCurve",
           "AnalyticRotationCurve", "ArctanRotationCurve", "FlatRotationCurve",
           "TabulatedRotationCurve"]
