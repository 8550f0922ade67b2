"""Training data end to end on this machine: ``python -m benchmarks.dataset [--baseline REF]``.

Rows (cubes/s; 64x64x32, 1" pixels, 3" beam, 20 km/s channels, beam-correlated noise at a
peak S/N of 3-30, masks, labels and the truth table):

* ``galcubecraft dataset`` (`generate_dataset`, HDF5 shards of 64, start-up included, in a
  process that keeps the memory it frees as the command does) with one process and with two
  Dask workers, for scenes of 1-3 galaxies (2.1 on average) and of one;
* `StreamingCubes` on the CPU, one cube per item and (where the code has it) in batches, in
  this process and from a ``DataLoader`` with two workers (start-up included);
* the projector alone on the same galaxies: the galaxies of 16 cubes in one batch (render
  blocks) as one process renders them (as many blocks at once as torch has threads, one
  thread each; codes before `~galcubecraft.projector.single_threaded_renders`: a block at a
  time, its groups on the threads), and cube by cube on one thread (what each cube cost
  alone): the rates the rest is bound by;
* the scenes drawn from the priors and their parameters stacked, on one thread: the host's
  part of every cube, and what bounds a stream on a GPU.

With ``--device cuda`` (when there is a GPU) the GPU rows instead: `StreamingCubes` on the
device in batches of ``--gpu-batch`` (noise, masks, labels and parameters, no host round
trip; ``--gpu-batches`` of them timed), ``galcubecraft dataset --device cuda`` writing that
many cubes, the projector alone on batches of that size, and the reference 128x128x40
render; with ``--profile`` how busy the GPU is in each (`occupancy`).

With ``--grid-pixels`` this checkout's default (small disks on pixels twice finer, for where
the light lies within a pixel: docs/rendering.rst) is measured against the priors'
``[render]`` table set to ``finer_radius = 0`` (every disk on the grid's pixels), in the same
way.

With ``--baseline REF`` the same rows are measured for the code at git revision ``REF`` (in a
temporary worktree), each code in its own process, alternating, so that a busy machine slows
both alike.  Then the peak memory (RSS of the run and its workers, sampled every 0.2 s) of a
long run of small cubes (16x32x32), to show that it stays flat.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent

PRIORS = {
    "dataset": {"seed": 1, "shard_size": 64},
    "grid": {"shape": [32, 64, 64], "pixel_scale": "1 arcsec", "channel_width": "20 km/s",
             "beam": "3 arcsec"},
    "noise": {"peak_snr": {"distribution": "loguniform", "low": 3, "high": 30}},
    "scene": {"n_galaxies": {"distribution": "choice", "values": [1, 2, 3]}},
    "galaxy": {"r_eff": {"distribution": "loguniform", "low": "1.5 arcsec",
                         "high": "5 arcsec"},
               "v_max": {"distribution": "uniform", "low": "80 km/s", "high": "250 km/s"}},
}
ONE = {**PRIORS, "scene": {"n_galaxies": 1}}
#: ``--grid-pixels``' ``[render]`` table, the other side of its comparison.
GRID_PIXELS = {"finer_radius": 0}

#: Run in a fresh process whose ``galcubecraft`` is the one at ``code``.
_SCRIPT = r"""
import json, sys, tempfile, time
sys.path.insert(0, {code!r})
import torch
import galcubecraft as gcc
from galcubecraft.dataset import DatasetSpec, StreamingCubes, generate_dataset
priors, n, what = json.loads({priors!r}), {n}, {what!r}
out = {{}}
if __name__ == "__main__":
    if what == "dataset":
        try:        # as the galcubecraft command does (codes that have it)
            from galcubecraft.resources import keep_freed_memory
        except ImportError:
            pass
        else:
            keep_freed_memory()
        for workers in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                generate_dataset(priors, n, tmp + "/d", workers=workers, progress=False)
                out[f"dataset_{{workers}}"] = n / (time.perf_counter() - start)
    else:
        torch.set_num_threads(2)
        stream = StreamingCubes(priors, stop=n, device="cpu")
        start = time.perf_counter()
        for _ in stream:
            pass
        out["stream"] = n / (time.perf_counter() - start)
        try:
            stream = StreamingCubes(priors, stop=n, device="cpu", batch_size=16)
        except TypeError:
            pass
        else:
            start = time.perf_counter()
            for _ in stream:
                pass
            out["stream_batch"] = n / (time.perf_counter() - start)
            loader = torch.utils.data.DataLoader(
                StreamingCubes(priors, stop=n, device="cpu", batch_size=16), batch_size=None,
                num_workers=2)
            start = time.perf_counter()
            for _ in loader:
                pass
            out["stream_loader"] = n / (time.perf_counter() - start)
        spec = DatasetSpec(priors)
        # with the priors' [render] options (codes before them: the default)
        projector = spec.projector() if hasattr(spec, "projector") else gcc.Projector(spec.grid)
        scenes = [spec.draw(i, 1)[0] for i in range(64)]

        def block(k):
            with torch.no_grad():
                for law, params in gcc.stack_parameters(
                        [g for scene in scenes[k:k + 16] for g in scene]):
                    projector(params, law)
        # the galaxies of 16 cubes in one projector batch (render blocks) as a process of
        # this code renders them: as many blocks at once as torch has threads, one thread
        # each (codes before single_threaded_renders: one block at a time, its groups on the
        # threads)
        try:
            from galcubecraft.projector import single_threaded_renders
        except ImportError:
            single_threaded_renders = None
        start = time.perf_counter()
        if single_threaded_renders is None:
            for k in range(0, 64, 16):
                block(k)
        else:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(torch.get_num_threads(),
                                    initializer=single_threaded_renders) as pool:
                list(pool.map(block, range(0, 64, 16)))
        out["projector_blocks"] = 64 / (time.perf_counter() - start)
        with torch.no_grad():
            # each cube's galaxies alone on one thread
            torch.set_num_threads(1)
            start = time.perf_counter()
            for scene in scenes:
                for law, params in gcc.stack_parameters(scene):
                    projector(params, law)
            out["projector"] = 64 / (time.perf_counter() - start)
        # the host's part of a GPU stream: scenes drawn, their parameters stacked
        start = time.perf_counter()
        drawn = [spec.draw(i, 1)[0] for i in range(1000, 1000 + n)]
        gcc.stack_parameters([g for scene in drawn for g in scene])
        out["scenes"] = n / (time.perf_counter() - start)
    print(json.dumps(out))
