"""galcubecraft side by side with GalCubeCraft 0.1.0 and KinMS, in one run, as ratios.

    python -m benchmarks [--quick] [--device cpu|cuda] [--skip-external] [--baseline REF]
                         [--out DIR]

1. The seed README's quick start (125 x 125 x 40): seconds per cube, ours and 0.1.0's.
2. The DESIGN reference model at equal accuracy: L1 error of each code against a converged
   reference (ours at 4x the default sampling in float64, itself checked against 8x and
   against KinMS at 1e7 clouds); KinMS's sampling error falls as 1/sqrt(clouds), so the
   cloud count that matches our error follows, and KinMS is timed there.
3. Scaling: time and peak memory with output size, for the three codes where they finish.
4. Throughput: cubes per second for a batch of 64 random galaxies on 64 x 64 x 32.
5. Contention: the reference render while every core runs another process, against the
   quiet single-thread time (``benchmarks/contention.py``).
6. Real galaxies: a warped disk with a radial inflow against the plain reference galaxy, and
   a batch of 64 random "realistic disks" against the plain batch (``benchmarks/real.py``).
7. With ``--baseline REF``: the reference render and the batch against galcubecraft at an
   earlier commit, alternating (``benchmarks/baseline.py``); without ``--quick``, also each
   code's batch L1 to the instrument's measurement and the batch at equal output
   (``--accuracy``).

The codes we compare against are installed on first use into their own folders under
``.bench/`` (see ``benchmarks/external.py``); the table (Markdown and reStructuredText, for the
docs) and the plots go to ``benchmarks/results/``.
"""
import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import galcubecraft as gcc

from . import baseline, contention, external, real
from .render import (batch_time, peak_memory_mib, reference_galaxy, reference_grid, timeit)

RESULTS = Path(__file__).parent / "results"

# ------------------------------------------------------------------------------ KinMS
#: The reference model in KinMS's terms.  Conventions matched (checked numerically): KinMS's
#: cube is (x, y, v) -> transpose to (v, y, x); its centre is pixel n/2 and channel n/2, ours
#: (n-1)/2, so phaseCent = -half a pixel and vOffset = -half a channel; KinMS drops clouds that
#: fall outside its field before convolving, so it renders a field 16 pixels (> 9 beam sigma)
#: larger on each side, cropped afterwards (ours renders a beam margin beyond the field).
KINMS_RUN = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
import numpy as np
from kinms import KinMS
n_pix, n_chan, n_clouds, seed, save = {n_pix}, {n_chan}, {n_clouds}, {seed}, {save!r}
pad = 16
r = np.arange(0, 200, 0.05)
sb = np.exp(-r / 5.0)
vel = 2 / np.pi * 200 * np.arctan(r / 2.0)
dv = 20.0 * 40 / n_chan
def run():
    k = KinMS(n_pix + 2 * pad, n_pix + 2 * pad, n_chan * dv, 1.0, dv, [4.0, 4.0, 0.0],
              nSamps=int(n_clouds), fixSeed=True, seed=seed)
    return k.model_cube(inc=60, posAng=30, gasSigma=10, diskThick=0.5, sbProf=sb, sbRad=r,
                        velRad=r, velProf=vel, intFlux=30, phaseCent=[-0.5, -0.5],
                        vOffset=-dv / 2)
t = time.perf_counter()
cube = run()
elapsed = time.perf_counter() - t
cube = np.ascontiguousarray(np.transpose(cube, (2, 1, 0))[:, pad:-pad, pad:-pad])
if save:
    np.save(save, cube)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"time": elapsed, "peak_mib": peak}}))
