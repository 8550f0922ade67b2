"""Galaxies placed on a grid, and the tables that write them down.

* `random_galaxies`: galaxies drawn from `~galcubecraft.priors.GalaxyPriors` and placed at
  random on a grid (clear of its edges, of each other, of blank or bright pixels), for
  injection tests and training sets; `check_band` says up front whether the widest line
  the priors allow fits in the band.
* `truth_table`: one row per galaxy, where it is (sky, pixels, velocity, frequency) and
  every parameter; `galaxies_from_table` makes the same galaxies from such a table (or any
  catalogue with those columns).

The parameter columns are the galaxies' flat dictionaries (`Galaxy.to_dict`), so they
follow the parameters' declarations: a new parameter is a new column with nothing to
add here.  Observation, injection and datasets all write their truth through this module.
"""
import math

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import QTable, vstack

from .components import ArctanRotationCurve, ExponentialVertical, Flow
from .galaxy import Galaxy
from .priors import GalaxyPriors
from .units import (radio_velocity, redshift_of_radio_velocity, validate_quantity,
                    velocity_compression)

__all__ = ["random_galaxies", "GalaxyPlacer", "check_band", "truth_table", "galaxies_from_table",
           "stack_tables", "pad_columns", "table_cell", "PARAMETER_COLUMNS", "TABLE_COLUMNS"]

_KMS = u.km / u.s
#: Parameters a truth table holds besides the position and systemic velocity: every flat
#: galaxy parameter that is one number (positions and distances are written as sky and
#: pixel coordinates and angles).  The laws (``surface``, ``vertical``, ``rotation``) are
#: columns of names.
PARAMETER_COLUMNS = {name: p for name, p in Galaxy.flat_parameters().items()
                     if p.shape is None and not p.may_be_table
                     and name not in ("v_sys", "distance", "redshift")}
#: Parameters that are tables, or may be (tabulated curves and profiles, a warp's nodes, a
#: flow's amplitudes): array columns, one row per galaxy padded with NaN to the longest
#: table; a flow's constant amplitude is the first element of its row, with the flow's
#: ``radius`` blank.
TABLE_COLUMNS = {name: p for name, p in Galaxy.flat_parameters().items() if p.may_be_table}


def _owner_radius(name):
    """The key of the radius nodes of the flow whose amplitude is ``name``, or None."""
    return next((f.key("radius") for f in Flow.kinds if name in f.flat_declarations()
                 and name != f.key("radius")), None)


def table_cell(row, name):
    """The value of the array column ``name`` in ``row`` (its NaN padding dropped): None when
    blank, a float for a flow's constant amplitude, else a 1-D array."""
    value = row[name]
    unit = getattr(value, "unit", None)
    numbers = np.asarray(getattr(value, "value", value), dtype=float).ravel()
    numbers = numbers[~np.isnan(numbers)]
    if numbers.size == 0:
        return None
    radius = _owner_radius(name)
    if (numbers.size == 1 and radius is not None
            and (radius not in row.colnames or table_cell(row, radius) is None)):
        numbers = numbers[0]
    return numbers * unit if unit is not None else numbers


def pad_columns(table, widths):
    """``table`` (a QTable) with each array column named in ``widths`` padded with NaN to that
    many entries (truth tables of different batches hold tables of different lengths)."""
    table = QTable(table)
    for name, width in widths.items():
        if name in table.colnames and table[name].shape[1] < width:
            column = table[name]
            pad = np.full((len(table), width - column.shape[1]), np.nan)
            if isinstance(column, u.Quantity):
                table[name] = np.concatenate([column.value, pad], axis=1) * column.unit
            else:
                table[name] = np.concatenate([np.asarray(column), pad], axis=1)
    return table


def stack_tables(tables):
    """`astropy.table.vstack` of truth tables, their array columns padded with NaN to the
    widest (`pad_columns`)."""
    tables = list(tables)
    widths = {}
    for t in tables:
        for c in t.colnames:
            if t[c].ndim == 2:
                widths[c] = max(widths.get(c, 0), t[c].shape[1])
    return vstack([pad_columns(t, widths) for t in tables])


