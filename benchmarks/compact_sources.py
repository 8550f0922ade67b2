"""Compact rotating sources and dataset galaxies against renders on finer pixels, where in a
pixel their light lies (`galcubecraft.functional.MULTIPOLES`):
``python -m benchmarks.compact_sources [--fwhm F]``; results in
``benchmarks/results/compact_sources.md``.

Rows: L1 of the cube (float64) from the same galaxy rendered on pixels fine enough that the
beam is 16 rendered pixels in sigma (``min_beam_sigma``), for Sérsic disks of r_eff 0.001-4
pixels (n = 1 and 4, arctan curve of 150 km/s, 50 deg, 40 km/s channels, 0.23/-0.31 pixel
off a pixel's centre); then eight galaxies of ``benchmarks.dataset``'s one-galaxy priors
against the render on 8x finer pixels, with `GRID_PIXELS` (every disk on the grid's pixels)
and at the default (disks under 8 pixels in r_eff on pixels twice finer, the same cells), and
the rates of both.
"""
import argparse
import math
import sys
import time

import astropy.units as u
import numpy as np
import torch
from radio_beam import Beam

import galcubecraft as gcc

KMS = u.km / u.s
#: Every disk on the grid's pixels, as before `galcubecraft.projector.FINER_RADIUS`.
GRID_PIXELS = {"finer_radius": 0}


def galaxy(r_eff, n, inc=50, offset=(0.23, -0.31)):
    return gcc.Galaxy(surface=gcc.SersicDisk(r_eff=r_eff * u.arcsec, n=n),
                      kinematics=gcc.ArctanRotationCurve(v_max=150 * KMS,
                                                         r_turn=max(r_eff, 0.2) * u.arcsec),
                      dispersion=10 * KMS, inclination=inc * u.deg, position_angle=30 * u.deg,
                      flux=1 * u.Jy * KMS, offset=list(offset) * u.arcsec)


def l1(a, b):
    return float(np.abs(a - b).sum() / np.abs(b).sum())


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compact_sources")
    parser.add_argument("--fwhm", type=float, default=6.0, help="beam FWHM, pixels")
    args = parser.parse_args(argv)
    sigma = args.fwhm / math.sqrt(8 * math.log(2))
    grid = gcc.CubeGrid(shape=(12, 32, 32), pixel_scale=1 * u.arcsec, channel_width=40 * KMS,
                        beam=Beam(args.fwhm * u.arcsec))
    finest = math.floor(16 / sigma) * sigma * 0.999
    print(f"| r_eff (px) | n | L1, beam {args.fwhm} px |\n|---|---|---|")
    for r_eff, n in ((0.001, 1), (0.1, 1), (0.3, 1), (1, 1), (2, 1), (4, 1), (0.1, 4),
                     (0.3, 4), (1, 4), (2, 4), (4, 4)):
        g = galaxy(r_eff, n)
        with torch.no_grad():
            cube = gcc.render_tensor(g, grid, dtype=torch.float64).numpy()
            ref = gcc.render_tensor(g, grid, dtype=torch.float64,
                                    min_beam_sigma=finest).numpy()
        print(f"| {r_eff} | {n} | {100 * l1(cube, ref):.3f}% |", flush=True)
    from galcubecraft.dataset import DatasetSpec
    from benchmarks.dataset import ONE
    spec = DatasetSpec(ONE)
    coarse = gcc.Projector(spec.grid, dtype=torch.float64, **GRID_PIXELS)
    finer = gcc.Projector(spec.grid, dtype=torch.float64)
    fine = gcc.Projector(spec.grid, dtype=torch.float64, min_beam_sigma=8 * 1.2)
    print("\n| dataset galaxy | r_eff (px) | n | i (deg) | L1 vs 8x finer, "
          f"{', '.join(f'{k}={v}' for k, v in GRID_PIXELS.items())} | default |"
          "\n|---|---|---|---|---|---|")
    for i in range(8):
        (law, p), = gcc.stack_parameters(spec.draw(i, 1)[0], dtype=torch.float64)
        with torch.no_grad():
            ref = fine(p, law).numpy()
            err, err_finer = l1(coarse(p, law).numpy(), ref), l1(finer(p, law).numpy(), ref)
        print(f"| {i} | {float(p['r_eff']):.2f} | {float(p['n']):.2f} | "
              f"{math.degrees(float(p['inclination'])):.0f} | {100 * err:.3f}% | "
              f"{100 * err_finer:.3f}% |", flush=True)
    # the rates of the two settings on one thread (float32, as datasets render)
    torch.set_num_threads(1)
    stacks = [gcc.stack_parameters(spec.draw(i, 1)[0]) for i in range(32)]
    rates = {}
    for _ in range(2):              # alternating, twice: the better of each
        for name, options in (("grid", GRID_PIXELS), ("default", {})):
            projector = gcc.Projector(spec.grid, **options)
            with torch.no_grad():
                for law, p in stacks[0]:
                    projector(p, law)
                start = time.perf_counter()
                for stack in stacks:
                    for law, p in stack:
                        projector(p, law)
            rate = len(stacks) / (time.perf_counter() - start)
            rates[name] = max(rates.get(name, 0.0), rate)
    print(f"\none thread, float32, 32 one-galaxy cubes: grid's pixels {rates['grid']:.1f} "
          f"cubes/s, default {rates['default']:.1f} cubes/s "
          f"({rates['default'] / rates['grid']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
