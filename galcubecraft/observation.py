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
"""
from pathlib import Path

import astropy.units as u
import numpy as np
import torch
from astropy.io import fits

from ._files import atomic_path
from .cube import to_spectral_cube
from .galaxy import Galaxy
from .noise import rng_from_seed
from .projector import Projector
from .catalogue import truth_table
from .render import render_tensor, scene_items

__all__ = ["observe", "Observation"]


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


def _threshold(mask_threshold, clean, rms, unit):
    if mask_threshold is None:
        return 1e-3 * float(np.max(clean)) * unit
    if isinstance(mask_threshold, str):
        text = mask_threshold.strip()
        if not text.endswith("sigma"):
            raise ValueError(f"mask_threshold as text must read 'N sigma', got {text!r}")
        if rms is None:
            raise ValueError("a mask threshold in sigma needs noise with an rms given (a "
                             "threshold relative to the noise cannot define the noise)")
        return float(text[:-5]) * rms
    if not isinstance(mask_threshold, u.Quantity):
        raise u.UnitTypeError(f"mask_threshold must be a Quantity in {unit}, 'N sigma' or "
                              f"None, got {mask_threshold!r}")
    return mask_threshold.to(unit)


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
    """
    galaxies = scene_items(scene)
    if projector is None:
        projector = Projector(grid, device=device, dtype=dtype, **sampling)
    elif projector.grid is not grid:
        raise ValueError("projector was built for another grid")
    with torch.no_grad():
        parts = np.stack([render_tensor(g, grid, projector=projector).cpu().double().numpy()
                          for g in galaxies])
    clean = parts.sum(axis=0)
    unit = grid.unit
    given_rms = None if noise is None or noise.rms is None else noise.rms.to(unit)
    threshold = _threshold(mask_threshold, clean, given_rms, unit)
    mask = clean >= threshold.to_value(unit)
    labels = np.where(mask, np.argmax(parts, axis=0) + 1, 0).astype(np.int16)
    params = {"mask_threshold": threshold, "seed": seed, "noise": repr(noise)}
    cards = {}
    if noise is not None:
        rms = noise.resolve_rms(clean, grid, mask)
        noisy = clean + noise.draw(grid, rms, seed=rng_from_seed(seed))
        params["noise_rms"] = rms
        params["peak_snr"] = float(np.max(clean)) / rms.to_value(unit)
        if mask.any():
            sigma = noise.sum_sigma(grid, mask) * rms.to_value(unit)
            params["integrated_snr"] = float(clean[mask].sum()) / sigma
        cards["NOISERMS"] = (rms.to_value(unit), f"[{unit.to_string()}] noise rms per channel")
        cards["PEAKSNR"] = (params["peak_snr"], "clean peak / noise rms")
        if "integrated_snr" in params:
            cards["INTSNR"] = (params["integrated_snr"], "flux in mask / noise of that sum")
    else:
        noisy = clean
    cards["MASKTHR"] = (threshold.to_value(unit), f"[{unit.to_string()}] emission mask level")
    params["galaxies"] = truth_table(grid, [g for g in galaxies if isinstance(g, Galaxy)])
    params["streams"] = [g for g in galaxies if not isinstance(g, Galaxy)]
    meta = {"fits_cards": cards}
    return Observation(to_spectral_cube(noisy, grid, meta=meta),
                       to_spectral_cube(clean, grid, meta=meta), mask, labels, params)
