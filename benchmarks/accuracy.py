"""Accuracy sweep: random legal galaxies at default sampling against a 4x finer float64 render
and against the quasi-Monte Carlo in-field flux of tests/test_accuracy.py.

    python -m benchmarks.accuracy [--cases 100] [--seed 2026] [--catalogue N]

Prints one line per case that misses 1e-3 in flux or 0.3% in L1, the worst case of each, and
the fraction within each target; writes the summary to benchmarks/results/accuracy.md.  With
``--catalogue N`` it measures instead ordinary galaxies: N drawn by
`galcubecraft.catalogue.random_galaxies` (seed 1) on 64 x 64 x 32 (1" pixels, 3" beam,
25 km/s channels), each cube's L1 against the same 4x finer float64 render (median and worst).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))
from test_accuracy import light_in_field, random_case, render_case  # noqa: E402

#: "4x finer": four times the cells per pixel, minor-axis bins and band cells per band radius
#: (band_cells 16 against 4), three footprint nodes and exact (erf) line integration, in float64.
FINE = dict(oversample=8, max_oversample=32, minor_density=4, max_minor_samples=2048,
            footprint_nodes=3, line_integration="erf", band_cells=16)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--catalogue", type=int, default=0, metavar="N",
                        help="L1 of N ordinary catalogue galaxies instead of the sweep")
    args = parser.parse_args(argv)
    if args.catalogue:
        return catalogue(args.catalogue)
    rng = np.random.default_rng(args.seed)
    rows = []
    for _ in tqdm(range(args.cases), desc="accuracy sweep"):
        case = random_case(rng)
        start = time.perf_counter()
        default = render_case(case)
        seconds = time.perf_counter() - start
        fine = render_case(case, dtype=torch.float64, **FINE)
        expected = light_in_field(case, case["npix"] / 2)
        flux = abs(float(default.sum()) - expected) / max(expected, 1e-3)
        l1 = float((default - fine).abs().sum() / fine.abs().sum().clamp_min(1e-300))
        rows.append((flux, l1, seconds, case))
    flux = np.array([r[0] for r in rows])
    l1 = np.array([r[1] for r in rows])
    lines = [f"# Accuracy sweep: {args.cases} random legal galaxies (seed {args.seed})", "",
             f"- flux within 1e-3 of the QMC in-field flux: {np.mean(flux <= 1e-3):.0%}; "
             f"worst {flux.max():.2e}",
             f"- L1 within 0.3% of a 4x finer float64 render: {np.mean(l1 <= 3e-3):.0%}; "
             f"worst {l1.max():.2e}",
             f"- median default render time {np.median([r[2] for r in rows]):.3f} s", "",
             "| flux error | L1 | n | r_eff (px) | i (deg) | h / r_eff | r_turn / r_eff |",
             "|---|---|---|---|---|---|---|"]
    for f, d, _, c in sorted(rows, key=lambda r: -max(r[0] / 1e-3, r[1] / 3e-3))[:15]:
        lines.append(f"| {f:.1e} | {d:.1e} | {c['n']:.2f} | {c['r_eff']:.3g} | "
                     f"{c['inclination']:.0f} | {c['scale_height'] / c['r_eff']:.2f} | "
                     f"{c['r_turn'] / c['r_eff']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "results" / "accuracy.md").write_text(text)
    return 0


def catalogue(count):
    """Median and worst L1 of ``count`` catalogue galaxies against the 4x finer render."""
    import astropy.units as u
    from radio_beam import Beam

    import galcubecraft as gcc
    from galcubecraft.catalogue import random_galaxies
    grid = gcc.CubeGrid(shape=(32, 64, 64), pixel_scale=1 * u.arcsec,
                        channel_width=25 * u.km / u.s, beam=Beam(3 * u.arcsec))
    galaxies = random_galaxies(grid, count, seed=1, min_separation=0 * u.arcsec)

    def render(**sampling):
        projector = gcc.Projector(grid, **sampling)
        with torch.no_grad():
            return torch.cat([projector(params, law).double()
                              for law, params in gcc.stack_parameters(galaxies)])
    default = render()
    fine = render(dtype=torch.float64, **FINE)        # both in stack_parameters' order
    l1 = ((default - fine).abs().sum(dim=(1, 2, 3)) / fine.abs().sum(dim=(1, 2, 3))).numpy()
    print(f"{count} catalogue galaxies: L1 against a 4x finer float64 render, median "
          f"{np.median(l1):.2e}, worst {l1.max():.2e}, {np.sum(l1 > 3e-3)} above 0.3%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
