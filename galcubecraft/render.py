"""``render``: the friendly front door over `Projector`."""
from collections import defaultdict

import numpy as np
import torch

from . import rings
from .components.base import to_tensor
from .cube import to_spectral_cube
from .diffuse import Stream
from .galaxy import Galaxy, Scene
from .projector import Projector

__all__ = ["render", "render_tensor", "render_parts", "stack_parameters", "scene_items"]


def scene_items(scene):
    """The items of a scene (galaxies and diffuse streams) as a checked list.

    ``scene`` is a `~galcubecraft.Galaxy`, a `~galcubecraft.diffuse.Stream`, a
    `~galcubecraft.Scene` or a sequence of galaxies and streams.
    """
    if isinstance(scene, (Galaxy, Stream)):
        return [scene]
    if isinstance(scene, Scene):
        return list(scene)
    galaxies = list(scene)
    if not galaxies:
        raise ValueError("nothing to render: no galaxies given")
    for g in galaxies:
        if not isinstance(g, (Galaxy, Stream)):
            raise TypeError(f"render takes Galaxy and Stream objects, a Scene or a list of "
                            f"them, got {g!r}")
    return galaxies


def stack_parameters(galaxies, device=None, dtype=torch.float32, merge=False, index=False):
    """Group galaxies that share a model and stack their parameters into batches.

    Returns a list of ``(model, {name: tensor (batch, ...)})``, ``model`` the rotation
    law's class for plain disks (Sérsic, exponential in height, circular orbits, unwarped)
    and the galaxies' `~galcubecraft.rings.DiskModel` for the others: what
    `~galcubecraft.Projector` takes beside the tensors.  The groups come in the order of
    their first galaxies, and hold their galaxies in the given order.

    With ``merge`` (``'auto'``: on a CUDA device), real galaxies of different parts are
    rendered in fewer groups, each holding the others' parts at no amplitude
    (`galcubecraft.rings.merge`): the same cubes to rounding, in fewer launches (on a GPU a
    mixed batch is bound by them; on a CPU by the arithmetic, which the held parts add to).

    With ``index``, each group is ``(model, params, rows)``, ``rows`` (a CPU tensor of int64)
    saying which of ``galaxies`` its batch rows are.
    """
    groups, rows = defaultdict(list), defaultdict(list)
    for i, g in enumerate(galaxies):
        numbers = g.numbers()
        model = g.model
        model = model.kinematics if model.plain else model
        key = (model, tuple(sorted((k, np.shape(v)) for k, v in numbers.items())))
        groups[key].append(numbers)
        rows[key].append(i)
    # the galaxies' numbers stacked on the host, then one tensor of each sent at once (not a
    # tensor, nor a copy, per scalar): `Galaxy.tensors` of each, stacked
    out = [(key[0], {k: to_tensor(np.array([n[k] for n in members], dtype=np.float64),
                                  dtype=Galaxy.tensor_dtype(k, dtype)).to(device)
                     for k in members[0]})
           for key, members in groups.items()]
    order = [torch.tensor(rows[key], dtype=torch.int64) for key in groups]
    if merge == "auto":
        merge = torch.device(device or "cpu").type == "cuda"
    if merge:
        out, order = rings.merge(out, index=order)
    return [(m, p, r) for (m, p), r in zip(out, order)] if index else out


def render_parts(scene, grid=None, *, projector=None, device=None, dtype=torch.float32,
                 **sampling):
    """Each item of a scene rendered on its own: a ``(n_items, n_chan, ny, nx)`` tensor on the
    projector's device, in the scene's order (beam applied; `render_tensor` is their sum).

    The galaxies go through the projector in batches of one model each (`stack_parameters`),
    diffuse streams one batch of them: what a batch of many scenes needs, and what a
    segmentation label (the item that contributes most to a voxel) needs.
    """
    items = scene_items(scene)
    if projector is None:
        if grid is None:
            raise ValueError("render_parts needs a grid or a projector")
        projector = Projector(grid, device=device, dtype=dtype, **sampling)
    n_chan, ny, nx = projector.grid.shape
    parts = torch.zeros((len(items), n_chan, ny, nx), device=projector.device,
                        dtype=projector.dtype)
    galaxies = [i for i, g in enumerate(items) if isinstance(g, Galaxy)]
    streams = [i for i, g in enumerate(items) if isinstance(g, Stream)]
    if galaxies:
        for kinematics, params, rows in stack_parameters(
                [items[i] for i in galaxies], projector.device, projector.dtype, merge="auto",
                index=True):
            where = torch.as_tensor(galaxies, dtype=torch.int64)[rows].to(parts.device)
            parts[where] = projector(params, kinematics)
    if streams:
        where = torch.as_tensor(streams, dtype=torch.int64, device=parts.device)
        parts[where] = projector.observe(projector.project_streams(
            _stacked_streams([items[i] for i in streams], projector)))
    return parts


def _stacked_streams(streams, projector):
    """Diffuse streams' parameter tensors stacked into one batch for ``projector``."""
    tensors = [s.tensors(projector.device, projector.dtype) for s in streams]
    return {k: torch.stack([t[k] for t in tensors]) for k in tensors[0]}


def render_tensor(scene, grid, *, device=None, dtype=torch.float32, projector=None, **sampling):
    """Render galaxies into one ``(n_chan, ny, nx)`` tensor (sum of all galaxies, beam applied)."""
    items = scene_items(scene)
    galaxies = [g for g in items if isinstance(g, Galaxy)]
    streams = [s for s in items if isinstance(s, Stream)]
    projector = projector or Projector(grid, device=device, dtype=dtype, **sampling)
    cube = None
    for kinematics, params in stack_parameters(galaxies, projector.device, projector.dtype,
                                               merge="auto") if galaxies else ():
        part = projector(params, kinematics).sum(dim=0)
        cube = part if cube is None else cube + part
    if streams:
        part = projector.observe(
            projector.project_streams(_stacked_streams(streams, projector)).sum(dim=0))
        cube = part if cube is None else cube + part
    return cube


def render(scene, grid, *, device=None, dtype=torch.float32, **sampling):
    """Render one galaxy, a list of galaxies or a `Scene` into a spectral cube.

    Parameters
    ----------
    scene : `~galcubecraft.Galaxy`, `~galcubecraft.Scene` or sequence of Galaxy
        What to render; several galaxies are summed into one cube.
    grid : `~galcubecraft.CubeGrid`
        Pixels, channels and beam.
    device : str or `torch.device`, optional
        Where to compute (e.g. ``'cuda'``); default CPU.
    dtype : `torch.dtype`
        Computation precision (default float32).
    **sampling
        Passed to `~galcubecraft.Projector` (``oversample``, ``minor_density``, ...).

    Returns
    -------
    `~galcubecraft.SyntheticCube`
        A `~spectral_cube.SpectralCube` in Jy/beam (Jy/pixel without a beam)
        with the grid's WCS and `radio_beam.Beam`.
    """
    with torch.no_grad():
        data = render_tensor(scene, grid, device=device, dtype=dtype, **sampling)
    return to_spectral_cube(data, grid)
