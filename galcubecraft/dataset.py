"""Training sets of any size: priors in, HDF5 shards and a catalogue out, on Dask.

A dataset is described once, by a priors file (`DatasetSpec`), and made by
`generate_dataset` (or ``galcubecraft dataset PRIORS --n N --out DIR``):

* **Seeds.** Cube ``i`` is drawn from its own stream,
  ``numpy.random.SeedSequence(seed, spawn_key=(i,))``, and rendered with the other cubes
  of its render block (`render_blocks`: the `RENDER_BATCH` cubes from a multiple of it,
  their galaxies in one projector batch, whole whatever part of it is wanted), so it is
  the same bytes whatever the shard size, the number of cubes, workers or threads, or the
  order they run in.  On a GPU (``device``) the galaxies of a batch of cubes are rendered
  together in float32, with atomic sums: a cube is the same to float32 rounding, not to
  the byte.
* **Shards.** Cubes ``[j K, (j + 1) K)`` go to ``shard_<j>.h5``: HDF5, one chunk per
  cube and array, holding ``noisy``, ``clean``, ``mask`` and ``labels`` (all but the
  incompressible ``noisy`` compressed, gzip + shuffle) and the shard's rows of the
  catalogue.  A shard's cubes are observed by render blocks (`GPU_RENDER_BATCH` at a time
  on a GPU) on tensors
  (`~galcubecraft.observe_batch`) while a thread writes the previous batch.  HDF5 rather than
  Zarr because a shard has one writer and must appear all at once: it is one
  file, written under a temporary name and renamed when complete, its SHA-256
  then recorded beside it; h5py, PyTorch data loaders, IDL and MATLAB read it
  directly.  A shard is valid when its file and checksum exist and agree.
* **Resume.** Running the same command again makes only the shards that are
  missing, partial (temporary files are removed) or not what they should be: a shard is
  kept only if its SHA-256 matches and its own attributes say it holds cubes
  ``[j K, (j + 1) K)`` of this seed and these priors (a swapped or foreign shard is
  remade); nothing is duplicated or lost.  A damaged ``manifest.json`` is rewritten; a
  manifest of other priors is refused once a shard exists, and replaced before.
* **One run per folder.** A run holds an exclusive lock on ``<out>/.lock`` from start to
  end (`lock_folder`); a second run on the same folder stops at once with
  `DatasetInUse`, naming the holder's process and host.
* **Reading back.** `CubeDataset` checks each shard's checksum against the manifest and
  its attributes the first time a process opens it (`CorruptShard` otherwise).
* **Dask.** Each shard is one task; what a worker receives is the priors (a small
  dict), the seed and the shard's index range; what the scheduler keeps is the
  futures and each shard's checksum.  By default the work runs in this process;
  ``workers=N`` starts a `~distributed.LocalCluster` of N single-threaded
  processes, and ``scheduler='tcp://...'`` uses an existing cluster (for SLURM or
  PBS, start one with dask-jobqueue and pass its address).
* **Catalogue.** ``cubes.ecsv`` (one row per cube: noise rms, S/N, number of
  galaxies) and ``galaxies.ecsv`` (one row per galaxy: the truth table of
  `galcubecraft.catalogue.truth_table` with the cube index); ``manifest.json``
  records the package version, the priors, the seed, the grid and the shards, so
  that a dataset can be re-made exactly.

Feed torch with `CubeDataset` (a written dataset) or `StreamingCubes` (cubes rendered
on the fly, with no disk in between).
"""
import copy
import errno
import hashlib
import io
import json
import math
import os
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import astropy.units as u
import numpy as np
import torch
from astropy.table import QTable, vstack

from ._about import version as __version__
from ._files import atomic_path, read_toml, remove_stale_parts
from .catalogue import GalaxyPlacer, pad_columns, stack_tables
from .cube import to_spectral_cube
from .grid import CubeGrid
from .noise import NoiseModel
from .observation import ObservedBatch, observe, observe_batch
from .parameters import parse_quantity
from .population import SeedPopulation
from .priors import GalaxyPriors, distribution_from_spec
from .projector import Projector, check_device, single_threaded_renders
from .resources import format_bytes, freed_memory_environ
from .response import SampledGaussian


__all__ = ["DatasetSpec", "generate_dataset", "CubeDataset", "StreamingCubes", "export_fits",
           "read_catalogue", "lock_folder", "shard_problem", "priors_digest", "render_blocks",
           "DatasetError", "DatasetInUse", "CorruptShard"]

_KMS = u.km / u.s
FORMAT = "galcubecraft-dataset"
#: The layout of shards and manifest and the rule by which cubes are rendered together
#: (`render_blocks`): 2 since the blocks of `RENDER_BATCH` (1: each cube alone).  A dataset
#: is finished only by code of its own format version.
FORMAT_VERSION = 2
ARRAYS = ("noisy", "clean", "mask", "labels")
#: How each array is stored and served.
STORED = {"noisy": torch.float32, "clean": torch.float32, "mask": torch.uint8,
          "labels": torch.int16}
_GRID_KEYS = set(CubeGrid.DICT_KEYS)
_NOISE_KEYS = {"rms", "peak_snr", "integrated_snr", "correlation", "spectral"}
_SCENE_KEYS = {"n_galaxies", "edge", "min_separation", "mask_threshold"}
_DATASET_KEYS = {"seed", "shard_size"}
#: The projector's sampling a priors file may set (`~galcubecraft.Projector`'s keywords).
_RENDER_KEYS = {"min_beam_sigma", "oversample", "finer_radius"}


def _quantity(name, text, unit):
    q = parse_quantity(name, text)
    if not q.unit.is_equivalent(unit):
        raise u.UnitsError(f"{name} must be in units of {unit}, got {q.unit or 'no unit'}")
    return q


