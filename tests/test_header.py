"""CubeGrid.from_fits: grids read from the headers other tools write."""
import math

import astropy.constants as const
import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from radio_beam import Beam, Beams

import galcubecraft as gcc
from conftest import KMS, make_galaxy
from galcubecraft.header import parse_bunit

C_KMS = const.c.to_value(KMS)
CO21 = 230.538e9


# --------------------------------------------------------------------------- header styles
def casa_header(n_chan=24, n_pix=48, stokes_last=True):
    """CASA exportfits: RA/Dec SIN, FREQ in Hz (ascending), LSRK, Stokes, Jy/beam."""
    h = fits.Header()
    h["NAXIS"] = 4
    axes = [("RA---SIN", n_pix, -1 / 3600, 25.0, "deg"),
            ("DEC--SIN", n_pix, 1 / 3600, n_pix / 2 + 1, "deg"),
            ("FREQ", n_chan, 1.5e7, 1.0, "Hz"),
            ("STOKES", 1, 1.0, 1.0, "")]
    if not stokes_last:
        axes[2], axes[3] = axes[3], axes[2]
    values = {"RA---SIN": 150.0, "DEC--SIN": 2.2, "FREQ": CO21 * (1 - 60 / C_KMS)
              - 1.5e7 * (n_chan - 1) / 2, "STOKES": 1.0}
    for k, (ctype, n, cdelt, crpix, cunit) in enumerate(axes, start=1):
        h[f"NAXIS{k}"] = n
        h[f"CTYPE{k}"] = ctype
        h[f"CDELT{k}"] = cdelt
        h[f"CRPIX{k}"] = crpix
        h[f"CRVAL{k}"] = values[ctype]
        h[f"CUNIT{k}"] = cunit
    h["BMAJ"], h["BMIN"], h["BPA"] = 3.2 / 3600, 2.5 / 3600, -35.0
    h["BUNIT"] = "Jy/beam"
    h["RESTFRQ"] = CO21
    h["SPECSYS"] = "LSRK"
    h["RADESYS"] = "ICRS"
    return h


def martini_header(n_chan=24, n_pix=48):
    """MARTINI: 'Jy beam-1', VRAD in m/s descending, SPECSYS 'icrs', Stokes axis in 'PAR'."""
    h = fits.Header()
    h["NAXIS"] = 4
    h["NAXIS1"], h["NAXIS2"], h["NAXIS3"], h["NAXIS4"] = n_pix, n_pix, n_chan, 1
    h["EPOCH"] = 2000
    h["CDELT1"], h["CRPIX1"], h["CRVAL1"], h["CTYPE1"], h["CUNIT1"] = (
        -1 / 3600, n_pix / 2 + 0.5, 45.0, "RA---SIN", "deg")
    h["CDELT2"], h["CRPIX2"], h["CRVAL2"], h["CTYPE2"], h["CUNIT2"] = (
        1 / 3600, n_pix / 2 + 0.5, -30.0, "DEC--SIN", "deg")
    h["CDELT3"], h["CRPIX3"], h["CRVAL3"], h["CTYPE3"], h["CUNIT3"] = (
        -20000.0, n_chan / 2 + 0.5, 1000e3, "VRAD", "m/s")
    h["CDELT4"], h["CRPIX4"], h["CRVAL4"], h["CTYPE4"], h["CUNIT4"] = (
        1.0, 1.0, 1.0, "STOKES", "PAR")
    h["BPA"] = 0.0
    h["BUNIT"] = "Jy beam-1"
    h["BMAJ"], h["BMIN"] = 3 / 3600, 3 / 3600
    h["BTYPE"] = "Intensity"
    h["SPECSYS"] = "icrs"
    h["RESTFRQ"] = 1.420405751768e9
    return h


