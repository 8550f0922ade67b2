"""Wall time, peak memory, scaling and batched throughput of the renderer.

    python -m benchmarks.render [--quick] [--device cpu|cuda] [--out benchmarks/results/render.md]

Timings are medians of several runs after a warm-up, on whatever machine runs this (it prints
the torch thread count and device).  Peak memory is the high-water mark of the process's
resident set during a render (after a warm-up render), measured in a fresh subprocess.
"""
import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import astropy.units as u
import numpy as np
import torch
from radio_beam import Beam

import galcubecraft as gcc

KMS = u.km / u.s


def reference_galaxy(**kw):
    """The DESIGN reference model: exponential disk h = 5", arctan to 200 km/s, r_turn = 2"."""
    args = dict(surface=gcc.ExponentialDisk(scale_length=5 * u.arcsec),
                vertical=gcc.ExponentialVertical(0.5 * u.arcsec),
                kinematics=gcc.ArctanRotationCurve(v_max=200 * KMS, r_turn=2 * u.arcsec),
                dispersion=10 * KMS, inclination=60 * u.deg, position_angle=30 * u.deg,
                flux=30 * u.Jy * KMS)
    args.update(kw)
    return gcc.Galaxy(**args)


def reference_grid(n_pix=128, n_chan=40):
    """1" pixels and a 4" beam; more pixels widen the field, more channels narrow them."""
    return gcc.CubeGrid(shape=(n_chan, n_pix, n_pix), pixel_scale=1 * u.arcsec,
                        channel_width=20 * KMS * 40 / n_chan, beam=Beam(4 * u.arcsec))


def timeit(fn, repeats):
    with torch.no_grad():
        return _timeit(fn, repeats)


def _sync():
    """Wait for queued GPU work, so that wall times include it."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timeit(fn, repeats):
    fn()                                   # warm-up
    _sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


_PEAK = """
import sys, torch, galcubecraft as gcc
sys.path.insert(0, {root!r})
from benchmarks.render import reference_galaxy, reference_grid

def rss(field):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith(field)) / 1024

g, grid = reference_galaxy(), reference_grid({n_pix}, {n_chan})
with torch.no_grad():
    gcc.render(g, grid)                        # warm-up: lazy imports, allocator pools
    base = rss("VmRSS:")
    with open("/proc/self/clear_refs", "w") as fh:   # reset the high-water mark (Linux)
        fh.write("5")
    gcc.render(g, grid)