class DatasetSpec:
    """A population and an observation, from a priors file or a dict; checked up front.

    The priors file has the tables ``[dataset]`` (``seed``, ``shard_size``),
    ``[grid]`` (``shape``, ``pixel_scale``, ``channel_width``, ``beam``,
    ``rest_frequency``, ``spectral_type``, ``spectral_response`` = ``"hanning"`` or a
    Gaussian LSF FWHM such as ``"30 km/s"``, ``velocity_center``), ``[noise]``
    (one of ``rms``, ``peak_snr``, ``integrated_snr``, each fixed or a distribution;
    ``correlation``, ``spectral``), ``[scene]`` (``n_galaxies``, fixed or a
    distribution; ``edge``; ``min_separation``; ``mask_threshold``) and
    ``[galaxy]`` (`~galcubecraft.priors.GalaxyPriors`), and optionally ``[render]``
    (the projector's ``min_beam_sigma``, ``oversample`` and ``finer_radius``: by default disks
    smaller than 8 pixels in r_eff are rendered on pixels twice finer, ~0.3% L1 from converged
    instead of up to ~2.5% under a beam of a few pixels; ``finer_radius = 0`` takes that back
    for ~1.2x the rate; docs/rendering.rst).  Every key is checked
    before any work starts.  Galaxies are placed as by
    `galcubecraft.catalogue.random_galaxies` (a `~galcubecraft.catalogue.GalaxyPlacer`).

    Instead of ``[grid]``, ``[scene]`` and ``[galaxy]``, a ``[preset]`` table with
    ``name = "galcubecraft-0.1"`` takes GalCubeCraft 0.1.0's population
    (`~galcubecraft.SeedPopulation`; options ``n_gals``, ``resolution``,
    ``offset_gals``, ``beam_info``, ``grid_size``, ``n_spectral_slices``,
    ``spectral_smoothing``), as `~galcubecraft.GalCubeCraft` draws it.
    """

    def __init__(self, config):
        config = copy.deepcopy(dict(config))
        unknown = set(config) - {"dataset", "grid", "noise", "scene", "galaxy", "preset",
                                 "render"}
        if unknown:
            raise ValueError(f"unknown table(s) {sorted(unknown)}; expected [dataset], [grid], "
                             "[noise], [scene], [galaxy] (or [preset]), [render]")
        for section, keys in (("dataset", _DATASET_KEYS), ("grid", _GRID_KEYS),
                              ("noise", _NOISE_KEYS), ("scene", _SCENE_KEYS),
                              ("render", _RENDER_KEYS)):
            bad = set(config.get(section, {})) - keys
            if bad:
                raise ValueError(f"unknown key(s) {sorted(bad)} in [{section}]; known: "
                                 f"{sorted(keys)}")
        self.config = config
        ds = config.get("dataset", {})
        self.seed = ds.get("seed")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"[dataset] seed must be a non-negative integer, got {self.seed!r}")
        self.shard_size = ds.get("shard_size", 64)
        if not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise ValueError(f"[dataset] shard_size must be a positive integer, got "
                             f"{self.shard_size!r}")
        self.population = None
        if "preset" in config:
            self._preset(config)
        else:
            self.grid = self._grid(config.get("grid", {}))
        self.galaxy_priors = GalaxyPriors(**config.get("galaxy", {}))
        self._noise_cfg = self._noise(config.get("noise", {}))
        scene = config.get("scene", {})
        self.n_galaxies = distribution_from_spec("n_galaxies", scene.get("n_galaxies", 1))
        low, _ = self.n_galaxies.support()
        if not self.n_galaxies.unit.is_equivalent(u.one) or low.value < 1:
            raise ValueError(f"n_galaxies must be a count >= 1, got {self.n_galaxies!r}")
        self.edge = (None if "edge" not in scene else
                     _quantity("edge", scene["edge"], u.arcsec))
        self.min_separation = _quantity("min_separation", scene.get("min_separation", "0 arcsec"),
                                        u.arcsec)
        self.mask_threshold = scene.get("mask_threshold")
        if self.population is None:
            try:        # (checks the band, the edge and the separation)
                self._placer = GalaxyPlacer(self.grid, priors=self.galaxy_priors,
                                            edge=self.edge, min_separation=self.min_separation)
            except ValueError as exc:
                raise type(exc)(f"[scene]/[galaxy]: {exc}") from None
        self.render_options = dict(config.get("render", {}))
        try:        # the projector checks its own keywords (and the memory the grid needs)
            self.projector()
        except (ValueError, TypeError) as exc:
            if not self.render_options:
                raise
            raise type(exc)(f"[render]: {exc}") from None
        # a first cube's galaxies, drawn (not rendered) now: a placement the grid cannot hold
        # fails here, before any file is written, rather than in the first shard
        try:
            self.draw(0, 0 if self.seed is None else self.seed)
        except ValueError as exc:
            raise ValueError(f"[scene]/[galaxy]: the first cube cannot be drawn: {exc}") \
                from None

    #: Presets: populations ready to use, with the options they take.
    PRESETS = {"galcubecraft-0.1": {"n_gals", "resolution", "offset_gals", "beam_info",
                                    "grid_size", "n_spectral_slices", "spectral_smoothing"}}

    def _preset(self, config):
        """``[preset] name = "galcubecraft-0.1"``: GalCubeCraft 0.1.0's population and grid."""
        preset = dict(config["preset"])
        name = preset.pop("name", None)
        if name not in self.PRESETS:
            raise ValueError(f"[preset] name must be one of {sorted(self.PRESETS)}, got {name!r}")
        bad = set(preset) - self.PRESETS[name]
        if bad:
            raise ValueError(f"unknown [preset] option(s) {sorted(bad)}; known: "
                             f"{sorted(self.PRESETS[name])}")
        clash = {"grid", "scene", "galaxy"} & set(config)
        if clash:
            raise ValueError(f"the preset describes the grid and the galaxies itself; remove "
                             f"{sorted(clash)}")
        smoothing = float(preset.pop("spectral_smoothing", 0.6))
        self.population = SeedPopulation(**preset)
        self.grid = self.population.grid(SampledGaussian(smoothing) if smoothing > 0 else None)

    @classmethod
    def from_toml(cls, path):
        return cls(read_toml(path))

    #: The ``[grid]`` of a priors file that sets none of it.
    GRID_DEFAULTS = {"shape": [32, 64, 64], "pixel_scale": "1 arcsec",
                     "channel_width": "20 km/s", "beam": "3 arcsec",
                     "rest_frequency": "CO(1-0)", "velocity_center": "0 km/s"}

    @classmethod
    def _grid(cls, cfg):
        return CubeGrid.from_dict({**cls.GRID_DEFAULTS, **cfg})

    def _noise(self, cfg):
        levels = [k for k in ("rms", "peak_snr", "integrated_snr") if k in cfg]
        if len(levels) > 1:
            raise ValueError(f"[noise] takes one of rms, peak_snr, integrated_snr; got {levels}")
        if not levels:
            return None
        kind = levels[0]
        dist = distribution_from_spec(kind, cfg[kind])
        unit = self.grid.unit if kind == "rms" else u.one
        if not dist.unit.is_equivalent(unit):
            raise u.UnitsError(f"[noise] {kind} must be in units of {unit}, got "
                               f"{dist.unit or 'no unit'}")
        if dist.support()[0].value <= 0:
            raise ValueError(f"[noise] {kind} must be > 0, got {dist!r}")
        correlation = cfg.get("correlation", "beam" if self.grid.beam is not None else "white")
        if correlation not in ("beam", "white"):
            raise ValueError(f"[noise] correlation must be 'beam' or 'white', got "
                             f"{correlation!r}")
        return {"kind": kind, "distribution": dist, "correlation": correlation,
                "spectral": bool(cfg.get("spectral", True))}

    # ------------------------------------------------------------------ one cube
    def draw(self, index, seed):
        """Cube ``index``'s galaxies, noise model and noise generator."""
        streams = np.random.SeedSequence(seed, spawn_key=(int(index),)).spawn(2)
        rng = np.random.default_rng(streams[0])
        if self.population is not None:
            galaxies = self.population.draw(int(index), rng)["objects"]
        else:
            n = int(round(float(self.n_galaxies.sample(rng).value)))
            galaxies = self._placer.draw(n, rng)
        noise = None
        if self._noise_cfg is not None:
            level = self._noise_cfg["distribution"].sample(rng)
            kw = {self._noise_cfg["kind"]: level if self._noise_cfg["kind"] == "rms"
                  else float(level.value)}
            noise = NoiseModel(correlation=self._noise_cfg["correlation"],
                               spectral=self._noise_cfg["spectral"], **kw)
        return galaxies, noise, np.random.default_rng(streams[1])

    def projector(self, device=None):
        """A `~galcubecraft.Projector` for the grid, with the ``[render]`` options."""
        return Projector(self.grid, device=device, **self.render_options)

    def make(self, index, seed, projector=None):
        """Render cube ``index``: an `~galcubecraft.Observation`."""
        galaxies, noise, noise_rng = self.draw(index, seed)
        return observe(galaxies, self.grid, noise, seed=noise_rng,
                       mask_threshold=self.mask_threshold,
                       projector=self.projector() if projector is None else projector)

    def make_batch(self, indices, seed, projector=None, together=False, dtype=torch.float64):
        """Render cubes ``indices`` at once: an `~galcubecraft.ObservedBatch` on the
        projector's device (`~galcubecraft.observe_batch`; ``together``: all their galaxies in
        one projector batch)."""
        draws = [self.draw(index, seed) for index in indices]
        return observe_batch([d[0] for d in draws], self.grid, [d[1] for d in draws],
                             [d[2] for d in draws], mask_threshold=self.mask_threshold,
                             projector=self.projector() if projector is None else projector,
                             together=together, dtype=dtype)


