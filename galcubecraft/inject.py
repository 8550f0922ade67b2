"""Inject model galaxies into real cubes, with the truth written down.

`inject` reads a cube (a FITS file, HDU or `~spectral_cube.SpectralCube`),
builds its grid with `CubeGrid.from_fits`, renders each galaxy on a cutout of
that grid around it (its own pixels, channels and beam, so the cost follows
the galaxy, not the cube), converts the model into the data's unit and adds it.
Blank (NaN) voxels stay blank, the header is kept (with a ``HISTORY`` card),
and a truth table records every galaxy and the flux that landed in the cube.

Data units
----------
Models are rendered as flux density per beam (or per pixel) averaged over each
channel, then converted, channel by channel, to:

* a flux density per beam (``Jy/beam``, ``mJy/beam``, ...);
* a brightness temperature (``K``): Rayleigh-Jeans, through the beam's solid
  angle at each channel's observed frequency (`radio_beam.Beam.jtok_equiv`);
* a flux density per pixel (``Jy/pixel``, or a bare ``Jy`` or
  ``erg / (s cm2 Angstrom)`` as IFU cubes write it per spaxel) or per solid
  angle (``MJy/sr``, ``erg / (s cm2 Angstrom arcsec2)``);
* per unit wavelength instead of per unit frequency: the channel's line flux
  ``integral S_nu dnu = (nu0 / c) integral S_nu dv`` (exact in radio velocity)
  divided by the channel's width in observed wavelength.
"""
import math
import warnings
from pathlib import Path

import astropy.constants as const
import astropy.units as u
import numpy as np
import torch
from astropy.io import fits

from ._about import version as __version__
from ._files import atomic_path, check_paths
from .catalogue import check_band, galaxies_from_table, random_galaxies, truth_table  # noqa: F401
from .galaxy import Galaxy
from .grid import CubeGrid
from .header import cube_hdu, parse_bunit, read_header
from .projector import Projector
from .render import render_tensor
from .units import velocity_compression

# random_galaxies, galaxies_from_table, truth_table and check_band live in
# galcubecraft.catalogue; they stay importable from here
__all__ = ["inject", "Injection", "brightness_factors"]

_KMS = u.km / u.s
_F_LAMBDA = u.erg / u.s / u.cm**2 / u.AA


# --------------------------------------------------------------------------- units
def brightness_factors(grid, data_unit):
    """Per-channel factors turning a model rendered on ``grid`` into ``data_unit``.

    Returns an array of ``n_chan`` floats (a cube in `CubeGrid.unit` times the
    factor of its channel is in ``data_unit``).  Raises `~astropy.units.UnitsError`
    for a unit that is not a brightness (see the module docstring for those that are).
    """
    data_unit = u.Unit(data_unit)
    n_chan = grid.n_chan
    rendered = grid.unit                       # Jy/beam, or Jy/pixel without a beam
    if data_unit.is_equivalent(u.K):
        if grid.beam is None:
            raise ValueError("a cube in K needs a beam to convert Jy/beam to K")
        freqs = grid.frequencies
        return np.array([(1 * rendered).to_value(data_unit, grid.beam.jtok_equiv(f))
                         for f in freqs])
    # the data's flux density kind and what it is per: beam, pixel or solid angle
    for per, to_per in ((u.beam, "beam"), (u.pix, "pixel"), (u.sr, "area"),
                        (u.dimensionless_unscaled, "pixel")):
        flux = data_unit * per
        if flux.is_equivalent(u.Jy):
            per_nu = (1 * u.Jy).to_value(flux)
            break
        if flux.is_equivalent(_F_LAMBDA):
            per_nu = None
            break
    else:
        raise u.UnitsError(f"cannot add a model to data in {data_unit}: not a flux density per "
                           "beam, pixel or solid angle, nor a brightness temperature")
    # Jy per (beam | pixel | sr) of the rendered model
    if to_per == "beam":
        if grid.beam is None:
            raise ValueError(f"data in {data_unit} need a beam; pass beam=...")
        spatial = 1.0 if rendered == u.Jy / u.beam else grid.beam_pixel_ratio
    else:
        spatial = 1.0 if rendered == u.Jy / u.pix else 1 / grid.beam_pixel_ratio
        if to_per == "area":
            spatial /= grid.pixel_area.to_value(u.sr)
    if per_nu is not None:
        return np.full(n_chan, spatial * per_nu)
    # per unit wavelength: channel line flux (nu0/c) S |dv| over the channel's |d lambda|
    if grid.rest_frequency is None:
        raise ValueError("converting to a flux density per wavelength needs the line's rest "
                         "frequency; pass rest_frequency=...")
    f0 = grid.rest_frequency.to_value(u.Hz)
    edges = grid.channel_edges.to_value(_KMS)
    nu = f0 * velocity_compression(edges)                             # Hz
    lam = const.c.to_value(u.AA / u.s) / nu                        # Angstrom
    dnu, dlam = np.abs(np.diff(nu)), np.abs(np.diff(lam))
    jy_hz_per_aa = (1 * u.Jy * u.Hz / u.AA).to_value(data_unit * per)
    return spatial * jy_hz_per_aa * dnu / dlam


