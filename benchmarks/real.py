"""Real galaxies (rings, flows, warps: `galcubecraft.rings`) against plain disks, in one run.

    python -m benchmarks.real [--quick] [--device cpu|cuda]

1. The 128 x 128 x 40 reference grid: the plain reference galaxy, and the same galaxy warped
   over 30 rings (inclination 50 -> 75 deg, position angle 30 -> 50 deg) with a radial inflow
   tabulated on the same 30 nodes.
2. Batches of 64 galaxies on 64 x 64 x 32: the plain random galaxies of the throughput row,
   and 64 random "realistic disks" (`realistic_disks`: warps, bars, lopsided and radial
   flows, rings, sech^2 disks).

The two of each pair are timed alternately (medians), so that a busy moment hurts both; the
ratios are the result.
"""
import argparse
import statistics
import time

import astropy.units as u
import numpy as np
import torch
from radio_beam import Beam

import galcubecraft as gcc

from .render import random_galaxies, reference_galaxy, reference_grid

KMS = u.km / u.s


def warped_reference():
    """The reference galaxy warped over 30 rings, with an inflow on the same nodes."""
    nodes = np.linspace(0, 60, 30) * u.arcsec
    ramp = np.clip((nodes.value - 10) / 40, 0, 1)
    return reference_galaxy(
        warp=gcc.Warp(nodes, inclination=(60 + 15 * ramp) * u.deg,
                      position_angle=(30 + 20 * ramp) * u.deg),
        flows=[gcc.RadialFlow(-(10 + 30 * ramp) * KMS, radius=nodes)])


def realistic_disks(n, seed=0):
    """``n`` random disks, each with some of: a warp, a bar's m = 2 flow, a lopsided flow, an
    inflow, a ring instead of a disk, a sech^2 vertical profile (the sizes and speeds of
    `random_galaxies`)."""
    rng = np.random.default_rng(seed)
    out = []
    for g in random_galaxies(n, seed):
        kw, flows = {}, []
        if rng.random() < 0.5:
            r_out = 3 * g.surface.r_eff
            kw["warp"] = gcc.Warp([0, 0.5, 1] * r_out,
                                  inclination=np.clip(g.inclination.value + [0, 0, rng.uniform(
                                      -20, 20)], 0, 89) * u.deg,
                                  position_angle=g.position_angle + [0, 0, rng.uniform(-30, 30)]
                                  * u.deg)
        if rng.random() < 0.4:
            flows.append(gcc.BisymmetricFlow(rng.uniform(10, 40) * KMS, rng.uniform(5, 30) * KMS,
                                             rng.uniform(0, 180) * u.deg))
        if rng.random() < 0.2:
            flows.append(gcc.LopsidedFlow(rng.uniform(5, 20) * KMS, rng.uniform(5, 20) * KMS,
                                          rng.uniform(0, 360) * u.deg))
        if rng.random() < 0.4:
            flows.append(gcc.RadialFlow(rng.uniform(-40, 20) * KMS))
        if rng.random() < 0.3:
            kw["surface"] = gcc.GaussianRing(radius=g.surface.r_eff,
                                             width=0.3 * g.surface.r_eff)
        if rng.random() < 0.3:
            kw["vertical"] = gcc.Sech2Vertical(0.5 * u.arcsec)
        if not flows and not kw:
            flows.append(gcc.RadialFlow(rng.uniform(-40, 20) * KMS))
        out.append(g.replace(flows=flows, **kw))
    return out


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
    small = gcc.CubeGrid(shape=(32, 64, 64), pixel_scale=2 * u.arcsec, channel_width=25 * KMS,
                         beam=Beam(4 * u.arcsec))
    batch_projector = gcc.Projector(small, device=device)
    plain_batch = gcc.stack_parameters(random_galaxies(batch), device=device)
    real_batch = gcc.stack_parameters(realistic_disks(batch), device=device)

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
             "plain random galaxies)", f"{res['batch'] / res['real_batch']:.1f}",
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