# --------------------------------------------------------------------------- shards
def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _table_to_h5(group, name, table):
    """A QTable as a structured dataset, its units in an attribute."""
    columns, units = [], {}
    for col in table.colnames:
        value = table[col]
        if isinstance(value, u.Quantity):
            units[col] = value.unit.to_string()
            value = value.value
        value = np.asarray(value)
        if value.dtype.kind in "UO":
            value = value.astype("S32")
        columns.append((col, value))
    dtype = [(c, v.dtype, v.shape[1:]) for c, v in columns]
    data = np.zeros(len(table), dtype=dtype)
    for c, v in columns:
        data[c] = v
    ds = group.create_dataset(name, data=data, track_times=False)
    ds.attrs["units"] = json.dumps(units)


def _table_from_h5(ds):
    data = ds[()]
    units = json.loads(ds.attrs["units"])
    table = QTable()
    for name in data.dtype.names:
        col = data[name]
        if col.dtype.kind == "S":
            col = col.astype(str)
        table[name] = col * u.Unit(units[name]) if name in units else col
    return table


def _batch_options(device):
    """How a batch is observed on ``device``: its galaxies rendered together in one projector
    batch (fewer, larger calls; on a CPU, groups of galaxies at once on the threads), then,
    on a CPU, the sums, masks and noise in float64, on a GPU in float32."""
    on_cpu = torch.device(device).type == "cpu"
    return dict(together=True, dtype=torch.float64 if on_cpu else torch.float32)


