"""Grids from the FITS headers of real observations (`CubeGrid.from_fits`).

A header is trusted only for what it states.  What a render needs and a header may
leave out (the beam, the spectral unit, the rest frequency of a frequency or
wavelength axis) is either given explicitly by the caller or refused with an
error that says which argument to pass; nothing is guessed.
"""
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from radio_beam import Beam, Beams

from . import lines
from .units import validate_quantity

__all__ = ["read_header", "cube_hdu", "grid_arguments", "parse_bunit", "FITSCubeWarning"]

_KMS = u.km / u.s
#: Spectral CTYPE prefixes whose values are velocities: the rest frequency only names the line.
_VELOCITY_TYPES = ("VRAD", "VOPT", "VELO", "ZOPT", "BETA", "FELO")
#: The FITS standard's unit of each spectral axis type, meant where CUNIT is missing.
_SI_SPECTRAL_UNITS = {"FREQ": "Hz", "ENER": "J", "WAVN": "1/m", "VRAD": "m/s", "VOPT": "m/s",
                      "VELO": "m/s", "FELO": "m/s", "WAVE": "m", "AWAV": "m", "ZOPT": "",
                      "BETA": ""}


class FITSCubeWarning(UserWarning):
    """A FITS header read as its writer meant it, by an assumption worth knowing about."""


#: CASA / AIPS BUNIT spellings astropy does not parse as written, matched case-insensitively.
_BUNIT_ALIASES = {
    "jy/beam": u.Jy / u.beam, "jy beam-1": u.Jy / u.beam, "jy/bm": u.Jy / u.beam,
    "mjy/beam": u.mJy / u.beam, "mjy beam-1": u.mJy / u.beam,
    "jy/pixel": u.Jy / u.pix, "jy/pix": u.Jy / u.pix, "jy pixel-1": u.Jy / u.pix,
    "k": u.K, "kelvin": u.K,
}


def parse_bunit(text):
    """The `~astropy.units.Unit` of a ``BUNIT`` string as CASA, MARTINI, KinMS or MUSE write it.

    Raises ValueError for an empty or unknown unit (data whose unit is not known cannot
    receive a model in the right units).
    """
    text = (text or "").strip()
    if not text:
        raise ValueError("the header has no BUNIT; the data's unit must be known to add a model "
                         "to it (pass data_unit=..., e.g. 'Jy/beam')")
    alias = _BUNIT_ALIASES.get(" ".join(text.lower().split()))
    if alias is not None:
        return alias
    for fmt in ("fits", None):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", u.UnitsWarning)
                return u.Unit(text, format=fmt)
        except ValueError:
            continue
    raise ValueError(f"BUNIT {text!r} is not a unit astropy understands; pass data_unit=...")


def cube_hdu(hdul, hdu=None, name="the file"):
    """Index (or name) of the cube in an open HDU list: ``hdu``, or the first image
    HDU with three or more axes."""
    if hdu is not None:
        return hdu
    for k, h in enumerate(hdul):
        if h.is_image and h.header.get("NAXIS", 0) >= 3:
            return k
    raise ValueError(f"{name} has no image HDU with three or more axes")


def read_header(source, hdu=None):
    """``(header, beams)`` of a FITS file, HDU, header or `~spectral_cube.SpectralCube`.

    ``beams`` is a `radio_beam.Beams` table of per-channel beams (a CASA ``BEAMS``
    extension or a `~spectral_cube.VaryingResolutionSpectralCube`), else None.
    """
    if isinstance(source, fits.Header):
        return source.copy(), None
    if isinstance(source, (fits.PrimaryHDU, fits.ImageHDU)):
        return source.header.copy(), None
    if hasattr(source, "wcs") and hasattr(source, "header") and hasattr(source, "spectral_axis"):
        header = source.header.copy()     # a SpectralCube
        beams = getattr(source, "beams", None)
        if beams is not None:
            return header, beams
        beam = getattr(source, "_beam", None)
        if beam is not None:
            header.update(beam.to_header_keywords())
        return header, None
    if isinstance(source, (str, Path)):
        try:
            hdul = fits.open(source, memmap=True)
        except OSError as exc:
            if not Path(source).exists():
                raise
            raise ValueError(f"{source}: not a FITS file astropy can read ({exc})") from None
        with hdul:
            header = hdul[cube_hdu(hdul, hdu, source)].header.copy()
            beams = None
            if "BEAMS" in hdul:
                beams = Beams.from_fits_bintable(hdul["BEAMS"])
        return header, beams
    raise TypeError(f"expected a FITS file name, an HDU, a Header or a SpectralCube, "
                    f"got {type(source).__name__}")