"""


#: The GPU rows (`gpu_rows`, this checkout's) on the ``galcubecraft`` at ``code``.
_GPU_SCRIPT = r"""
import json, sys
sys.path.insert(0, {code!r})
import torch
import galcubecraft         # this code's, imported before the benchmarks (which use it)
sys.path.insert(0, {root!r})
from benchmarks.dataset import gpu_rows
rows = gpu_rows({device!r}, {batch}, {n_batches}, profile={profile})
name = torch.cuda.get_device_name() if torch.cuda.is_available() else {device!r}
print(json.dumps({{"device": name, "rows": rows}}))
"""


def _run(script):
    """Run ``script`` in a fresh Python; the JSON its last line of output holds."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(script)       # a file: Dask's spawned workers re-import the main module
    try:
        done = subprocess.run([sys.executable, fh.name], capture_output=True, text=True,
                              env=env, check=True)
    finally:
        os.unlink(fh.name)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure(code, priors, n, what):
    return _run(_SCRIPT.format(code=str(code), priors=json.dumps(priors), n=n, what=what))


def _gpu_table(codes, args):
    """The GPU rows of each code, alternating, as a table with ratios (rates: this checkout
    over the baseline; times: the baseline over this checkout)."""
    results, device = {who: {} for who in codes}, None
    for _ in range(args.rounds):
        for who, code in codes.items():
            got = _run(_GPU_SCRIPT.format(code=str(code), root=str(ROOT), device=args.device,
                                          batch=args.gpu_batch, n_batches=args.gpu_batches,
                                          profile=args.profile))
            device = got["device"]
            for name, value in got["rows"]:
                best = results[who].get(name)
                better = best is None or (
                    float(value) > float(best) if name.endswith("cubes/s") else
                    float(value) < float(best) if name.endswith(", ms") else False)
                results[who][name] = value if better else best
    base = f"galcubecraft at {args.baseline}" if args.baseline else ""
    print(f"| {device} | this checkout | {base} | ratio |\n|---|---|---|---|")
    for name, value in results["ours"].items():
        other = results.get("baseline", {}).get(name)
        ratio = ""
        if other is not None and name.endswith("cubes/s"):
            ratio = f"{float(value) / float(other):.2f}x"
        elif other is not None and name.endswith(", ms"):
            ratio = f"{float(other) / float(value):.2f}x"
        print(f"| {name} | {value} | {'' if other is None else other} | {ratio} |")


