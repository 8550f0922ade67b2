"""The observation grid as plain numbers: what the projector is handed, once.

`~galcubecraft.CubeGrid` holds Quantities, a WCS and a `radio_beam.Beam`;
`CubeGrid.pixel_grid` converts them once into a `PixelGrid` of floats and NumPy
arrays in the internal units (arcsec, km/s), so that the projector never sees
units (as `Galaxy.tensors` does for galaxies).
"""
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np

__all__ = ["PixelGrid", "PIXEL_SAMPLINGS"]

#: What a pixel of a cube with a beam holds: the beam-convolved sky at its centre
#: (``'point'``, radio images) or averaged over it (``'average'``, IFU spaxels, detectors).
PIXEL_SAMPLINGS = ("point", "average")


@dataclass(frozen=True)
class PixelGrid:
    """A grid's pixels, channels, beam and spectral response, unit-free.

    Attributes
    ----------
    shape : tuple of int
        ``(n_chan, ny, nx)``.
    pixel : float
        Pixel size (arcsec).
    sky_matrix : ndarray (2, 2)
        ``(east, north)`` offset (arcsec) per step of one pixel along ``(x, y)``.
    channel_edges : ndarray
        Radio-velocity channel edges (km/s), ``n_chan + 1 + 2 chan_margin``: the band
        extended by the channels the spectral response reaches beyond it.
    chan_margin : int
        Channels rendered beyond each end of the band for the spectral response.
    response : ndarray or None
        The spectral response's kernel over channels (odd length), or None.
    beam : tuple or None
        ``(sigma_major, sigma_minor, angle)``: sigmas in pixels, ``angle`` (rad) of
        the major axis counter-clockwise from +x; None for a beam-free grid.
    beam_pixels : float
        Ω_beam / Ω_pix, the pixels per beam (1 without a beam): Jy/pixel times this is
        Jy/beam.
    sampling : str
        One of `PIXEL_SAMPLINGS`: what a pixel holds once the beam is applied.
    """

    shape: Tuple[int, int, int]
    pixel: float
    sky_matrix: np.ndarray
    channel_edges: np.ndarray
    chan_margin: int
    response: Optional[np.ndarray]
    beam: Optional[Tuple[float, float, float]]
    beam_pixels: float
    sampling: str = "point"

    @property
    def rotation(self):
        """Position angle (rad, east of north) of the +y pixel axis (0 for north up)."""
        return float(np.arctan2(self.sky_matrix[0, 1], self.sky_matrix[1, 1]))

    def sky_offsets(self, margin=0):
        """Pixel-centre ``(east, north)`` offsets (arcsec) from the field centre, each (ny, nx).

        ``margin`` extends the grid by that many pixels on every side.
        """
        _, ny, nx = self.shape
        dx = np.arange(-margin, nx + margin) - (nx - 1) / 2
        dy = np.arange(-margin, ny + margin) - (ny - 1) / 2
        dx, dy = np.meshgrid(dx, dy, indexing="xy")
        m = self.sky_matrix
        return m[0, 0] * dx + m[0, 1] * dy, m[1, 0] * dx + m[1, 1] * dy

    def refined(self, step):
        """The same field on pixels ``step`` times smaller (``step`` a positive integer):
        pixel ``(y, x)`` of this grid is the ``step x step`` block of pixels
        ``(step y + i, step x + j)`` of the refined one."""
        if step == 1:
            return self
        n_chan, ny, nx = self.shape
        beam = None if self.beam is None else (self.beam[0] * step, self.beam[1] * step,
                                               self.beam[2])
        return replace(self, shape=(n_chan, ny * step, nx * step), pixel=self.pixel / step,
                       sky_matrix=self.sky_matrix / step, beam=beam,
                       beam_pixels=self.beam_pixels * step**2)