def _rest_frequency_of(value):
    if isinstance(value, str):
        return lines.rest_frequency(value)
    q = validate_quantity("rest_frequency", value, (u.Hz, u.m), positive=True)
    return q.to(u.Hz, equivalencies=u.spectral())


def _beam(header, beam, beams):
    if beam is False:
        return None
    if isinstance(beam, str):
        if beam != "common":
            raise ValueError(f"beam must be a Beam, an angle, False or 'common', got {beam!r}")
        if beams is None:
            raise ValueError("beam='common' is for cubes with a table of per-channel beams; "
                             "this one has none")
        return beams.common_beam()
    if beam is not None:
        return beam          # checked by CubeGrid
    if beams is not None:
        major = beams.major.to(u.arcsec)
        raise ValueError(
            f"the cube has a beam per channel (major axis {major.min():.4g} to {major.max():.4g}); "
            "galcubecraft convolves with one beam: pass beam='common' for the smallest beam "
            "that contains them all (radio_beam's common_beam), or beam=Beam(...)")
    if "BMAJ" not in header:
        raise ValueError("the header has no beam (BMAJ/BMIN/BPA); pass beam=Beam(...) or a "
                         "circular FWHM (e.g. beam=0.7*u.arcsec for an optical cube's PSF), or "
                         "beam=False to render without one (Jy/pixel)")
    if "BMIN" not in header:
        raise ValueError(f"the header gives BMAJ = {header['BMAJ']} but no BMIN: pass the beam "
                         "explicitly with beam=Beam(major, minor, pa)")
    return Beam.from_fits_header(header)