def check_band(grid, priors):
    """Raise ValueError if the widest line ``priors`` allow does not fit in ``grid``'s band.

    A line needs ``v_max sin i + 4 sigma`` on each side of its systemic velocity, plus what
    the priors' flows can add and with the inclination a warp can reach.
    """
    d = priors.distributions
    speed, tilt = priors.extra_speed()
    v_hi = d["v_max"].support()[1].to_value(_KMS)
    i_hi = min(d["inclination"].support()[1].to_value(u.rad) + math.radians(tilt), math.pi / 2)
    s_hi = d["dispersion"].support()[1].to_value(_KMS)
    room = v_hi * math.sin(i_hi) + 4 * s_hi + speed
    edges = grid.channel_edges.to_value(_KMS)
    band = edges.max() - edges.min()
    if not np.isfinite(room) or band <= 2 * room:
        raise ValueError(f"the band ({edges.min():.1f} to {edges.max():.1f} km/s) is too "
                         f"narrow for the widest line the priors allow (v_max sin i + 4 sigma, and "
                         f"what flows and warps add: {room:.1f} km/s on each side); widen the "
                         f"band or narrow v_max, inclination, dispersion or the flows")


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
    on both sides.  `GalaxyPlacer` does the same work with the checks and the allowed
    pixels made once, for many draws.
    """
    placer = GalaxyPlacer(grid, priors=priors, edge=edge, avoid=avoid,
                          avoid_threshold=avoid_threshold, min_separation=min_separation)
    return placer.draw(n, seed, max_tries=max_tries)


class GalaxyPlacer:
    """Galaxies drawn from priors and placed at random on a grid (`random_galaxies`), with
    every check, the allowed pixels and the band's room made once when it is built: what a
    dataset needs, which draws the galaxies of thousands of cubes on one grid.

    Parameters as `random_galaxies`'s; `draw` takes ``n`` and the seed.
    """

    def __init__(self, grid, *, priors=None, edge=None, avoid=None, avoid_threshold=None,
                 min_separation=None):
        priors = GalaxyPriors() if priors is None else priors
        if not isinstance(priors, GalaxyPriors):
            raise TypeError(f"priors must be a GalaxyPriors, got {priors!r}")
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
                raise ValueError(f"avoid has shape {avoid.shape}, the grid's pixels are "
                                 f"{(ny, nx)}")
            bad = ~np.isfinite(avoid)
            if avoid_threshold is not None:
                bad |= np.where(np.isfinite(avoid), avoid, -np.inf) >= avoid_threshold
            allowed &= ~maximum_filter(bad.astype(np.uint8), size=2 * ee + 1).astype(bool)
        check_band(grid, priors)
        edges = grid.channel_edges.to_value(_KMS)
        self.grid, self.priors = grid, priors
        self.min_separation = min_sep
        self._candidates = np.flatnonzero(allowed)
        self._pixel, self._min_sep = pixel.value, min_sep.value
        self._band = edges.min(), edges.max()
        self._speed, self._tilt = priors.extra_speed()   # what flows and warps add to a line

    def draw(self, n, seed=None, *, max_tries=10000):
        """``n`` galaxies (a list), from ``seed`` (an int, a `numpy.random.SeedSequence` or a
        `numpy.random.Generator`): the same seed, the same galaxies."""
        n = int(n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n and self._candidates.size == 0:
            raise ValueError("no pixel of the grid is far enough from its edges and from what "
                             "avoid excludes; lower edge or avoid_threshold")
        rng = np.random.default_rng(seed)
        priors, grid = self.priors, self.grid
        nx = grid.shape[2]
        v_lo, v_hi = self._band
        galaxies, placed = [], []
        for _ in range(max_tries):
            if len(galaxies) == n:
                break
            k = int(rng.choice(self._candidates))
            y, x = divmod(k, nx)
            x, y = x + rng.uniform(-0.5, 0.5), y + rng.uniform(-0.5, 0.5)
            p = priors.sample(rng)
            if any(math.hypot(x - px, y - py) * self._pixel < self._min_sep
                   for px, py in placed):
                continue
            # check_band made sure this room fits in the band
            room = float(p["v_max"].to_value(_KMS) * np.sin(min(
                p["inclination"].to_value(u.rad) + math.radians(self._tilt), math.pi / 2))
                + 4 * p["dispersion"].to_value(_KMS) + self._speed)
            r_eff = p["r_eff"]
            galaxies.append(priors.with_parameters(Galaxy(
                **priors.parts(p),
                vertical=ExponentialVertical(float(p["thickness"].value) * r_eff),
                kinematics=ArctanRotationCurve(v_max=p["v_max"],
                                               r_turn=float(p["turnover"].value) * r_eff),
                inclination=p["inclination"], position_angle=p["position_angle"] % (360 * u.deg),
                flux=p["flux"], dispersion=p["dispersion"],
                v_sys=rng.uniform(v_lo + room, v_hi - room) * _KMS,
                offset=grid.offset_of_pixel(x, y)), p))
            placed.append((x, y))
        if len(galaxies) < n:
            raise ValueError(f"placed only {len(galaxies)} of {n} galaxies {self.min_separation} "
                             "apart; lower min_separation or n")
        return galaxies

    def __repr__(self):
        return (f"GalaxyPlacer({self.grid!r}, priors={self.priors!r}, "
                f"min_separation={self.min_separation})")


def galaxies_from_table(table, grid):
    """Galaxies from a catalogue (e.g. a truth table `inject` wrote), placed on ``grid``.

    Columns: a position as ``ra``, ``dec`` (angles, ICRS) or ``x_pix``, ``y_pix``
    (0-based array pixels); ``v_sys`` (radio km/s) or ``z`` (redshift of the line's rest
    frequency); and the galaxy's parameters by their declared names (`PARAMETER_COLUMNS`,
    e.g. ``r_eff``, ``n``, ``scale_height``, ``inclination``, ``position_angle``,
    ``dispersion``, ``flux``, ``rotation`` with its law's parameters, and ``distance``
    for sizes given as lengths).  Missing or blank (NaN, masked) cells take the parameter's
    default; old column names (``sersic_n``) are read with a `DeprecationWarning`.
    Unit-less columns where a unit is needed are refused (`~astropy.units.UnitTypeError`
    naming the column).
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
    known = {*Galaxy.flat_parameters(), *Galaxy.LAWS,
             *(a for p in Galaxy.flat_parameters().values() for a in p.aliases)}
    columns = [c for c in table.colnames if c in known and c not in ("v_sys", "offset")]

    def blank(value):
        if isinstance(value, np.ma.core.MaskedConstant):
            return True
        if isinstance(value, str) or np.ndim(value) != 0:
            return False
        return bool(np.isnan(value.value if isinstance(value, u.Quantity) else float(value)))

    galaxies = []
    for k, row in enumerate(table):
        if {"ra", "dec"} <= names:
            offset = grid.offset_of(SkyCoord(row["ra"], row["dec"], frame="icrs"))
        else:
            offset = grid.offset_of_pixel(float(row["x_pix"]), float(row["y_pix"]))
        v_sys = row["v_sys"] if "v_sys" in names else radio_velocity(float(row["z"]))
        values = {c: row[c] for c in columns if c not in TABLE_COLUMNS and not blank(row[c])}
        values.update({c: table_cell(row, c) for c in columns if c in TABLE_COLUMNS})
        for law in Galaxy.LAWS:
            if law in values:
                values[law] = str(values[law]).strip().lower()
        values.update(offset=offset, v_sys=v_sys)
        galaxies.append(Galaxy.from_dict(values, where=f"catalogue row {k}"))
    return galaxies


