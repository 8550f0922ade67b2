"""One call from a scene to what a telescope and a training set need: noisy, clean, mask, labels.

`observe` renders each galaxy on the grid (its beam and spectral response included),
sums them into the clean cube, adds noise from a `~galcubecraft.noise.NoiseModel`,
and returns, beside the two cubes:

* **mask**: the ground-truth emission mask, ``clean >= threshold`` in the clean
  cube (the model, not a detection: faint emission below the noise is in it);
* **labels**: which component each masked voxel's flux belongs to (``1 + index``
  in the scene's order of the galaxy or stream contributing most to that voxel, 0
  outside the mask), for segmentation tasks;
* **params**: the noise rms (also written as ``NOISERMS`` into both cubes'
  headers), the S/N it gives, the mask threshold, the seed, and the truth table
  of the galaxies (`galcubecraft.catalogue.truth_table`).

A detection-style mask of the *noisy* cube (what a source finder would return) is
a different thing; build it with your finder, e.g. ``astrodendro``, on ``noisy``.

`observe_batch` does the same for a batch of scenes on tensors, on the projector's device
(`ObservedBatch`): what training sets are made of, with astropy objects built only at the
edges (`observe` is one cube of it, wrapped in `~galcubecraft.SyntheticCube` objects).
"""
import math
from pathlib import Path

import astropy.units as u
import numpy as np
import torch
from astropy.io import fits

from ._files import atomic_path
from .cube import to_spectral_cube
from .galaxy import Galaxy
from .noise import noise_levels, white_normals
from .projector import Projector
from .catalogue import truth_table
from .render import render_parts, scene_items

__all__ = ["observe", "Observation", "observe_batch", "ObservedBatch"]


class Observation:
    """What `observe` returns; unpacks as ``noisy, clean, mask, params``.

    Attributes
    ----------
    noisy, clean : `~galcubecraft.SyntheticCube`
    mask : `numpy.ndarray` of bool, the grid's shape
    labels : `numpy.ndarray` of int16, the grid's shape
    params : dict
    """

    def __init__(self, noisy, clean, mask, labels, params):
        self.noisy, self.clean, self.mask, self.labels, self.params = (
            noisy, clean, mask, labels, params)

    def __iter__(self):
        return iter((self.noisy, self.clean, self.mask, self.params))

    def write(self, prefix, overwrite=False):
        """Write ``<prefix>_noisy.fits``, ``_clean.fits``, ``_mask.fits`` (uint8),
        ``_labels.fits`` (int16) and ``_truth.ecsv``, each atomically; returns the paths."""
        prefix = str(prefix)
        paths = {name: Path(f"{prefix}_{name}.fits")
                 for name in ("noisy", "clean", "mask", "labels")}
        paths["truth"] = Path(f"{prefix}_truth.ecsv")
        if not overwrite:
            for path in paths.values():
                if path.exists():
                    raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        self.noisy.write(paths["noisy"], overwrite=overwrite)
        self.clean.write(paths["clean"], overwrite=overwrite)
        header = self.clean.wcs.to_header()
        for name, data, comment in (("mask", self.mask.astype(np.uint8),
                                     "1 where the clean cube >= MASKTHR"),
                                    ("labels", self.labels, "1 + galaxy index; 0 background")):
            hdu = fits.PrimaryHDU(data=data, header=header)
            hdu.header["BUNIT"] = ""
            hdu.header["MASKTHR"] = (self.params["mask_threshold"].value,
                                     f"[{self.params['mask_threshold'].unit}] mask threshold")
            hdu.header.add_comment(comment)
            with atomic_path(paths[name], overwrite=overwrite) as tmp:
                hdu.writeto(tmp, overwrite=True, checksum=True)
        with atomic_path(paths["truth"], overwrite=overwrite) as tmp:
            self.params["galaxies"].write(tmp, format="ascii.ecsv", overwrite=True)
        return paths


