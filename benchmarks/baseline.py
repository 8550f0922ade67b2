"""This checkout against an earlier commit of galcubecraft, in one run, as ratios.

    python -m benchmarks.baseline REF [--rounds 3] [--threads N] [--busy]

``REF`` (any git revision: a commit, a tag, ``HEAD~3``) is checked out into a temporary git
worktree; the reference render (128 x 128 x 40, default settings), the batch of 64 random
galaxies on 64 x 64 x 32 (``benchmarks.render.batch_time``; also with ``min_beam_sigma=0``
where the code has it) and unresolved rotators one by one (``benchmarks.render.compact_time``)
are then timed for each code in its
own process, the two alternating ``rounds`` times so that a busy machine slows both alike; the
best time of each is kept.  ``--threads N`` sets torch's threads in both (default: torch's
own, two on a 2-core machine); with one, a machine shared with others (or a hypervisor's)
disturbs each measure less.  ``--busy`` times both beside a busy loop on every core (a shared
machine: `benchmarks.contention`).  ``python -m benchmarks --baseline REF`` adds these rows to
the table.
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
from benchmarks.render import (batch_time, compact_time, reference_galaxy, reference_grid,
                               timeit)
grid, galaxy = reference_grid(), reference_galaxy()
with torch.no_grad():
    reference = timeit(lambda: gcc.render_tensor(galaxy, grid), {repeats})
    batch = batch_time(64, "cpu", {repeats})
    compact = compact_time({compact}, 1) / {compact}
    try:                # the batch on the grid's own pixels (codes that can render finer)
        coarse = 64 / batch_time(64, "cpu", {repeats}, min_beam_sigma=0)
    except TypeError:
        coarse = None
print(json.dumps({{"reference_s": reference, "batch_cubes_per_s": 64 / batch,
                   "coarse_cubes_per_s": coarse, "compact_s": compact,
                   "version": gcc.__version__}}))
"""


def _time(code, repeats, threads=None):
    script = _SCRIPT.format(code=str(code), bench=str(ROOT), repeats=repeats, compact=COMPACT,
                            threads=int(threads or 0))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(ref, rounds=3, repeats=3, threads=None, busy=False):
    """Best reference-render time and batch throughput of this checkout and of ``ref``; with
    ``busy``, both beside a busy loop on every core (`benchmarks.contention.beside`)."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref],
                            capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="galcubecraft-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                        str(tree), commit], check=True)
        try:
            runs = {"ours": [], "baseline": []}
            with beside("busy loops") if busy else nullcontext():
                for _ in range(rounds):
                    runs["ours"].append(_time(ROOT, repeats, threads))
                    runs["baseline"].append(_time(tree, repeats, threads))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tree)], check=False)
    best = {who: {"reference_s": min(r["reference_s"] for r in rs),
                  "batch_cubes_per_s": max(r["batch_cubes_per_s"] for r in rs),
                  "coarse_cubes_per_s": max((r["coarse_cubes_per_s"] or 0) for r in rs),
                  "compact_s": min(r["compact_s"] for r in rs)}
            for who, rs in runs.items()}
    return {"ref": ref, "commit": commit, "rounds": rounds, "busy": busy, **best}


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
    args = parser.parse_args(argv)
    res = measure(args.ref, args.rounds, threads=args.threads, busy=args.busy)
    print("| measure | this checkout | baseline | ratio (>1: this checkout faster) |")
    print("|---|---|---|---|")
    for row in rows(res):
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
