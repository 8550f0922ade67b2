"""The observation grid: pixels on the sky, velocity channels and the beam."""
import math

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from radio_beam import Beam

from . import lines
from .header import grid_arguments, read_header
from .parameters import parse_quantity
from .pixelgrid import PIXEL_SAMPLINGS, PixelGrid
from .response import GaussianLSF, Hanning, SpectralResponse
from .units import (C_KMS, FWHM_PER_SIGMA, radio_velocity, validate_quantity,
                    velocity_compression)

__all__ = ["CubeGrid", "CO_1_0", "beam_in_pixels", "PixelGrid"]

#: Rest frequency of CO(1-0), the default line (CDMS/Splatalogue).
CO_1_0 = 115.2712018 * u.GHz

_KMS = u.km / u.s
#: Largest number of voxels a grid may have (a float32 cube of this size is 16 GiB).
MAX_VOXELS = 2**32
#: Relative tolerance on the pixels' squareness (headers round CDELT to ~12 digits).
_SQUARE_RTOL = 1e-6


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
    pixel_sampling : {'point', 'average'}
        What a pixel of a cube with a beam measures.  ``'point'`` (default): the
        beam-convolved sky at the pixel's centre, which is what an interferometric
        (or any restored) image holds.  ``'average'``: the beam-convolved sky averaged
        over the pixel, what an IFU spaxel or a detector pixel measures (give the PSF as
        the beam).  The two differ by the pixel's own smoothing, ~(pixel / beam)^2 / 10
        of the peak; where the beam is narrower than ~3 pixels the projector renders on
        a finer grid so that either is exact (see :ref:`pixel-sampling`).  A grid without
        a beam holds each pixel's flux (Jy/pixel) whatever this says.

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
                 specsys="LSRK", spectral_type="VRAD", spectral_response=None, redshift=None,
                 pixel_sampling="point"):
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
            velocity_center = radio_velocity(redshift)
        self.redshift = redshift
        if velocity_center is None:
            velocity_center = 0 * _KMS
        self.velocity_center = validate_quantity("velocity_center", velocity_center, _KMS)
        if isinstance(rest_frequency, str):
            rest_frequency = lines.rest_frequency(rest_frequency)
        self.rest_frequency = None if rest_frequency is None else validate_quantity(
            "rest_frequency", rest_frequency, u.Hz, positive=True)
        if self.rest_frequency is None and spectral_type != "VRAD":
            raise ValueError(f"a {spectral_type} axis needs a rest_frequency")
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
        if pixel_sampling not in PIXEL_SAMPLINGS:
            raise ValueError(f"pixel_sampling must be one of {PIXEL_SAMPLINGS}, "
                             f"got {pixel_sampling!r}")
        self.pixel_sampling = pixel_sampling
        pix = self.pixel_scale.to_value(u.arcsec)
        # (east, north) arcsec per (column, row) pixel step: east to the left, north up
        self._sky_matrix = np.array([[-pix, 0.0], [0.0, pix]])
        self._velocity_edges = None     # radio-velocity channel edges (km/s) of a FITS grid
        self._wcs = None                # the WCS of a grid read from, or cut out of, a header
        self.stokes = None              # a FITS grid's degenerate Stokes axis (FITS axis number)
        self._check_band(self.channel_edges.to_value(_KMS))

    @staticmethod
    def _check_band(edges):
        """Radio velocities are below c: a channel at or beyond it has no positive frequency."""
        if np.max(edges) >= C_KMS:
            raise ValueError(f"the band reaches radio velocity {np.max(edges):.6g} km/s, at or "
                             f"beyond c ({C_KMS} km/s): that is a frequency <= 0; check the "
                             "spectral axis (velocity_center, channel_width, CRVAL3/CDELT3)")

    @classmethod
    def from_fits(cls, source, *, hdu=None, beam=None, rest_frequency=None, spectral_unit=None,
                  spectral_response=None, pixel_sampling="point"):
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
            The spectral axis' unit where the header has no ``CUNIT`` for it (default: the
            FITS standard's, m/s for a velocity axis such as a legacy ``VELO-LSR``, Hz for
            frequency, m for wavelength; said in a warning).
        spectral_response : `~galcubecraft.response.SpectralResponse`, optional
        pixel_sampling : {'point', 'average'}
            ``'point'`` for a radio image (default), ``'average'`` for an IFU or
            other detector cube (see `CubeGrid`).

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
        header, beams = read_header(source, hdu=hdu)
        return cls.from_wcs(**grid_arguments(header, beam=beam, beams=beams,
                                             rest_frequency=rest_frequency,
                                             spectral_unit=spectral_unit),
                            spectral_response=spectral_response, pixel_sampling=pixel_sampling)

    @classmethod
    def from_header(cls, header, **kwargs):
        """The grid of the cube a FITS `~astropy.io.fits.Header` describes (see `from_fits`)."""
        if not isinstance(header, fits.Header):
            raise TypeError(f"header must be an astropy.io.fits.Header, got "
                            f"{type(header).__name__}")
        return cls.from_fits(header, **kwargs)

    @classmethod
    def from_wcs(cls, wcs, shape, channel_edges, *, beam=None, rest_frequency=None,
                 spectral_type="VRAD", specsys="LSRK", stokes=None, spectral_response=None,
                 pixel_sampling="point"):
        """The grid of a cube described by a 3-D WCS and its channels' radio-velocity edges.

        This is the grid of any existing cube (`from_fits` reads these from a header):
        pixels as the WCS places them (square, possibly rotated, any projection),
        channels as given (they may differ in width).

        Parameters
        ----------
        wcs : `~astropy.wcs.WCS`
            Three axes: the two celestial ones (FITS axes 1 and 2) and the spectral one.
        shape : tuple of int
            ``(n_chan, ny, nx)``.
        channel_edges : `~astropy.units.Quantity` [speed], ``n_chan + 1``
            Radio-velocity edges of the channels, in channel order, monotonic.
        beam : `radio_beam.Beam` or angle or None
        rest_frequency : `~astropy.units.Quantity` [frequency], optional
            None for a velocity axis whose line is unknown (its frequencies are then
            unknown too).
        spectral_type : str
            The axis type as written in the header (``'VRAD'``, ``'FREQ'``, ``'WAVE'``, ...).
        specsys : str
        stokes : int, optional
            FITS axis number of a degenerate Stokes axis of the file, kept in writes.
        spectral_response : `~galcubecraft.response.SpectralResponse`, optional
        pixel_sampling : {'point', 'average'}
        """
        n_chan, ny, nx = cls._validate_shape(shape)
        edges = validate_quantity("channel_edges", channel_edges, _KMS).to_value(_KMS)
        steps = np.diff(edges)
        if edges.shape != (n_chan + 1,) or not (np.all(steps > 0) or np.all(steps < 0)):
            raise ValueError(f"channel_edges must be {n_chan + 1} monotonic radio velocities, "
                             f"got {channel_edges!r}")
        cls._check_band(edges)
        celestial = wcs.celestial
        matrix = celestial.pixel_scale_matrix * 3600.0     # arcsec, rows = world (header order)
        if celestial.wcs.lng == 1:
            matrix = matrix[::-1]
        area = abs(np.linalg.det(matrix))
        if not np.allclose(matrix.T @ matrix, area * np.eye(2), rtol=0, atol=_SQUARE_RTOL * area):
            raise ValueError(f"the pixels are not square (pixel matrix {matrix.tolist()} arcsec);"
                             " regrid the cube first (e.g. with reproject)")
        centre = celestial.pixel_to_world((nx - 1) / 2, (ny - 1) / 2)
        grid = cls(shape=(n_chan, ny, nx), pixel_scale=math.sqrt(area) * u.arcsec,
                   channel_width=float(np.mean(steps)) * _KMS, beam=beam, center=centre,
                   velocity_center=float(np.mean(0.5 * (edges[1:] + edges[:-1]))) * _KMS,
                   rest_frequency=rest_frequency,
                   projection=wcs.wcs.ctype[celestial.wcs.lng][5:8].strip("-") or "SIN",
                   specsys=specsys, spectral_response=spectral_response,
                   pixel_sampling=pixel_sampling)
        grid.spectral_type = str(spectral_type)
        grid._sky_matrix = matrix
        grid._velocity_edges = edges.copy()
        grid._wcs = wcs.deepcopy()
        grid.stokes = stokes
        return grid

    def replace(self, **changes):
        """A copy with some settings changed, built (and validated) by the constructor.

        A grid read from a header (`from_fits`, `from_wcs`, `subgrid`) keeps its pixels and
        channels; only its ``beam``, ``rest_frequency``, ``specsys``, ``spectral_response``
        and ``pixel_sampling`` can change.
        """
        if self._wcs is not None:
            args = {"beam": self.beam, "rest_frequency": self.rest_frequency,
                    "specsys": self.specsys, "spectral_response": self.spectral_response,
                    "pixel_sampling": self.pixel_sampling}
            bad = set(changes) - set(args)
            if bad:
                raise TypeError(f"a grid read from a header keeps its pixels and channels; "
                                f"only {sorted(args)} can change, not {sorted(bad)}")
            args.update(changes)
            return type(self).from_wcs(self._wcs, self.shape, self.channel_edges,
                                       spectral_type=self.spectral_type, stokes=self.stokes,
                                       **args)
        args = {"shape": self.shape, "pixel_scale": self.pixel_scale,
                "channel_width": self.channel_width, "beam": self.beam, "center": self.center,
                "velocity_center": None if self.redshift is not None else self.velocity_center,
                "redshift": self.redshift, "rest_frequency": self.rest_frequency,
                "projection": self.projection, "specsys": self.specsys,
                "spectral_type": self.spectral_type,
                "spectral_response": self.spectral_response,
                "pixel_sampling": self.pixel_sampling}
        bad = set(changes) - set(args)
        if bad:
            raise TypeError(f"CubeGrid has no setting(s) {sorted(bad)}; it has {sorted(args)}")
        if "velocity_center" in changes:
            args["redshift"] = None
        if "redshift" in changes:
            args["velocity_center"] = None
        args.update(changes)
        return type(self)(**args)

    #: Keys of a ``[grid]`` table (TOML files of ``render`` and ``dataset``), in order.
    DICT_KEYS = ("shape", "pixel_scale", "channel_width", "beam", "beam_minor", "beam_pa", "ra",
                 "dec", "velocity_center", "redshift", "rest_frequency", "spectral_type",
                 "spectral_response", "projection", "specsys", "pixel_sampling")

    @classmethod
    def from_dict(cls, values, where="[grid]"):
        """A grid from a ``[grid]`` table or command-line values (text such as ``'1 arcsec'``).

        Keys (`DICT_KEYS`): ``shape``, ``pixel_scale``, ``channel_width``, ``beam`` (FWHM,
        or ``'none'`` for a beam-free Jy/pixel grid), ``beam_minor``, ``beam_pa``, ``ra``,
        ``dec`` (of the field centre, ICRS), ``velocity_center`` or ``redshift``,
        ``rest_frequency`` (a quantity or a line name such as ``'CO(2-1)'``),
        ``spectral_type``, ``spectral_response`` (``'hanning'`` or a Gaussian LSF FWHM such
        as ``'30 km/s'``), ``projection``, ``specsys``, ``pixel_sampling`` (``'point'`` or
        ``'average'``).  The one reader of grid
        settings: ``render`` and ``dataset`` files share it.
        """
        values = {k: v for k, v in dict(values).items() if v is not None}
        unknown = set(values) - set(cls.DICT_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown grid setting(s) {sorted(unknown)}; known: "
                             f"{list(cls.DICT_KEYS)}")

        def q(name):
            return parse_quantity(name, values[name]) if name in values else None

        beam = None
        if str(values.get("beam", "none")).lower() != "none":
            major = q("beam")
            beam = Beam(major=major, minor=q("beam_minor") if "beam_minor" in values else major,
                        pa=q("beam_pa") if "beam_pa" in values else 0 * u.deg)
        elif "beam_minor" in values or "beam_pa" in values:
            raise ValueError(f"{where}: beam_minor and beam_pa need a beam")
        center = None
        if "ra" in values or "dec" in values:
            center = SkyCoord(q("ra") if "ra" in values else 0 * u.deg,
                              q("dec") if "dec" in values else 0 * u.deg, frame="icrs")
        response = values.get("spectral_response")
        if response is not None and str(response).lower() == "none":
            response = None
        elif response is not None and str(response).lower() == "hanning":
            response = Hanning()
        elif response is not None:
            response = GaussianLSF(q("spectral_response"))
        rest = values.get("rest_frequency", CO_1_0)
        if isinstance(rest, str) and rest not in lines.LINES:
            rest = parse_quantity("rest_frequency", rest)
        for need in ("shape", "pixel_scale", "channel_width"):
            if need not in values:
                raise ValueError(f"{where}: {need} is required")
        return cls(shape=values["shape"], pixel_scale=q("pixel_scale"),
                   channel_width=q("channel_width"), beam=beam, center=center,
                   velocity_center=q("velocity_center"),
                   redshift=values.get("redshift"), rest_frequency=rest,
                   projection=values.get("projection", "SIN"),
                   specsys=values.get("specsys", "LSRK"),
                   spectral_type=values.get("spectral_type", "VRAD"),
                   spectral_response=response,
                   pixel_sampling=values.get("pixel_sampling", "point"))

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
        return u.Quantity(self.pixel_grid().sky_offsets(margin), u.arcsec)

    def pixel_grid(self):
        """This grid as plain numbers (arcsec, km/s): the projector's input, a `PixelGrid`."""
        kernel = self.response_kernel
        margin = 0 if kernel is None else (len(kernel) - 1) // 2
        return PixelGrid(shape=self.shape, pixel=self.pixel_scale.to_value(u.arcsec),
                         sky_matrix=self._sky_matrix.copy(),
                         channel_edges=self.extended_channel_edges(margin).to_value(_KMS),
                         chan_margin=margin, response=kernel, beam=self.beam_pixels(),
                         beam_pixels=self.beam_pixel_ratio, sampling=self.pixel_sampling)

    @property
    def response_kernel(self):
        """The spectral response's kernel over this grid's channels (odd length), or None."""
        if self.spectral_response is None:
            return None
        return np.asarray(self.spectral_response.kernel(self.channel_width), dtype=float)

    @property
    def beam_pixel_ratio(self):
        """Ω_beam / Ω_pix: pixels per beam (1 without a beam); Jy/pixel x this = Jy/beam."""
        if self.beam is None:
            return 1.0
        return float((self.beam.sr / self.pixel_area).decompose())

    @property
    def pixel_area(self):
        return (self.pixel_scale**2).to(u.sr)

    @property
    def unit(self):
        """Brightness unit of cubes rendered on this grid (Jy/beam, or Jy/pixel without a beam)."""
        return u.Jy / u.beam if self.beam is not None else u.Jy / u.pix

    def integrated_flux(self, data):
        r"""Total line flux of a cube on this grid, the observed-frame :math:`S\Delta V`.

        ``sum(data dv_obs) Omega_pix / Omega_beam``, each channel's width taken in the
        velocity of its own observed frequency, ``dv_obs = dv_rad / (1 - v_rad / c)``
        (Solomon & Vanden Bout 2005): the quantity that `galcubecraft.lines.line_luminosity`
        and gas masses take, and what a galaxy's ``flux`` is.  For a line at redshift z it
        is (1 + z) times the plain sum over the radio-velocity axis; at z = 0 the two agree.
        ``data`` is an array (or Quantity) in `unit`; returns Jy km/s.
        """
        values = data.to_value(self.unit) if isinstance(data, u.Quantity) else np.asarray(data)
        per_pixel = 1.0 / self.beam_pixel_ratio
        widths = np.abs(self.channel_widths.to_value(_KMS))
        widths = widths / velocity_compression(self.spectral_axis.to_value(_KMS))
        per_channel = np.sum(values, axis=(-2, -1), dtype=np.float64)
        return float(np.sum(per_channel * widths)) * per_pixel * u.Jy * _KMS

    @property
    def frequencies(self):
        """Observed channel-centre frequencies, ``f0 (1 - v / c)`` (GHz)."""
        if self.rest_frequency is None:
            raise ValueError("this grid has no rest frequency; give CubeGrid.from_fits a "
                             "rest_frequency (a Quantity or a line name) to convert to frequency")
        return (self.rest_frequency
                * velocity_compression(self.spectral_axis.to_value(_KMS))).to(u.GHz)

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
            spectral = (f0 * velocity_compression(self.velocity_center.to_value(_KMS)),
                        -f0 * self.channel_width.to_value(_KMS) / C_KMS)
        w.wcs.cdelt = [-pix, pix, spectral[1]]
        w.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2, (n_chan + 1) / 2]
        w.wcs.crval = [self.center.ra.deg, self.center.dec.deg, spectral[0]]
        w.wcs.radesys = "ICRS"
        w.wcs.specsys = self.specsys
        w.wcs.restfrq = 0.0 if self.rest_frequency is None else self.rest_frequency.to_value(u.Hz)
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
        edges = self.channel_edges[slices[0].start:slices[0].stop + 1]
        return type(self).from_wcs(self.wcs[tuple(slices)],
                                   tuple(sl.stop - sl.start for sl in slices), edges,
                                   beam=self.beam, rest_frequency=self.rest_frequency,
                                   spectral_type=self.spectral_type, specsys=self.specsys,
                                   stokes=self.stokes,
                                   spectral_response=self.spectral_response,
                                   pixel_sampling=self.pixel_sampling)

    @property
    def _velocity_centers(self):
        edges = self._velocity_edges
        return 0.5 * (edges[1:] + edges[:-1])

    def __repr__(self):
        beam = "no beam" if self.beam is None else (
            f"beam {self.beam.major.to(u.arcsec):.3g} x {self.beam.minor.to(u.arcsec):.3g}, "
            f"PA {self.beam.pa.to(u.deg):.3g}, {self.pixel_sampling}-sampled")
        return (f"<CubeGrid shape={self.shape} pixel_scale={self.pixel_scale} "
                f"channel_width={self.channel_width} {beam}>")
