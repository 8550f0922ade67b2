"""galcubecraft: synthetic spectral cubes of rotating disk galaxies.

Units-aware model components compose into galaxies, a torch projector renders
them onto an observation grid, and the result is a `spectral_cube.SpectralCube`
with a real WCS and a `radio_beam.Beam`.
"""
from ._about import version as __version__

from .components import (AnalyticRotationCurve, ArctanRotationCurve, AsymmetricDrift,
                         BisymmetricFlow,
                         Component, DispersionProfile, ExponentialDisk, ExponentialVertical,
                         FlatRotationCurve, GaussianRing, GaussianVertical, LaggingHalo,
                         LopsidedFlow, RadialFlow, RotationCurve, Sech2Vertical, SersicBulge,
                         SersicDisk, SurfaceSum, TabulatedRotationCurve, TabulatedSurface,
                         VerticalFlow, Warp)
from .cube import SyntheticCube, to_spectral_cube, write_fits
from .galaxy import Galaxy, Scene, default_cosmology, radio_velocity
from .grid import CO_1_0, CubeGrid
from .fitting import FitResult, fit
from .generator import GalCubeCraft, GeneratedCube
from .noise import NoiseModel, apply_and_convolve_noise, apply_noise
from .observation import Observation, ObservedBatch, observe, observe_batch
from .population import SeedPopulation
from .projector import Projector
from .render import render, render_parts, render_tensor, stack_parameters

__all__ = [
    "__version__",
    "Component", "SersicDisk", "ExponentialDisk", "ExponentialVertical", "RotationCurve",
    "AnalyticRotationCurve", "ArctanRotationCurve", "FlatRotationCurve", "TabulatedRotationCurve",
    "SersicBulge", "GaussianRing", "TabulatedSurface", "SurfaceSum", "Sech2Vertical",
    "GaussianVertical", "RadialFlow",
    "VerticalFlow", "LaggingHalo", "BisymmetricFlow", "LopsidedFlow", "DispersionProfile",
    "AsymmetricDrift", "Warp",
    "Galaxy", "Scene", "default_cosmology", "radio_velocity", "CubeGrid", "CO_1_0", "Projector",
    "render", "render_tensor", "render_parts", "stack_parameters",
    "SyntheticCube", "to_spectral_cube", "write_fits",
    "GalCubeCraft", "GeneratedCube", "SeedPopulation", "apply_noise", "apply_and_convolve_noise",
    "NoiseModel", "observe", "Observation", "observe_batch", "ObservedBatch", "fit", "FitResult",
]
