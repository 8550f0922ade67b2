"""The random galaxy population of GalCubeCraft 0.1.0, as galcubecraft objects.

`SeedPopulation` draws, for one cube at a time, the galaxies that
GalCubeCraft 0.1.0's generator draws (same distributions, documented in the
docs' "Migrating from GalCubeCraft 0.1" page), and turns them into
`~galcubecraft.Galaxy` objects on a `~galcubecraft.CubeGrid`.

Each cube's draw uses only its own random generator, so cube ``i`` is the same
whatever the number of cubes made with it.
"""
import math

import astropy.units as u
import numpy as np
import torch
from astropy.table import QTable

from . import functional as F
from .components import AnalyticRotationCurve, ExponentialVertical, SersicDisk
from .galaxy import Galaxy, default_cosmology
from .grid import CubeGrid
from .noise import beam_from_info
from .units import validate_number, validate_quantity

__all__ = ["SeedPopulation", "RESOLUTION_RANGES", "VISUALISE_RATIOS"]

_KMS = u.km / u.s
#: Ranges of r = R_e / (beam_minor / 2) from which 0.1.0 draws log-uniformly.
RESOLUTION_RANGES = {"all": (0.25, 4.0), "resolved": (1.0, 4.0), "unresolved": (0.25, 1.0)}
#: The fixed ratios of ``resolution='visualise'`` (cube i takes the (i mod 5)-th).
VISUALISE_RATIOS = (0.3, 1.2, 2.0, 3.0, 5.0)


def _sersic_volume(n, r_eff, h):
    """Integral of exp(-b_n((R/R_e)^(1/n) - 1)) exp(-|z|/h) over all space (exact b_n), per
    galaxy: the disk's total flux at unit amplitude times 2 h."""
    n, r_eff = (torch.as_tensor(np.asarray(x, float)) for x in (n, r_eff))
    return F.sersic_total_flux(torch.ones_like(n), r_eff, n).numpy() * 2 * np.asarray(h)


