"""Units-aware model components: surface and vertical profiles, rotation curves, flows, warps."""
from .base import Component
from .flows import (BisymmetricFlow, DispersionProfile, Flow, LaggingHalo, LopsidedFlow,
                    RadialFlow, VerticalFlow, Warp)
from .kinematics import (AnalyticRotationCurve, ArctanRotationCurve, FlatRotationCurve,
                         RotationCurve, TabulatedRotationCurve)
from .surface import ExponentialDisk, GaussianRing, SersicDisk, Surface, TabulatedSurface
from .vertical import ExponentialVertical, GaussianVertical, Sech2Vertical, VerticalProfile

__all__ = ["Component", "Surface", "SersicDisk", "ExponentialDisk", "GaussianRing",
           "TabulatedSurface", "VerticalProfile", "ExponentialVertical", "Sech2Vertical",
           "GaussianVertical", "RotationCurve", "AnalyticRotationCurve", "ArctanRotationCurve",
           "FlatRotationCurve", "TabulatedRotationCurve", "Flow", "RadialFlow", "VerticalFlow",
           "LaggingHalo", "BisymmetricFlow", "LopsidedFlow", "DispersionProfile", "Warp"]
