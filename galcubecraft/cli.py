"""The command line: ``galcubecraft render``, ``plot``, ``inject``, ``dataset``, ``export``,
``fit``."""
import argparse
import errno
import sys
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np


from ._about import version as __version__
from ._files import atomic_path, check_paths, read_toml
from .catalogue import galaxies_from_table, random_galaxies
from .components import RotationCurve, Surface, VerticalProfile
from .dataset import export_fits, generate_dataset
from .fitting import METHODS, FitResult, fit, read_model
from .galaxy import Galaxy
from .grid import CubeGrid
from .header import parse_bunit, read_header
from .inject import Injection, inject
from .lines import LINES
from .parameters import parse_quantity
from .pixelgrid import PIXEL_SAMPLINGS
from .projector import FINER_RADIUS, MIN_BEAM_SIGMA
from .priors import GalaxyPriors, read_priors_file
from .render import render
from .resources import keep_freed_memory

__all__ = ["main", "build_parser", "run"]

#: The reference cube's grid (128 x 128 x 40, 1" pixels, 20 km/s channels, 4" beam), as text.
REFERENCE_GRID = {
    "shape": [40, 128, 128],
    "pixel_scale": "1 arcsec",
    "channel_width": "20 km/s",
    "beam": "4 arcsec",
    "ra": "150 deg",
    "dec": "2 deg",
    "velocity_center": "0 km/s",
    "rest_frequency": "115.2712018 GHz",
}
#: The reference galaxy (an exponential disk rotating to 200 km/s at 60 deg), as text; each
#: rotation law's own defaults under ``laws``.
REFERENCE_GALAXY = {
    "r_eff": "8.4 arcsec",
    "n": 1.0,
    "scale_height": "0.5 arcsec",
    "rotation": "arctan",
    "dispersion": "10 km/s",
    "inclination": "60 deg",
    "position_angle": "30 deg",
    "v_sys": "0 km/s",
    "flux": "30 Jy km/s",
    "offset": ["0 arcsec", "0 arcsec"],
    "laws": {"arctan": {"v_max": "200 km/s", "r_turn": "2 arcsec"},
             "flat": {"v_flat": "200 km/s"},
             "analytic": {"v_0": "200 km/s"}},
}
#: What each [grid] setting is, for --help (the keys and their parsing: `CubeGrid.from_dict`).
GRID_HELP = {
    "pixel_scale": "pixel size",
    "channel_width": "channel width",
    "beam": "beam FWHM major axis, or 'none' for a beam-free Jy/pixel cube",
    "beam_minor": "beam FWHM minor axis (default: = major)",
    "beam_pa": "beam position angle, east of north",
    "ra": "right ascension of the field centre (ICRS)",
    "dec": "declination of the field centre (ICRS)",
    "velocity_center": "radio velocity at the cube's spectral centre",
    "rest_frequency": "rest frequency of the line (RESTFRQ), or a line name such as 'CO(2-1)'",
    "spectral_type": "the cube's spectral axis: VRAD (km/s) or FREQ (Hz)",
    "spectral_response": "line-spread function: 'hanning', or a Gaussian FWHM such as '30 km/s'",
    "projection": "celestial projection code",
    "specsys": "spectral reference frame (SPECSYS)",
    "pixel_sampling": "what a pixel holds: 'point' (the beam-convolved sky at its centre, a "
                      "radio image) or 'average' (over the pixel, an IFU spaxel)",
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default only when it has one worth showing (not None, not False)."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.required or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _law_of(name):
    """The rotation law a flat galaxy parameter belongs to, or None."""
    return next((law for law, cls in RotationCurve.laws.items() if name in cls.declarations),
                None)


def _galaxy_options(group):
    """One option per flat galaxy parameter (from the declarations), its reference default shown."""
    for name, p in Galaxy.flat_parameters().items():
        if p.shape == "1d":
            continue            # tables (a tabulated rotation curve) only in --config
        law = _law_of(name)
        default = REFERENCE_GALAXY["laws"].get(law, {}).get(name) if law else \
            REFERENCE_GALAXY.get(name)
        text = p.help() + (f"; rotation {law!r}" if law else "")
        if default is not None:
            text += f" (default {default!r})"
        if p.shape == (2,):
            group.add_argument(p.flag, dest=name, nargs=2, metavar=("EAST", "NORTH"), help=text)
        else:
            group.add_argument(p.flag, dest=name, help=text)


def build_parser():
    p = argparse.ArgumentParser(
        prog="galcubecraft",
        description="Synthetic spectral cubes of rotating disk galaxies.")
    p.add_argument("--version", action="version", version=f"galcubecraft {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser(
        "render", help="render galaxies into a FITS cube (Jy/beam, RA/Dec/VRAD WCS, beam)",
        description=(
            "Render one or more galaxies into a FITS spectral cube that CASA, CARTA and "
            "spectral-cube open. With no arguments it writes the reference cube: a 128x128x40 "
            "cube of 1 arcsec pixels and 20 km/s channels with a 4 arcsec beam, holding an "
            "exponential disk (r_eff 8.4 arcsec) rotating to 200 km/s, seen at 60 deg "
            "inclination and position angle 30 deg. Values with units are given as strings "
            "such as '8.4 arcsec', '5 kpc' or '20 km/s'. A TOML file (--config) sets the same "
            "keys in a [grid] table and one [[galaxy]] table per galaxy; flags override "
            "its [grid] values, and its [[galaxy]] tables replace the galaxy described by "
            "the galaxy flags."),
        formatter_class=_HelpFormatter)
    r.add_argument("-o", "--output", default="galaxy.fits", help="FITS file to write")
    r.add_argument("--config", help="TOML file with [grid] and [[galaxy]] tables")
    r.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    r.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    r.add_argument("--oversample", type=int, default=2,
                   help="sub-pixel cells per pixel side (accuracy vs speed)")
    r.add_argument("--min-beam-sigma", type=float, default=MIN_BEAM_SIGMA,
                   help="least beam sigma in rendered pixels: a narrower beam is rendered on "
                        "pixels an integer factor finer (docs/rendering.rst)")
    r.add_argument("--finer-radius", type=float, default=FINER_RADIUS,
                   help="galaxies whose r_eff is under this many pixels are rendered on pixels "
                        "twice finer, where their channel maps are narrower than a pixel "
                        "(~0.3%% L1 from converged instead of up to ~2.5%% under a beam of a "
                        "few pixels); 0: every galaxy on the grid's pixels (docs/rendering.rst)")
    g = r.add_argument_group("grid (observation)")
    g.add_argument("--shape", type=int, nargs=3, metavar=("NCHAN", "NY", "NX"),
                   help=f"cube shape (default {REFERENCE_GRID['shape']})")
    for key, text in GRID_HELP.items():
        default = REFERENCE_GRID.get(key)
        g.add_argument("--" + key.replace("_", "-"), dest=key,
                       help=text + (f" (default {default!r})" if default is not None else ""))
    a = r.add_argument_group("galaxy")
    a.add_argument("--rotation", choices=sorted(RotationCurve.laws),
                   help="rotation law: arctan (--v-max, --r-turn), flat (--v-flat), analytic "
                        "(GalCubeCraft 0.1.0's law: --v-0, --r-0); tabulated only in --config "
                        f"(default {REFERENCE_GALAXY['rotation']!r})")
    a.add_argument("--surface", choices=sorted(Surface.laws),
                   help="surface profile: sersic (--r-eff, --n), ring (--ring-radius, "
                        "--ring-width); tabulated only in --config (default 'sersic')")
    a.add_argument("--vertical", choices=sorted(VerticalProfile.laws),
                   help="vertical profile, of --scale-height: exponential, sech2 or gaussian "
                        "(default 'exponential'). Flows (--radial-v-rad, --bar-v-2t, "
                        "--bar-v-2r, --bar-angle, ...) are made by giving their values; "
                        "tabulated amplitudes and warps only in --config")
    _galaxy_options(a)
    q = sub.add_parser(
        "plot", help="plot any FITS cube: moment maps, channel maps, a PV diagram or the spectrum",
        description=(
            "Plot a FITS spectral cube that spectral-cube can read (ours or any other "
            "tool's): moment maps (0, 1, 2) on RA/Dec axes with the beam, a grid of channel "
            "maps, a position-velocity diagram along --pa through the field centre, or the "
            "integrated spectrum in Jy. A frequency axis is shown as radio velocity, which "
            "needs the header's RESTFRQ."),
        formatter_class=_HelpFormatter)
    q.add_argument("cube", help="FITS cube to plot")
    q.add_argument("--kind", choices=("moments", "channels", "pv", "spectrum"),
                   default="moments", help="what to draw")
    q.add_argument("-o", "--output", required=True,
                   help="image file to write (.png, .pdf, .svg)")
    q.add_argument("--pa", default="0 deg",
                   help="position angle of the PV slit, east of north (--kind pv)")
    q.add_argument("--clip", help="moments 1 and 2 from voxels above this: 'N sigma' (N times "
                                  "the cube's robust rms) or a brightness such as "
                                  "'2 mJy/beam' (default: 1e-3 of the peak, for models)")
    q.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    j = sub.add_parser(
        "inject", help="add model galaxies to a real FITS cube, with a truth table",
        description=(
            "Render galaxies on the exact grid, beam and unit of an existing FITS cube "
            "(ALMA, VLA, MeerKAT, MUSE, ...) and add them to its data. The galaxies come from "
            "a catalogue (an ECSV truth table as this command writes: ra/dec or x_pix/y_pix, "
            "v_sys or z, r_eff, inclination, position_angle, flux, ...), from a TOML priors "
            "file ([galaxy] distributions and [placement] n, seed, edge, min_separation, "
            "avoid_threshold), or from the default priors (--random N). Blank (NaN) voxels "
            "stay blank, the header is kept with a HISTORY card, the input is never "
            "written, and OUTPUT and its truth table are written atomically."),
        formatter_class=_HelpFormatter)
    j.add_argument("cube", help="FITS cube to inject into (read only)")
    src = j.add_mutually_exclusive_group(required=True)
    src.add_argument("--catalogue", help="ECSV table of galaxies to inject")
    src.add_argument("--priors", help="TOML priors file for random galaxies")
    src.add_argument("--random", type=int, metavar="N",
                     help="inject N galaxies drawn from the default priors")
    j.add_argument("-o", "--output", required=True, help="FITS file to write")
    j.add_argument("--truth", help="truth table to write (default OUTPUT_truth.ecsv)")
    j.add_argument("--seed", type=int, help="random seed (overrides the priors file's)")
    j.add_argument("--beam", help="beam FWHM (e.g. '0.7 arcsec' for an optical cube's PSF) "
                                  "when the header has none, or 'common' for a cube with a "
                                  "beam per channel")
    j.add_argument("--rest-frequency", help="rest frequency or wavelength of the line, or a "
                                            "line name such as 'CO(2-1)' or 'Halpha', when the "
                                            "header has none")
    j.add_argument("--spectral-unit", help="unit of the spectral axis when the header has no "
                                           "CUNIT")
    j.add_argument("--pixel-sampling", choices=PIXEL_SAMPLINGS, default="point",
                   help="what the cube's pixels hold: the beam-convolved sky at their centres "
                        "(a radio image) or averaged over them (an IFU cube's spaxels)")
    j.add_argument("--data-unit", help="unit of the data when BUNIT is missing or wrong")
    j.add_argument("--avoid-threshold",
                   help="random placement keeps clear of pixels whose peak over the channels "
                        "is at least this: a quantity in the data's unit, or 'N sigma' (N "
                        "times the cube's robust rms)")
    j.add_argument("--edge", help="least distance of a random galaxy's centre from the field's "
                                  "edges and blank pixels (default: twice the largest r_eff "
                                  "of the priors, or 8 pixels)")
    j.add_argument("--min-separation", help="least distance between random galaxies' centres "
                                            "(default: --edge)")
    j.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    j.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT and its truth table if they exist (never the input)")
    d = sub.add_parser(
        "dataset", help="make (or finish) a training set of N cubes from a priors file",
        description=(
            "Render N cubes drawn from a TOML priors file ([dataset] seed/shard_size, [grid], "
            "[noise], [scene], [galaxy], optionally [render] min_beam_sigma/oversample/"
            "finer_radius) into "
            "HDF5 shards (noisy, clean, mask, labels) with a catalogue (cubes.ecsv, "
            "galaxies.ecsv) and a manifest. Cube i depends only on the seed and i. Rerunning "
            "the same command finishes an interrupted dataset: only missing, partial or "
            "corrupt shards are made. --workers N runs a local Dask "
            "cluster of N processes; --scheduler ADDRESS an existing one."),
        formatter_class=_HelpFormatter)
    d.add_argument("priors", help="TOML priors file")
    d.add_argument("--n", type=int, required=True, help="number of cubes")
    d.add_argument("--out", required=True, help="dataset folder")
    d.add_argument("--seed", type=int, help="dataset seed (overrides [dataset] seed)")
    d.add_argument("--shard-size", type=int, help="cubes per shard (default: the priors', "
                                                  "or 64)")
    d.add_argument("--workers", type=int, default=1,
                   help="local Dask worker processes of one thread each (1: in this "
                        "process, a render block of 16 cubes on each of torch's threads)")
    d.add_argument("--scheduler", help="address of a running dask.distributed scheduler")
    d.add_argument("--device", default="cpu",
                   help="where to render: 'cpu' or 'cuda' (a GPU dataset draws its noise "
                        "there, and is finished only on a GPU)")
    d.add_argument("--no-compression", action="store_true",
                   help="store clean, mask and labels uncompressed (about 1.7x the disk, "
                        "about 15%% faster; noisy is never compressed)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.add_argument("--no-space-check", action="store_true",
                   help="do not refuse a dataset larger (uncompressed) than the free disk space")
    x = sub.add_parser(
        "export", help="write cubes of a dataset as FITS (for CASA, CARTA, spectral-cube)",
        description="Write the noisy and clean cubes of the given indices of a dataset as "
                    "FITS files with WCS, beam and NOISERMS.",
        formatter_class=_HelpFormatter)
    x.add_argument("dataset", help="dataset folder")
    x.add_argument("--indices", required=True,
                   help="cube indices: 'A:B' (B excluded) or a comma-separated list")
    x.add_argument("-o", "--output", required=True, help="folder for the FITS files")
    x.add_argument("--overwrite", action="store_true", help="replace existing files")
    f = sub.add_parser(
        "fit", help="fit a model to a FITS cube: best fit and posterior, with gradients",
        description=(
            "Fit a model to a FITS cube: the best fit by L-BFGS from the data's moments "
            "(map), the posterior's Gaussian approximation by autograd (laplace), or the "
            "posterior and evidence by nested sampling (nested, needs the fit extra: "
            "pip install 'galcubecraft[fit]'). The model file's [galaxy] table holds every "
            "parameter fixed (\"60 deg\") or with a prior ({distribution = \"uniform\", "
            "low = ..., high = ...}), tables node by node. The likelihood whitens the "
            "noise's correlation by the beam and the spectral response. Writes fit.ecsv "
            "(best fit, median, 16/84 percentiles, evidence), samples.ecsv, model.fits, "
            "residual.fits and the figures (data.png, model.png, residual.png: moments and "
            "PV diagrams; corner.png) in OUT, atomically; existing results are kept unless "
            "--overwrite."),
        formatter_class=_HelpFormatter)
    f.add_argument("cube", help="FITS cube to fit (read only)")
    f.add_argument("--model", required=True, help="TOML model file with a [galaxy] table")
    f.add_argument("-o", "--out", required=True, help="folder for the results")
    f.add_argument("--method", choices=METHODS, default="laplace", help="fitting method")
    f.add_argument("--noise", help="noise rms per channel in the cube's unit, e.g. "
                                   "'3.1 mJy/beam' (default: the sigma-clipped MAD of each "
                                   "channel)")
    f.add_argument("--beam", help="the beam's FWHM, e.g. '4.5 arcsec', for a cube whose "
                                  "header has none")
    f.add_argument("--region", help="the sub-cube to fit, 'C0:C1,Y0:Y1,X0:X1' (0-based "
                                    "channels, rows and columns, ends excluded; an empty "
                                    "field is the whole axis): only it is read")
    f.add_argument("--starts", type=int, default=1,
                   help="L-BFGS starts, the best of a screened batch of guesses")
    f.add_argument("--draws", type=int, default=4000, help="posterior draws (laplace, nested)")
    f.add_argument("--live", type=int, default=1000, help="live points (nested)")
    f.add_argument("--seed", type=int, default=0, help="seeds the starts and the draws")
    f.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    f.add_argument("--spectral-unit", help="unit of the spectral axis when the header has no "
                                           "CUNIT (default: the FITS standard's, with a "
                                           "warning)")
    f.add_argument("--no-plots", action="store_true", help="write no figures")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.add_argument("--overwrite", action="store_true", help="replace results in OUT")
    return p


def fit_command(args):
    """``galcubecraft fit``: fit a model file to a cube and write the results."""
    model = read_model(args.model)
    region = None if args.region is None else _region(args.region)
    from spectral_cube import SpectralCube
    try:
        cube = SpectralCube.read(args.cube)
    except OSError:
        raise
    except Exception as exc:        # noqa: BLE001 - astropy's readers raise many kinds
        raise ValueError(f"cannot read {args.cube} as a spectral cube: {_one_line(exc)}") \
            from None
    beam = None if args.beam is None else parse_quantity("--beam", args.beam)
    try:
        grid = CubeGrid.from_fits(cube, spectral_unit=args.spectral_unit, beam=beam)
    except ValueError as exc:
        if "no beam" in str(exc):
            raise ValueError(f"{args.cube} has no beam (BMAJ/BMIN/BPA): give one with --beam, "
                             "e.g. --beam '4.5 arcsec'") from None
        raise
    noise = None if args.noise is None else parse_quantity("--noise", args.noise)
    out = Path(args.out)
    names = [*FitResult.FILES, *(() if args.no_plots else FitResult.FIGURES)]
    for name in names:
        if (out / name).exists() and not args.overwrite:
            raise FileExistsError(errno.EEXIST, "file exists", str(out / name))
    result = fit(cube, model, method=args.method, grid=grid, region=region, noise=noise,
                 starts=args.starts, draws=args.draws, live=args.live, seed=args.seed,
                 device=args.device, progress=not args.no_progress)
    result.write(out, overwrite=args.overwrite, plots=not args.no_plots)
    result.table.pprint_all()
    evidence = ("" if result.log_evidence is None else
                f"; log evidence {result.log_evidence:.2f}")
    print(f"chi2 {result.chi2:.1f} for {result.n_modes} whitened modes{evidence}; results "
          f"in {out}/")
    return 0


def _region(text):
    """``'C0:C1,Y0:Y1,X0:X1'`` as three slices (empty fields: the whole axis)."""
    fields = text.split(",")
    if len(fields) > 3:
        raise ValueError(f"--region takes up to three ranges 'C0:C1,Y0:Y1,X0:X1', got {text!r}")
    out = []
    for field in fields:
        field = field.strip()
        if not field:
            out.append(slice(None))
            continue
        try:
            start, stop = (int(x) if x.strip() else None for x in field.split(":"))
        except ValueError:
            raise ValueError(f"--region: {field!r} is not a range START:STOP of whole "
                             f"numbers") from None
        out.append(slice(start, stop))
    return tuple(out)


def dataset_command(args):
    """``galcubecraft dataset``: generate or finish a dataset."""
    manifest = generate_dataset(args.priors, args.n, args.out, seed=args.seed,
                                workers=args.workers, scheduler=args.scheduler,
                                shard_size=args.shard_size, progress=not args.no_progress,
                                check_space=not args.no_space_check, device=args.device,
                                compression=None if args.no_compression else "gzip")
    print(f"dataset of {args.n} cubes in {args.out} ({manifest.name}, cubes.ecsv, "
          f"galaxies.ecsv)")
    return 0


def export_command(args):
    """``galcubecraft export``: FITS files of chosen cubes of a dataset."""
    text = args.indices.strip()
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            indices = range(int(a), int(b))
        else:
            indices = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--indices must be 'A:B' (B excluded) or a comma-separated list of "
                         f"integers, got {args.indices!r}") from None
    written = export_fits(args.dataset, indices, args.output, overwrite=args.overwrite)
    print(f"wrote {len(written)} FITS files to {args.output}")
    return 0


