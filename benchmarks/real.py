"""Real galaxies (rings, flows, warps: `galcubecraft.rings`) against plain disks, in one run.

    python -m benchmarks.real [--quick] [--device cpu|cuda]

1. The 128 x 128 x 40 reference grid: the plain reference galaxy, and the same galaxy warped
   over 30 rings (inclination 50 -> 75 deg, position angle 30 -> 50 deg) with a radial inflow
   tabulated on the same 30 nodes.
2. Batches of 64 galaxies on 64 x 64 x 32: 64 drawn from the "realistic disks" preset
   (``examples/realistic_disks.toml``: warps, bars, lopsided and radial flows, rings), and
   64 from the same priors without those parts (`realistic_disks`).

The two of each pair are timed alternately (medians), so that a busy moment hurts both; the
ratios are the result.  The batches are grouped as `galcubecraft.render` groups them: on a
GPU the real galaxies' parts merged into few groups (`galcubecraft.rings.merge`).
"""
import argparse
import statistics
import time
try:
    import tomllib
except ImportError:                       # Python 3.10
    import tomli as tomllib

from pathlib import Path

import astropy.units as u
import numpy as np
import torch
from radio_beam import Beam

import galcubecraft as gcc
from galcubecraft.catalogue import random_galaxies
from galcubecraft.priors import GalaxyPriors

from .render import reference_galaxy, reference_grid

KMS = u.km / u.s


def warped_reference():
    """The reference galaxy warped over 30 rings, with an inflow on the same nodes."""
    nodes = np.linspace(0, 60, 30) * u.arcsec
    ramp = np.clip((nodes.value - 10) / 40, 0, 1)
    return reference_galaxy(
        warp=gcc.Warp(nodes, inclination=(60 + 15 * ramp) * u.deg,
                      position_angle=(30 + 20 * ramp) * u.deg),
        flows=[gcc.RadialFlow(-(10 + 30 * ramp) * KMS, radius=nodes)])


PRESET = Path(__file__).resolve().parents[1] / "examples" / "realistic_disks.toml"
#: The batch's grid: 64 x 64 x 32 of 2" pixels under a 4" beam (as the throughput row), with
#: channels wide enough for the preset's widest line and its flows.
BATCH_GRID = dict(shape=(32, 64, 64), pixel_scale=2 * u.arcsec, channel_width=40 * KMS,
                  beam=Beam(4 * u.arcsec))


def realistic_disks(n, seed=0, plain=False):
    """``n`` galaxies drawn from the "realistic disks" preset (``examples/realistic_disks.toml``:
    warps, bars, lopsided and radial flows, rings), or with ``plain`` from the same priors
    without those parts, placed anywhere on the batch's grid."""
    with open(PRESET, "rb") as f:
        priors = GalaxyPriors(**tomllib.load(f)["galaxy"])
    if plain:
        priors = GalaxyPriors(**{k: v for k, v in priors.distributions.items()
                                 if k in GalaxyPriors.PARAMETERS})
    return random_galaxies(gcc.CubeGrid(**BATCH_GRID), n, priors=priors, seed=seed,
                           edge=8 * u.arcsec, min_separation=0 * u.arcsec)


def _alternate(fns, repeats):
    """Median seconds of each function, timed in turn (after one warm-up each)."""
    times = [[] for _ in fns]
    with torch.no_grad():
        for fn in fns:
            fn()
        for _ in range(repeats):
            for k, fn in enumerate(fns):
                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    torch.cuda.synchronize()
                t = time.perf_counter()
                fn()
                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    torch.cuda.synchronize()
                times[k].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def measure(device="cpu", repeats=5, batch=64):
    grid = reference_grid()
    projector = gcc.Projector(grid, device=device)
    pairs = [gcc.stack_parameters([g], device=device)[0]
             for g in (reference_galaxy(), warped_reference())]
    plain, warped = _alternate([lambda p=p: projector(p[1], p[0]) for p in pairs], repeats)
    batch_projector = gcc.Projector(gcc.CubeGrid(**BATCH_GRID), device=device)
    # as render does: on a GPU the real galaxies' groups merged (rings.merge)
    plain_batch = gcc.stack_parameters(realistic_disks(batch, plain=True), device=device,
                                       merge="auto")
    real_batch = gcc.stack_parameters(realistic_disks(batch), device=device, merge="auto")

    def render_all(groups):
        return [batch_projector(params, model) for model, params in groups]
    t_plain, t_real = _alternate([lambda: render_all(plain_batch),
                                  lambda: render_all(real_batch)], max(2, repeats // 2))
    return {"plain": plain, "warped": warped, "batch": batch, "plain_batch": t_plain,
            "real_batch": t_real, "real_groups": len(real_batch)}


def rows(res):
    """Rows of (measure, galcubecraft, other, ratio) for the benchmark table."""
    return [("Warped disk, 30 rings + inflow, 128x128x40, s (vs the plain reference galaxy)",
             f"{res['warped']:.3f}", f"{res['plain']:.3f}",
             f"{res['warped'] / res['plain']:.2f}x the time"),
            (f"Batch of {res['batch']} realistic disks 64x64x32, cubes/s (vs {res['batch']} "
             "plain disks of the same priors)", f"{res['batch'] / res['real_batch']:.1f}",
             f"{res['batch'] / res['plain_batch']:.1f}",
             f"{res['plain_batch'] / res['real_batch']:.2f}x the rate")]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.real",
                                description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats, batch of 16")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    res = measure(args.device, 3 if args.quick else 7, 16 if args.quick else 64)
    print(f"device {args.device}, {torch.get_num_threads()} threads")
    for a, b, c, d in rows(res):
        print(f"| {a} | {b} | {c} | {d} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
