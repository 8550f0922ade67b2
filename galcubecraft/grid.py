"""The observation grid: pixels on the sky, velocity channels and the beam."""
import math

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from radio_beam import Beam

from . import lines
from .response import SpectralResponse
from .units import C_KMS, FWHM_PER_SIGMA, validate_quantity

__all__ = ["CubeGrid", "CO_1_0", "beam_in_pixels"]

#: Rest frequency of CO(1-0), the default line (CDMS/Splatalogue).
CO_1_0 = 115.2712018 * u.GHz

_KMS = u.km / u.s
#: Largest number of voxels a grid may have (a float32 cube of this size is 16 GiB).
MAX_VOXELS = 2**32


def beam_in_pixels(beam, pixel_scale, sky_matrix=None):
    """``(sigma_major, sigma_minor, angle)`` of a `radio_beam.Beam` on square pixels.

    Sigmas in pixels; ``angle`` (rad) of the major axis counter-clockwise from
    +x (columns), what `galcubecraft.functional.beam_transfer_function` takes.
    ``sky_matrix`` (`CubeGrid.sky_matrix`) gives the pixels' orientation; by
    default east is to the left and north up, where the angle is ``pi/2 + PA``.
    """
    pixel = u.Quantity(pixel_scale).to_value(u.arcsec)
    if sky_matrix is None:
        sky_matrix = np.array([[-pixel, 0.0], [0.0, pixel]])
    pa = beam.pa.to_value(u.rad)
    dx, dy = np.linalg.solve(sky_matrix, [math.sin(pa), math.cos(pa)])
    return (beam.major.to_value(u.arcsec) / pixel / FWHM_PER_SIGMA,
            beam.minor.to_value(u.arcsec) / pixel / FWHM_PER_SIGMA,
            math.atan2(dy, dx))


def _validate_beam(beam):
    if beam is None:
        return None
    if isinstance(beam, u.Quantity) and not isinstance(beam, Beam):
        beam = Beam(validate_quantity("beam", beam, u.arcsec, positive=True))
    if not isinstance(beam, Beam):
        raise TypeError(f"beam must be a radio_beam.Beam, an angle (circular FWHM) or None, "
                        f"got {beam!r}")
    for name in ("major", "minor", "pa"):
        value = getattr(beam, name)
        if not np.isfinite(value.value):
            raise ValueError(f"beam {name} must be finite, got {value}")
    if beam.major <= 0 * u.arcsec or beam.minor <= 0 * u.arcsec:
        raise ValueError(f"beam major and minor FWHM must be positive, got "
                         f"{beam.major.to(u.arcsec)} x {beam.minor.to(u.arcsec)}")
    return beam