def rss_tree():
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total


def memory_run(n, folder):
    from galcubecraft.dataset import generate_dataset
    small = {**PRIORS, "grid": {**PRIORS["grid"], "shape": [16, 32, 32],
                                "channel_width": "40 km/s"},
             "dataset": {"seed": 2, "shard_size": 256}}
    peaks, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            peaks.append(rss_tree())
            time.sleep(0.2)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    start = time.perf_counter()
    generate_dataset(small, n, folder, workers=1, progress=False)
    elapsed = time.perf_counter() - start
    stop.set()
    thread.join()
    return elapsed, peaks


def occupancy(fn):
    """How busy the GPU is while ``fn`` runs (after a warm-up call): (share of the wall time
    some kernel runs, kernels launched, host waits, the five kernels taking most time).

    The wall time is measured without the profiler; the kernels' time with it
    (`torch.profiler`), overlapping kernels counted once.  Host waits are the device-to-host
    copies and synchronisations the host makes (each one drains the queue of launches)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    spans, launches, waits, per_kernel = [], 0, 0, {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            spans.append((event.time_range.start, event.time_range.end))
            per_kernel[event.name] = per_kernel.get(event.name, 0) + event.time_range.elapsed_us()
        elif event.name.startswith("cudaLaunchKernel"):
            launches += 1
        elif event.name in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                            "cudaMemcpyAsync", "cudaMemcpy"):
            waits += 1
    busy, end = 0.0, -float("inf")
    for lo, hi in sorted(spans):            # the union of the kernels' intervals, in us
        if hi > end:
            busy += hi - max(lo, end)
            end = hi
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1])[:5]
    return busy * 1e-6 / wall, launches, waits, top


def gpu_rows(device, batch, n_batches=5, profile=False):
    """The GPU rows: (measure, value) pairs (``profile``: and how busy the GPU is in each)."""
    import torch
    from benchmarks.render import (batch_render, batch_time, reference_galaxy, reference_grid,
                                   timeit)
    import galcubecraft as gcc
    from galcubecraft.dataset import StreamingCubes, generate_dataset
    out = []

    def _sync():
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    def busy(label, fn):
        if profile:
            share, launches, waits, top = occupancy(fn)
            out.append((f"{label}: GPU busy, kernels launched, host waits",
                        f"{100 * share:.0f}%, {launches}, {waits}"))
            out.append((f"{label}: kernels taking most time (ms)",
                        "; ".join(f"{name[:60]} {us / 1e3:.1f}" for name, us in top)))

    for label, priors in (("1-3 galaxies", PRIORS), ("1 galaxy", ONE)):
        stream = iter(StreamingCubes(priors, batch_size=batch, device=device))
        next(stream)
        _sync()
        start = time.perf_counter()
        for _ in range(n_batches):
            got = next(stream)
        _sync()
        out.append((f"StreamingCubes on {device}, batches of {batch}, {label}, cubes/s",
                    f"{n_batches * len(got['index']) / (time.perf_counter() - start):.0f}"))
        busy(f"StreamingCubes, {label}", lambda: next(stream))
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        generate_dataset(PRIORS, batch, Path(folder) / "d", device=device, progress=False)
        out.append((f"galcubecraft dataset --device {device} (1 process, HDF5 shards of 64), "
                    f"{batch} cubes of 1-3 galaxies, cubes/s",
                    f"{batch / (time.perf_counter() - start):.0f}"))
    with torch.no_grad():
        out.append((f"projector alone, batch of {batch} random galaxies 64x64x32, cubes/s",
                    f"{batch / batch_time(batch, device, 3):.0f}"))
        if profile:             # batch_time's batch, made once
            busy("projector alone", batch_render(batch, device))
        grid, galaxy = reference_grid(), reference_galaxy()
        projector = gcc.Projector(grid, device=device)
        seconds = timeit(lambda: gcc.render_tensor(galaxy, grid, projector=projector), 5)
        out.append(("reference render 128x128x40, ms", f"{1e3 * seconds:.1f}"))
        busy("reference render", lambda: gcc.render_tensor(galaxy, grid, projector=projector))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dataset",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="cubes per throughput run")
    parser.add_argument("--baseline", help="git revision to compare against")
    parser.add_argument("--grid-pixels", action="store_true",
                        help="the default against [render] finer_radius=0")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--memory-n", type=int, default=20000,
                        help="cubes of the memory run (16x32x32; 0 to skip)")
    parser.add_argument("--device", default="cpu", help="cuda: the GPU rows instead")
    parser.add_argument("--gpu-batch", type=int, default=1024)
    parser.add_argument("--gpu-batches", type=int, default=5,
                        help="timed StreamingCubes batches per GPU row")
    parser.add_argument("--profile", action="store_true",
                        help="with --device cuda: how busy the GPU is in each row")
    args = parser.parse_args(argv)
    if args.grid_pixels and (args.baseline or args.device != "cpu"):
        parser.error("--grid-pixels compares this checkout with itself on the CPU; drop "
                     "--baseline and --device")
    codes = {"ours": ROOT}
    tmp = tempfile.TemporaryDirectory(prefix="galcubecraft-baseline-")
    if args.baseline:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline],
                                capture_output=True, text=True, check=True).stdout.strip()
        tree = Path(tmp.name) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree),
                        commit], check=True)
        codes["baseline"] = tree
    if args.grid_pixels:
        codes["baseline"] = ROOT
    if args.device != "cpu":
        try:
            _gpu_table(codes, args)
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(tree)], check=False)
            tmp.cleanup()
        return 0
    results = {who: {} for who in codes}
    try:
        for _ in range(args.rounds):
            for label, priors in (("1-3 galaxies", PRIORS), ("1 galaxy", ONE)):
                for what in ("dataset", "stream"):
                    for who, code in codes.items():
                        given = {**priors, "render": GRID_PIXELS} \
                            if args.grid_pixels and who == "baseline" else priors
                        got = _measure(code, given, args.n, what)
                        for key, value in got.items():
                            best = results[who].get((label, key), 0)
                            results[who][(label, key)] = max(best, value)
    finally:
        if args.baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tree)], check=False)
        tmp.cleanup()
    names = {"dataset_1": "galcubecraft dataset, 1 process", "dataset_2":
             "galcubecraft dataset, 2 Dask workers", "stream": "StreamingCubes, one cube per item",
             "stream_batch": "StreamingCubes, batches of 16",
             "stream_loader": "StreamingCubes, batches of 16, DataLoader with 2 workers",
             "projector": "projector alone, cube by cube, 1 thread",
             "projector_blocks": "projector alone, blocks of 16 cubes as one process renders them",
             "scenes": "scenes drawn and their parameters stacked (host, 1 thread)"}
    base = f"galcubecraft at {args.baseline}" if args.baseline else \
        "[render] " + ", ".join(f"{k}={v}" for k, v in GRID_PIXELS.items()) \
        if args.grid_pixels else ""
    ours = "this checkout"
    print(f"| 64x64x32 cubes/s | {ours} | {base} | ratio |")
    print("|---|---|---|---|")
    for (label, key), value in results["ours"].items():
        other = results.get("baseline", {}).get((label, key))
        print(f"| {names[key]}, {label} | {value:.1f} | "
              f"{'' if other is None else f'{other:.1f}'} | "
              f"{'' if other is None else f'{value / other:.2f}x'} |")
    if args.memory_n:
        with tempfile.TemporaryDirectory() as folder:
            elapsed, peaks = memory_run(args.memory_n, Path(folder) / "memory")
        quarter = max(1, len(peaks) // 4)
        print(f"\n16x32x32, 1 process: {args.memory_n} cubes in {elapsed:.0f} s "
              f"({args.memory_n / elapsed:.1f} cubes/s); peak RSS {max(peaks) / 2**20:.0f} MiB; "
              f"max RSS in each quarter of the run: "
              + ", ".join(f"{max(peaks[k:k + quarter]) / 2**20:.0f}"
                          for k in range(0, len(peaks), quarter)) + " MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