def _thresholds(mask_threshold, clean, rms, unit):
    """The mask level of each cube (float64 tensor ``(batch,)`` in ``unit``): 1e-3 of its
    clean peak (None), ``N`` times its given noise rms (``'N sigma'``) or a brightness."""
    if mask_threshold is None:
        return 1e-3 * clean.to(torch.float64).amax(dim=(-3, -2, -1))
    if isinstance(mask_threshold, str):
        text = mask_threshold.strip()
        if not text.endswith("sigma"):
            raise ValueError(f"mask_threshold as text must read 'N sigma', got {text!r}")
        if rms is None or bool(torch.isnan(rms).any()):
            raise ValueError("a mask threshold in sigma needs noise with an rms given (a "
                             "threshold relative to the noise cannot define the noise)")
        return float(text[:-5]) * rms
    if not isinstance(mask_threshold, u.Quantity):
        raise u.UnitTypeError(f"mask_threshold must be a Quantity in {unit}, 'N sigma' or "
                              f"None, got {mask_threshold!r}")
    return torch.full((clean.shape[0],), float(mask_threshold.to_value(unit)),
                      dtype=torch.float64, device=clean.device)


class ObservedBatch:
    """What `observe_batch` returns: a batch of observations as tensors on one device.

    Attributes
    ----------
    noisy, clean : `torch.Tensor` ``(batch, n_chan, ny, nx)``
        In the grid's unit (Jy/beam, or Jy/pixel without a beam).
    mask : `torch.Tensor` of bool, the same shape
        ``clean >= mask_threshold`` of each cube.
    labels : `torch.Tensor` of int16, the same shape
        ``1 +`` the index (in its scene) of the item contributing most to each masked voxel;
        0 outside the mask.
    cube_params : `torch.Tensor` float64 ``(batch, len(CUBE_COLUMNS))``
        Each cube's `CUBE_COLUMNS` (NaN where not defined: no noise, an empty mask).
    scenes : list of lists
        Each cube's galaxies and streams, for `truth_table` and the edges.
    seeds : list
        Each cube's noise seed as given.
    """

    #: The columns of `cube_params`: the number of galaxies, the mask level and the noise rms
    #: (the grid's unit), and the S/N of the clean peak and of the flux in the mask.
    CUBE_COLUMNS = ("n_galaxies", "mask_threshold", "noise_rms", "peak_snr", "integrated_snr")

    def __init__(self, grid, noisy, clean, mask, labels, cube_params, scenes, seeds, noises):
        self.grid = grid
        self.noisy, self.clean, self.mask, self.labels = noisy, clean, mask, labels
        self.cube_params, self.scenes, self.seeds, self.noises = (
            cube_params, scenes, seeds, noises)

    def __len__(self):
        return self.clean.shape[0]

    def __getitem__(self, rows):
        """The cubes ``rows`` (a slice) of the batch, an `ObservedBatch` (views, no copies)."""
        if not isinstance(rows, slice):
            raise TypeError(f"an ObservedBatch is sliced by a slice, got {rows!r}")
        return ObservedBatch(self.grid, self.noisy[rows], self.clean[rows], self.mask[rows],
                             self.labels[rows], self.cube_params[rows], self.scenes[rows],
                             self.seeds[rows], self.noises[rows])

    @classmethod
    def concatenate(cls, batches):
        """One `ObservedBatch` of the cubes of ``batches`` (of one grid and device), in order."""
        batches = list(batches)
        if not batches:
            raise ValueError("concatenate needs at least one ObservedBatch")
        grid = batches[0].grid
        if any(b.grid is not grid for b in batches):
            raise ValueError("the batches were observed on different grids")

        def cat(name):
            return torch.cat([getattr(b, name) for b in batches])

        def join(name):
            return [item for b in batches for item in getattr(b, name)]
        return cls(grid, cat("noisy"), cat("clean"), cat("mask"), cat("labels"),
                   cat("cube_params"), join("scenes"), join("seeds"), join("noises"))

    def galaxies(self, k):
        """The galaxies of cube ``k``."""
        return [g for g in self.scenes[k] if isinstance(g, Galaxy)]

    def truth(self, first_index=0):
        """One `~astropy.table.QTable` of every galaxy of the batch (`truth_table`), with the
        cube ``index`` (counted from ``first_index``) in the first column."""
        galaxies = [g for k in range(len(self)) for g in self.galaxies(k)]
        table = truth_table(self.grid, galaxies)
        counts = [len(self.galaxies(k)) for k in range(len(self))]
        table.add_column(np.repeat(np.arange(len(self)) + int(first_index), counts),
                         name="index", index=0)
        return table

    def galaxy_tensor(self, dtype=torch.float32):
        """``(tensor, names)``: each cube's galaxies' scalar parameters in the projector's
        internal units (`Galaxy.numbers <galcubecraft.Galaxy.numbers>`: arcsec, rad, km/s,
        Jy km/s), ``(batch, most galaxies in a cube, len(names))``, padded with NaN."""
        device = self.clean.device
        rows = [[g.numbers() for g in self.galaxies(k)] for k in range(len(self))]
        names = sorted({name for cube in rows for t in cube for name, v in t.items()
                        if np.ndim(v) == 0})
        most = max([len(cube) for cube in rows] + [1])
        out = np.full((len(self), most, len(names)), math.nan)
        for k, cube in enumerate(rows):
            for j, t in enumerate(cube):
                out[k, j] = [float(t[name]) if name in t and np.ndim(t[name]) == 0
                             else math.nan for name in names]
        return torch.as_tensor(out, device=device, dtype=dtype), names