def kinms_header(n_chan=24, n_pix=48, freq=False):
    """KinMS (KinMS.save_fits): SIN, VRAD in m/s from CRPIX3 = 1, BARYCENT (or a FREQ variant)."""
    h = fits.Header()
    h["NAXIS"] = 3
    h["NAXIS1"], h["NAXIS2"], h["NAXIS3"] = n_pix, n_pix, n_chan
    h["CDELT1"], h["CDELT2"] = -1 / 3600, 1 / 3600
    h["CRPIX1"], h["CRPIX2"], h["CRPIX3"] = n_pix // 2 + 1, n_pix // 2 + 1, 1
    h["CRVAL1"], h["CRVAL2"] = 0.0, 0.0
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["CTYPE1"], h["CTYPE2"] = "RA---SIN", "DEC--SIN"
    if freq:
        h["CTYPE3"], h["CUNIT3"] = "FREQ", "Hz"
        h["CDELT3"] = -CO21 * 20 / C_KMS
        h["CRVAL3"] = CO21 * (1 + 230 / C_KMS)
    else:
        h["CTYPE3"], h["CUNIT3"] = "VRAD    ", "m/s     "
        h["CDELT3"] = 20000.0
        h["CRVAL3"] = (-230.0) * 1000
    h["BMIN"], h["BMAJ"], h["BPA"] = 2 / 3600, 4 / 3600, 20.0
    h["BTYPE"] = "Intensity"
    h["EQUINOX"], h["RADESYS"] = 2000.0, "FK5"
    h["BUNIT"] = "Jy/beam"
    h["SPECSYS"] = "BARYCENT"
    h["RESTFRQ"] = CO21
    return h


def muse_header(n_chan=40, n_pix=40, rotation=0.0):
    """A MUSE-like optical cube: TAN, CD matrix, AWAV in Angstrom, no beam, f_lambda per spaxel."""
    h = fits.Header()
    h["NAXIS"] = 3
    h["NAXIS1"], h["NAXIS2"], h["NAXIS3"] = n_pix, n_pix, n_chan
    scale = 0.2 / 3600
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    h["CD1_1"], h["CD1_2"] = -scale * c, scale * s
    h["CD2_1"], h["CD2_2"] = scale * s, scale * c
    h["CRPIX1"], h["CRPIX2"] = 18.3, 22.7
    h["CRVAL1"], h["CRVAL2"] = 53.16, -27.78
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["CTYPE3"], h["CUNIT3"] = "AWAV", "Angstrom"
    h["CD3_3"], h["CRPIX3"], h["CRVAL3"] = 1.25, 1.0, 6620.0
    h["BUNIT"] = "10**(-20)*erg/s/cm**2/Angstrom"
    h["SPECSYS"] = "BARYCENT"
    return h


def write(header, path, data=None):
    shape = tuple(header[f"NAXIS{k}"] for k in range(header["NAXIS"], 0, -1))
    data = np.zeros(shape, dtype=np.float32) if data is None else data
    fits.PrimaryHDU(data=data, header=header).writeto(path, overwrite=True)
    return path


STYLES = {
    "casa": casa_header,
    "casa-stokes-third": lambda: casa_header(stokes_last=False),
    "martini": martini_header,
    "kinms-vrad": kinms_header,
    "kinms-freq": lambda: kinms_header(freq=True),
}


# --------------------------------------------------------------------------- tests
def test_render_on_a_grid_read_back_equals_the_grid_built_by_hand(tmp_path):
    """Bit for bit: the FITS round trip of a grid changes nothing in the render."""
    for spectral_type in ("VRAD", "FREQ"):
        grid = gcc.CubeGrid(shape=(24, 48, 40), pixel_scale=1 * u.arcsec,
                            channel_width=-20 * KMS, beam=Beam(3 * u.arcsec, 2 * u.arcsec,
                                                               20 * u.deg),
                            center=SkyCoord(150 * u.deg, 2 * u.deg), velocity_center=40 * KMS,
                            rest_frequency="CO(2-1)", spectral_type=spectral_type)
        galaxy = make_galaxy(offset=[3, -2] * u.arcsec, v_sys=60 * KMS)
        by_hand = gcc.render(galaxy, grid)
        by_hand.write(tmp_path / "a.fits", overwrite=True)
        read = gcc.CubeGrid.from_fits(tmp_path / "a.fits")
        assert read.spectral_type == spectral_type
        np.testing.assert_allclose(read.channel_edges.value, grid.channel_edges.value,
                                   rtol=0, atol=1e-6)
        again = gcc.render(galaxy, read)
        np.testing.assert_array_equal(again.unitless_filled_data[:],
                                      by_hand.unitless_filled_data[:])
        # and from the SpectralCube, and from its header alone
        for source in (by_hand, by_hand.header):
            np.testing.assert_array_equal(
                gcc.render(galaxy, gcc.CubeGrid.from_fits(source)).unitless_filled_data[:],
                by_hand.unitless_filled_data[:])