"""


def kinms(n_pix=128, n_chan=40, n_clouds=1e6, seed=1, save=None, env_dir=external.DEFAULT_ENV):
    path = external.provision("kinms", env_dir)
    return external.run_script(KINMS_RUN.format(n_pix=n_pix, n_chan=n_chan, n_clouds=n_clouds,
                                                seed=seed, save=str(save) if save else None),
                               path)


def l1(a, b):
    return float(np.abs(a - b).sum() / np.abs(b).sum())


def reference_cube(oversample=4, minor_density=2):
    """Ours at finer sampling in float64, every line integrated over the channels with erf."""
    with torch.no_grad():
        return gcc.render_tensor(reference_galaxy(), reference_grid(), dtype=torch.float64,
                                 oversample=oversample, minor_density=minor_density,
                                 line_nodes_per_sigma=None).numpy()


def accuracy(args, scratch):
    """Ours and KinMS against the converged reference; KinMS timed at equal accuracy."""
    out = {}
    ref = reference_cube()
    if not args.quick:
        out["reference_vs_8x"] = l1(ref, reference_cube(8, 4))
    galaxy, grid = reference_galaxy(), reference_grid()
    with torch.no_grad():
        ours = gcc.render_tensor(galaxy, grid).numpy()
    out["ours_l1"] = l1(ours, ref)
    out["ours_time"] = timeit(lambda: gcc.render(galaxy, grid), 3 if args.quick else 7)
    if args.skip_external:
        return out
    counts = [1e5, 1e6] if args.quick else [1e5, 1e6, 1e7]
    points = []
    for n in counts:
        cubes, times = [], []
        for seed in (1, 2):
            path = scratch / f"kinms_{int(n)}_{seed}.npy"
            res = kinms(n_clouds=n, seed=seed, save=path, env_dir=args.env_dir)
            cubes.append(np.load(path))
            times.append(res["time"])
        noise = float(np.abs(cubes[0] - cubes[1]).sum() / np.abs(ref).sum() / math.sqrt(2))
        points.append({"clouds": n, "time": min(times), "l1": l1(cubes[0], ref),
                       "l1_mean_of_two": l1(0.5 * (cubes[0] + cubes[1]), ref),
                       "sampling_noise": noise})
    out["kinms"] = points
    # KinMS's sampling error is a / sqrt(N): a from its seed-to-seed noise at the largest N
    a = points[-1]["sampling_noise"] * math.sqrt(points[-1]["clouds"])
    n_equal = (a / out["ours_l1"]) ** 2
    out["kinms_clouds_at_our_accuracy"] = n_equal
    top = points[-1]
    if not args.quick and n_equal <= 1.2e8:
        res = kinms(n_clouds=n_equal, seed=3, env_dir=args.env_dir)
        out["kinms_time_at_our_accuracy"] = res["time"]
        out["kinms_time_measured"] = True
    else:  # KinMS's time is linear in clouds at this size: extrapolate from the largest run
        out["kinms_time_at_our_accuracy"] = top["time"] * n_equal / top["clouds"]
        out["kinms_time_measured"] = False
    # the systematic part of the KinMS - reference difference, beyond its sampling noise
    m = top["l1_mean_of_two"] ** 2 - (top["sampling_noise"] / math.sqrt(2)) ** 2
    out["kinms_systematic_l1"] = math.sqrt(max(m, 0.0))
    return out


# ------------------------------------------------------------------------------ scaling
SEED_SIZE_RUN = r"""
import json, os, resource, sys, tempfile, time, warnings
warnings.simplefilter("ignore")
from GalCubeCraft import GalCubeCraft
os.chdir(tempfile.mkdtemp())
sys.stdout = open(os.devnull, "w")
t = time.perf_counter()
g = GalCubeCraft(n_gals=1, n_cubes=1, resolution='resolved', grid_size={n_pix},
                 n_spectral_slices={n_chan}, seed=0, verbose=False)