def render_blocks(start, stop, size=None):
    """The render blocks that cover cubes ``[start, stop)``: ranges of ``size`` (default
    `RENDER_BATCH`) cubes from a multiple of ``size``.

    On a CPU each block is observed whole, whatever part of it is wanted:
    the sums of a block's galaxies rendered together depend on which galaxies they are, so
    cube ``i`` is the same bytes in every dataset and stream of the same priors and seed (any
    shard size, number of cubes, start, batch size or worker count) only if its block is."""
    size = RENDER_BATCH if size is None else size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if start < 0 or stop < start:
        raise ValueError(f"render_blocks needs 0 <= start <= stop, got {start!r}, {stop!r}")
    size = int(size)
    first = (int(start) // size) * size
    while first < stop:
        yield range(first, first + size)
        first += size


def _observe_ranges(spec, ranges, seed, projector):
    """``(cubes, batch)`` for each range ``cubes`` of ``ranges`` (an iterable of non-empty,
    increasing ranges; it may be endless), in order: its `~galcubecraft.ObservedBatch` on the
    projector's device.

    On a GPU each range is observed at once (`GPU_RENDER_BATCH`: see there).  On a CPU each
    is cut from the whole `render_blocks` that cover it, each block observed once (ranges
    that share one share it) on one thread (`~galcubecraft.projector.single_threaded_renders`),
    as many blocks at once as torch has threads, ahead of the range that needs them: the
    threads share the cores without a barrier at every kernel, and a block is the same bytes
    on any number of them (torch's FFTs, for one, round differently on two threads than on
    one).  Memory: that many blocks in flight, and those of the range being yielded."""
    ranges = iter(ranges)
    make = _batch_options(projector.device)
    if projector.device.type != "cpu":
        for cubes in ranges:
            yield cubes, spec.make_batch(cubes, seed, projector, **make)
        return

    def observe(block):
        return spec.make_batch(block, seed, projector, **make)
    at_once = torch.get_num_threads()
    pool = None if at_once == 1 else ThreadPoolExecutor(
        at_once, thread_name_prefix="render-block", initializer=single_threaded_renders)
    queue = []          # ranges read, not yet yielded, with their blocks
    observed = {}       # block -> its Future (on a pool) or batch, in order of need
    done, read_to = False, 0

    def read():
        """Read the next range and start its blocks; False at the end of ``ranges``."""
        cubes = next(ranges, None)
        if cubes is None:
            return False
        nonlocal read_to
        if len(cubes) == 0 or cubes.start < read_to:
            raise ValueError(f"ranges must be non-empty and increasing, got {cubes!r} after "
                             f"cubes up to {read_to}")
        read_to = cubes.stop
        blocks = list(render_blocks(cubes.start, cubes.stop))
        for block in blocks:
            if block not in observed:
                observed[block] = pool.submit(observe, block) if pool is not None else None
        queue.append((cubes, blocks))
        return True
    try:
        while True:
            while not done and not queue:
                done = not read()
            if not queue:
                return
            # the blocks before the next range are not needed again (the ranges increase)
            for block in [b for b in observed if b.stop <= queue[0][0].start]:
                del observed[block]
            # on a pool, as many blocks beyond the next range's as it has threads, less one
            while pool is not None and not done and \
                    sum(b not in queue[0][1] for b in observed) < at_once - 1:
                done = not read()
            cubes, blocks = queue.pop(0)
            parts = []
            for block in blocks:
                if pool is not None:
                    batch = observed[block].result()
                else:
                    if observed[block] is None:
                        observed[block] = observe(block)
                    batch = observed[block]
                lo, hi = max(cubes.start, block.start), min(cubes.stop, block.stop)
                parts.append(batch[lo - block.start:hi - block.start])
            for block in blocks[:-1]:           # (only the last can be the next range's)
                del observed[block]
            yield cubes, parts[0] if len(parts) == 1 else ObservedBatch.concatenate(parts)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(at_once)      # (threads started later take it again)


def _stored(batch, key):
    """Array ``key`` of an `~galcubecraft.ObservedBatch` in its `STORED` dtype."""
    return getattr(batch, key).to(STORED[key])


def _cube_table(first, batch):
    """The catalogue rows of a batch of cubes (numbered from ``first``): a QTable."""
    unit = batch.grid.unit
    values = batch.cube_params.cpu().numpy()
    column = dict(zip(ObservedBatch.CUBE_COLUMNS, values.T))
    table = QTable()
    table["index"] = np.arange(first, first + len(batch))
    table["n_galaxies"] = column["n_galaxies"].astype(int)
    for name in ("mask_threshold", "noise_rms"):
        table[name] = column[name] * unit
    for name in ("peak_snr", "integrated_snr"):
        table[name] = column[name]
    return table


#: Cubes observed together on a CPU (`render_blocks`): the blocks of this many cubes from
#: multiples of it, whose galaxies are rendered in one projector batch.  The cubes depend on
#: it (the sums of a block's galaxies), so it is part of the format; the memory of a
#: shard's work is this many cubes' (float64 sums and noise), whatever its size.  Shards of
#: a multiple of it observe no cube twice (others observe their boundary blocks in both).
RENDER_BATCH = 16

#: Cubes observed together in a shard on a GPU, where a batch's galaxies are rendered together
#: (fewer, larger launches): a shard of the default 64 cubes is one batch.  The cubes of a GPU
#: dataset depend on it (float32 sums over the batch), so it is part of what the shard size
#: fixes: a shard of up to this many cubes is always one batch.
GPU_RENDER_BATCH = 256


#: Arrays stored without compression whatever the dataset's: thermal noise does not compress
#: (gzip saves 16% of a noisy 64x64x32 cube, at 12 ms of a core per cube).
INCOMPRESSIBLE = ("noisy",)


def _make_shard(config, seed, shard, first, count, out_dir, compression, device="cpu",
                threads=1):
    """Task: render cubes [first, first + count) into shard file ``shard``; returns its checksum.

    The cubes are observed by `render_blocks` (``_observe_ranges``), as many blocks at once
    as ``threads`` (torch's CPU threads: one on a Dask worker, whose cores are its
    siblings'), each on one thread, so the cubes are the same bytes on any number; a thread
    writes (and compresses) each batch while the next is rendered.  On a GPU (``device``)
    `GPU_RENDER_BATCH` at a time from ``first``, its noise drawn there (`StreamingCubes`'s
    way)."""
    import h5py
    torch.set_num_threads(int(threads))
    spec = DatasetSpec(config)
    projector = spec.projector(device)
    out_dir = Path(out_dir)
    path = out_dir / f"shard_{shard:06d}.h5"
    shape = spec.grid.shape
    cube_tables, galaxy_tables = [], []
    with atomic_path(path, overwrite=True) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer") as writer:
            f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION,
                            "shard": shard, "first": first, "n_cubes": count,
                            "seed": str(seed), "priors_sha256": priors_digest(config)})
            arrays = {}
            for key, dtype in STORED.items():
                opts = dict(chunks=(1,) + shape, track_times=False)
                if compression is not None and key not in INCOMPRESSIBLE:
                    opts.update(compression=compression, shuffle=True)
                    if compression == "gzip":
                        opts["compression_opts"] = 1  # 2x faster than the default, ~same size
                arrays[key] = f.create_dataset(key, (count,) + shape,
                                               torch.empty(0, dtype=dtype).numpy().dtype, **opts)

            def write(start, stop, blocks):
                for key, block in blocks.items():
                    arrays[key][start:stop] = block
            pending = None
            last = first + count
            if projector.device.type == "cpu":      # the shard's part of each render block
                pieces = [range(max(b.start, first), min(b.stop, last))
                          for b in render_blocks(first, last)]
            else:
                pieces = [range(start, min(last, start + GPU_RENDER_BATCH))
                          for start in range(first, last, GPU_RENDER_BATCH)]
            for cubes, batch in _observe_ranges(spec, pieces, seed, projector):
                start, stop = cubes.start - first, cubes.stop - first
                blocks = {key: _stored(batch, key).cpu().numpy() for key in arrays}
                cube_tables.append(_cube_table(first + start, batch))
                galaxy_tables.append(batch.truth(first + start))
                del batch
                if pending is not None:
                    pending.result()            # one batch in flight: memory stays bounded
                pending = writer.submit(write, start, stop, blocks)
            if pending is not None:
                pending.result()
            _table_to_h5(f, "cubes", vstack(cube_tables))
            galaxies = stack_tables(galaxy_tables) if galaxy_tables else QTable()
            galaxies["id"] = np.arange(len(galaxies))
            _table_to_h5(f, "galaxies", galaxies)
            f.attrs["complete"] = True
    digest = _sha256(path)
    with atomic_path(path.with_suffix(".sha256"), overwrite=True) as tmp:
        tmp.write_text(f"{digest}  {path.name}\n")
    return shard, count, digest


