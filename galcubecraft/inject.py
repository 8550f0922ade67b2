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

import astropy.constants as const
import astropy.units as u
import numpy as np
import torch
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import QTable

from ._files import atomic_path
from .components import (AnalyticRotationCurve, ArctanRotationCurve, FlatRotationCurve,
                         SersicDisk, ExponentialVertical)
from .galaxy import Galaxy, radio_velocity
from .grid import CubeGrid
from .header import cube_hdu, parse_bunit, read_header
from .projector import Projector, _FOOTPRINT_HEIGHTS, _BEAM_MARGIN_SIGMAS
from .render import render_tensor
from .units import C_KMS, validate_quantity

__all__ = ["inject", "Injection", "random_galaxies", "galaxies_from_table", "truth_table",
           "brightness_factors", "check_band"]

_KMS = u.km / u.s
#: Rotation laws a truth table can name, and their parameter columns.
_LAWS = {"arctan": (ArctanRotationCurve, ("v_max", "r_turn")),
         "flat": (FlatRotationCurve, ("v_flat",)),
         "analytic": (AnalyticRotationCurve, ("v_0", "r_0"))}
_LAW_NAMES = {cls: name for name, (cls, _) in _LAWS.items()}
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
        spatial = 1.0 if rendered == u.Jy / u.beam else float(grid.beam.sr / grid.pixel_area)
    else:
        spatial = 1.0 if rendered == u.Jy / u.pix else float(grid.pixel_area / grid.beam.sr)
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
    nu = f0 * (1 - edges / C_KMS)                                     # Hz
    lam = const.c.to_value(u.AA / u.s) / nu                        # Angstrom
    dnu, dlam = np.abs(np.diff(nu)), np.abs(np.diff(lam))
    jy_hz_per_aa = (1 * u.Jy * u.Hz / u.AA).to_value(data_unit * per)
    return spatial * jy_hz_per_aa * dnu / dlam


# --------------------------------------------------------------------------- galaxies
def _velocity_reach(galaxy, params):
    """Largest |v_los - v_sys| (km/s, radio) a galaxy's line reaches, generously."""
    kin = type(galaxy.kinematics)
    rmax = float(Projector._truncation_radius({k: v.reshape(1) for k, v in params.items()
                                               if k in ("n", "r_eff")})[0])
    radius = torch.linspace(1e-3, rmax, 2048, dtype=torch.float64)
    p64 = {k: v.to(torch.float64) for k, v in params.items()}
    v_max = float(kin.circular_velocity(radius, p64).abs().max())
    scale = abs(1 - float(params["v_sys"]) / C_KMS)
    sigma = float(params["dispersion"])
    return scale * (1.5 * v_max * math.sin(float(params["inclination"])) + 10 * sigma), rmax


def _cutout(grid, galaxy):
    """The sub-grid around a galaxy holding all its light, and the galaxy re-centred on it."""
    params = galaxy.tensors(dtype=torch.float64)
    dv, rmax = _velocity_reach(galaxy, params)
    reach = rmax + _FOOTPRINT_HEIGHTS * float(params["scale_height"]) + 2 * grid.pixel_scale.value
    if grid.beam is not None:
        reach += _BEAM_MARGIN_SIGMAS * grid.beam.major.to_value(u.arcsec) / 2.3548
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
    return sub, _with(galaxy, offset=offset), (xs, ys, cs)


def _with(galaxy, **changes):
    new = object.__new__(Galaxy)
    new.__dict__.update(galaxy.__dict__)
    new.__dict__.update(changes)
    return new


def check_band(grid, priors):
    """Raise ValueError if the widest line ``priors`` allow does not fit in ``grid``'s band.

    A line needs ``v_max sin i + 4 sigma`` on each side of its systemic velocity.
    """
    d = priors.distributions
    v_hi = d["v_max"].support()[1].to_value(_KMS)
    i_hi = min(d["inclination"].support()[1].to_value(u.rad), math.pi / 2)
    s_hi = d["dispersion"].support()[1].to_value(_KMS)
    room = v_hi * math.sin(i_hi) + 4 * s_hi
    edges = grid.channel_edges.to_value(_KMS)
    band = edges.max() - edges.min()
    if not np.isfinite(room) or band <= 2 * room:
        raise ValueError(f"the band ({edges.min():.1f} to {edges.max():.1f} km/s) is too "
                         f"narrow for the widest line the priors allow (v_max sin i + 4 sigma = "
                         f"{room:.1f} km/s on each side); widen the band or narrow v_max, "
                         f"inclination or dispersion")