@pytest.mark.parametrize("style", sorted(STYLES))
def test_headers_of_other_tools_give_the_stated_grid(style, tmp_path):
    header = STYLES[style]()
    grid = gcc.CubeGrid.from_fits(write(header, tmp_path / "cube.fits"))
    from astropy.wcs import WCS
    w = WCS(header).sub([1, 2, 3 if header["CTYPE3"] != "STOKES" else 4])
    spec = w.sub([3])
    n_chan = grid.n_chan
    # channel centres in the header's own coordinate, as radio velocity
    world = spec.pixel_to_world(np.arange(n_chan))
    velocity = world.to(KMS, doppler_rest=grid.rest_frequency, doppler_convention="radio")
    np.testing.assert_allclose(grid.spectral_axis.to_value(KMS), velocity.to_value(KMS),
                               atol=1e-6)
    assert grid.shape == (n_chan, header["NAXIS2"], header["NAXIS1"])
    assert grid.pixel_scale.to_value(u.arcsec) == pytest.approx(abs(header["CDELT1"]) * 3600)
    assert grid.beam.major.to_value(u.deg) == pytest.approx(header["BMAJ"])
    assert grid.beam.pa.to_value(u.deg) == pytest.approx(header["BPA"])
    assert grid.stokes == (4 if style in ("casa", "martini") else
                           3 if style == "casa-stokes-third" else None)
    # a pixel's sky position through the grid's offsets equals the header's WCS
    centre = w.celestial.pixel_to_world(7, 30)
    np.testing.assert_allclose(grid.offset_of(centre).to_value(u.arcsec),
                               grid.offset_of_pixel(7, 30).to_value(u.arcsec), atol=1e-6)


def test_muse_like_wavelength_axis_is_converted_exactly(tmp_path):
    header = muse_header()
    with pytest.raises(ValueError, match="rest_frequency"):
        gcc.CubeGrid.from_fits(header, beam=0.7 * u.arcsec)
    with pytest.raises(ValueError, match="no beam"):
        gcc.CubeGrid.from_fits(header, rest_frequency="Halpha")
    grid = gcc.CubeGrid.from_fits(header, rest_frequency="Halpha", beam=0.7 * u.arcsec)
    # air wavelength -> vacuum (wcslib) -> radio velocity, checked independently at one edge:
    # the edge of channel 0 is at 6620 - 0.625 A in air; Ciddor/Greisen n(air) ~ 1.000276
    lam_air = 6620.0 - 0.625
    s2 = (1e4 / (lam_air / (1 + 2.7e-4))) ** 2
    n_air = 1 + 1e-8 * (8342.13 + 2406030 / (130 - s2) + 15997 / (38.9 - s2))
    lam_vac = lam_air * n_air
    lam0 = (gcc.lines.rest_frequency("Halpha")).to_value(u.AA, equivalencies=u.spectral())
    v_expected = C_KMS * (1 - lam0 / lam_vac)
    assert grid.channel_edges[0].to_value(KMS) == pytest.approx(v_expected, abs=0.5)
    widths = np.diff(grid.channel_edges.to_value(KMS))
    assert np.all(widths > 0) and not grid.is_uniform       # linear in lambda, not in v_rad
    assert grid.pixel_scale.to_value(u.arcsec) == pytest.approx(0.2)