# --------------------------------------------------------------------------- galaxies
def _velocity_reach(galaxy, params):
    """Largest |v_los - v_sys| (km/s, radio) a galaxy's line reaches, generously."""
    kin = type(galaxy.kinematics)
    rmax = float(Projector.truncation_radius({k: v.reshape(1) for k, v in params.items()
                                              if k in ("n", "r_eff")})[0])
    radius = torch.linspace(1e-3, rmax, 2048, dtype=torch.float64)
    p64 = {k: v.to(torch.float64) for k, v in params.items()}
    v_max = float(kin.circular_velocity(radius, p64).abs().max())
    scale = abs(velocity_compression(float(params["v_sys"])))
    sigma = float(params["dispersion"])
    return scale * (1.5 * v_max * math.sin(float(params["inclination"])) + 10 * sigma)


def _cutout(grid, galaxy):
    """The sub-grid around a galaxy holding all its light, and the galaxy re-centred on it."""
    params = galaxy.tensors(dtype=torch.float64)
    dv = _velocity_reach(galaxy, params)
    pixel = grid.pixel_scale.to_value(u.arcsec)
    batch = {k: v.reshape(1) for k, v in params.items() if v.dim() == 0}
    reach = float(Projector.sky_reach(batch)[0]) + 2 * pixel
    reach += Projector.beam_margin(grid.beam_pixels()) * pixel
    x, y = grid.pixel_of([float(params["x0"]), float(params["y0"])] * u.arcsec)
    half = reach / grid.pixel_scale.to_value(u.arcsec)
    n_chan, ny, nx = grid.shape
    xs = slice(max(0, int(math.floor(x - half))), min(nx, int(math.ceil(x + half)) + 1))
    ys = slice(max(0, int(math.floor(y - half))), min(ny, int(math.ceil(y + half)) + 1))
    edges = grid.channel_edges.to_value(_KMS)
    v_sys = float(params["v_sys"])
    lo, hi = v_sys - dv - 2 * abs(edges[1] - edges[0]), v_sys + dv + 2 * abs(edges[-1] - edges[-2])
    inside = np.nonzero((np.maximum(edges[:-1], edges[1:]) >= lo)
                        & (np.minimum(edges[:-1], edges[1:]) <= hi))[0]
    if xs.stop <= xs.start or ys.stop <= ys.start or inside.size == 0:
        return None, None, (xs, ys, None)
    if grid.spectral_response is not None:
        extra = grid.spectral_response.half_width(grid.channel_width)
    else:
        extra = 0
    cs = slice(max(0, inside[0] - extra), min(n_chan, inside[-1] + 1 + extra))
    sub = grid.subgrid(cs, ys, xs)
    offset = sub.offset_of_pixel(x - xs.start, y - ys.start)
    return sub, galaxy.replace(offset=offset), (xs, ys, cs)


# --------------------------------------------------------------------------- injection
class Injection:
    """What `inject` returns: the new cube, the model that was added and the truth.

    Attributes
    ----------
    hdu : `~astropy.io.fits.PrimaryHDU`
        The cube with the galaxies added: the input's header (and ``HISTORY``),
        the input's data shape (Stokes axis included).
    model : `numpy.ndarray`
        What was added, in the data's unit, same shape as ``hdu.data``.
    truth : `~astropy.table.QTable`
        One row per galaxy (`galcubecraft.catalogue.truth_table`), with ``flux_in_cube``: the line
        flux (Jy km/s) the model puts in the cube's non-blank voxels.
    grid : `~galcubecraft.CubeGrid`
    """

    def __init__(self, hdu, model, truth, grid, source=None):
        self.hdu, self.model, self.truth, self.grid = hdu, model, truth, grid
        #: The input file the cube was read from (None for an HDU or a SpectralCube).
        self.source = source

    @staticmethod
    def default_truth_path(filename):
        """The truth table that goes with cube ``filename``: ``<name>_truth.ecsv`` beside it."""
        path = Path(filename)
        return path.with_name(path.name.removesuffix(".gz").removesuffix(".fits")
                              + "_truth.ecsv")

    @property
    def cube(self):
        """The injected cube as a `~spectral_cube.SpectralCube`."""
        from spectral_cube import SpectralCube
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SpectralCube.read(self.hdu)

    def write(self, filename, truth=None, overwrite=False):
        """Write the cube (FITS) and its truth table (ECSV, default ``<name>_truth.ecsv``),
        each atomically.

        Both paths are checked before either is written: neither may be the input cube
        (any spelling or link) or the other, nor exist unless ``overwrite``.
        """
        path = Path(filename)
        truth = Path(truth) if truth is not None else self.default_truth_path(path)
        check_paths({"the input cube": self.source}, {"the cube": path, "the truth table": truth},
                    overwrite=overwrite)
        with atomic_path(path, overwrite=overwrite) as tmp:
            self.hdu.writeto(tmp, overwrite=True, checksum=True)
        with atomic_path(truth, overwrite=overwrite) as tmp:
            self.truth.write(tmp, format="ascii.ecsv", overwrite=True)
        return path, truth