def random_galaxies(grid, n, *, priors=None, seed=None, edge=None, avoid=None,
                    avoid_threshold=None, min_separation=None, max_tries=10000):
    """``n`` galaxies drawn from ``priors`` and placed at random on ``grid``, for injection tests.

    Parameters
    ----------
    grid : `~galcubecraft.CubeGrid`
    n : int
    priors : `~galcubecraft.priors.GalaxyPriors`, optional
        Distributions of the galaxy parameters (default ``GalaxyPriors()``).
        Rotation is arctan with ``r_turn = turnover * r_eff``; the scale height
        is ``thickness * r_eff``.
    seed : int or `numpy.random.SeedSequence`, optional
        Same seed, same galaxies.
    edge : `~astropy.units.Quantity` [angle], optional
        Least distance of a centre from the field's edges (default: twice the
        largest ``r_eff`` the priors allow, if that is an angle, else 8 pixels).
    avoid : 2-D array, optional
        A map on the grid's pixels (say the cube's peak or moment-0 map); NaN
        marks blank pixels.  Centres keep ``edge`` away from blank pixels and
        from pixels where ``avoid >= avoid_threshold``.
    min_separation : `~astropy.units.Quantity` [angle], optional
        Least distance between centres (default: ``edge``).

    Positions are uniform over the allowed pixels; systemic velocities are uniform
    over the band, leaving room for each galaxy's line (``v_max sin i + 4 sigma``)
    on both sides.
    """
    from .priors import GalaxyPriors
    priors = GalaxyPriors() if priors is None else priors
    if not isinstance(priors, GalaxyPriors):
        raise TypeError(f"priors must be a GalaxyPriors, got {priors!r}")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    _, ny, nx = grid.shape
    pixel = grid.pixel_scale.to(u.arcsec)
    if edge is None:
        r_hi = priors.distributions["r_eff"].support()[1]
        edge = 2 * r_hi if r_hi.unit.is_equivalent(u.arcsec) else 8 * pixel
    edge = validate_quantity("edge", edge, u.arcsec, nonnegative=True).to(u.arcsec)
    min_sep = edge if min_separation is None else validate_quantity(
        "min_separation", min_separation, u.arcsec, nonnegative=True).to(u.arcsec)
    ee = int(math.ceil((edge / pixel).decompose().value))
    allowed = np.zeros((ny, nx), dtype=bool)
    allowed[ee:ny - ee, ee:nx - ee] = True
    if avoid is not None:
        from scipy.ndimage import maximum_filter
        avoid = np.asarray(avoid, dtype=float)
        if avoid.shape != (ny, nx):
            raise ValueError(f"avoid has shape {avoid.shape}, the grid's pixels are {(ny, nx)}")
        bad = ~np.isfinite(avoid)
        if avoid_threshold is not None:
            bad |= np.where(np.isfinite(avoid), avoid, -np.inf) >= avoid_threshold
        allowed &= ~maximum_filter(bad.astype(np.uint8), size=2 * ee + 1).astype(bool)
    check_band(grid, priors)
    candidates = np.flatnonzero(allowed)
    if n and candidates.size == 0:
        raise ValueError("no pixel of the grid is far enough from its edges and from what "
                         "avoid excludes; lower edge or avoid_threshold")
    edges = grid.channel_edges.to_value(_KMS)
    v_lo, v_hi = edges.min(), edges.max()
    galaxies, placed = [], []
    for _ in range(max_tries):
        if len(galaxies) == n:
            break
        k = int(rng.choice(candidates))
        y, x = divmod(k, nx)
        x, y = x + rng.uniform(-0.5, 0.5), y + rng.uniform(-0.5, 0.5)
        p = priors.sample(rng)
        if any(math.hypot(x - px, y - py) * pixel.value < min_sep.value for px, py in placed):
            continue
        # check_band made sure this room fits in the band
        room = float(p["v_max"].to_value(_KMS) * np.sin(p["inclination"].to_value(u.rad))
                     + 4 * p["dispersion"].to_value(_KMS))
        r_eff = p["r_eff"]
        galaxies.append(Galaxy(
            surface=SersicDisk(r_eff=r_eff, n=float(p["sersic_n"].value)),
            vertical=ExponentialVertical(float(p["thickness"].value) * r_eff),
            kinematics=ArctanRotationCurve(v_max=p["v_max"],
                                           r_turn=float(p["turnover"].value) * r_eff),
            inclination=p["inclination"], position_angle=p["position_angle"] % (360 * u.deg),
            flux=p["flux"], dispersion=p["dispersion"],
            v_sys=rng.uniform(v_lo + room, v_hi - room) * _KMS,
            offset=grid.offset_of_pixel(x, y)))
        placed.append((x, y))
    if len(galaxies) < n:
        raise ValueError(f"placed only {len(galaxies)} of {n} galaxies {min_sep} apart; "
                         "lower min_separation or n")
    return galaxies