def test_rotated_grid_renders_the_galaxy_in_the_pixel_frame(tmp_path):
    """On a grid whose +y axis points to PA 30 deg, a galaxy at PA 30 deg is the same array as a
    galaxy at PA 0 on a north-up grid (circular beam); the position angle stays on the sky."""
    rotated = gcc.CubeGrid.from_fits(muse_header(rotation=30.0), rest_frequency="Halpha",
                                     beam=0.8 * u.arcsec)
    assert rotated.pixel_rotation.to_value(u.deg) == pytest.approx(30.0)
    plain = gcc.CubeGrid.from_fits(muse_header(rotation=0.0), rest_frequency="Halpha",
                                   beam=0.8 * u.arcsec)
    v0 = float(np.mean(plain.spectral_axis.to_value(KMS)))
    common = dict(surface=gcc.SersicDisk(r_eff=1.2 * u.arcsec, n=1),
                  kinematics=gcc.ArctanRotationCurve(v_max=150 * KMS, r_turn=0.4 * u.arcsec),
                  v_sys=v0 * KMS, dispersion=40 * KMS)
    a = gcc.render(make_galaxy(position_angle=30 * u.deg, **common), rotated)
    b = gcc.render(make_galaxy(position_angle=0 * u.deg, **common), plain)
    a, b = a.unitless_filled_data[:], b.unitless_filled_data[:]
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * b.max())


def test_grids_that_cannot_be_trusted_are_refused():
    h = casa_header()
    del h["BMIN"]
    with pytest.raises(ValueError, match="BMIN"):
        gcc.CubeGrid.from_fits(h)
    h = casa_header()
    for key in ("BMAJ", "BMIN", "BPA"):
        del h[key]
    with pytest.raises(ValueError, match="no beam"):
        gcc.CubeGrid.from_fits(h)
    assert gcc.CubeGrid.from_fits(h, beam=False).beam is None
    h = casa_header()
    del h["CUNIT3"]
    # the FITS standard's Hz, said in a warning (or given)
    with pytest.warns(UserWarning, match="no CUNIT3 for its FREQ axis: reading it in Hz"):
        read = gcc.CubeGrid.from_fits(h)
    assert np.array_equal(read.channel_edges, gcc.CubeGrid.from_fits(casa_header()).channel_edges)
    assert gcc.CubeGrid.from_fits(h, spectral_unit="Hz").n_chan == 24
    h = casa_header()
    del h["RESTFRQ"]
    with pytest.raises(ValueError, match="rest frequency"):
        gcc.CubeGrid.from_fits(h)
    grid = gcc.CubeGrid.from_fits(h, rest_frequency="CO(2-1)")
    assert grid.rest_frequency.to_value(u.Hz) == pytest.approx(230.538e9)
    h = martini_header()
    del h["RESTFRQ"]              # a velocity axis needs no rest frequency to be rendered on
    grid = gcc.CubeGrid.from_fits(h)
    assert grid.rest_frequency is None
    assert grid.spectral_axis[0].to_value(KMS) == pytest.approx(1000 + 20 * 11.5)
    h = casa_header()
    h["CDELT2"] = 1.2 / 3600
    with pytest.raises(ValueError, match="not square"):
        gcc.CubeGrid.from_fits(h)
    h = casa_header()
    h["NAXIS4"] = 4
    with pytest.raises(ValueError, match="Stokes"):
        gcc.CubeGrid.from_fits(h)
    with pytest.raises(TypeError):
        gcc.CubeGrid.from_fits(42)


def test_per_channel_beams_need_an_explicit_choice(tmp_path):
    header = casa_header()
    for key in ("BMAJ", "BMIN", "BPA"):
        del header[key]
    path = tmp_path / "beams.fits"
    n_chan = header["NAXIS3"]
    beams = Beams(major=np.linspace(3, 3.5, n_chan) * u.arcsec,
                  minor=np.linspace(2.5, 2.8, n_chan) * u.arcsec, pa=np.zeros(n_chan) * u.deg)
    table = fits.BinTableHDU.from_columns([
        fits.Column(name="BMAJ", format="E", unit="arcsec", array=beams.major.to_value(u.arcsec)),
        fits.Column(name="BMIN", format="E", unit="arcsec", array=beams.minor.to_value(u.arcsec)),
        fits.Column(name="BPA", format="E", unit="deg", array=beams.pa.to_value(u.deg)),
        fits.Column(name="CHAN", format="J", array=np.arange(n_chan)),
        fits.Column(name="POL", format="J", array=np.zeros(n_chan, int))], name="BEAMS")
    fits.HDUList([fits.PrimaryHDU(np.zeros((1, n_chan, 48, 48), np.float32), header),
                  table]).writeto(path)
    with pytest.raises(ValueError, match="beam per channel"):
        gcc.CubeGrid.from_fits(path)
    grid = gcc.CubeGrid.from_fits(path, beam="common")
    assert grid.beam.major >= 3.5 * u.arcsec * (1 - 1e-6)
    assert all(grid.beam.major >= b.major * (1 - 1e-6) for b in beams)