class CubeGrid:
    """Where and how a cube samples the sky and the spectrum.

    The spatial grid is a square-pixel tangent-plane (SIN by default) grid
    centred on ``center``: the field centre lies at FITS reference pixel
    ``((nx + 1) / 2, (ny + 1) / 2)``, east to the left (``CDELT1 < 0``), north up.
    The spectral axis is radio velocity (``VRAD``) in km/s, channel ``k``
    (0-based) centred on ``velocity_center + (k - (n_chan - 1) / 2) * channel_width``;
    a negative ``channel_width`` makes a descending axis.

    Parameters
    ----------
    shape : tuple of int
        ``(n_chan, ny, nx)``, the order of the FITS data array.
    pixel_scale : `~astropy.units.Quantity` [angle]
        Pixel size, > 0.
    channel_width : `~astropy.units.Quantity` [speed]
        Channel width (spacing of channel centres), non-zero.
    beam : `radio_beam.Beam` or `~astropy.units.Quantity` [angle] or None
        Restoring beam (a Quantity is a circular FWHM).  ``None`` renders a
        beam-free cube in Jy/pixel.
    center : `~astropy.coordinates.SkyCoord`, optional
        Sky position of the field centre (default RA = Dec = 0, ICRS).
    velocity_center : `~astropy.units.Quantity` [speed]
        Radio velocity at the spectral centre of the cube (default 0 km/s).
    redshift : float, optional
        Centre the band on the line emitted at this redshift instead: the
        centre's observed frequency is ``f0 / (1 + z)``, its radio velocity
        ``c z / (1 + z)`` (give ``velocity_center`` or ``redshift``, not both).
    rest_frequency : `~astropy.units.Quantity` [frequency] or str
        Rest frequency of the line, or a line name of `galcubecraft.lines.LINES`
        such as ``"CO(3-2)"`` (default CO(1-0), 115.2712018 GHz); written
        as ``RESTFRQ`` so that CASA and spectral-cube can convert velocity
        and frequency.
    spectral_response : `~galcubecraft.response.SpectralResponse`, optional
        The instrument's line-spread function beyond the channel box, e.g.
        ``GaussianLSF(fwhm)`` or ``Hanning()`` (default: none).
    spectral_type : {'VRAD', 'FREQ'}
        The cube's third axis in its WCS and FITS files: radio velocity in
        km/s (default) or frequency in Hz.  The channels are the same: evenly
        spaced radio velocities are evenly spaced frequencies,
        ``f = f0 (1 - v / c)``, so either axis describes them exactly.
    projection : str
        Three-letter celestial projection code (default ``'SIN'``, what
        interferometers image in).
    specsys : str
        Spectral reference frame (``SPECSYS``), default ``'LSRK'``.

    Examples
    --------
    >>> import astropy.units as u
    >>> from galcubecraft import CubeGrid
    >>> grid = CubeGrid(shape=(40, 128, 128), pixel_scale=1 * u.arcsec,
    ...                 channel_width=20 * u.km / u.s, beam=4 * u.arcsec)
    >>> grid.spectral_axis[[0, -1]]
    <Quantity [-390.,  390.] km / s>
    """

    def __init__(self, shape, pixel_scale, channel_width, beam=None, center=None,
                 velocity_center=None, rest_frequency=CO_1_0, projection="SIN",
                 specsys="LSRK", spectral_type="VRAD", spectral_response=None, redshift=None):
        self.shape = self._validate_shape(shape)
        self.pixel_scale = validate_quantity("pixel_scale", pixel_scale, u.arcsec, positive=True)
        self.channel_width = validate_quantity("channel_width", channel_width, _KMS)
        if self.channel_width.value == 0:
            raise ValueError(f"channel_width must be non-zero, got {channel_width}")
        self.beam = _validate_beam(beam)
        if center is None:
            center = SkyCoord(0 * u.deg, 0 * u.deg, frame="icrs")
        if not isinstance(center, SkyCoord) or not center.isscalar:
            raise TypeError(f"center must be a scalar SkyCoord, got {center!r}")
        self.center = center.icrs
        if redshift is not None:
            if velocity_center is not None:
                raise ValueError("give velocity_center or redshift, not both")
            from .galaxy import radio_velocity
            velocity_center = radio_velocity(redshift)
        self.redshift = redshift
        if velocity_center is None:
            velocity_center = 0 * _KMS
        self.velocity_center = validate_quantity("velocity_center", velocity_center, _KMS)
        if isinstance(rest_frequency, str):
            rest_frequency = lines.rest_frequency(rest_frequency)
        self.rest_frequency = validate_quantity("rest_frequency", rest_frequency, u.Hz,
                                                positive=True)
        if spectral_type not in ("VRAD", "FREQ"):
            raise ValueError(f"spectral_type must be 'VRAD' or 'FREQ', got {spectral_type!r}")
        self.spectral_type = spectral_type
        if spectral_response is not None and not isinstance(spectral_response, SpectralResponse):
            raise TypeError(f"spectral_response must be a SpectralResponse (e.g. Hanning()), "
                            f"got {spectral_response!r}")
        self.spectral_response = spectral_response
        if not (isinstance(projection, str) and len(projection) == 3 and projection.isalpha()):
            raise ValueError(f"projection must be a three-letter code such as 'SIN', "
                             f"got {projection!r}")
        self.projection = projection.upper()
        self.specsys = str(specsys).upper()
        pix = self.pixel_scale.to_value(u.arcsec)
        # (east, north) arcsec per (column, row) pixel step: east to the left, north up
        self._sky_matrix = np.array([[-pix, 0.0], [0.0, pix]])
        self._velocity_edges = None     # radio-velocity channel edges (km/s) of a FITS grid
        self._wcs = None                # the WCS of a grid read from, or cut out of, a header
        self.stokes = None              # a FITS grid's degenerate Stokes axis (FITS axis number)

    @classmethod
    def from_fits(cls, source, *, hdu=None, beam=None, rest_frequency=None, spectral_unit=None,
                  spectral_response=None):
        """The grid of an existing cube: its pixels, projection, channels and beam, exactly.

        Parameters
        ----------
        source : str, `~pathlib.Path`, `~astropy.io.fits.Header`, HDU or SpectralCube
            The cube, or just its header (a `~spectral_cube.SpectralCube` too); only
            the header of a file is read.
        hdu : int or str, optional
            The HDU of a file (default: the first with three or more axes).
        beam : `radio_beam.Beam`, angle, ``'common'`` or False, optional
            Overrides the header's beam (``BMAJ``/``BMIN``/``BPA``).  Needed when
            the header has none: an optical cube's PSF FWHM, say; ``False``
            renders without a beam (Jy/pixel).  For a cube with a beam per channel
            (a CASA ``BEAMS`` table), ``'common'`` takes the smallest beam that
            contains them all.
        rest_frequency : `~astropy.units.Quantity` [frequency or wavelength] or str, optional
            The line's rest frequency (or wavelength, or a name from
            `galcubecraft.lines.LINES`); required when the header has none and its
            axis is a frequency or wavelength; replaces the header's if given.
        spectral_unit : str or `~astropy.units.Unit`, optional
            The spectral axis' unit, required when the header has no ``CUNIT``
            for it.
        spectral_response : `~galcubecraft.response.SpectralResponse`, optional

        Notes
        -----
        Any spectral axis wcslib knows is read: ``FREQ``, ``VRAD``, ``VOPT``,
        ``VELO``, ``WAVE``, ``AWAV`` (air wavelengths converted to vacuum),
        ascending or descending, linear in its own variable.  The channels
        become radio-velocity intervals (``v = c (1 - f / f0)``); an axis linear in
        wavelength or optical velocity has channels of slowly varying width
        in radio velocity, which the projector integrates exactly.  The pixels must
        be square; a rotated grid (``PC``/``CD`` matrix, ``CROTA2``) is fine:
        galaxies' position angles stay measured from north.  A degenerate Stokes
        axis is noted (``grid.stokes``) and dropped from the grid's 3-D WCS.
        """
        from .header import grid_from_header, read_header
        header, beams = read_header(source, hdu=hdu)
        return grid_from_header(header, beam=beam, beams=beams, rest_frequency=rest_frequency,
                                spectral_unit=spectral_unit, spectral_response=spectral_response)

    @staticmethod
    def _validate_shape(shape):
        try:
            items = tuple(shape)
            ok = len(items) == 3 and all(
                not isinstance(s, bool) and float(s) == int(s) for s in items)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ValueError(f"shape must be three integers (n_chan, ny, nx), got {shape!r}")
        shape = tuple(int(s) for s in items)
        if min(shape) < 1:
            raise ValueError(f"shape must have at least one channel and one pixel per axis, "
                             f"got {shape}")
        if math.prod(shape) > MAX_VOXELS:
            raise ValueError(f"shape {shape} has {math.prod(shape):.3g} voxels, more than the "
                             f"{MAX_VOXELS:.3g} a cube may have")
        return shape

    # ------------------------------------------------------------------ derived quantities
    @property
    def n_chan(self):
        return self.shape[0]

    @property
    def spectral_axis(self):
        """Channel-centre radio velocities (km/s)."""
        if self._velocity_edges is not None:
            return self._velocity_centers * _KMS
        k = np.arange(self.n_chan) - (self.n_chan - 1) / 2
        return (self.velocity_center + k * self.channel_width).to(_KMS)

    @property
    def channel_edges(self):
        """The ``n_chan + 1`` channel boundaries (radio velocity, km/s), in channel order."""
        return self.extended_channel_edges(0)

    @property
    def channel_widths(self):
        """Signed width of each channel in radio velocity (km/s).

        All equal on grids built by hand; a grid read from a header whose axis is
        linear in wavelength or optical velocity has channels of slowly changing width.
        """
        return np.diff(self.channel_edges)

    @property
    def is_uniform(self):
        """Whether all channels have the same width in radio velocity (to 1e-9)."""
        widths = self.channel_widths.to_value(_KMS)
        return bool(np.all(np.abs(widths - widths.mean()) <= 1e-9 * np.abs(widths).max()))

    def extended_channel_edges(self, extra):
        """Channel boundaries of the band extended by ``extra`` channels at each end.

        The extension continues the end channels' widths (what a spectral response
        rendered beyond the band needs).
        """
        if self._velocity_edges is not None:
            edges = self._velocity_edges
            lo = edges[0] - (edges[1] - edges[0]) * np.arange(extra, 0, -1)
            hi = edges[-1] + (edges[-1] - edges[-2]) * np.arange(1, extra + 1)
            return np.concatenate([lo, edges, hi]) * _KMS
        k = np.arange(-extra, self.n_chan + extra + 1) - self.n_chan / 2
        return (self.velocity_center + k * self.channel_width).to(_KMS)

    @property
    def sky_matrix(self):
        """``(east, north)`` offset (arcsec) per step of one pixel along ``(x, y)``: a 2x2 array.

        ``[[-pixel, 0], [0, pixel]]`` for grids built by hand (east to the left,
        north up); a grid read from a header carries its header's rotation.
        """
        return self._sky_matrix.copy()

    def sky_offsets(self, margin=0):
        """Pixel-centre offsets ``(east, north)`` from the field centre, each (ny, nx), arcsec.

        These are the tangent-plane coordinates in which galaxies are placed;
        ``margin`` extends the grid by that many pixels on every side.
        """
        _, ny, nx = self.shape
        dx = np.arange(-margin, nx + margin) - (nx - 1) / 2
        dy = np.arange(-margin, ny + margin) - (ny - 1) / 2
        dx, dy = np.meshgrid(dx, dy, indexing="xy")
        m = self._sky_matrix
        return u.Quantity([m[0, 0] * dx + m[0, 1] * dy, m[1, 0] * dx + m[1, 1] * dy], u.arcsec)

    @property
    def pixel_area(self):
        return (self.pixel_scale**2).to(u.sr)

    @property
    def unit(self):
        """Brightness unit of cubes rendered on this grid (Jy/beam, or Jy/pixel without a beam)."""
        return u.Jy / u.beam if self.beam is not None else u.Jy / u.pix

    def integrated_flux(self, data):
        """Total line flux of a cube on this grid: ``sum(data dv) Omega_pix / Omega_beam``.

        ``data`` is an array (or Quantity) in `unit`; returns Jy km/s.
        """
        values = data.to_value(self.unit) if isinstance(data, u.Quantity) else np.asarray(data)
        per_pixel = 1.0 if self.beam is None else float(
            (self.pixel_area / self.beam.sr).decompose())
        widths = np.abs(self.channel_widths.to_value(_KMS))
        per_channel = np.sum(values, axis=(-2, -1), dtype=np.float64)
        return float(np.sum(per_channel * widths)) * per_pixel * u.Jy * _KMS

    @property
    def frequencies(self):
        """Observed channel-centre frequencies, ``f0 (1 - v / c)`` (GHz)."""
        if self.rest_frequency is None:
            raise ValueError("this grid has no rest frequency; give CubeGrid.from_fits a "
                             "rest_frequency (a Quantity or a line name) to convert to frequency")
        return (self.rest_frequency * (1 - self.spectral_axis.to_value(_KMS) / C_KMS)).to(u.GHz)

    @property
    def wcs(self):
        """A 3-D `~astropy.wcs.WCS` (RA, Dec, VRAD or FREQ) describing the grid."""
        if self._wcs is not None:
            return self._wcs.deepcopy()
        n_chan, ny, nx = self.shape
        w = WCS(naxis=3)
        w.wcs.ctype = [f"RA---{self.projection}", f"DEC--{self.projection}", self.spectral_type]
        pix = self.pixel_scale.to_value(u.deg)
        if self.spectral_type == "VRAD":
            w.wcs.cunit = ["deg", "deg", "km/s"]
            spectral = self.velocity_center.to_value(_KMS), self.channel_width.to_value(_KMS)
        else:   # radio convention: f = f0 (1 - v/c), exactly linear in v
            w.wcs.cunit = ["deg", "deg", "Hz"]
            f0 = self.rest_frequency.to_value(u.Hz)
            spectral = (f0 * (1 - self.velocity_center.to_value(_KMS) / C_KMS),
                        -f0 * self.channel_width.to_value(_KMS) / C_KMS)
        w.wcs.cdelt = [-pix, pix, spectral[1]]
        w.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2, (n_chan + 1) / 2]
        w.wcs.crval = [self.center.ra.deg, self.center.dec.deg, spectral[0]]
        w.wcs.radesys = "ICRS"
        w.wcs.specsys = self.specsys
        w.wcs.restfrq = self.rest_frequency.to_value(u.Hz)
        w.wcs.set()
        return w

    def pixel_of(self, offset):
        """Array position ``(x, y)`` (0-based pixels) of an ``(east, north)`` offset (arcsec)."""
        east, north = u.Quantity(offset).to_value(u.arcsec)
        _, ny, nx = self.shape
        dx, dy = np.linalg.solve(self._sky_matrix, [east, north])
        return dx + (nx - 1) / 2, dy + (ny - 1) / 2

    def offset_of_pixel(self, x, y):
        """``(east, north)`` offset (arcsec) of the 0-based array position ``(x, y)``."""
        _, ny, nx = self.shape
        return u.Quantity(self._sky_matrix @ [x - (nx - 1) / 2, y - (ny - 1) / 2], u.arcsec)

    def offset_of(self, coord):
        """Tangent-plane ``(east, north)`` offset (arcsec) of a sky position from the centre."""
        x, y = self.wcs.celestial.world_to_pixel(coord)
        return self.offset_of_pixel(float(x), float(y))

    def beam_pixels(self):
        """The beam on this grid's pixels: ``(sigma_major, sigma_minor, angle)``.

        Sigmas in pixels; ``angle`` (rad) of the major axis counter-clockwise from
        +x (columns), what `galcubecraft.functional.beam_transfer_function` takes.
        """
        if self.beam is None:
            return None
        return beam_in_pixels(self.beam, self.pixel_scale, self._sky_matrix)

    @property
    def pixel_rotation(self):
        """Position angle (east of north, deg) of the grid's +y pixel axis (0 for north up)."""
        return math.degrees(math.atan2(self._sky_matrix[0, 1], self._sky_matrix[1, 1])) * u.deg

    def subgrid(self, channels=slice(None), y=slice(None), x=slice(None)):
        """The grid of a cutout ``cube[channels, y, x]`` (unit-step slices).

        The cutout keeps the parent's projection, pixels, beam and channels
        exactly (its WCS is the parent's WCS sliced); its field centre is the
        cutout's centre, so offsets are measured from there.
        """
        slices = []
        for name, sl, n in zip(("channels", "y", "x"), (channels, y, x), self.shape):
            if not isinstance(sl, slice) or sl.step not in (None, 1):
                raise ValueError(f"{name} must be a slice with unit step, got {sl!r}")
            start, stop, _ = sl.indices(n)
            if stop <= start:
                raise ValueError(f"{name} slice {sl!r} selects nothing of {n}")
            slices.append(slice(start, stop))
        edges = self.channel_edges.to_value(_KMS)
        sub = object.__new__(CubeGrid)
        sub.__dict__.update(self.__dict__)
        sub.shape = tuple(s.stop - s.start for s in slices)
        sub._velocity_edges = edges[slices[0].start:slices[0].stop + 1].copy()
        sub._wcs = self.wcs[tuple(slices)]
        _, ny, nx = sub.shape
        sub.center = sub._wcs.celestial.pixel_to_world((nx - 1) / 2, (ny - 1) / 2).icrs
        sub.velocity_center = float(np.mean(sub._velocity_centers)) * _KMS
        sub.channel_width = float(np.mean(np.diff(sub._velocity_edges))) * _KMS
        return sub

    @property
    def _velocity_centers(self):
        edges = self._velocity_edges
        return 0.5 * (edges[1:] + edges[:-1])

    def __repr__(self):
        beam = "no beam" if self.beam is None else (
            f"beam {self.beam.major.to(u.arcsec):.3g} x {self.beam.minor.to(u.arcsec):.3g}, "
            f"PA {self.beam.pa.to(u.deg):.3g}")
        return (f"<CubeGrid shape={self.shape} pixel_scale={self.pixel_scale} "
                f"channel_width={self.channel_width} {beam}>")