g.generate_cubes()
elapsed = time.perf_counter() - t
sys.stdout = sys.__stdout__
print(json.dumps({{"time": elapsed,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def scaling(args):
    sizes = [(64, 40), (128, 40), (256, 40)] if args.quick else \
        [(64, 40), (128, 40), (256, 40), (512, 40), (128, 128), (128, 256)]
    rows = []
    galaxy = reference_galaxy()
    for n_pix, n_chan in sizes:
        grid = reference_grid(n_pix, n_chan)
        t = timeit(lambda: gcc.render_tensor(galaxy, grid, device=args.device),
                   2 if args.quick else 3)
        base, peak = peak_memory_mib(n_pix, n_chan)
        row = {"n_pix": n_pix, "n_chan": n_chan, "voxels": n_pix**2 * n_chan,
               "ours_time": t, "ours_peak_mib": peak, "ours_base_mib": base}
        if not args.skip_external:
            res = kinms(n_pix, n_chan, 1e6, env_dir=args.env_dir)
            row.update(kinms_time=res["time"], kinms_peak_mib=res["peak_mib"])
            # 0.1.0 builds a (31/64 n)^3 grid with Python loops: minutes at 256^2, hours at 512^2
            if n_pix <= (64 if args.quick else 128) and n_chan == 40:
                path = external.provision("seed", args.env_dir)
                res = external.run_script(SEED_SIZE_RUN.format(n_pix=n_pix, n_chan=n_chan),
                                          path)
                row.update(seed_time=res["time"], seed_peak_mib=res["peak_mib"])
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ main
def quick_start(args):
    n_ours, n_seed = (8, 3) if args.quick else (20, 5)
    ours = external.quick_start_times("ours", n_ours, args.env_dir)
    out = {"ours": ours, "ours_median": statistics.median(t for t, _ in ours)}
    if not args.skip_external:
        seed = external.quick_start_times("seed", n_seed, args.env_dir)
        out.update(seed=seed, seed_median=statistics.median(t for t, _ in seed))
        out["ratio"] = out["seed_median"] / out["ours_median"]
    return out


def throughput(args):
    batch = 16 if args.quick else 64
    t = batch_time(batch, args.device, 1 if args.quick else 2)
    return {"batch": batch, "time": t, "cubes_per_s": batch / t}


def machine(device):
    name = device if device == "cpu" else torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    return (f"galcubecraft {gcc.__version__}, torch {torch.__version__}, device {name}, "
            f"{torch.get_num_threads()} threads, {cpu}, Python {platform.python_version()}")


def table(res):
    """Rows of (measure, galcubecraft, other code, ratio)."""
    rows = []
    qs = res["quick_start"]
    if "seed_median" in qs:
        rows.append(("Quick start 125x125x40, s per cube (median) vs GalCubeCraft 0.1.0",
                     f"{qs['ours_median']:.3f}", f"{qs['seed_median']:.1f}",
                     f"{qs['ratio']:.0f}x"))
    acc = res["accuracy"]
    if "kinms" in acc:
        how = "timed" if acc["kinms_time_measured"] else "extrapolated"
        rows.append((f"Reference model at equal accuracy (L1 {acc['ours_l1']:.2%}) vs KinMS "
                     f"at {acc['kinms_clouds_at_our_accuracy']:.2g} clouds ({how}), s",
                     f"{acc['ours_time']:.3f}", f"{acc['kinms_time_at_our_accuracy']:.1f}",
                     f"{acc['kinms_time_at_our_accuracy'] / acc['ours_time']:.0f}x"))
    for row in res["scaling"]:
        size = f"{row['n_pix']}x{row['n_pix']}x{row['n_chan']}"
        if "kinms_time" in row:
            rows.append((f"{size}, s (KinMS at 1e6 clouds)", f"{row['ours_time']:.3f}",
                         f"{row['kinms_time']:.2f}",
                         f"{row['kinms_time'] / row['ours_time']:.1f}x"))
        if "seed_time" in row:
            rows.append((f"{size}, s (GalCubeCraft 0.1.0, one galaxy)",
                         f"{row['ours_time']:.3f}", f"{row['seed_time']:.1f}",
                         f"{row['seed_time'] / row['ours_time']:.0f}x"))
        rows.append((f"{size}, peak RSS MiB", f"{row['ours_peak_mib']:.0f}",
                     f"{row.get('kinms_peak_mib', float('nan')):.0f} (KinMS)", ""))
    thr = res["throughput"]
    rows.append((f"Batch of {thr['batch']} random galaxies 64x64x32, cubes/s",
                 f"{thr['cubes_per_s']:.1f}", "", ""))
    if "contention" in res:
        rows += contention.rows(res["contention"])
    if "real_galaxies" in res:
        rows += real.rows(res["real_galaxies"])
    if res.get("baseline"):
        rows += baseline.rows(res["baseline"])
    return rows


def write(res, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = table(res)
    acc = res["accuracy"]
    notes = [f"Ours at default settings: L1 {acc['ours_l1']:.3%} against the converged "
             f"reference, {acc['ours_time'] * 1e3:.0f} ms per reference cube."]
    if "reference_vs_8x" in acc:
        notes.append(f"The reference (4x sampling, float64) differs from 8x sampling by L1 "
                     f"{acc['reference_vs_8x']:.3%}.")
    if "kinms" in acc:
        top = acc["kinms"][-1]
        notes.append(f"KinMS at {top['clouds']:.0e} clouds: L1 {top['l1']:.3%} against the "
                     f"reference, of which sampling noise {top['sampling_noise']:.3%} "
                     f"(seed to seed); systematic part {acc['kinms_systematic_l1']:.3%}.")
    md = [f"# galcubecraft benchmarks\n\n{res['machine']}\n",
          "| measure | galcubecraft | other code | ratio |", "|---|---|---|---|"]
    md += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    md += [""] + [f"* {n}" for n in notes]
    (out_dir / "benchmarks.md").write_text("\n".join(md) + "\n")
    rst = [f"Measured on: {res['machine']}", "", ".. list-table::", "   :header-rows: 1", "",
           "   * - measure", "     - galcubecraft", "     - other code", "     - ratio"]
    for a, b, c, d in rows:
        rst += [f"   * - {a}", f"     - {b}", f"     - {c}", f"     - {d}"]
    rst += [""] + [f"* {n}" for n in notes]
    (out_dir / "benchmarks.rst").write_text("\n".join(rst) + "\n")
    (out_dir / "benchmarks.json").write_text(json.dumps(res, indent=1, default=float))
    plot(res, out_dir)
    return "\n".join(md)


def plot(res, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    acc = res["accuracy"]
    ax = axes[0]
    if "kinms" in acc:
        pts = acc["kinms"]
        ax.loglog([p["time"] for p in pts], [p["l1"] * 100 for p in pts], "o-", label="KinMS")
        ax.loglog([acc["kinms_time_at_our_accuracy"]], [acc["ours_l1"] * 100], "o",
                  mfc="none", color="C0", label="KinMS at our accuracy")
    ax.loglog([acc["ours_time"]], [acc["ours_l1"] * 100], "*", ms=14, color="C3",
              label="galcubecraft (default)")
    ax.set_xlabel("time per reference cube [s]")
    ax.set_ylabel("L1 error vs converged reference [%]")
    ax.set_title("Accuracy and cost, reference model 128x128x40")
    ax.legend()
    ax = axes[1]
    rows = res["scaling"]
    for key, label in (("ours", "galcubecraft"), ("kinms", "KinMS (1e6 clouds)"),
                       ("seed", "GalCubeCraft 0.1.0")):
        pts = [(r["voxels"], r[f"{key}_time"]) for r in rows if f"{key}_time" in r]
        if pts:
            x, y = zip(*sorted(pts))
            ax.loglog(x, y, "o-", label=label)
    x = np.array(sorted(r["voxels"] for r in rows), dtype=float)
    base = min(rows, key=lambda r: r["voxels"])
    ax.loglog(x, base["ours_time"] * x / base["voxels"], ":", color="gray", label="linear")
    ax.set_xlabel("output voxels")
    ax.set_ylabel("time [s]")
    ax.set_title("Scaling with output size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "benchmarks.png", dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks",
                                description="galcubecraft vs GalCubeCraft 0.1.0 and KinMS")
    p.add_argument("--quick", action="store_true", help="fewer repeats, sizes and clouds")
    p.add_argument("--device", default="cpu", help="cpu or cuda (throughput and scaling)")
    p.add_argument("--skip-external", action="store_true",
                   help="measure galcubecraft only (no installs)")
    p.add_argument("--env-dir", type=Path, default=external.DEFAULT_ENV,
                   help="where the compared codes are installed (default .bench/)")
    p.add_argument("--baseline", default=None, metavar="REF",
                   help="also time the reference render and the batch against galcubecraft at "
                        "this git revision")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = p.parse_args(argv)
    scratch = Path(subprocess.check_output([sys.executable, "-c",
                                            "import tempfile; print(tempfile.mkdtemp())"],
                                           text=True).strip())
    t0 = time.time()
    res = {"machine": machine(args.device), "quick": args.quick}
    steps = [("quick_start", quick_start), ("accuracy", lambda a: accuracy(a, scratch)),
             ("scaling", scaling), ("throughput", throughput),
             ("contention", lambda a: contention.measure(3 if a.quick else 7)),
             ("real_galaxies", lambda a: real.measure(a.device, 3 if a.quick else 7,
                                                      16 if a.quick else 64))]
    if args.baseline:
        steps.append(("baseline", lambda a: baseline.measure(a.baseline, 2 if a.quick else 3,
                                                             accuracy=not a.quick)))
    for name, step in steps:
        print(f"[{time.time() - t0:6.0f} s] {name} ...", file=sys.stderr, flush=True)
        res[name] = step(args)
    print(write(res, args.out))
    return 0
