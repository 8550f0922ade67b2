"""The codes we compare against, each installed into its own folder and run in a subprocess.

GalCubeCraft 0.1.0 shares our distribution name, so it never goes into the same
site-packages: ``pip install --no-deps --target DIR galcubecraft==0.1.0`` (and the
packages it imports that we do not depend on), then ``PYTHONPATH=DIR``.
KinMS goes into a folder of its own the same way.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ENV = ROOT / ".bench"

#: What each comparison needs beyond galcubecraft's own dependencies (numpy, scipy, astropy,
#: matplotlib, torch): GalCubeCraft 0.1.0 also imports astrodendro and scikit-learn.
PACKAGES = {
    "seed": ["galcubecraft==0.1.0", "astrodendro", "scikit-learn", "joblib", "threadpoolctl",
             "narwhals"],
    "kinms": ["kinms"],
}
#: The module each folder must provide.
MODULES = {"seed": "GalCubeCraft", "kinms": "kinms"}


def provision(name, env_dir=DEFAULT_ENV):
    """Install ``name``'s packages into ``env_dir/name`` once; returns the folder."""
    target = Path(env_dir) / name
    if _importable(MODULES[name], target):
        return target
    target.mkdir(parents=True, exist_ok=True)
    print(f"installing {' '.join(PACKAGES[name])} into {target} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--upgrade", "--target", str(target), *PACKAGES[name]], check=True)
    if not _importable(MODULES[name], target):
        raise RuntimeError(f"{MODULES[name]} does not import from {target}")
    return target


def _env(path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(path), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _importable(module, path):
    if not Path(path).is_dir():
        return False
    run = subprocess.run([sys.executable, "-c", f"import {module}"], env=_env(path),
                         capture_output=True)
    return run.returncode == 0


def run_script(script, path=None, timeout=3600):
    """Run ``script`` (it prints one JSON line last) with ``path`` first on PYTHONPATH."""
    env = _env(path) if path is not None else dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=timeout)
    if run.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- the seed's quick start
#: The seed README's quick-start call (one cube, 125 x 125 x 40), timed per cube: constructor
#: and generate_cubes() (which saves the cube) into a scratch folder.  ``{module}`` is
#: GalCubeCraft (0.1.0) or galcubecraft (ours).
QUICK_START = r"""
import json, os, statistics, sys, tempfile, time, warnings
warnings.simplefilter("ignore")
from {module} import GalCubeCraft
os.chdir(tempfile.mkdtemp())
def once(seed, grid):
    t = time.perf_counter()
    g = GalCubeCraft(n_gals=None, n_cubes=1, resolution='all', grid_size=grid,
                     n_spectral_slices=40, seed=seed, verbose=False)
    g.generate_cubes()
    return time.perf_counter() - t, int(g.n_gals[0])
sys.stdout = open(os.devnull, "w")          # 0.1.0 prints even when verbose=False
once(1000, 32)                              # warm-up: imports, allocator, caches
times = [once(seed, 125) for seed in range({n})]
sys.stdout = sys.__stdout__
print(json.dumps(times))
"""


def quick_start_times(which, n, env_dir=DEFAULT_ENV):
    """Per-cube (seconds, n_gals) of the seed's quick-start call, for seeds 0..n-1."""
    if which == "seed":
        path = provision("seed", env_dir)
        return run_script(QUICK_START.format(module="GalCubeCraft", n=n), path)
    return run_script(QUICK_START.format(module="galcubecraft", n=n))
