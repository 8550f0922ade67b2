"""Fitting NGC 4324's CARMA cube: time to the best fit and to a posterior, with the values.

    python -m benchmarks.fit PATH/TO/NGC4324.fits [--nested] [--live 500] [--device cpu]

The model and priors are ``examples/ngc4324/model.toml`` (a Gaussian ring, a flat rotation
curve, a 1" exponential disk; uniform priors; the header's rms, 3.1 mJy/beam), fitted by
``map`` (L-BFGS from the data's moments), ``laplace`` (MAP + the Hessian's Gaussian, 4,000
draws) and, with ``--nested``, ``nested`` (nautilus; converged when its effective sample size
reaches ``--draws``; its evidence).  KinMS_fitter's rows (Powell, and 1,500 iterations of its
adaptive Metropolis) are the times recorded on this 2-core machine in the data's README: ~0.3 s
a model, so they are not rerun here.
"""
import argparse
import time
import warnings
from pathlib import Path

import galcubecraft as gcc
from galcubecraft.fitting import read_model
from galcubecraft.header import FITSCubeWarning

# KinMS_fitter on the same cube and priors, 2 cores (../shared/data/ngc4324/README.md)
KINMS_FITTER = {"powell": 674.0, "mcmc_1500": 899.0}
KINMS_FITTER_VALUES = {"position_angle": "235.6 ± 0.6", "inclination": "64.5 +1.1/-0.4",
                       "flux": "34.0 ± 2", "dispersion": "6.6 +2.6/-1.4",
                       "ring_radius": "19.1", "ring_width": "4.8", "v_flat": "160.7 ± 1.2"}


def _model():
    return read_model(Path(__file__).resolve().parents[1] / "examples" / "ngc4324" /
                      "model.toml")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.fit",
                                description=__doc__.splitlines()[0])
    p.add_argument("cube", help="NGC4324.fits (KinMSpy's examples; ../shared/data/ngc4324)")
    p.add_argument("--nested", action="store_true", help="also the nested sampler")
    p.add_argument("--live", type=int, default=500)
    p.add_argument("--draws", type=int, default=2000)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    model = _model()
    warnings.simplefilter("ignore", FITSCubeWarning)   # the legacy VELO-LSR axis
    rows, results = [], {}
    methods = ["map", "laplace"] + (["nested"] if args.nested else [])
    for method in methods:
        t = time.perf_counter()
        result = gcc.fit(args.cube, model, method=method, noise=0.0031, seed=1,
                         device=args.device, draws=4000 if method == "laplace" else args.draws,
                         live=args.live)
        seconds = time.perf_counter() - t
        results[method] = result
        meta = result.table.meta
        detail = {"map": f"{result.seconds['evaluations']} gradient evaluations",
                  "laplace": "4,000 draws of the Hessian's Gaussian",
                  "nested": (f"{meta.get('n_like', 0)} likelihoods, effective sample size "
                             f"{meta.get('n_eff', 0):.0f}")}[method]
        evidence = "" if result.log_evidence is None else f"{result.log_evidence:.1f}"
        rows.append((f"galcubecraft {method}", seconds, detail, evidence))
    rows.append(("KinMS_fitter Powell (recorded)", KINMS_FITTER["powell"], "tolerance 1e-4",
                 ""))
    rows.append(("KinMS_fitter MCMC, 1,500 iterations (recorded)", KINMS_FITTER["mcmc_1500"],
                 "adaptive Metropolis", ""))
    print(f"## NGC 4324 on {args.device}\n")
    print("| fit | wall time [s] | what | log evidence | KinMS_fitter MCMC / this |")
    print("|---|---|---|---|---|")
    for name, seconds, detail, evidence in rows:
        print(f"| {name} | {seconds:.1f} | {detail} | {evidence} | "
              f"{KINMS_FITTER['mcmc_1500'] / seconds:.0f}x |")
    print("\n| parameter | unit | map | laplace median ± std |"
          + (" nested median ± std |" if args.nested else "") + " KinMS_fitter MCMC |")
    print("|---|---|---|---|" + ("---|" if args.nested else "") + "---|")
    best = results["map"].table
    for k, row in enumerate(best):
        cells = [f"{row['best']:.4g}"]
        for method in methods[1:]:
            r = results[method].table[k]
            cells.append(f"{r['median']:.4g} ± {r['std']:.2g}")
        print(f"| {row['name']} | {row['unit']} | " + " | ".join(cells)
              + f" | {KINMS_FITTER_VALUES.get(row['name'], '')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