def _read_data(cube, hdu):
    if isinstance(cube, (str, Path)):
        with fits.open(cube) as hdul:
            data = hdul[cube_hdu(hdul, hdu, cube)].data
            return np.array(data, dtype=np.result_type(data.dtype, np.float32))
    if isinstance(cube, (fits.PrimaryHDU, fits.ImageHDU)):
        return np.array(cube.data, dtype=np.result_type(cube.data.dtype, np.float32))
    if hasattr(cube, "filled_data"):
        return np.asarray(cube.unitless_filled_data[:], dtype=np.float32)
    raise TypeError(f"cannot read data from {type(cube).__name__}")


def inject(cube, galaxies, *, hdu=None, beam=None, rest_frequency=None, spectral_unit=None,
           pixel_sampling="point", data_unit=None, device=None, dtype=torch.float32,
           **sampling):
    """Add model galaxies to a real cube, on its own grid, beam and units.

    Parameters
    ----------
    cube : str, `~pathlib.Path`, HDU or `~spectral_cube.SpectralCube`
        The observation.  A file is only read, never written.
    galaxies : sequence of `~galcubecraft.Galaxy`
        Placed on the cube's grid (``CubeGrid.from_fits(cube)``): offsets from its
        field centre (`CubeGrid.offset_of` turns a `~astropy.coordinates.SkyCoord`
        into one), ``v_sys`` in radio velocity for the cube's rest frequency.
        See `galcubecraft.catalogue.random_galaxies` and
        `galcubecraft.catalogue.galaxies_from_table`.
    hdu, beam, rest_frequency, spectral_unit, pixel_sampling
        As for `CubeGrid.from_fits` (e.g. ``beam=0.7 * u.arcsec`` as the PSF of an
        optical cube without one in its header, and ``pixel_sampling='average'`` for its
        spaxels).
    data_unit : str or `~astropy.units.Unit`, optional
        Overrides the header's ``BUNIT`` (see `parse_bunit`).
    device, dtype, **sampling
        Passed to the `~galcubecraft.Projector`.

    Returns
    -------
    `Injection`
    """
    galaxies = list(galaxies)
    for g in galaxies:
        if not isinstance(g, Galaxy):
            raise TypeError(f"inject takes Galaxy objects, got {g!r}")
    header, beams = read_header(cube, hdu=hdu)
    grid = CubeGrid.from_fits(header if beams is None else cube, hdu=hdu, beam=beam,
                              rest_frequency=rest_frequency, spectral_unit=spectral_unit,
                              pixel_sampling=pixel_sampling)
    unit = u.Unit(data_unit) if data_unit is not None else parse_bunit(header.get("BUNIT"))
    factors = brightness_factors(grid, unit)
    data = _read_data(cube, hdu)
    shape3 = grid.shape
    if data.size != math.prod(shape3):
        raise ValueError(f"data of shape {data.shape} do not match the header's {shape3}")
    data3 = data.reshape(shape3)
    model = np.zeros(shape3, dtype=data3.dtype)
    blank = ~np.isfinite(data3)
    flux_in_cube, peaks = [], []
    for g in galaxies:
        sub, moved, (xs, ys, cs) = _cutout(grid, g)
        if sub is None:
            flux_in_cube.append(0.0 * u.Jy * _KMS)
            peaks.append(0.0 * unit)
            continue
        with torch.no_grad():
            part = render_tensor(moved, sub, device=device, dtype=dtype, **sampling)
        part = part.detach().cpu().numpy().astype(np.float64)
        part[blank[cs, ys, xs]] = 0.0          # blank voxels stay blank and receive nothing
        flux_in_cube.append(sub.integrated_flux(part))
        converted = part * factors[cs, None, None]
        model[cs, ys, xs] += converted.astype(model.dtype)
        peaks.append(float(np.max(np.abs(converted), initial=0.0)) * unit)
    new = (data3 + model).reshape(data.shape)     # NaN + model = NaN
    out_header = header.copy()
    for key in ("BSCALE", "BZERO", "BLANK", "DATAMIN", "DATAMAX", "CHECKSUM", "DATASUM"):
        out_header.remove(key, ignore_missing=True, remove_all=True)
    out_header.add_history(f"galcubecraft {__version__}: injected {len(galaxies)} model "
                           f"galaxies in {unit.to_string()}")
    out_hdu = fits.PrimaryHDU(data=new, header=out_header)
    truth = truth_table(grid, galaxies, flux_in_cube=u.Quantity(flux_in_cube),
                        peak=u.Quantity(peaks), data_unit=unit)
    source = Path(cube) if isinstance(cube, (str, Path)) else None
    return Injection(out_hdu, model.reshape(data.shape), truth, grid, source=source)