def _labels(parts, owner, n_cubes):
    """1 + the slot (within its cube) of the part that is largest at each voxel, ties to the
    first (as ``argmax``): an int16 tensor ``(n_cubes, ...)``."""
    # each part's slot: how many parts of its cube come before it
    cube = owner.numpy()
    order = np.argsort(cube, kind="stable")
    slot = np.empty(len(cube), dtype=np.int64)
    slot[order] = np.arange(len(cube)) - np.searchsorted(cube[order], cube[order])
    slot = torch.from_numpy(slot)
    labels = torch.zeros((n_cubes,) + parts.shape[1:], dtype=torch.int16, device=parts.device)
    first = (slot == 0).nonzero().reshape(-1)
    labels[owner[first].to(parts.device)] = 1
    if not len(slot) or int(slot.max()) == 0:
        return labels                   # one part per cube: it is the largest
    best = torch.full(labels.shape, -math.inf, dtype=parts.dtype, device=parts.device)
    best[owner[first].to(parts.device)] = parts[first.to(parts.device)]
    for j in range(1, int(slot.max()) + 1):
        rows = (slot == j).nonzero().reshape(-1)
        cubes = owner[rows].to(parts.device)
        rows = rows.to(parts.device)
        better = parts[rows] > best[cubes]
        best[cubes] = torch.where(better, parts[rows], best[cubes])
        labels[cubes] = torch.where(better, torch.full_like(labels[cubes], j + 1),
                                    labels[cubes])
    return labels