def priors_digest(config):
    """SHA-256 of a dataset's priors (their canonical JSON): what every shard records."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def shard_problem(path, shard, first, count, seed, config, expected_sha256=None,
                  format_version=FORMAT_VERSION):
    """Why the file at ``path`` is not shard ``shard`` of this dataset, or None if it is.

    A shard is valid when its checksum matches (its ``.sha256`` file, and ``expected_sha256``
    when given: the manifest's) and its own attributes say it holds cubes
    ``[first, first + count)`` of this seed and priors, completely, in ``format_version``
    (the dataset's: a dataset is made in this code's, and read in its manifest's): a shard
    swapped with another, or copied from another dataset, is not accepted on its checksum
    alone.
    """
    import h5py
    path = Path(path)
    check = path.with_suffix(".sha256")
    if not path.exists():
        return "missing"
    try:
        recorded = check.read_text().split()[0]
    except (OSError, IndexError):
        return "no checksum file"
    digest = _sha256(path)
    if digest != recorded or (expected_sha256 is not None and digest != expected_sha256):
        return "checksum mismatch (corrupt or replaced)"
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except OSError as exc:
        return f"unreadable ({exc})"
    want = {"format": FORMAT, "format_version": int(format_version), "shard": shard,
            "first": first, "n_cubes": count, "seed": str(seed),
            "priors_sha256": priors_digest(config), "complete": True}
    wrong = [k for k, v in want.items()
             if k not in attrs or (attrs[k].decode() if isinstance(attrs[k], bytes)
                                   else attrs[k]) != v]
    if wrong:
        return f"holds other cubes (its {', '.join(wrong)} differ)"
    return None


#: Bytes per voxel of a shard, uncompressed: noisy and clean float32, mask uint8, labels int16.
_BYTES_PER_VOXEL = 4 + 4 + 1 + 2


def _check_space(out, n, shape):
    """Refuse a dataset that cannot fit on the folder's disk (uncompressed upper bound)."""
    need = n * math.prod(shape) * _BYTES_PER_VOXEL
    free = shutil.disk_usage(out).free
    if need > free:
        raise DatasetError(errno.ENOSPC, f"{n} cubes of {shape[0]} x {shape[1]} x {shape[2]} "
                           f"need up to {format_bytes(need)} on disk (uncompressed), and the "
                           f"disk of {out} has {format_bytes(free)} free; make fewer cubes, or "
                           "pass --no-space-check (check_space=False) if compression will "
                           "make them fit")


class DatasetError(OSError):
    """A dataset folder that cannot be used as it is (its message says why and what to do)."""

    def __str__(self):
        return str(self.strerror)


class DatasetInUse(DatasetError):
    """Another run holds the dataset folder."""


class CorruptShard(DatasetError):
    """A shard that is not what the manifest says: corrupt, truncated, swapped or foreign."""


@contextmanager
def lock_folder(out):
    """Hold the dataset folder ``out`` for this run (an exclusive lock on ``out/.lock``).

    `generate_dataset` holds it from start to end; a second run on the same folder gets
    `DatasetInUse` naming the holder's process and host, before it touches anything.
    """
    import fcntl
    import socket
    path = Path(out) / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            # the holder writes its name just after it takes the lock: give it a second
            holder = ""
            for _ in range(50):
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                if holder:
                    break
                time.sleep(0.02)
            holder = holder or "another run"
            raise DatasetInUse(errno.EBUSY, f"the dataset folder {out} is in use by {holder}; "
                               "wait for that run to finish, or use another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _manifest(spec, n, seed, shard_size, device):
    grid = spec.grid
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "galcubecraft": __version__,
        "n_cubes": int(n), "seed": seed, "shard_size": int(shard_size),
        "device": device.type,
        "n_shards": int(math.ceil(n / shard_size)), "priors": spec.config,
        "grid": {"shape": list(grid.shape), "unit": grid.unit.to_string(),
                 "pixel_scale": str(grid.pixel_scale), "channel_width": str(grid.channel_width),
                 "beam": None if grid.beam is None else str(grid.beam),
                 "rest_frequency": str(grid.rest_frequency),
                 "wcs": grid.wcs.to_header_string()},
        "arrays": {"noisy": grid.unit.to_string(), "clean": grid.unit.to_string(),
                   "mask": "1 where clean >= mask_threshold",
                   "labels": "1 + index of the galaxy contributing most; 0 outside the mask"},
    }


def generate_dataset(spec, n, out, *, seed=None, workers=1, scheduler=None, shard_size=None,
                     compression="gzip", progress=True, check_space=True, device="cpu"):
    """Make (or finish) a dataset of ``n`` cubes in folder ``out``.

    Parameters
    ----------
    spec : `DatasetSpec`, dict or path to a priors file
    n : int
        Number of cubes.
    out : path
        Folder of the dataset; created if needed.  If it holds a dataset of the
        same priors, seed and size, only its missing or corrupt shards are made.
    seed : int, optional
        Overrides the priors' ``[dataset] seed``; one is required from either
        (a dataset must be re-makeable).
    workers : int
        1 (default): in this process, a shard's render blocks as many at once as torch has
        threads, each on one (or as many shards at once, where a shard holds fewer blocks
        than that).  More: a local Dask cluster of that many single-threaded
        processes (the same cubes, byte for byte), which share the cores better over a long
        run, but take seconds to start.
    scheduler : str, optional
        Address of a running dask.distributed scheduler; overrides ``workers``.
    shard_size : int, optional
        Cubes per shard (default: the priors', or 64).
    compression : str or None
        HDF5 compression of ``clean``, ``mask`` and ``labels`` (default ``'gzip'``, level 1,
        with shuffle; None: none).  ``noisy`` is stored uncompressed (`INCOMPRESSIBLE`).
    progress : bool
        Show a tqdm bar of cubes done, rate and ETA.
    check_space : bool
        Refuse, before any work, a dataset larger (uncompressed) than the free space of the
        folder's disk (default True).
    device : str or `torch.device`
        Where the workers render (default ``'cpu'``).  On a GPU the galaxies of each batch of
        `GPU_RENDER_BATCH` cubes are rendered together and the noise is drawn there (from each
        cube's own seed), so a GPU dataset is its own: the manifest records the device kind,
        and a dataset is finished only on the kind it was begun on.

    Returns
    -------
    pathlib.Path
        The manifest's path.
    """
    if not isinstance(spec, DatasetSpec):
        spec = DatasetSpec.from_toml(spec) if isinstance(spec, (str, Path)) else DatasetSpec(spec)
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seed = spec.seed if seed is None else seed
    if seed is None or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError("a dataset needs a seed (a non-negative integer: --seed or the priors' "
                         "[dataset] seed) so that it can be re-made")
    seed = int(seed)
    device = check_device(device)
    shard_size = int(shard_size or spec.shard_size)
    # absolute: Dask workers (on other hosts too) resolve paths in their own directories
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"the dataset folder {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    if check_space:
        _check_space(out, n, spec.grid.shape)
    with lock_folder(out):
        return _generate_locked(spec, n, out, seed, shard_size, workers, scheduler,
                                compression, progress, device)


def _generate_locked(spec, n, out, seed, shard_size, workers, scheduler, compression, progress,
                     device):
    manifest = _manifest(spec, n, seed, shard_size, device)
    manifest_path = out / "manifest.json"
    config = spec.config
    shards = [(j, j * shard_size, min(shard_size, n - j * shard_size))
              for j in range(manifest["n_shards"])]
    remove_stale_parts(out, every_writer=True)
    old = None
    if manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            old = None          # damaged: the shards' own records decide what is kept
    keys = ("format", "format_version", "n_cubes", "seed", "shard_size", "priors",
            "galcubecraft", "device")
    if old is not None and any(old.get(k) != manifest.get(k) for k in keys):
        diff = [k for k in keys if old.get(k) != manifest.get(k)]
        kept = [p.name for p in sorted(out.glob("shard_*.h5"))]
        if kept:
            raise ValueError(f"{out} holds another dataset (differs in {diff}); use a new "
                             "folder, or the same priors, seed, size and package version")
        old = None              # no shard was made under it: nothing is lost by replacing it
    if old is None:
        with atomic_path(manifest_path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(manifest, indent=1))
    todo = [s for s in shards
            if shard_problem(out / f"shard_{s[0]:06d}.h5", *s, seed, config) is not None]
    from tqdm.auto import tqdm
    bar = tqdm(total=n, initial=n - sum(c for _, _, c in todo), unit="cube",
               disable=not progress, desc="galcubecraft dataset")
    try:
        if todo and (scheduler is not None or workers > 1):
            _run_dask(todo, config, seed, out, compression, workers, scheduler, bar,
                      str(device))
        else:
            _run_here(todo, config, seed, out, compression, bar, device)
    finally:
        bar.close()
    remove_stale_parts(out, every_writer=True)     # a worker killed mid-shard leaves one
    _write_catalogue(out, manifest)
    return manifest_path


def _run_here(todo, config, seed, out, compression, bar, device):
    """The shards ``todo`` made in this process, in turn, each rendering as many blocks at once
    as torch has threads (`_make_shard`); or, on a CPU where a shard holds fewer render
    blocks than that, as many shards at once, each on one thread (`single_threaded_renders`),
    so that small shards too keep the cores busy.  The same bytes either way."""
    threads = torch.get_num_threads()
    blocks = max((len(list(render_blocks(first, first + count))) for _, first, count in todo),
                 default=0)
    if torch.device(device).type != "cpu" or threads == 1 or blocks >= threads:
        try:
            for j, first, count in todo:
                _make_shard(config, seed, j, first, count, str(out), compression, str(device),
                            threads)
                bar.update(count)
        finally:
            torch.set_num_threads(threads)
        return
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="shard",
                                initializer=single_threaded_renders) as pool:
            futures = [pool.submit(_make_shard, config, seed, j, first, count, str(out),
                                   compression, str(device), 1) for j, first, count in todo]
            try:
                for done in as_completed(futures):
                    bar.update(done.result()[1])
            finally:
                for future in futures:       # (a failed shard stops the others' queue)
                    future.cancel()
    finally:
        torch.set_num_threads(threads)          # (threads started later take it again)


def _run_dask(todo, config, seed, out, compression, workers, scheduler, bar, device):
    import dask
    from distributed import Client, LocalCluster, as_completed
    if scheduler is not None:
        client, cluster = Client(scheduler), None
    else:
        # distributed sets MALLOC_TRIM_THRESHOLD_ in its workers, which turns off glibc's
        # dynamic mmap threshold: every large torch allocation then page-faults afresh and
        # rendering runs about 3x slower.  Our workers keep the memory they free
        # (`keep_freed_memory`), from their start.
        environ = {**dask.config.get("distributed.nanny.pre-spawn-environ"),
                   **freed_memory_environ()}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                                   dashboard_address=None)
        client = Client(cluster)
    try:
        futures = [client.submit(_make_shard, config, seed, j, first, count, str(out),
                                 compression, device, pure=False, key=f"shard-{j}-{seed}")
                   for j, first, count in todo]
        for future in as_completed(futures):
            _, count, _ = future.result()
            bar.update(count)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _ecsv_rows(table):
    """``(header, rows)``: the lines of ``table`` written as ECSV, split after its header (the
    YAML comment lines and the line of column names)."""
    buffer = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table.write(buffer, format="ascii.ecsv")
    lines = buffer.getvalue().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if not line.startswith("#")) + 1
    return lines[:start], lines[start:]


