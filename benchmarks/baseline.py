"""This checkout against an earlier commit of galcubecraft, in one run, as ratios.

    python -m benchmarks.baseline REF [--rounds 3] [--threads N] [--busy] [--accuracy]

``REF`` (any git revision: a commit, a tag, ``HEAD~3``) is checked out into a temporary git
worktree; the reference render (128 x 128 x 40, default settings), the batch of 64 random
galaxies on 64 x 64 x 32 (``benchmarks.render.batch_time``; also with ``min_beam_sigma=0``
where the code has it) and unresolved rotators one by one (``benchmarks.render.compact_time``)
are then timed for each code in its
own process, the two alternating ``rounds`` times so that a busy machine slows both alike; the
best time of each is kept.  ``--threads N`` sets torch's threads in both (default: torch's
own, two on a 2-core machine); with one, a machine shared with others (or a hypervisor's)
disturbs each measure less.  ``--busy`` times both beside a busy loop on every core (a shared
machine: `benchmarks.contention`).  ``--accuracy`` adds each code's batch L1 distance to the
instrument's measurement (the beam-convolved sky at the pixel centres, `batch_l1`), and, for
a code that integrates the sky over its pixels, the batch rendered on pixels `FINER` times
finer and read at the centres (its way to that measurement): speed at equal output.
``python -m benchmarks --baseline REF`` adds these rows to the table.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

from .contention import beside

ROOT = Path(__file__).resolve().parent.parent
#: Unresolved rotators rendered one by one (`benchmarks.render.compact_galaxies`).
COMPACT = 8

#: Timed in a fresh process whose ``galcubecraft`` is the one first on ``sys.path``; the
#: measuring code is this checkout's (``benchmarks.render``), so both codes run the same
#: galaxies and grids.
_SCRIPT = r"""
import json, sys
sys.path.insert(0, {code!r})
import torch
import galcubecraft as gcc
if {threads}:
    torch.set_num_threads({threads})
# then this checkout's benchmarks (the code's own checkout has a `benchmarks` too)
sys.path.insert(0, {bench!r})
from benchmarks.render import (batch_render, batch_time, compact_time, reference_galaxy,
                               reference_grid, timeit)
FINER = {finer}
grid, galaxy = reference_grid(), reference_galaxy()
with torch.no_grad():
    reference = timeit(lambda: gcc.render_tensor(galaxy, grid), {repeats})
    batch = batch_time(64, "cpu", {repeats})
    compact = compact_time({compact}, 1) / {compact}
    try:                # the batch on the grid's own pixels (codes that can render finer)
        coarse = 64 / batch_time(64, "cpu", {repeats}, min_beam_sigma=0)
    except TypeError:
        coarse = None
    finer = None
    if {save!r}:        # the cubes, for their L1 to the instrument's measurement
        import numpy
        numpy.save({save!r} + "/default.npy", batch_render(64, "cpu")().double().numpy())
        if coarse is None:  # a code that integrates over its pixels, asked for the centres'
            render = batch_render(64, "cpu", FINER, oversample=1)
            finer = 64 / timeit(render, {repeats})
            numpy.save({save!r} + "/finer.npy", render().double().numpy())
print(json.dumps({{"reference_s": reference, "batch_cubes_per_s": 64 / batch,
                   "coarse_cubes_per_s": coarse, "compact_s": compact,
                   "finer_cubes_per_s": finer, "version": gcc.__version__}}))
"""

#: With ``--accuracy``, a code that integrates the beam-convolved sky over its pixels (no
#: ``min_beam_sigma``) also renders the batch on pixels this many times finer, one cell each,
#: read at the grid's pixel centres: its way to the instrument's measurement.
FINER = 3


def _time(code, repeats, threads=None, save=""):
    script = _SCRIPT.format(code=str(code), bench=str(ROOT), repeats=repeats, compact=COMPACT,
                            threads=int(threads or 0), save=str(save), finer=FINER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(ref, rounds=3, repeats=3, threads=None, busy=False, accuracy=False):
    """Best reference-render time and batch throughput of this checkout and of ``ref``; with
    ``busy``, both beside a busy loop on every core (`benchmarks.contention.beside`); with
    ``accuracy``, each code's batch L1 to the instrument's measurement (`batch_l1`)."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref],
                            capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="galcubecraft-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                        str(tree), commit], check=True)
        try:
            runs = {"ours": [], "baseline": []}
            codes = {"ours": ROOT, "baseline": tree}
            saves = {who: Path(tmp) / who if accuracy else "" for who in codes}
            for folder in saves.values():
                if folder:
                    folder.mkdir()
            with beside("busy loops") if busy else nullcontext():
                for k in range(rounds):
                    for who, code in codes.items():     # the cubes saved in the first round
                        runs[who].append(_time(code, repeats, threads, saves[who] if k == 0
                                               else ""))
            errors = batch_l1(saves) if accuracy else {}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tree)], check=False)
    best = {who: {"reference_s": min(r["reference_s"] for r in rs),
                  "batch_cubes_per_s": max(r["batch_cubes_per_s"] for r in rs),
                  "coarse_cubes_per_s": max((r["coarse_cubes_per_s"] or 0) for r in rs),
                  "compact_s": min(r["compact_s"] for r in rs),
                  "finer_cubes_per_s": max((r.get("finer_cubes_per_s") or 0) for r in rs),
                  **errors.get(who, {})}
            for who, rs in runs.items()}
    return {"ref": ref, "commit": commit, "rounds": rounds, "busy": busy, **best}