def galaxies_from_table(table, grid):
    """Galaxies from a catalogue (e.g. a truth table `inject` wrote), placed on ``grid``.

    Columns: a position as ``ra``, ``dec`` (angles, ICRS) or ``x_pix``,
    ``y_pix`` (0-based array pixels); ``v_sys`` (radio km/s) or ``z`` (redshift
    of the line's rest frequency); ``r_eff``, ``inclination``, ``position_angle``,
    ``flux`` (Jy km/s); optional ``sersic_n`` (1), ``scale_height`` (0),
    ``dispersion`` (10 km/s), ``distance`` (for sizes given as lengths), and
    ``rotation`` (``arctan`` by default, ``flat``, ``analytic``) with its
    parameters (``v_max``, ``r_turn``; ``v_flat``; ``v_0``, ``r_0``).  Unit-less
    columns are refused (`~astropy.units.UnitTypeError` from the components).
    """
    table = QTable(table)
    names = set(table.colnames)
    for need in ("r_eff", "inclination", "position_angle", "flux"):
        if need not in names:
            raise ValueError(f"the catalogue has no {need!r} column (has {sorted(names)})")
    if not ({"ra", "dec"} <= names or {"x_pix", "y_pix"} <= names):
        raise ValueError("the catalogue needs positions: ra and dec, or x_pix and y_pix columns")
    if not ({"v_sys"} & names or {"z"} & names):
        raise ValueError("the catalogue needs a systemic velocity: a v_sys or a z column")

    def col(row, name, default=None):
        if name not in names:
            return default
        value = row[name]
        if isinstance(value, np.ma.core.MaskedConstant):
            return default
        if np.ndim(value) == 0 and not isinstance(value, str) and np.isnan(
                u.Quantity(value).value if isinstance(value, u.Quantity) else float(value)):
            return default
        return value

    galaxies = []
    for row in table:
        if {"ra", "dec"} <= names:
            coord = SkyCoord(col(row, "ra"), col(row, "dec"), frame="icrs")
            offset = grid.offset_of(coord)
        else:
            offset = grid.offset_of_pixel(float(col(row, "x_pix")), float(col(row, "y_pix")))
        if "v_sys" in names:
            v_sys = col(row, "v_sys")
        else:
            v_sys = radio_velocity(float(col(row, "z")))
        law = str(col(row, "rotation", "arctan")).strip().lower()
        if law not in _LAWS:
            raise ValueError(f"rotation {law!r} is not one of {sorted(_LAWS)}")
        cls, pnames = _LAWS[law]
        kwargs = {p: col(row, p) for p in pnames if col(row, p) is not None}
        galaxies.append(Galaxy(
            surface=SersicDisk(r_eff=col(row, "r_eff"), n=float(col(row, "sersic_n", 1.0))),
            vertical=ExponentialVertical(col(row, "scale_height", 0 * u.arcsec)),
            kinematics=cls(**kwargs), inclination=col(row, "inclination"),
            position_angle=col(row, "position_angle"), flux=col(row, "flux"),
            dispersion=col(row, "dispersion", 10 * _KMS), v_sys=v_sys, offset=offset,
            distance=col(row, "distance")))
    return galaxies


