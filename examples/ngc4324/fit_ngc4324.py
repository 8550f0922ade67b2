"""Fit the CARMA CO(1-0) cube of NGC 4324 with a ring model (Laplace posterior).

    python examples/ngc4324/fit_ngc4324.py PATH/TO/NGC4324.fits [OUT_DIR] [DEVICE] [METHOD]

The cube comes from KinMSpy's examples (T. A. Davis, MIT licence: ``kinms/examples/
NGC4324.fits``; Alatalo et al. 2013); it is not shipped with galcubecraft.  Its legacy
``VELO-LSR`` axis has no CUNIT3 and is read in m/s, the FITS standard's unit (a warning says
so).  The noise is the header's RMS, 3.1 mJy/beam.
"""
import sys
import time
from pathlib import Path

import galcubecraft as gcc
from galcubecraft.fitting import read_model

#: The model file beside this script (also ``galcubecraft fit --model``'s).
MODEL = read_model(Path(__file__).with_name("model.toml"))


def main(path, out=None, device=None, method="laplace"):
    t = time.perf_counter()
    result = gcc.fit(path, MODEL, method=method, noise=0.0031, seed=1, progress=True,
                     device=device)
    print(f"{time.perf_counter() - t:.1f} s ({result.seconds['evaluations']} evaluations); "
          f"chi2 {result.chi2:.0f} for {result.n_modes} whitened modes")
    result.table.pprint_all()
    if out:
        result.write(out, overwrite=True, plots=True)
    return result


if __name__ == "__main__":
    main(*sys.argv[1:])
