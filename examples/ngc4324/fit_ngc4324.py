"""Fit the CARMA CO(1-0) cube of NGC 4324 with a ring model (Laplace posterior).

    python examples/ngc4324/fit_ngc4324.py PATH/TO/NGC4324.fits [OUT_DIR] [DEVICE]

The cube comes from KinMSpy's examples (T. A. Davis, MIT licence: ``kinms/examples/
NGC4324.fits``; Alatalo et al. 2013); it is not shipped with galcubecraft.  Its legacy
``VELO-LSR`` axis has no CUNIT3 and is read in m/s, the FITS standard's unit (a warning says
so).  The noise is the header's RMS, 3.1 mJy/beam.
"""
import sys
import time

import galcubecraft as gcc

MODEL = dict(
    surface="ring", rotation="flat", vertical="exponential", scale_height="1 arcsec",
    ring_radius={"distribution": "uniform", "low": "10 arcsec", "high": "30 arcsec"},
    ring_width={"distribution": "uniform", "low": "1 arcsec", "high": "10 arcsec"},
    inclination={"distribution": "uniform", "low": "40 deg", "high": "85 deg"},
    position_angle={"distribution": "uniform", "low": "200 deg", "high": "260 deg"},
    v_flat={"distribution": "uniform", "low": "100 km/s", "high": "250 km/s"},
    dispersion={"distribution": "uniform", "low": "1 km/s", "high": "40 km/s"},
    flux={"distribution": "loguniform", "low": "5 Jy km/s", "high": "100 Jy km/s"},
    offset=[{"distribution": "uniform", "low": "-5 arcsec", "high": "5 arcsec"}] * 2,
    v_sys={"distribution": "uniform", "low": "1580 km/s", "high": "1700 km/s"})


def main(path, out=None, device=None):
    t = time.perf_counter()
    result = gcc.fit(path, MODEL, method="laplace", noise=0.0031, starts=4, seed=1,
                     progress=True, device=device)
    print(f"{time.perf_counter() - t:.0f} s ({result.seconds['evaluations']} evaluations of 4 "
          f"starts); chi2 {result.chi2:.0f} for {result.n_modes} whitened modes")
    result.table.pprint_all()
    if out:
        result.write(out, overwrite=True)
    return result


if __name__ == "__main__":
    main(*sys.argv[1:])