def observe_batch(scenes, grid, noises=None, seeds=None, *, mask_threshold=None,
                  projector=None, device=None, dtype=torch.float64, together=False):
    """Observe a batch of scenes on tensors: an `ObservedBatch` of noisy, clean, mask and
    labels ``(batch, n_chan, ny, nx)`` and each cube's parameters, on the projector's device.

    Parameters
    ----------
    scenes : sequence
        One scene per cube (a `~galcubecraft.Galaxy`, a `~galcubecraft.Scene` or a sequence
        of galaxies and streams).
    grid : `~galcubecraft.CubeGrid`
    noises : sequence of `~galcubecraft.noise.NoiseModel` or None, optional
        Each cube's noise (None: none); the models of a batch are correlated alike (their
        levels may differ).
    seeds : sequence, optional
        Each cube's noise seed (`white_normals`).
    mask_threshold : see `observe`
    projector : `~galcubecraft.Projector`, optional
        Built for ``grid``; its device is the batch's.
    dtype : `torch.dtype`
        Of the sums, masks and noise (float64 by default, as `observe`; the parts are
        rendered in the projector's dtype).
    together : bool
        Render the galaxies of all the scenes in one projector batch (fewer, larger launches:
        the GPU's way) rather than each scene's in its own (default: each cube's arithmetic
        is then the same whatever the batch, so a cube is the same bytes in any batch).

    Every step after the projector is a tensor operation on the batch: the parts summed into
    clean cubes, the mask and labels, the noise levels (`noise_levels`), unit noise filtered
    for all cubes at once (`NoiseModel.correlate`), and the S/N.

    On a CPU the noise's filter and the S/N's sums may differ in their last bit between
    processes of different torch thread counts (torch's inverse FFTs and whole-tensor sums
    round differently on more threads than on one).  Datasets and
    `~galcubecraft.dataset.StreamingCubes` observe each render block on one thread, so their
    bytes do not depend on it.
    """
    scenes = [scene_items(scene) for scene in scenes]
    batch = len(scenes)
    if batch == 0:
        raise ValueError("observe_batch needs at least one scene")
    noises = [None] * batch if noises is None else list(noises)
    seeds = [None] * batch if seeds is None else list(seeds)
    if len(noises) != batch or len(seeds) != batch:
        raise ValueError(f"give one noise model and one seed per scene ({batch}), got "
                         f"{len(noises)} and {len(seeds)}")
    noisy_rows = [k for k, m in enumerate(noises) if m is not None]
    if len({noises[k].correlation_key for k in noisy_rows}) > 1:
        raise ValueError("the noise models of a batch must be correlated alike (their "
                         "levels may differ); observe the others in another batch")
    if noisy_rows:
        noises[noisy_rows[0]].check_grid(grid)          # before any work
    if projector is None:
        projector = Projector(grid, device=device)
    elif projector.grid is not grid:
        raise ValueError("projector was built for another grid")
    unit = grid.unit
    owner = torch.as_tensor([k for k, scene in enumerate(scenes) for _ in scene],
                            dtype=torch.int64)
    with torch.no_grad():
        if together:
            parts = render_parts([item for scene in scenes for item in scene],
                                 projector=projector)
        else:
            parts = torch.cat([render_parts(scene, projector=projector) for scene in scenes])
        parts = parts.to(dtype)
        clean = parts.new_zeros((batch,) + parts.shape[1:]).index_add_(
            0, owner.to(parts.device), parts)
        given = torch.full((batch,), math.nan, dtype=torch.float64, device=clean.device)
        for k in noisy_rows:
            if noises[k].rms is not None:
                given[k] = noises[k].rms.to_value(unit)
        threshold = _thresholds(mask_threshold, clean, given, unit).to(clean.device)
        mask = clean >= threshold.to(dtype)[:, None, None, None]
        labels = torch.where(mask, _labels(parts, owner, batch), 0).to(torch.int16)
        del parts
        peak = clean.to(torch.float64).amax(dim=(-3, -2, -1))
        rms = torch.full((batch,), math.nan, dtype=torch.float64, device=clean.device)
        integrated = torch.full_like(rms, math.nan)
        noisy = clean
        if noisy_rows:
            model = noises[noisy_rows[0]]
            rows = torch.as_tensor(noisy_rows, device=clean.device)
            levels = noise_levels([noises[k] for k in noisy_rows], clean[rows], mask[rows],
                                  grid)
            rms[rows] = levels
            white = white_normals(model.white_shape(grid), [seeds[k] for k in noisy_rows],
                                  device=clean.device, dtype=dtype)
            noise = model.correlate(white, grid) * levels.to(dtype)[:, None, None, None]
            noisy = clean.clone()
            noisy[rows] += noise
            filled = mask[rows].flatten(1).any(dim=1)
            if bool(filled.any()):
                signal = (clean[rows] * mask[rows]).to(torch.float64).sum(dim=(-3, -2, -1))
                sigma = model.sum_sigma(grid, mask[rows][filled])
                integrated[rows[filled]] = signal[filled] / (sigma * levels[filled])
    counts = torch.tensor([sum(isinstance(g, Galaxy) for g in scene) for scene in scenes],
                          dtype=torch.float64, device=clean.device)
    cube_params = torch.stack([counts, threshold.to(torch.float64), rms, peak / rms,
                               integrated], dim=1)
    return ObservedBatch(grid, noisy, clean, mask, labels, cube_params, scenes, seeds, noises)