@pytest.mark.parametrize("text, unit", [
    ("Jy/beam", u.Jy / u.beam), ("JY/BEAM", u.Jy / u.beam), ("Jy beam-1", u.Jy / u.beam),
    ("K", u.K), ("Jy/pixel", u.Jy / u.pix), ("mJy/beam", u.mJy / u.beam),
    ("10**(-20)*erg/s/cm**2/Angstrom", 1e-20 * u.erg / u.s / u.cm**2 / u.AA)])
def test_bunit_spellings(text, unit):
    assert parse_bunit(text).is_equivalent(unit)
    assert (1 * parse_bunit(text)).to_value(unit) == pytest.approx(1)


def test_unknown_bunit_is_refused():
    with pytest.raises(ValueError, match="BUNIT"):
        parse_bunit("")
    with pytest.raises(ValueError, match="not a unit"):
        parse_bunit("counts per fortnight squared")


@pytest.mark.parametrize("ctype, velref, convention", [
    ("VELO-LSR", 257, "radio"),      # AIPS: VELREF > 256 means radio
    ("VELO-HEL", None, "optical"),   # AIPS default, as GIPSY and BBarolo cubes often have
    ("FELO-HEL", None, "optical"),
    ("VOPT", None, "optical"),
])
def test_legacy_velocity_axes_follow_the_aips_convention(ctype, velref, convention):
    h = kinms_header()
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"] = ctype, 3.0e6, 2.0e4
    if velref is not None:
        h["VELREF"] = velref
    grid = gcc.CubeGrid.from_fits(h)
    v = 3000 + 20 * np.arange(grid.n_chan)            # the header's own velocities, km/s
    if convention == "radio":
        expected = v
    elif ctype == "FELO-HEL":     # linear in frequency: radio velocity steps of dv / (1 + z)^2
        z = 3000 / C_KMS
        expected = C_KMS * (1 - 1 / (1 + z)) + 20 * np.arange(grid.n_chan) / (1 + z) ** 2
    else:
        expected = C_KMS * (1 - 1 / (1 + v / C_KMS))
    # channel centres are the mid-points of the channel edges in radio velocity, which differ
    # from the header's value at the pixel centre by the second-order term (~3e-4 km/s here)
    np.testing.assert_allclose(grid.spectral_axis.to_value(KMS), expected, atol=1e-3)


def test_grids_are_values_made_by_their_constructors(tmp_path):
    """from_header, subgrid and replace go through validation; a read grid keeps its pixels and
    channels; a changed copy leaves the original as it was."""
    header = casa_header(n_chan=20, n_pix=32)
    grid = gcc.CubeGrid.from_header(header)
    assert grid.shape == (20, 32, 32)
    sub = grid.subgrid(slice(2, 12), slice(4, 20), slice(0, 16))
    np.testing.assert_array_equal(sub.channel_edges, grid.channel_edges[2:13])
    assert sub.wcs.pixel_to_world(0, 0, 0)[0].separation(
        grid.wcs.pixel_to_world(0, 4, 2)[0]).to_value(u.arcsec) < 1e-9
    wider = grid.replace(beam=4 * u.arcsec)
    assert wider.beam.major == 4 * u.arcsec and grid.beam.major != 4 * u.arcsec
    np.testing.assert_array_equal(wider.channel_edges, grid.channel_edges)
    with pytest.raises(TypeError, match="keeps its pixels"):
        grid.replace(pixel_scale=2 * u.arcsec)
    with pytest.raises(ValueError, match="beam must be positive"):
        grid.replace(beam=0 * u.arcsec)
    with pytest.raises(TypeError, match="Header"):
        gcc.CubeGrid.from_header(str(tmp_path / "x.fits"))
    built = gcc.CubeGrid(shape=(8, 16, 16), pixel_scale=1 * u.arcsec, channel_width=10 * KMS)
    assert built.replace(redshift=0.1).velocity_center == gcc.radio_velocity(0.1)
    assert built.replace(channel_width=5 * KMS).channel_width == 5 * KMS