def grid_arguments(header, *, beam=None, beams=None, rest_frequency=None, spectral_unit=None):
    """What a FITS header says about its cube's grid, as `CubeGrid.from_wcs` takes it.

    Returns a dict: ``wcs`` (the 3-D celestial + spectral WCS), ``shape``,
    ``channel_edges`` (radio velocity), ``beam``, ``rest_frequency`` (or None),
    ``spectral_type``, ``specsys`` and ``stokes``.  See `galcubecraft.CubeGrid.from_fits`
    for the arguments.
    """
    header = header.copy()
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0 and "WCSAXES" in header:
        raise ValueError("the header has no NAXIS (a WCS-only header?), so the cube's shape is "
                         "unknown; read the grid from the FITS file, HDU or SpectralCube")
    if naxis not in (3, 4):
        raise ValueError(f"a cube header has 3 axes (or 4 with a Stokes axis), got NAXIS = {naxis}")
    ctypes = [str(header.get(f"CTYPE{i}", "")).strip().upper() for i in range(1, naxis + 1)]
    sizes = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]
    stokes = [k for k, c in enumerate(ctypes) if c == "STOKES"]
    if stokes and sizes[stokes[0]] != 1:
        raise ValueError(f"the Stokes axis has {sizes[stokes[0]]} planes; cut out one plane "
                         "(e.g. Stokes I) first")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        probe = WCS(header)
    lng, lat, spec = probe.wcs.lng, probe.wcs.lat, probe.wcs.spec
    if lng < 0 or lat < 0 or spec < 0:
        raise ValueError(f"a cube needs two celestial axes and a spectral axis, got CTYPEs "
                         f"{ctypes}")
    if sorted((lng, lat)) != [0, 1]:
        raise ValueError(f"the celestial axes must be FITS axes 1 and 2, got CTYPEs {ctypes}")
    spec_key = f"CUNIT{spec + 1}"
    if spectral_unit is not None:
        header[spec_key] = u.Unit(spectral_unit).to_string(format="fits")
    elif not str(header.get(spec_key, "")).strip():
        # the FITS standard's units where CUNIT is missing (Greisen et al. 2006, WCS paper III):
        # what legacy (AIPS-style) headers such as VELO-LSR in m/s were written to mean
        default = _SI_SPECTRAL_UNITS.get(ctypes[spec].split("-")[0])
        if default is None:
            raise ValueError(f"the header has no {spec_key} for its {ctypes[spec]} axis; pass "
                             "spectral_unit=... (e.g. 'Hz', 'km/s', 'Angstrom')")
        warnings.warn(f"the header has no {spec_key} for its {ctypes[spec]} axis: reading it "
                      f"in {default}, the FITS standard's unit (pass spectral_unit=... if it "
                      "is not)", FITSCubeWarning, stacklevel=3)
        header[spec_key] = default
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(header)
    pc = w.wcs.get_pc()
    others = [k for k in range(naxis) if k != spec]
    if np.any(pc[spec, others] != 0) or np.any(pc[others, spec] != 0):
        raise ValueError("the spectral axis is rotated into the celestial axes; such cubes are "
                         "not supported")

    # ---- rest frequency: stated, given, or (for velocity axes only) not needed
    if rest_frequency is not None:
        f0 = _rest_frequency_of(rest_frequency)
        w.wcs.restfrq, w.wcs.restwav = f0.to_value(u.Hz), 0.0
    elif w.wcs.restfrq > 0:
        f0 = w.wcs.restfrq * u.Hz
    elif w.wcs.restwav > 0:
        f0 = (w.wcs.restwav * u.m).to(u.Hz, equivalencies=u.spectral())
    else:
        f0 = None
    spectral_type = w.wcs.ctype[spec].split("-")[0]
    is_velocity = spectral_type in _VELOCITY_TYPES
    if f0 is None and not is_velocity:
        raise ValueError(f"the {ctypes[spec]} axis has no rest frequency (RESTFRQ/RESTWAV); pass "
                         "rest_frequency= (a Quantity or a line name such as 'CO(2-1)')")

    # ---- channel edges in radio velocity, exact for any spectral type (wcslib translates)
    sub = w.sub([spec + 1])
    spectral = WCS(naxis=1)               # plain CDELT form: wcslib's sptr ignores a CD matrix
    spectral.wcs.ctype, spectral.wcs.cunit = sub.wcs.ctype, sub.wcs.cunit
    spectral.wcs.crval, spectral.wcs.crpix = sub.wcs.crval, sub.wcs.crpix
    spectral.wcs.cdelt = [sub.wcs.get_cdelt()[0] * sub.wcs.get_pc()[0, 0]]
    spectral.wcs.restfrq, spectral.wcs.restwav = w.wcs.restfrq, w.wcs.restwav
    if f0 is None:      # velocity to velocity: the rest frequency cancels; any value will do
        spectral.wcs.restfrq = 1e11
    try:
        spectral.wcs.sptr("VRAD-???")
    except Exception as exc:   # wcslib's own error types
        raise ValueError(f"cannot express the {ctypes[spec]} axis as radio velocity: "
                         f"{exc}") from exc
    n_chan = sizes[spec]
    pixels = np.arange(n_chan + 1) - 0.5
    edges = (spectral.wcs_pix2world(pixels, 0)[0] * u.Unit(spectral.wcs.cunit[0])).to_value(_KMS)
    steps = np.diff(edges)
    if not (np.all(np.isfinite(edges)) and (np.all(steps > 0) or np.all(steps < 0))):
        raise ValueError(f"the {ctypes[spec]} axis does not map to monotonic radio velocities")

    nx, ny = sizes[lng], sizes[lat]
    return {"wcs": w.sub([1, 2, spec + 1]), "shape": (n_chan, ny, nx),
            "channel_edges": edges * _KMS, "beam": _beam(header, beam, beams),
            "rest_frequency": f0, "spectral_type": spectral_type,
            "specsys": header.get("SPECSYS", w.wcs.specsys) or "",
            "stokes": (stokes[0] + 1) if stokes else None}
