"""The exit edge: tensors become SpectralCubes with WCS and beam, and FITS files."""
from pathlib import Path

import astropy.units as u
import numpy as np
from spectral_cube import SpectralCube

from ._files import atomic_path

__all__ = ["SyntheticCube", "to_spectral_cube", "write_fits", "casa_unit_string"]

#: BUNIT spellings that casacore (CASA, CARTA) parses; astropy reads them too.
_CASA_UNITS = {
    u.Jy / u.beam: "Jy/beam",
    u.mJy / u.beam: "mJy/beam",
    u.Jy / u.pix: "Jy/pixel",
}


def casa_unit_string(unit):
    """BUNIT for ``unit`` as CASA expects it ('Jy/beam', not spectral-cube's 'Jy beam-1')."""
    for known, text in _CASA_UNITS.items():
        if unit == known:
            return text
    return unit.to_string(format="fits")


class SyntheticCube(SpectralCube):
    """A `~spectral_cube.SpectralCube` whose FITS output is what CASA and CARTA expect.

    It differs from its parent only in what it writes: ``BUNIT`` is spelled
    ``Jy/beam`` (spectral-cube writes ``Jy beam-1``, which CASA does not take as
    a flux density per beam), and FITS files are written atomically (a
    temporary file in the same folder, renamed when complete), so an
    interrupted write never leaves a partial cube behind.
    """

    @property
    def header(self):
        header = super().header
        header["BUNIT"] = casa_unit_string(self.unit)
        for key, card in self.meta.get("fits_cards", {}).items():
            header[key] = card
        return header

    def write(self, filename, overwrite=False, format=None, stokes=False):
        """Write the cube; FITS output is atomic and CASA-ready (see class docstring).

        ``stokes=True`` adds a degenerate fourth axis (Stokes I) for tools that want
        4-D cubes.
        """
        name = str(filename).lower()
        is_fits = format == "fits" or (format is None and name.endswith(
            (".fits", ".fit", ".fts", ".fits.gz")))
        if not is_fits:
            if stokes:
                raise ValueError("stokes=True is for FITS output")
            if format is None:
                raise ValueError(f"cannot tell the format of {filename!r} from its name; use "
                                 "a FITS name (.fits, .fits.gz) or pass format=...")
            return super().write(filename, overwrite=overwrite, format=format)
        return write_fits(self, filename, overwrite=overwrite, stokes=stokes)


def to_spectral_cube(data, grid, meta=None):
    """Wrap one rendered cube as a `SyntheticCube` with the grid's WCS and beam.

    Parameters
    ----------
    data : `torch.Tensor` or `numpy.ndarray`, shape ``grid.shape``
        Brightness in ``grid.unit``.  The only place where tensors leave torch.
    grid : `~galcubecraft.CubeGrid`
    meta : dict, optional
        Metadata; its ``fits_cards`` entry, ``{KEYWORD: value or (value,
        comment)}``, is written into the FITS header (e.g. the noise rms).
    """
    if hasattr(data, "detach"):
        data = data.detach().cpu().numpy()
    data = np.asarray(data)
    if data.shape != grid.shape:
        raise ValueError(f"data shape {data.shape} does not match the grid's {grid.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError("rendered cube has non-finite values; refusing to wrap it")
    kwargs = {}
    if grid.beam is not None:
        kwargs["beam"] = grid.beam
    return SyntheticCube(data=u.Quantity(data.astype(np.float32), grid.unit, copy=False),
                         wcs=grid.wcs, meta=dict(meta or {}), **kwargs)


def write_fits(cube, filename, overwrite=False, stokes=False):
    """Write ``cube`` to FITS atomically, with ``BUNIT`` spelled for CASA.

    The data go to a temporary file beside ``filename`` which is renamed
    over it only once complete; on any error the temporary file is removed and
    an existing ``filename`` is left untouched.  ``stokes=True`` writes a
    degenerate fourth axis (``STOKES`` = 1, Stokes I), as CASA images have.
    """
    hdu = cube.hdu
    hdu.header["BUNIT"] = casa_unit_string(cube.unit)
    if stokes:
        header = hdu.header
        data = hdu.data[np.newaxis]
        header["WCSAXES"] = 4
        hdu = type(hdu)(data=data, header=header)
        for key, value in (("CTYPE4", "STOKES"), ("CRVAL4", 1.0), ("CDELT4", 1.0),
                           ("CRPIX4", 1.0), ("CUNIT4", "")):
            hdu.header[key] = value
    hdu.header.add_history("Written by galcubecraft")
    with atomic_path(filename, overwrite=overwrite) as tmp:
        hdu.writeto(tmp, overwrite=True, checksum=True)
    return Path(filename)
