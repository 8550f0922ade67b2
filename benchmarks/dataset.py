"""Dataset generation on this machine: ``python -m benchmarks.dataset``.

Throughput (cubes/s) of ``generate_dataset`` at 64x64x32 with 1 and 2 workers, and the
peak memory (RSS of this process and its workers) over a long run of small cubes, sampled
every 0.2 s, to show that it stays flat.
"""
import argparse
import tempfile
import threading
import time
from pathlib import Path

import psutil

from galcubecraft.dataset import generate_dataset

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


def rss_tree():
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total


def run(n, workers, priors, folder, sample=False):
    peaks, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            peaks.append(rss_tree())
            time.sleep(0.2)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    start = time.perf_counter()
    generate_dataset(priors, n, folder, workers=workers, progress=False)
    elapsed = time.perf_counter() - start
    stop.set()
    thread.join()
    return elapsed, peaks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="cubes per throughput run")
    parser.add_argument("--memory-n", type=int, default=10000,
                        help="cubes of the memory run (16x32x32)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            elapsed, _ = run(args.n, workers, PRIORS, Path(tmp) / f"w{workers}")
            print(f"64x64x32, {workers} worker(s): {args.n / elapsed:.1f} cubes/s "
                  f"({args.n} cubes in {elapsed:.1f} s, Dask start-up included for 2)")
        small = {**PRIORS, "grid": {**PRIORS["grid"], "shape": [16, 32, 32],
                                    "channel_width": "40 km/s"},
                 "dataset": {"seed": 2, "shard_size": 256}}
        elapsed, peaks = run(args.memory_n, 1, small, Path(tmp) / "memory")
        quarter = max(1, len(peaks) // 4)
        print(f"16x32x32, 1 worker: {args.memory_n} cubes in {elapsed:.0f} s "
              f"({args.memory_n / elapsed:.1f} cubes/s); peak RSS {max(peaks) / 2**20:.0f} MiB; "
              f"max RSS in each quarter of the run: "
              + ", ".join(f"{max(peaks[k:k + quarter]) / 2**20:.0f}"
                          for k in range(0, len(peaks), quarter)) + " MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