def _write_catalogue(out, manifest):
    """``cubes.ecsv`` and ``galaxies.ecsv`` from the shards' own tables, one shard at a time:
    the memory is a shard's rows, not the dataset's (the files are written as they are read;
    the truth tables' array columns are first padded to the widest of any shard)."""
    import h5py
    paths = [out / f"shard_{j:06d}.h5" for j in range(manifest["n_shards"])]
    widths = {}
    for path in paths:                  # the widest array columns, from the shards' dtypes
        with h5py.File(path, "r") as f:
            dtype = f["galaxies"].dtype
            for name in dtype.names or ():
                if dtype[name].shape:
                    widths[name] = max(widths.get(name, 0), dtype[name].shape[0])
    with atomic_path(out / "cubes.ecsv", overwrite=True) as cubes_tmp, \
            atomic_path(out / "galaxies.ecsv", overwrite=True) as galaxies_tmp, \
            open(cubes_tmp, "w") as cubes_file, open(galaxies_tmp, "w") as galaxies_file:
        headers, n_galaxies = {}, 0
        for j, path in enumerate(paths):
            with h5py.File(path, "r") as f:
                cubes = _table_from_h5(f["cubes"])
                galaxies = pad_columns(_table_from_h5(f["galaxies"]), widths)
            cubes["shard"] = np.full(len(cubes), j)
            galaxies["id"] = np.arange(n_galaxies, n_galaxies + len(galaxies))
            n_galaxies += len(galaxies)
            for name, table, file in (("cubes", cubes, cubes_file),
                                      ("galaxies", galaxies, galaxies_file)):
                header, rows = _ecsv_rows(table)
                if name not in headers:
                    headers[name] = header
                    file.writelines(header)
                elif header != headers[name]:
                    raise CorruptShard(errno.EIO, f"{path.name}: its {name} table's columns are "
                                       f"not those of shard 0", str(path))
                file.writelines(rows)
    manifest = dict(manifest)
    manifest["shards"] = [{"file": f"shard_{j:06d}.h5",
                           "sha256": (out / f"shard_{j:06d}.sha256").read_text().split()[0]}
                          for j in range(manifest["n_shards"])]
    with atomic_path(out / "manifest.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))


def read_catalogue(path):
    """``(cubes, galaxies)`` QTables of a written dataset."""
    path = Path(path)
    return (QTable.read(path / "cubes.ecsv", format="ascii.ecsv"),
            QTable.read(path / "galaxies.ecsv", format="ascii.ecsv"))


def export_fits(path, indices, out, overwrite=False):
    """Write cubes of a dataset as FITS for CASA/CARTA: ``<out>/cube_<i>_{noisy,clean}.fits``."""
    data = CubeDataset(path, keys=("noisy", "clean"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grid = data.grid
    written = []
    for i in indices:
        sample = data[int(i)]
        rms = float(sample["params"]["noise_rms"])
        cards = {} if not np.isfinite(rms) else {"NOISERMS": (rms, f"[{grid.unit}] noise rms")}
        for key in ("noisy", "clean"):
            cube = to_spectral_cube(sample[key].numpy(), grid, meta={"fits_cards": cards})
            name = out / f"cube_{int(i):06d}_{key}.fits"
            cube.write(name, overwrite=overwrite)
            written.append(name)
    return written


# --------------------------------------------------------------------------- torch
class CubeDataset(torch.utils.data.Dataset):
    """A written dataset as a map-style `torch.utils.data.Dataset`.

    ``dataset[i]`` is a dict: one tensor per name in ``keys`` (``noisy``, ``clean``,
    ``mask``, ``labels``), ``params`` (the cube's catalogue row as floats) and
    ``index``; ``transform`` is applied to that dict.  Shards are opened lazily,
    once per process, so the dataset works with ``DataLoader(num_workers=...)``.

    With ``verify`` (default), each shard is checked when a process first opens it: its
    SHA-256 against the manifest's and its own record of the cubes it holds (index range,
    seed, priors), so a corrupt, truncated or swapped shard raises `CorruptShard` instead
    of serving wrong cubes.  It costs one read of each shard per process.
    """

    def __init__(self, path, keys=("noisy", "clean", "mask"), transform=None, verify=True):
        self.path = Path(path)
        self.verify = bool(verify)
        if not (self.path / "manifest.json").is_file():
            raise ValueError(f"{self.path} is not a dataset folder (it has no manifest.json)")
        self.manifest = json.loads((self.path / "manifest.json").read_text())
        bad = set(keys) - set(ARRAYS)
        if bad:
            raise ValueError(f"keys must be among {ARRAYS}, got {sorted(bad)}")
        self.keys, self.transform = tuple(keys), transform
        self.n, self.shard_size = self.manifest["n_cubes"], self.manifest["shard_size"]
        cubes = QTable.read(self.path / "cubes.ecsv", format="ascii.ecsv")
        self._params = [{name: float(u.Quantity(row[name]).value) for name in cubes.colnames
                         if name not in ("index", "shard")} for row in cubes]
        self._files, self._pid = {}, None

    @property
    def grid(self):
        """The dataset's grid (from its priors)."""
        return DatasetSpec(self.manifest["priors"]).grid

    def __len__(self):
        return self.n

    def _file(self, shard):
        import h5py
        if self._pid != os.getpid():              # a forked DataLoader worker: reopen
            self._files, self._pid = {}, os.getpid()
        if shard not in self._files:
            path = self.path / f"shard_{shard:06d}.h5"
            if self.verify:
                m = self.manifest
                first = shard * self.shard_size
                count = min(self.shard_size, self.n - first)
                recorded = (m.get("shards") or [{}] * m["n_shards"])[shard].get("sha256")
                problem = shard_problem(path, shard, first, count, m["seed"], m["priors"],
                                        expected_sha256=recorded,
                                        format_version=m.get("format_version", 1))
                if problem is not None:
                    raise CorruptShard(errno.EIO, f"{path.name}: {problem}; rerun galcubecraft "
                                       "dataset with the same priors, seed and size to remake "
                                       "it", str(path))
            self._files[shard] = h5py.File(path, "r")
        return self._files[shard]

    def __getitem__(self, index):
        index = int(index)
        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} cubes")
        f = self._file(index // self.shard_size)
        local = index % self.shard_size
        sample = {key: torch.from_numpy(np.asarray(f[key][local])) for key in self.keys}
        sample["params"] = dict(self._params[index])
        sample["index"] = index
        return self.transform(sample) if self.transform is not None else sample

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"], state["_pid"] = {}, None
        return state


class StreamingCubes(torch.utils.data.IterableDataset):
    """Cubes rendered on the fly from a `DatasetSpec`: endless fresh training data, no disk.

    Cube ``i`` is cube ``i`` of a dataset written with the same priors and seed on the same
    kind of device: on the CPU the same bytes (each cube rendered with its render block,
    `render_blocks`, float64 after the projector, the noise from its own generator); on a
    GPU the same cube to float32 rounding (a batch's galaxies are rendered together, so the
    sums' order depends on the batch),
    with noise drawn there from the cube's own seed (`~galcubecraft.noise.white_normals`:
    the same on every run, not the CPU's draw).  A GPU's clean cubes are the CPU's to the
    accuracy of the lines' integral, not to rounding: a GPU takes ``erf`` where a CPU takes
    velocity nodes (3e-4 of the peak in the tests' cubes, on an H200).

    Parameters
    ----------
    spec : `DatasetSpec`, dict or path to a priors file
    seed : int, optional
        Overrides the priors' ``[dataset] seed``.
    start, stop : int
        The cubes ``[start, stop)`` (``stop=None``: never ends).
    keys : tuple of str
        Which arrays to yield (``noisy``, ``clean``, ``mask``, ``labels``).
    device : str or `torch.device`, optional
        Where the projector and the observation run (default: CUDA when available, in the
        main process; else the CPU).
    batch_size : int, optional
        None (default): one cube per item, a dict of CPU tensors (``params`` a dict of floats,
        ``index`` an int), for ``DataLoader(num_workers=W)``: worker ``w`` renders the render
        blocks ``w, w + W, ...`` from ``start``'s, so no cube is repeated.  A number: batches
        of that many cubes as tensors on ``device`` with no host round trip (use
        ``num_workers=0`` with a GPU; on the CPU cut from the render blocks that cover them,
        which one worker renders once even where two batches share one): each array
        ``(batch, n_chan, ny, nx)``; ``params`` ``(batch, 5)`` with its column names in
        ``param_names``
        (`~galcubecraft.ObservedBatch.CUBE_COLUMNS`); ``galaxies`` ``(batch, most galaxies,
        n)`` of each galaxy's parameters in internal units, NaN-padded, named by
        ``galaxy_names``; ``index`` ``(batch,)``.
    transform : callable, optional
        Applied to each item.
    """

    def __init__(self, spec, seed=None, *, start=0, stop=None, keys=("noisy", "clean", "mask"),
                 device=None, transform=None, batch_size=None):
        self.spec = spec if isinstance(spec, DatasetSpec) else (
            DatasetSpec.from_toml(spec) if isinstance(spec, (str, Path)) else DatasetSpec(spec))
        self.seed = self.spec.seed if seed is None else seed
        if self.seed is None:
            raise ValueError("StreamingCubes needs a seed (argument or [dataset] seed)")
        bad = set(keys) - set(ARRAYS)
        if bad:
            raise ValueError(f"keys must be among {ARRAYS}, got {sorted(bad)}")
        if batch_size is not None and (isinstance(batch_size, bool)
                                       or not isinstance(batch_size, (int, np.integer))
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got "
                             f"{batch_size!r}")
        self.start, self.stop = int(start), None if stop is None else int(stop)
        if self.start < 0 or (self.stop is not None and self.stop < self.start):
            raise ValueError(f"start and stop must satisfy 0 <= start <= stop, got start="
                             f"{start!r}, stop={stop!r}")
        if device is not None:
            device = check_device(device)
        self.keys, self.transform, self.device = tuple(keys), transform, device
        self.batch_size = None if batch_size is None else int(batch_size)

    def _blocks(self, size, worker, n_workers, aligned=False):
        """The index ranges this worker yields: blocks of ``size`` from ``start`` (``aligned``:
        from the multiple of ``size`` at or before it, cut to ``start``), every
        ``n_workers``-th."""
        first = (self.start // size) * size if aligned else self.start
        first += worker * size
        while self.stop is None or first < self.stop:
            last = first + size if self.stop is None else min(first + size, self.stop)
            yield range(max(first, self.start), last)
            first += n_workers * size

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        device = torch.device(self.device if self.device is not None else
                              "cuda" if torch.cuda.is_available() and info is None else "cpu")
        projector = self.spec.projector(device)

        def observed(ranges):
            return _observe_ranges(self.spec, ranges, self.seed, projector)
        if self.batch_size is None:
            blocks = self._blocks(RENDER_BATCH, worker, n_workers, aligned=True)
            for block, batch in observed(blocks):
                params = batch.cube_params.cpu().tolist()
                arrays = {key: _stored(batch, key).cpu() for key in self.keys}
                del batch
                for k, index in enumerate(block):
                    # (each its own storage: a view would carry the block's to a loader)
                    sample = {key: array[k].clone() for key, array in arrays.items()}
                    sample["params"] = dict(zip(ObservedBatch.CUBE_COLUMNS, params[k]))
                    sample["index"] = index
                    yield self.transform(sample) if self.transform is not None else sample
            return
        for block, batch in observed(self._blocks(self.batch_size, worker, n_workers)):
            sample = {key: _stored(batch, key) for key in self.keys}
            sample["params"] = batch.cube_params.to(torch.float32)
            sample["param_names"] = ObservedBatch.CUBE_COLUMNS
            sample["galaxies"], sample["galaxy_names"] = batch.galaxy_tensor()
            sample["index"] = torch.arange(block.start, block.stop, device=device)
            yield self.transform(sample) if self.transform is not None else sample
