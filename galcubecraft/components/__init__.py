"""Units-aware model components: surface and vertical profiles, rotation curves, flows, warps."""
from .base import Component
from .flows import (AsymmetricDrift, BisymmetricFlow, DispersionProfile, Flow, LaggingHalo,
                    LopsidedFlow,
                    RadialFlow, VerticalFlow, Warp)
from .kinematics import (AnalyticRotationCurve, ArctanRotationCurve, FlatRotationCurve,
                         RotationCurve, TabulatedRotationCurve)
from .surface import (ExponentialDisk, GaussianRing, SersicBulge, SersicDisk, Surface,
                      SurfaceSum, TabulatedSurface)
from .vertical import ExponentialVertical, GaussianVertical, Sech2Vertical, VerticalProfile

__all__ = ["Component", "Surface", "SersicDisk", "ExponentialDisk", "SersicBulge", "GaussianRing",
           "TabulatedSurface", "SurfaceSum", "VerticalProfile", "ExponentialVertical",
           "Sech2Vertical", "GaussianVertical", "RotationCurve", "AnalyticRotationCurve",
           "ArctanRotationCurve",
           "FlatRotationCurve", "TabulatedRotationCurve", "Flow", "RadialFlow", "VerticalFlow",
           "LaggingHalo", "BisymmetricFlow", "LopsidedFlow", "DispersionProfile", "AsymmetricDrift",
           "Warp"]