class SeedPopulation:
    """GalCubeCraft 0.1.0's random galaxies and observation, as a reusable description.

    Parameters
    ----------
    n_gals : int or None
        Galaxies per cube; None draws 1 or 2 (uniform), as 0.1.0 does.
    resolution : {'all', 'resolved', 'unresolved', 'visualise'} or float
        How the primary's effective radius compares with the beam:
        ``r = R_e / (bmin / 2)`` is log-uniform in the ranges of
        `RESOLUTION_RANGES`, one of `VISUALISE_RATIOS`, or the given number.
    offset_gals : int
        Satellites sit up to this many pixels from the primary along each of
        x, y and the line of sight (uniform integers, as in 0.1.0).
    beam_info : sequence or `radio_beam.Beam`
        ``[bmin_px, bmaj_px, theta_deg]`` as in 0.1.0 (see
        `~galcubecraft.noise.beam_from_info`).
    grid_size : int
        Pixels along each sky axis.
    n_spectral_slices : int
        Channels.
    velocity_range : `~astropy.units.Quantity` [speed], shape (2,)
        The band, from its lower to its upper edge (0.1.0: -600 to 600 km/s).
    pixel_scale : `~astropy.units.Quantity` [angle]
        Angular size of a pixel.  0.1.0 works in pixels; here the instrument is
        fixed and each cube's physical pixel size (``pix_spatial_scale``, kpc)
        sets the galaxy's angular-diameter distance.
    central_r_eff : `~astropy.units.Quantity` [length]
        The primary's effective radius (0.1.0: 5 kpc).
    v_0 : `~astropy.units.Quantity` [speed]
        Velocity scale of the analytic rotation curve (0.1.0: 200 km/s).
    emissivity_unit : `~astropy.units.Quantity` [Jy km/s]
        Line flux of one cubic pixel of emissivity ``S = 1``.  0.1.0's ``S_e``
        has no unit; its cubes are the flux of each voxel spread over a
        sub-channel of a fifth of a channel (6 km/s in its quick start) and
        averaged, so 6 Jy km/s gives cubes of 0.1.0's brightness in Jy/beam.
    satellite_velocity_dispersion : `~astropy.units.Quantity` [speed] or None
        Scatter of a satellite's line-of-sight peculiar velocity about the
        primary (Gaussian); None uses ``v_0 / sqrt(2)`` (the one-dimensional
        dispersion of an isothermal halo of circular speed ``v_0``).  Zero
        gives 0.1.0's behaviour (Hubble flow only).
    cosmology : `astropy.cosmology.Cosmology` or None
        Gives H0 for the Hubble-flow offset of satellites (default Planck18).
    """

    def __init__(self, n_gals=None, resolution="all", offset_gals=5, beam_info=(4, 4, 0),
                 grid_size=125, n_spectral_slices=40, *, velocity_range=(-600, 600) * _KMS,
                 pixel_scale=1 * u.arcsec, central_r_eff=5 * u.kpc, v_0=200 * _KMS,
                 emissivity_unit=6 * u.Jy * _KMS, satellite_velocity_dispersion=None,
                 cosmology=None):
        if n_gals is not None:
            n_gals = int(validate_number("n_gals", n_gals, minimum=1))
        self.n_gals = n_gals
        if isinstance(resolution, str):
            if resolution not in (*RESOLUTION_RANGES, "visualise"):
                raise ValueError(f"resolution must be one of 'all', 'resolved', 'unresolved', "
                                 f"'visualise' or a positive number, got {resolution!r}")
        else:
            resolution = validate_number("resolution", resolution, positive=True)
        self.resolution = resolution
        self.offset_gals = int(validate_number("offset_gals", offset_gals, minimum=0))
        self.pixel_scale = validate_quantity("pixel_scale", pixel_scale, u.arcsec, positive=True)
        self.beam_info = beam_info
        self.beam = beam_from_info(beam_info, self.pixel_scale)
        self.grid_size = int(validate_number("grid_size", grid_size, minimum=1))
        self.n_spectral_slices = int(validate_number("n_spectral_slices", n_spectral_slices,
                                                     minimum=1))
        velocity_range = validate_quantity("velocity_range", velocity_range, _KMS, shape=(2,))
        if not velocity_range[1] > velocity_range[0]:
            raise ValueError(f"velocity_range must go from low to high, got {velocity_range}")
        self.velocity_range = velocity_range
        self.central_r_eff = validate_quantity("central_r_eff", central_r_eff, u.kpc,
                                               positive=True)
        self.v_0 = validate_quantity("v_0", v_0, _KMS, positive=True)
        self.emissivity_unit = validate_quantity("emissivity_unit", emissivity_unit,
                                                 u.Jy * _KMS, positive=True)
        if satellite_velocity_dispersion is None:
            satellite_velocity_dispersion = self.v_0 / math.sqrt(2)
        self.satellite_velocity_dispersion = validate_quantity(
            "satellite_velocity_dispersion", satellite_velocity_dispersion, _KMS,
            nonnegative=True)
        self.cosmology = cosmology or default_cosmology()

    # ------------------------------------------------------------------ observation
    @property
    def channel_width(self):
        return (self.velocity_range[1] - self.velocity_range[0]) / self.n_spectral_slices

    def grid(self, spectral_response=None):
        """The observation: ``grid_size`` square pixels, the band, the beam (and a response)."""
        return CubeGrid(shape=(self.n_spectral_slices, self.grid_size, self.grid_size),
                        pixel_scale=self.pixel_scale, channel_width=self.channel_width,
                        beam=self.beam, velocity_center=self.velocity_range.mean(),
                        spectral_response=spectral_response)

    # ------------------------------------------------------------------ drawing
    def resolution_ratio(self, index, rng):
        """r = R_e / (bmin / 2) of cube ``index``."""
        if self.resolution == "visualise":
            return VISUALISE_RATIOS[index % len(VISUALISE_RATIOS)]
        if not isinstance(self.resolution, str):
            return self.resolution
        low, high = RESOLUTION_RANGES[self.resolution]
        return float(10 ** rng.uniform(math.log10(low), math.log10(high)))

    def draw(self, index, rng):
        """Draw cube ``index``'s galaxies with ``rng`` (a `numpy.random.Generator`).

        Returns a dict: ``r`` (resolution ratio), ``pix_spatial_scale`` (kpc per
        pixel), ``distance`` (Quantity), ``galaxies`` (a `~astropy.table.QTable`,
        one row per galaxy, the primary first) and ``objects`` (the
        `~galcubecraft.Galaxy` of each row).
        """
        n_gal = self.n_gals if self.n_gals is not None else int(rng.integers(1, 3))
        r = self.resolution_ratio(index, rng)
        bmin_px = (self.beam.minor / self.pixel_scale).decompose().value
        re_px = r * bmin_px / 2
        pix_kpc = self.central_r_eff.to_value(u.kpc) / re_px
        distance = (pix_kpc * u.kpc / self.pixel_scale.to_value(u.rad)).to(u.Mpc)

        # the primary, in 0.1.0's order of draws
        hz_px = rng.uniform(0.5, 1.0) / pix_kpc
        s_e = rng.uniform(0.08, 0.12) * (1.0 / r) ** 1.5
        inclination = [rng.uniform(0, 85)]
        position_angle = [rng.uniform(0, 85)]
        n_sat = n_gal - 1
        r_e = [re_px, *rng.uniform(re_px / 3, re_px / 2, n_sat)]
        h_z = [hz_px, *rng.uniform(hz_px / 3, hz_px / 2, n_sat)]
        s_es = [s_e, *rng.uniform(s_e / 3, s_e / 2, n_sat)]
        # satellites are oriented at random (isotropic normals)
        inclination += list(np.degrees(np.arccos(rng.uniform(0, 1, n_sat))))
        position_angle += list(rng.uniform(0, 360, n_sat))
        dispersion = rng.uniform(30, 50, n_gal)
        sersic_n = rng.uniform(0.5, 1.5, n_gal)
        offsets = np.zeros((n_gal, 3))
        offsets[1:] = rng.integers(-self.offset_gals, self.offset_gals + 1, (n_sat, 3))
        peculiar = np.zeros(n_gal)
        peculiar[1:] = rng.normal(0, 1, n_sat) * self.satellite_velocity_dispersion.to_value(_KMS)

        h0 = self.cosmology.H0.to_value(_KMS / u.Mpc)
        los_kpc = offsets[:, 2] * pix_kpc
        hubble = h0 * los_kpc * 1e-3
        v_sys = self.velocity_range.mean().to_value(_KMS) + hubble + peculiar
        centre = (self.grid_size - 1) / 2

        r_e, h_z, sersic_n = np.asarray(r_e), np.asarray(h_z), np.asarray(sersic_n)
        fluxes = (np.asarray(s_es) * self.emissivity_unit
                  * _sersic_volume(sersic_n, r_e, h_z)).to(u.Jy * _KMS)
        objects = []
        for k in range(n_gal):
            flux = fluxes[k]
            east, north = -offsets[k, 0] * self.pixel_scale, offsets[k, 1] * self.pixel_scale
            objects.append(Galaxy(
                surface=SersicDisk(r_eff=r_e[k] * pix_kpc * u.kpc, n=sersic_n[k]),
                vertical=ExponentialVertical(scale_height=h_z[k] * pix_kpc * u.kpc),
                kinematics=AnalyticRotationCurve(v_0=self.v_0),
                inclination=inclination[k] * u.deg, position_angle=position_angle[k] * u.deg,
                flux=flux, dispersion=dispersion[k] * _KMS, v_sys=v_sys[k] * _KMS,
                offset=u.Quantity([east, north]), distance=distance))
        b_n = F.sersic_bn(sersic_n)
        pixel = self.pixel_scale.to(u.arcsec)
        table = QTable({
            "role": ["primary"] + ["satellite"] * n_sat,
            "x_pix": centre + offsets[:, 0], "y_pix": centre + offsets[:, 1],
            "z_pix": offsets[:, 2],
            "offset_east": -offsets[:, 0] * pixel, "offset_north": offsets[:, 1] * pixel,
            "los_offset": los_kpc * u.kpc,
            "r_eff": r_e * pix_kpc * u.kpc, "r_eff_pix": r_e,
            "scale_height": h_z * pix_kpc * u.kpc, "scale_height_pix": h_z,
            "sersic_n": sersic_n, "S_e": np.asarray(s_es),
            "flux": fluxes,
            "v_0": np.full(n_gal, self.v_0.to_value(_KMS)) * _KMS,
            "r_0": 2 * r_e * pix_kpc / b_n ** sersic_n * u.kpc,
            "dispersion": dispersion * _KMS,
            "inclination": np.asarray(inclination) * u.deg,
            "position_angle": np.asarray(position_angle) * u.deg,
            "v_sys": v_sys * _KMS, "v_hubble": hubble * _KMS, "v_peculiar": peculiar * _KMS,
        })
        table.meta.update({"resolution_ratio": r, "pix_spatial_scale_kpc": pix_kpc,
                           "distance_Mpc": distance.to_value(u.Mpc)})
        return {"r": r, "pix_spatial_scale": pix_kpc, "distance": distance, "galaxies": table,
                "objects": objects}

    def __repr__(self):
        return (f"<SeedPopulation n_gals={self.n_gals} resolution={self.resolution!r} "
                f"offset_gals={self.offset_gals} beam={self.beam!r} "
                f"grid={self.n_spectral_slices}x{self.grid_size}x{self.grid_size} "
                f"velocity_range={self.velocity_range} pixel_scale={self.pixel_scale}>")