def batch_l1(saves):
    """Median and worst L1 distance of each code's batch (``saves``: its folder) to the
    instrument's measurement: this checkout's float64 render with `benchmarks.accuracy.FINE`
    sampling (4x finer), which matches the beam-convolved sky at the pixel centres rendered on
    pixels three times finer to 2e-4 of its light (median; 1.5e-3 worst: measured once on
    2026-11-29, in float64 with ``oversample=4``, ``minor_density=2`` and ``erf`` lines)."""
    import numpy as np
    import torch

    from .accuracy import FINE
    from .render import batch_render

    with torch.no_grad():
        exact = batch_render(64, "cpu", dtype=torch.float64, **FINE)().numpy()
    norm = np.abs(exact).sum(axis=(1, 2, 3))
    out = {}
    for who, folder in saves.items():
        for name in ("default", "finer"):
            path = Path(folder) / f"{name}.npy"
            if path.exists():
                l1 = np.abs(np.load(path) - exact).sum(axis=(1, 2, 3)) / norm
                out.setdefault(who, {})[f"{name}_l1"] = (float(np.median(l1)), float(l1.max()))
    return out


def _l1(pair):
    return f"{pair[0]:.3%} / {pair[1]:.3%}"


def rows(res):
    """Table rows (measure, galcubecraft, other code, ratio) of `measure`'s result."""
    ours, base = res["ours"], res["baseline"]
    name = f"{res['ref']} ({res['commit']})" if res["ref"] != res["commit"] else res["commit"]
    if res.get("busy"):
        name += ", both beside a busy loop on every core"
    out = [(f"Reference render 128x128x40, s, vs galcubecraft at {name}",
            f"{ours['reference_s']:.3f}", f"{base['reference_s']:.3f}",
            f"{base['reference_s'] / ours['reference_s']:.2f}x"),
           (f"Batch of 64 random galaxies 64x64x32, cubes/s, vs galcubecraft at {name}",
            f"{ours['batch_cubes_per_s']:.1f}", f"{base['batch_cubes_per_s']:.1f}",
            f"{ours['batch_cubes_per_s'] / base['batch_cubes_per_s']:.2f}x"),
           (f"An unresolved rotator (r_eff 0.001-0.1\", n 1-8) 32x32x24, s each, vs "
            f"galcubecraft at {name}", f"{ours['compact_s']:.3f}", f"{base['compact_s']:.3f}",
            f"{base['compact_s'] / ours['compact_s']:.2f}x")]
    if ours.get("coarse_cubes_per_s") and not base.get("coarse_cubes_per_s"):
        out.append((f"The same batch on the grid's own pixels (min_beam_sigma=0), cubes/s, vs "
                    f"galcubecraft at {name}", f"{ours['coarse_cubes_per_s']:.1f}",
                    f"{base['batch_cubes_per_s']:.1f}",
                    f"{ours['coarse_cubes_per_s'] / base['batch_cubes_per_s']:.2f}x"))
    if "default_l1" in ours:
        out.append((f"The batch's L1 to the instrument's measurement, median / worst of 64, vs "
                    f"galcubecraft at {name}", _l1(ours["default_l1"]), _l1(base["default_l1"]),
                    f"{base['default_l1'][1] / ours['default_l1'][1]:.0f}x smaller"))
    if "finer_l1" in base:
        out.append((f"The batch rendered for the instrument's measurement (galcubecraft at "
                    f"{name}: pixels {FINER}x finer, one cell each, read at the centres), "
                    f"cubes/s", f"{ours['batch_cubes_per_s']:.1f}",
                    f"{base['finer_cubes_per_s']:.1f}",
                    f"{ours['batch_cubes_per_s'] / base['finer_cubes_per_s']:.2f}x"))
        out.append(("... its L1 to the instrument's measurement, median / worst of 64",
                    _l1(ours["default_l1"]), _l1(base["finer_l1"]),
                    f"{base['finer_l1'][1] / ours['default_l1'][1]:.0f}x smaller"))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("ref", help="git revision to compare against (e.g. a commit)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in both codes (default: torch's own)")
    parser.add_argument("--busy", action="store_true",
                        help="time both beside a busy loop on every core, as a shared machine")
    parser.add_argument("--accuracy", action="store_true",
                        help="also each code's batch L1 to the instrument's measurement (a "
                             "float64 render with 4x finer sampling: some 3 minutes on 2 "
                             "cores), and, for a code that integrates over its pixels, the "
                             f"batch rendered {FINER}x finer and read at the pixel centres")
    args = parser.parse_args(argv)
    res = measure(args.ref, args.rounds, threads=args.threads, busy=args.busy,
                  accuracy=args.accuracy)
    print("| measure | this checkout | baseline | ratio (>1: this checkout faster) |")
    print("|---|---|---|---|")
    for row in rows(res):
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