def truth_table(grid, galaxies, flux_in_cube=None, peak=None, data_unit=None):
    """One row per galaxy: where it is (sky, pixels, velocity, frequency) and all its parameters.

    Sizes are angles (arcsec), so the table re-creates the galaxies exactly with
    `galaxies_from_table` on the same grid.
    """
    f0 = grid.rest_frequency
    edges = grid.channel_edges.to_value(_KMS)
    channel_index = np.arange(len(edges)) - 0.5
    order = np.argsort(edges)
    units = {"ra": u.deg, "dec": u.deg, "v_sys": _KMS, "freq_sys": u.GHz,
             "wavelength_sys": u.AA, "r_eff": u.arcsec, "scale_height": u.arcsec,
             "inclination": u.deg, "position_angle": u.deg, "dispersion": _KMS,
             "flux": u.Jy * _KMS, "v_max": _KMS, "r_turn": u.arcsec, "v_flat": _KMS,
             "v_0": _KMS, "r_0": u.arcsec}
    columns = {name: [] for name in (
        "id", "ra", "dec", "x_pix", "y_pix", "channel", "v_sys", "z",
        *(("freq_sys", "wavelength_sys") if f0 is not None else ()),
        "r_eff", "sersic_n", "scale_height", "inclination", "position_angle", "dispersion",
        "flux", "rotation", "v_max", "r_turn", "v_flat", "v_0", "r_0")}
    for k, g in enumerate(galaxies):
        p = g.tensors(dtype=torch.float64)
        x, y = grid.pixel_of([float(p["x0"]), float(p["y0"])] * u.arcsec)
        v = float(p["v_sys"])
        row = {"id": k, "x_pix": x, "y_pix": y,
               "channel": float(np.interp(v, edges[order], channel_index[order])),
               "v_sys": v, "z": 1 / (1 - v / C_KMS) - 1,
               "r_eff": float(p["r_eff"]), "sersic_n": float(p["n"]),
               "scale_height": float(p["scale_height"]),
               "inclination": g.inclination.to_value(u.deg),
               "position_angle": g.position_angle.to_value(u.deg),
               "dispersion": g.dispersion.to_value(_KMS), "flux": g.flux.to_value(u.Jy * _KMS)}
        if f0 is not None:
            nu = f0.to_value(u.GHz) * (1 - v / C_KMS)
            row["freq_sys"] = nu
            row["wavelength_sys"] = (nu * u.GHz).to_value(u.AA, equivalencies=u.spectral())
        law = _LAW_NAMES.get(type(g.kinematics))
        # other laws (tabulated) are named but their parameters do not fit a row
        row["rotation"] = law or type(g.kinematics).__name__
        for name in ("v_max", "r_turn", "v_flat", "v_0", "r_0"):
            # NaN: not set (r_0 of the analytic law then follows the disk, as it did)
            row[name] = (float(p[name]) if law is not None and name in _LAWS[law][1]
                         and name in p else np.nan)
        for name, value in row.items():
            columns[name].append(value)
    if columns["x_pix"]:
        sky = grid.wcs.celestial.pixel_to_world(np.array(columns["x_pix"]),
                                                np.array(columns["y_pix"])).icrs
        columns["ra"], columns["dec"] = sky.ra.deg, sky.dec.deg
    table = QTable()
    if galaxies:
        for name, values in columns.items():
            table[name] = (np.asarray(values, dtype=float) * units[name] if name in units
                           else np.asarray(values))
        if flux_in_cube is not None:
            table["flux_in_cube"] = u.Quantity(flux_in_cube)
        if peak is not None:
            table["peak"] = u.Quantity(peak)
    table.meta["rest_frequency"] = None if f0 is None else str(f0.to(u.GHz))
    if data_unit is not None:
        table.meta["data_unit"] = str(data_unit)
    return table


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
        One row per galaxy (`truth_table`), with ``flux_in_cube``: the line
        flux (Jy km/s) the model puts in the cube's non-blank voxels.
    grid : `~galcubecraft.CubeGrid`
    """

    def __init__(self, hdu, model, truth, grid):
        self.hdu, self.model, self.truth, self.grid = hdu, model, truth, grid

    @property
    def cube(self):
        """The injected cube as a `~spectral_cube.SpectralCube`."""
        from spectral_cube import SpectralCube
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SpectralCube.read(self.hdu)

    def write(self, filename, truth=None, overwrite=False):
        """Write the cube (FITS) and its truth table (ECSV, default ``<name>_truth.ecsv``),
        each atomically."""
        from pathlib import Path
        path = Path(filename)
        truth = Path(truth) if truth is not None else path.with_name(
            path.name.removesuffix(".gz").removesuffix(".fits") + "_truth.ecsv")
        with atomic_path(path, overwrite=overwrite) as tmp:
            self.hdu.writeto(tmp, overwrite=True, checksum=True)
        with atomic_path(truth, overwrite=overwrite) as tmp:
            self.truth.write(tmp, format="ascii.ecsv", overwrite=True)
        return path, truth


def _read_data(cube, hdu):
    from pathlib import Path
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
           data_unit=None, device=None, dtype=torch.float32, **sampling):
    """Add model galaxies to a real cube, on its own grid, beam and units.

    Parameters
    ----------
    cube : str, `~pathlib.Path`, HDU or `~spectral_cube.SpectralCube`
        The observation.  A file is only read, never written.
    galaxies : sequence of `~galcubecraft.Galaxy`
        Placed on the cube's grid (``CubeGrid.from_fits(cube)``): offsets from its
        field centre (`CubeGrid.offset_of` turns a `~astropy.coordinates.SkyCoord`
        into one), ``v_sys`` in radio velocity for the cube's rest frequency.
        See `random_galaxies` and `galaxies_from_table`.
    hdu, beam, rest_frequency, spectral_unit
        As for `CubeGrid.from_fits` (e.g. ``beam=0.7 * u.arcsec`` as the PSF of an
        optical cube without one in its header).
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
                              rest_frequency=rest_frequency, spectral_unit=spectral_unit)
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
    from . import __version__
    out_header.add_history(f"galcubecraft {__version__}: injected {len(galaxies)} model "
                           f"galaxies in {unit.to_string()}")
    out_hdu = fits.PrimaryHDU(data=new, header=out_header)
    truth = truth_table(grid, galaxies, flux_in_cube=u.Quantity(flux_in_cube),
                        peak=u.Quantity(peaks), data_unit=unit)
    return Injection(out_hdu, model.reshape(data.shape), truth, grid)