print(base, rss("VmHWM:"))
"""


def peak_memory_mib(n_pix, n_chan):
    """Resident memory before a render and its high-water mark during it (MiB, Linux)."""
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", _PEAK.format(root=root, n_pix=n_pix,
                                                             n_chan=n_chan)],
                         capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.strip().splitlines()[-1].split())
    return before, after


def random_galaxies(n, seed=0):
    rng = np.random.default_rng(seed)
    return [reference_galaxy(
        surface=gcc.SersicDisk(r_eff=rng.uniform(3, 8) * u.arcsec, n=rng.uniform(0.5, 1.5)),
        inclination=rng.uniform(0, 85) * u.deg, position_angle=rng.uniform(0, 360) * u.deg,
        dispersion=rng.uniform(30, 50) * KMS) for _ in range(n)]


def batch_render(batch, device="cpu", finer=1, **options):
    """The render `batch_time` times, ready to call: ``batch`` random galaxies on
    64 x 64 x 32 in one projector call.

    The beam is two pixels (FWHM): since pixels hold the beam-convolved sky exactly, the
    projector renders it on pixels twice finer; ``options`` go to `galcubecraft.Projector`
    (``min_beam_sigma=0`` renders on the grid's own pixels, as before).  ``finer`` (odd):
    render on a grid of pixels that many times finer and read it at the 64 x 64 pixels'
    centres, which gives a code that integrates over its pixels the beam-convolved sky at
    those centres (what a radio image holds) to its sampling's accuracy."""
    if finer < 1 or finer % 2 != 1:
        raise ValueError(f"finer must be a positive odd integer, got {finer!r}")
    grid = gcc.CubeGrid(shape=(32, 64 * finer, 64 * finer), pixel_scale=2 * u.arcsec / finer,
                        channel_width=25 * KMS, beam=Beam(4 * u.arcsec))
    projector = gcc.Projector(grid, device=device, **options)
    (law, params), = gcc.stack_parameters(random_galaxies(batch), device=device)
    centre = finer // 2             # the fine pixel at each pixel's centre
    return lambda: projector(params, law)[..., centre::finer, centre::finer]


def batch_time(batch, device="cpu", repeats=2, finer=1, **options):
    """Seconds to render ``batch`` random galaxies on 64 x 64 x 32 in one projector call
    (`batch_render`)."""
    return timeit(batch_render(batch, device, finer, **options), repeats)


def compact_galaxies(n, seed=0):
    """``n`` seeded unresolved rotators on 1" pixels: Sérsic disks of r_eff 0.001-0.1", n 1-8,
    seen at 40-90 deg, h = r_eff / 2, arctan curves of 150-250 km/s turning at r_eff: the
    cusps and point sources whose centres are integrated in bands (docs/rendering.rst)."""
    rng = np.random.default_rng(seed)
    return [reference_galaxy(
        surface=gcc.SersicDisk(r_eff=(r_eff := 10 ** rng.uniform(-3, -1)) * u.arcsec,
                               n=rng.uniform(1, 8)),
        vertical=gcc.ExponentialVertical(scale_height=r_eff / 2 * u.arcsec),
        kinematics=gcc.ArctanRotationCurve(v_max=rng.uniform(150, 250) * KMS,
                                           r_turn=r_eff * u.arcsec),
        inclination=rng.uniform(40, 90) * u.deg, position_angle=rng.uniform(0, 360) * u.deg,
        dispersion=10 * KMS, offset=rng.uniform(-3, 3, 2) * u.arcsec)
        for _ in range(n)]


def compact_time(n=16, repeats=1):
    """Seconds to render `compact_galaxies` one by one, each on 32 x 32 x 24 (1" pixels,
    20 km/s channels, a 3" beam)."""
    grid = gcc.CubeGrid(shape=(24, 32, 32), pixel_scale=1 * u.arcsec, channel_width=20 * KMS,
                        beam=Beam(3 * u.arcsec))
    galaxies = compact_galaxies(n)
    return timeit(lambda: [gcc.render_tensor(g, grid) for g in galaxies], repeats)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.render",
                                description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", default=None,
                   help="comma-separated batch sizes for the throughput rows (default 64, or "
                        "16 with --quick; on CUDA 64,256,1024)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "render.md"))
    args = p.parse_args(argv)
    repeats = 3 if args.quick else 7
    rows = []
    galaxy = reference_galaxy()

    # 1. the reference cube
    grid = reference_grid()
    t = timeit(lambda: gcc.render(galaxy, grid, device=args.device), repeats)
    if args.device == "cpu":
        base, peak = peak_memory_mib(128, 40)
        mem = f"peak RSS {peak:.0f} MiB ({peak - base:+.0f} MiB over the {base:.0f} MiB before)"
    else:
        mem = ""
    rows.append(("render 128x128x40 (reference)", f"{t * 1e3:.0f} ms", mem))

    # 2. scaling with output voxels
    sizes = [(64, 40), (128, 40), (256, 40)] if args.quick else \
        [(64, 40), (128, 40), (256, 40), (512, 40), (128, 128), (128, 256)]
    # the reference galaxy stays the same size on the sky: the field grows around it
    scaling = []
    for n_pix, n_chan in sizes:
        g = reference_grid(n_pix, n_chan)
        t = timeit(lambda: gcc.render_tensor(galaxy, g, device=args.device), max(1, repeats // 2))
        scaling.append((n_pix, n_chan, t, t / (n_pix**2 * n_chan) * 1e9))
        rows.append((f"render {n_pix}x{n_pix}x{n_chan}", f"{t * 1e3:.0f} ms",
                     f"{scaling[-1][3]:.1f} ns/voxel"))

    # 3. batched throughput, 64x64x32
    if args.batches:
        batches = [int(b) for b in args.batches.split(",")]
    elif args.device.startswith("cuda"):
        batches = [64, 256, 1024]
    else:
        batches = [16 if args.quick else 64]
    for batch in batches:
        t = batch_time(batch, args.device, max(2, repeats // 2))
        rows.append((f"batch of {batch} random galaxies, 64x64x32", f"{t * 1e3:.0f} ms",
                     f"{batch / t:.1f} cubes/s"))

    device = args.device if args.device == "cpu" else torch.cuda.get_device_name()
    header = (f"galcubecraft {gcc.__version__}, torch {torch.__version__}, device {device}, "
              f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    lines = [f"# Renderer benchmark\n\n{header}\n", "| case | time | other |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps(
        {"header": header, "rows": rows, "scaling": scaling}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