def truth_table(grid, galaxies, flux_in_cube=None, peak=None, data_unit=None):
    """One row per galaxy: where it is (sky, pixels, velocity, frequency) and all its parameters.

    Sizes are angles (arcsec), so the table re-creates the galaxies exactly with
    `galaxies_from_table` on the same grid.  The parameter columns are `PARAMETER_COLUMNS`,
    in their table units (arcsec, deg, km/s, Jy km/s), and the array columns of
    `TABLE_COLUMNS` (tables padded with NaN; read a cell with `table_cell`); a part's
    parameters are blank (NaN) in the rows of galaxies without it.
    """
    f0 = grid.rest_frequency
    edges = grid.channel_edges.to_value(_KMS)
    channel_index = np.arange(len(edges)) - 0.5
    order = np.argsort(edges)
    place = {"id": None, "ra": u.deg, "dec": u.deg, "x_pix": None, "y_pix": None,
             "channel": None, "v_sys": _KMS, "z": None}
    if f0 is not None:
        place.update(freq_sys=u.GHz, wavelength_sys=u.AA)
    columns = {name: [] for name in place}
    params = {name: [] for name in (*Galaxy.LAWS, *PARAMETER_COLUMNS, *TABLE_COLUMNS)}
    for k, g in enumerate(galaxies):
        flat = g.to_dict()
        x, y = grid.pixel_of([g.to_arcsec("offset", c) for c in g.offset] * u.arcsec)
        v = g.v_sys.to_value(_KMS)
        row = {"id": k, "x_pix": x, "y_pix": y,
               "channel": float(np.interp(v, edges[order], channel_index[order])),
               "v_sys": v, "z": redshift_of_radio_velocity(v)}
        if f0 is not None:
            nu = f0.to_value(u.GHz) * velocity_compression(v)
            row["freq_sys"] = nu
            row["wavelength_sys"] = (nu * u.GHz).to_value(u.AA, equivalencies=u.spectral())
        for name, value in row.items():
            columns[name].append(value)
        for law in Galaxy.LAWS:
            params[law].append(flat[law])
        for name, p in {**PARAMETER_COLUMNS, **TABLE_COLUMNS}.items():
            params[name].append(p.to_table(flat.get(name), g.to_arcsec))
    table = QTable()
    if galaxies:
        sky = grid.wcs.celestial.pixel_to_world(np.array(columns["x_pix"]),
                                                np.array(columns["y_pix"])).icrs
        columns["ra"], columns["dec"] = sky.ra.deg, sky.dec.deg
        for name, unit in place.items():
            values = np.asarray(columns[name], dtype=float if name != "id" else int)
            table[name] = values * unit if unit is not None else values
        for law in Galaxy.LAWS:
            table[law] = np.asarray(params.pop(law))
        for name, values in params.items():
            if name in TABLE_COLUMNS:
                cells = [np.atleast_1d(v) for v in values]
                padded = np.full((len(cells), max(c.size for c in cells)), np.nan)
                for k, c in enumerate(cells):
                    padded[k, :c.size] = c
                values, unit = padded, TABLE_COLUMNS[name].table_unit
            else:
                values, unit = np.asarray(values, dtype=float), PARAMETER_COLUMNS[name].table_unit
            table[name] = values * unit if unit is not None else values
        if flux_in_cube is not None:
            table["flux_in_cube"] = u.Quantity(flux_in_cube)
        if peak is not None:
            table["peak"] = u.Quantity(peak)
    table.meta["rest_frequency"] = None if f0 is None else str(f0.to(u.GHz))
    if data_unit is not None:
        table.meta["data_unit"] = str(data_unit)
    return table