def _beam_option(text):
    if text is None or text == "common":
        return text
    return parse_quantity("beam", text)


def _avoid_map(path, threshold, unit):
    """The per-pixel peak of a cube, and the threshold in its unit ('N sigma' from the MAD)."""
    from astropy.io import fits
    from astropy.stats import mad_std
    data = np.asarray(fits.getdata(path), dtype=float)
    data = data.reshape((-1,) + data.shape[-2:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)       # all-NaN (blank) pixels
        peak = np.nanmax(data, axis=0)
    text = str(threshold).strip()
    if text.endswith("sigma"):
        factor = float(text[:-5])
        return peak, factor * float(mad_std(data, ignore_nan=True))
    return peak, parse_quantity("avoid_threshold", text).to_value(unit)


def inject_command(args):
    """``galcubecraft inject``: add galaxies to a cube, write it and its truth table."""
    from astropy.table import QTable

    truth = args.truth or Injection.default_truth_path(args.output)
    check_paths({"the input cube": args.cube, "--catalogue": args.catalogue,
                 "--priors": args.priors},
                {"--output": args.output, "--truth": truth}, overwrite=args.overwrite)
    options = dict(beam=_beam_option(args.beam), rest_frequency=(
        None if args.rest_frequency is None else _line_or_quantity(args.rest_frequency)),
        spectral_unit=args.spectral_unit, pixel_sampling=args.pixel_sampling)
    grid = CubeGrid.from_fits(args.cube, **options)
    if args.catalogue:
        try:
            table = QTable.read(args.catalogue)
        except OSError:
            raise                       # a missing file: its own message names it
        except Exception as exc:        # noqa: BLE001 - astropy's readers raise many kinds
            raise ValueError(f"--catalogue {args.catalogue}: not a table astropy can read "
                             f"({type(exc).__name__}: {_one_line(exc)})") from None
        galaxies = galaxies_from_table(table, grid)
    else:
        if args.priors:
            priors, placement = read_priors_file(args.priors)
        else:
            priors, placement = GalaxyPriors(), {"n": args.random}
        if args.seed is not None:
            placement["seed"] = args.seed
        for key in ("edge", "min_separation"):
            if getattr(args, key) is not None:
                placement[key] = parse_quantity("--" + key.replace("_", "-"), getattr(args, key))
        threshold = args.avoid_threshold or placement.pop("avoid_threshold", None)
        placement.pop("avoid_threshold", None)
        avoid = None
        if threshold is not None:
            header, _ = read_header(args.cube)
            unit = (u.Unit(args.data_unit) if args.data_unit
                    else parse_bunit(header.get("BUNIT")))
            avoid, threshold = _avoid_map(args.cube, threshold, unit)
        n = placement.pop("n", 1)
        galaxies = random_galaxies(grid, n, priors=priors, avoid=avoid,
                                   avoid_threshold=threshold, **placement)
    result = inject(args.cube, galaxies, data_unit=args.data_unit, device=args.device,
                    **options)
    cube_path, truth_path = result.write(args.output, truth=truth, overwrite=args.overwrite)
    print(f"wrote {cube_path}: {len(galaxies)} galaxy(ies) injected into {args.cube}; "
          f"truth in {truth_path}")
    return 0


def _line_or_quantity(text):
    return text if text in LINES else parse_quantity("rest_frequency", text)


def _settings(args):
    """The grid settings and the galaxies' flat dictionaries: the reference cube, a --config
    file's [grid] and [[galaxy]] tables over it, and the flags over those."""
    grid_cfg, galaxies = dict(REFERENCE_GRID), None
    if args.config:
        cfg = read_toml(args.config)
        unknown = set(cfg) - {"grid", "galaxy"}
        if unknown:
            raise ValueError(f"unknown table(s) in {args.config}: {', '.join(sorted(unknown))}")
        grid_cfg.update(cfg.get("grid", {}))
        galaxies = cfg.get("galaxy")
        if "redshift" in cfg.get("grid", {}) and "velocity_center" not in cfg["grid"]:
            grid_cfg.pop("velocity_center")         # the band is centred on the redshift
    for key in GRID_HELP:
        if getattr(args, key, None) is not None:
            grid_cfg[key] = getattr(args, key)
    if args.shape is not None:
        grid_cfg["shape"] = args.shape
    if galaxies is None:
        names = (*Galaxy.LAWS, *Galaxy.flat_parameters())
        galaxies = [{k: getattr(args, k) for k in names if getattr(args, k, None) is not None}]
    return grid_cfg, galaxies


def plot(args):
    """``galcubecraft plot``: draw one kind of figure from a FITS cube and write it atomically."""
    import matplotlib
    matplotlib.use("Agg")
    from spectral_cube import SpectralCube

    from matplotlib.figure import Figure

    from . import visualise
    check_paths({"the input cube": args.cube}, {"--output": args.output},
                overwrite=args.overwrite)
    fmt = args.output.rsplit(".", 1)[-1].lower() if "." in args.output else "png"
    formats = Figure().canvas.get_supported_filetypes()
    if fmt not in formats:
        raise ValueError(f"--output: cannot write a .{fmt} image; use one of "
                         f"{', '.join('.' + f for f in sorted(formats))}")
    try:
        cube = SpectralCube.read(args.cube)
    except Exception as exc:       # noqa: BLE001 - spectral-cube raises many kinds for non-cubes
        raise ValueError(f"cannot read {args.cube} as a spectral cube ({type(exc).__name__}: "
                         f"{_one_line(exc)})") from None
    if args.kind == "moments":
        mask = None if args.clip is None else visualise.clip_mask(cube, args.clip, "--clip")
        fig = visualise.moment_maps(cube, mask=mask, moments=(0, 1, 2))
    elif args.kind == "channels":
        fig = visualise.channel_maps(cube)
    elif args.kind == "pv":
        fig = visualise.pv_diagram(cube, parse_quantity("pa", args.pa))
    else:
        fig = visualise.spectrum(cube)
    with atomic_path(args.output, overwrite=args.overwrite) as tmp:
        fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
    print(f"wrote {args.output}: {args.kind} of {args.cube}")
    return 0


def render_command(args):
    """``galcubecraft render``: one cube from flags or a TOML file, written to FITS."""
    check_paths({"--config": args.config}, {"--output": args.output}, overwrite=args.overwrite)
    if not str(args.output).lower().endswith((".fits", ".fit", ".fts", ".fits.gz")):
        raise ValueError(f"--output must be a FITS file name (.fits or .fits.gz), got "
                         f"{args.output!r}")
    grid_cfg, galaxy_cfgs = _settings(args)
    grid = CubeGrid.from_dict(grid_cfg)
    galaxies = [Galaxy.from_dict(c, defaults=REFERENCE_GALAXY, where=f"galaxy {k + 1}")
                for k, c in enumerate(galaxy_cfgs)]
    cube = render(galaxies, grid, device=args.device, oversample=args.oversample,
                  min_beam_sigma=args.min_beam_sigma, finer_radius=args.finer_radius)
    cube.write(args.output, overwrite=args.overwrite)
    data = cube.unitless_filled_data[:]
    total = grid.integrated_flux(data)
    print(f"wrote {args.output}: {len(galaxies)} galaxy(ies), shape {grid.shape}, {cube.unit}, "
          f"peak {np.max(data):.4g}, integrated flux {total:.4g}")
    return 0


#: Errors that mean bad input (a flag, a file, a header), reported in one line with status 2.
_INPUT_ERRORS = (ValueError, TypeError, KeyError, IndexError, u.UnitsError,
                 OSError)
COMMANDS = {"render": render_command, "plot": plot, "inject": inject_command,
            "dataset": dataset_command, "export": export_command, "fit": fit_command}


def _one_line(exc):
    """An error's message on one line (other libraries' messages can run to tables)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[0] + (" [...]" if len(lines) > 1 else "")) if lines else type(exc).__name__


def main(argv=None):
    args = build_parser().parse_args(argv)
    prefix = f"galcubecraft {args.command}"

    def one_line(message, category, *_):
        print(f"{prefix}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        # the package's deprecations reach the user of the command, in one line each
        warnings.filterwarnings("default", category=DeprecationWarning, module="galcubecraft")
        warnings.showwarning = one_line
        try:
            return COMMANDS[args.command](args)
        except FileExistsError as exc:
            what = exc.strerror if str(exc.strerror).endswith(" exists") else \
                f"{exc.filename or exc} exists"
            print(f"{prefix}: error: {what}; use --overwrite", file=sys.stderr)
            return 2
        except _INPUT_ERRORS as exc:
            print(f"{prefix}: error: {_one_line(exc)}", file=sys.stderr)
            return 2


def run():
    """The ``galcubecraft`` command: `main`, in a process that keeps the memory of the large
    arrays it frees (`~galcubecraft.resources.keep_freed_memory`: large renders on the CPU
    ~1.16x faster)."""
    keep_freed_memory()
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