def observe(scene, grid, noise=None, *, seed=None, mask_threshold=None, device=None,
            dtype=torch.float32, projector=None, **sampling):
    """Render a scene and observe it: ``(noisy, clean, mask, params)`` in one call.

    Parameters
    ----------
    scene : `~galcubecraft.Galaxy`, `~galcubecraft.Scene` or sequence of Galaxy
    grid : `~galcubecraft.CubeGrid`
        Pixels, channels, beam and spectral response.
    noise : `~galcubecraft.noise.NoiseModel`, optional
        The noise (default: none; ``noisy`` is then the clean cube).
    seed : int, `numpy.random.SeedSequence` or `numpy.random.Generator`, optional
        Source of the noise; the same seed gives the same noise.
    mask_threshold : `~astropy.units.Quantity`, ``'N sigma'`` or None
        The level of the emission mask in the clean cube: a brightness, ``N``
        times the noise rms (only with ``NoiseModel(rms=...)``), or (default)
        1e-3 of the clean cube's peak.  An integrated S/N is measured in this
        mask.
    projector : `~galcubecraft.Projector`, optional
        A projector already built for ``grid`` (saves its set-up when observing
        many scenes).

    Returns
    -------
    `Observation`

    This is `observe_batch` for one cube (float64 after the projector), on the CPU.
    """
    galaxies = scene_items(scene)
    if projector is None:
        projector = Projector(grid, device=device, dtype=dtype, **sampling)
    elif projector.grid is not grid:
        raise ValueError("projector was built for another grid")
    obs = observe_batch([galaxies], grid, [noise], [seed], mask_threshold=mask_threshold,
                        projector=projector)
    unit = grid.unit
    values = dict(zip(ObservedBatch.CUBE_COLUMNS, obs.cube_params[0].tolist()))
    clean = obs.clean[0].cpu().numpy()
    noisy = obs.noisy[0].cpu().numpy()
    threshold = values["mask_threshold"] * unit
    params = {"mask_threshold": threshold, "seed": seed, "noise": repr(noise)}
    cards = {}
    if noise is not None:
        params["noise_rms"] = values["noise_rms"] * unit
        params["peak_snr"] = values["peak_snr"]
        if math.isfinite(values["integrated_snr"]):
            params["integrated_snr"] = values["integrated_snr"]
        cards["NOISERMS"] = (values["noise_rms"], f"[{unit.to_string()}] noise rms per channel")
        cards["PEAKSNR"] = (params["peak_snr"], "clean peak / noise rms")
        if "integrated_snr" in params:
            cards["INTSNR"] = (params["integrated_snr"], "flux in mask / noise of that sum")
    cards["MASKTHR"] = (values["mask_threshold"], f"[{unit.to_string()}] emission mask level")
    params["galaxies"] = truth_table(grid, obs.galaxies(0))
    params["streams"] = [g for g in galaxies if not isinstance(g, Galaxy)]
    meta = {"fits_cards": cards}
    return Observation(to_spectral_cube(noisy, grid, meta=meta),
                       to_spectral_cube(clean, grid, meta=meta), obs.mask[0].cpu().numpy(),
                       obs.labels[0].cpu().numpy(), params)
