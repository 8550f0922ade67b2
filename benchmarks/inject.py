"""Time `galcubecraft.inject` on observation-sized cubes: ``python -m benchmarks.inject``.

Two cubes of zeros are written to a temporary folder, with the headers an ALMA
(CASA) and a MUSE pipeline write, and ten random galaxies are injected into each.
The time is the whole call: reading the header and data, rendering each galaxy on a
cutout of the cube's grid, converting to the data's unit and adding.
"""
import argparse
import tempfile
import time
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits

import galcubecraft as gcc
from galcubecraft.inject import inject, random_galaxies
from galcubecraft.priors import GalaxyPriors, Uniform

KMS = u.km / u.s


def alma_header(n_chan, n_pix):
    grid = gcc.CubeGrid(shape=(n_chan, n_pix, n_pix), pixel_scale=0.5 * u.arcsec,
                        channel_width=10 * KMS, beam=gcc.grid.Beam(2 * u.arcsec),
                        rest_frequency="CO(2-1)", spectral_type="FREQ")
    header = grid.wcs.to_header()
    header.update(grid.beam.to_header_keywords())
    header["BUNIT"] = "Jy/beam"
    return header


def muse_header(n_chan, n_pix):
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CD1_1"], header["CD2_2"] = -0.2 / 3600, 0.2 / 3600
    header["CRPIX1"] = header["CRPIX2"] = n_pix / 2
    header["CRVAL1"], header["CRVAL2"] = 53.16, -27.78
    header["CUNIT1"] = header["CUNIT2"] = "deg"
    header["CTYPE3"], header["CUNIT3"] = "AWAV", "Angstrom"
    header["CD3_3"], header["CRPIX3"], header["CRVAL3"] = 1.25, 1.0, 4750.0
    header["BUNIT"] = "10**(-20)*erg/s/cm**2/Angstrom"
    return header


ALMA, MUSE = "ALMA-like 512x512x200 (FREQ, Jy/beam)", "MUSE-like 300x300x3681 (AWAV, f_lambda)"
SIZES = {ALMA: (200, 512), MUSE: (3681, 300)}
CASES = {
    ALMA: (alma_header(200, 512), {}, GalaxyPriors()),
    MUSE: (
        muse_header(3681, 300), dict(rest_frequency="Halpha", beam=0.7 * u.arcsec),
        GalaxyPriors(r_eff=Uniform(0.5 * u.arcsec, 1.5 * u.arcsec),
                     v_max=Uniform(50 * KMS, 200 * KMS), dispersion=40 * KMS)),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="galaxies per cube")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (header, options, priors) in CASES.items():
            n_chan, n_pix = SIZES[name]
            path = Path(tmp) / "cube.fits"
            fits.PrimaryHDU(np.zeros((n_chan, n_pix, n_pix), np.float32),
                            header).writeto(path, overwrite=True)
            grid = gcc.CubeGrid.from_fits(path, **options)
            galaxies = random_galaxies(grid, args.n, seed=1, priors=priors)
            start = time.perf_counter()
            result = inject(path, galaxies, **options)
            elapsed = time.perf_counter() - start
            lost = 1 - (result.truth["flux_in_cube"].sum() / result.truth["flux"].sum())
            print(f"{name}: {elapsed:.2f} s for {args.n} galaxies "
                  f"({n_chan * n_pix**2 * 4 / 2**30:.2f} GiB of float32 data); "
                  f"flux not in the cube {float(lost):+.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
