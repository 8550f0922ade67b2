"""The reference render on a busy machine: users share theirs (login nodes, notebooks beside a
training job, Dask workers).

    python -m benchmarks.contention [--repeats 7]

In one run: the 128 x 128 x 40 reference render on a quiet machine on one thread (the
baseline), then while every core runs another process (a Python busy loop; or a torch job
using every core, like a training run or a parallel test suite beside it), at the default
settings and with torch's own thread count for every render (the default before renders
chose their threads).  Times are medians; ratios are to the quiet single-thread time.
``python -m benchmarks.baseline REF --busy`` times this checkout against an earlier commit beside
the busy loops (`beside`).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

import galcubecraft as gcc

from .render import reference_galaxy, reference_grid

LOADS = {
    "busy loops": "while True: pass",
    "torch job": ("import torch\ntorch.set_num_threads({cores})\nx = torch.randn(600, 600)\n"
                  "while True: x = torch.tanh(x @ x)"),
}


def median_render(projector, galaxy, repeats):
    (law, params), = gcc.stack_parameters([galaxy])
    with torch.no_grad():
        projector(params, law)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            projector(params, law)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


@contextmanager
def beside(name, cores=None):
    """Run the block while the machine's ``cores`` (default: all) are busy with ``LOADS[name]``:
    one busy loop per core, or one torch job on every core."""
    cores = cores or os.cpu_count()
    procs = [subprocess.Popen([sys.executable, "-c", LOADS[name].format(cores=cores)])
             for _ in range(cores if name == "busy loops" else 1)]
    try:
        time.sleep(1.0)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def measure(repeats=7):
    grid, galaxy = reference_grid(), reference_galaxy()
    cores = os.cpu_count()
    default = gcc.Projector(grid)
    one = gcc.Projector(grid, threads=1)
    everyone = gcc.Projector(grid, threads=torch.get_num_threads())
    quiet = median_render(one, galaxy, repeats)
    out = {"cores": cores, "torch_threads": torch.get_num_threads(), "quiet_one_thread": quiet,
           "quiet_default": median_render(default, galaxy, repeats), "loads": {}}
    for name in LOADS:
        with beside(name, cores):
            out["loads"][name] = {
                "default": median_render(default, galaxy, repeats),
                "all_threads": median_render(everyone, galaxy, repeats)}
    return out


def rows(res):
    """(measure, galcubecraft, other, ratio) rows for the benchmark table."""
    quiet = res["quiet_one_thread"]
    out = [("Reference render, quiet machine, 1 thread (baseline), s", f"{quiet:.3f}", "", "1x")]
    for name, r in res["loads"].items():
        out.append((f"Reference render beside {name} on every core: default settings vs "
                    f"{res['torch_threads']} threads (before), s",
                    f"{r['default']:.3f}", f"{r['all_threads']:.3f}",
                    f"{r['default'] / quiet:.1f}x vs {r['all_threads'] / quiet:.1f}x quiet"))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.contention",
                                description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "contention.json"))
    args = p.parse_args(argv)
    res = measure(args.repeats)
    text = markdown(res)
    print(text)
    out = Path(args.out)
    out.write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(text)
    return 0


def markdown(res):
    lines = ["| measure | galcubecraft | before | ratio to quiet, 1 thread |",
             "|---|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(res)]) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
