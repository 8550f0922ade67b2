"""Plots run headless, carry world coordinates and units, and save what they say."""
import matplotlib

matplotlib.use("Agg")

import astropy.units as u  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from spectral_cube import SpectralCube  # noqa: E402
from astropy.visualization.wcsaxes import WCSAxes  # noqa: E402

from galcubecraft import GalCubeCraft  # noqa: E402
from galcubecraft.visualise import emission_mask, moment_maps, spectrum, visualise  # noqa: E402


@pytest.fixture(scope="module")
def results():
    g = GalCubeCraft(n_gals=1, n_cubes=2, resolution=3.0, grid_size=48, n_spectral_slices=24,
                     verbose=False, seed=2, save=False)
    return g.generate_cubes()


def test_visualise_returns_and_saves_both_figures(results, tmp_path):
    maps, spec = visualise(results, 1, save=True, fname_save=tmp_path)
    for name in ("mom0_mom1", "vel_spectrum"):
        for ext in ("pdf", "png"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 1000
    axes = [ax for ax in maps.axes if isinstance(ax, WCSAxes)]
    assert len(axes) == 2
    for ax in axes:
        assert ax.wcs.wcs.ctype[0].startswith("RA") and ax.wcs.wcs.ctype[1].startswith("DEC")
    labels = [ax.get_xlabel() for ax in maps.axes if not isinstance(ax, WCSAxes)]
    assert any("Moment 0" in t and "Jy" in t and "km" in t for t in labels)
    assert any("Moment 1" in t and "km" in t for t in labels)
    ax = spec.axes[0]
    assert "km" in ax.get_xlabel() and "Jy" in ax.get_ylabel()


def test_spectrum_is_the_flux_density_in_jy(results):
    """The plotted spectrum integrates (x channel width) to the galaxy's line flux."""
    result = results[0]
    fig = spectrum(result.to_spectral_cube())
    x, y = fig.axes[0].lines[0].get_data()
    flux = np.sum(y) * np.diff(x).mean()
    truth = result.params["galaxies"]["flux"].sum().to_value(u.Jy * u.km / u.s)
    assert flux == pytest.approx(truth, rel=0.02)


def test_moment1_map_is_masked_and_antisymmetric(results):
    cube = results[0].to_spectral_cube()
    fig = moment_maps(cube)
    wcs_axes = [ax for ax in fig.axes if isinstance(ax, WCSAxes)]
    image = wcs_axes[1].images[0].get_array()
    assert np.ma.count_masked(image) > 0 or np.isnan(np.asarray(image, float)).any()
    values = np.asarray(image.filled(np.nan) if np.ma.isMaskedArray(image) else image, float)
    finite = np.isfinite(values)
    assert np.nanmax(values) > 20 and np.nanmin(values) < -20
    # a rotating disk at v_sys = 0: moment 1 is odd about the centre
    flipped = values[::-1, ::-1]
    both = finite & np.isfinite(flipped)
    assert np.nanmedian(np.abs(values[both] + flipped[both])) < 5


def test_seed_style_pair_is_accepted(results, tmp_path):
    """A bare (numpy cube, 0.1.0 params) pair, as 0.1.0 produced, can be visualised."""
    cube, params = results[0]
    seed_params = {k: params[k] for k in ("galaxy_centers", "average_vels", "beam_info",
                                          "n_gals", "pix_spatial_scale")}
    maps, spec = visualise([(np.asarray(cube, dtype=float), seed_params)], 0, save=True,
                           fname_save=tmp_path, show=False)
    assert (tmp_path / "mom0_mom1.png").is_file()


def test_emission_mask_levels():
    data = np.zeros((3, 4, 4))
    data[1, 2, 2] = 1.0
    data[1, 1, 1] = 0.1
    assert emission_mask(data).sum() == 2
    assert emission_mask(data, noise_rms=0.05).sum() == 1


# ----------------------------------------------------------------------------- issue 7 plots
from astropy.io import fits  # noqa: E402
from radio_beam import Beam  # noqa: E402

import galcubecraft as gcc  # noqa: E402
from galcubecraft.cli import main as cli_main  # noqa: E402
from galcubecraft.visualise import (channel_maps, compare_cubes, galaxy_pv_curve,  # noqa: E402
                                    pv_diagram, pv_slice)

KMS = u.km / u.s


@pytest.fixture(scope="module")
def model():
    """A thin, well-resolved disk (r_turn 2", beam 2"), PA 30 deg, i 60 deg."""
    galaxy = gcc.Galaxy(surface=gcc.SersicDisk(r_eff=8 * u.arcsec, n=1),
                        vertical=gcc.ExponentialVertical(0.2 * u.arcsec),
                        kinematics=gcc.ArctanRotationCurve(v_max=200 * KMS, r_turn=2 * u.arcsec),
                        dispersion=8 * KMS, inclination=60 * u.deg, position_angle=30 * u.deg,
                        v_sys=20 * KMS, flux=40 * u.Jy * KMS)
    grid = gcc.CubeGrid(shape=(48, 72, 72), pixel_scale=1 * u.arcsec, channel_width=10 * KMS,
                        beam=Beam(2 * u.arcsec), velocity_center=20 * KMS)
    return galaxy, gcc.render(galaxy, grid)


def wcs_axes(fig):
    return [ax for ax in fig.axes if isinstance(ax, WCSAxes)]


def colorbar_labels(fig):
    return [ax.get_xlabel() or ax.get_ylabel() for ax in fig.axes
            if not isinstance(ax, WCSAxes)]


def test_moment_maps_0_1_2_carry_units(model):
    fig = moment_maps(model[1], moments=(0, 1, 2))
    assert len(wcs_axes(fig)) == 3
    labels = colorbar_labels(fig)
    assert any("Moment 2" in t and "km" in t for t in labels)
    mom2 = np.asarray(wcs_axes(fig)[2].images[0].get_array(), float)
    # the line width where the disk is brightest: at least the dispersion, well below v_max
    assert 8 <= np.nanmedian(mom2[30:42, 30:42]) < 100


def test_channel_maps_label_velocities(model):
    fig = channel_maps(model[1], n_panels=8)
    axes = wcs_axes(fig)
    assert len(axes) == 8
    texts = [t.get_text() for ax in axes for t in ax.texts]
    assert all(t.endswith("km/s") for t in texts) and len(texts) == 8
    assert any("Jy" in t for t in colorbar_labels(fig))


def test_pv_diagram_peaks_along_the_rotation_curve(model):
    """Numeric check: at each offset beyond two beams, the brightest channel of the PV slice is
    within one channel of v_sys + v_c sin i (receding side at positive offset)."""
    galaxy, cube = model
    offsets, velocities, pv = pv_slice(cube, galaxy.position_angle)
    _, expected = galaxy_pv_curve(galaxy, offsets)
    v = velocities.to_value(KMS)
    sel = (np.abs(offsets) >= 4 * u.arcsec) & (np.abs(offsets) <= 16 * u.arcsec)
    peak = v[np.nanargmax(pv.value, axis=0)]
    assert sel.sum() >= 20
    np.testing.assert_array_less(np.abs(peak[sel] - expected.to_value(KMS)[sel]), 10.0 + 1e-9)
    assert np.all(peak[offsets > 4 * u.arcsec] > 20)
    fig = pv_diagram(cube, galaxy.position_angle, rotation_curve=(offsets, expected))
    ax = fig.axes[0]
    assert "arcsec" in ax.get_xlabel() and "km" in ax.get_ylabel()
    assert ax.get_legend() is not None


@pytest.mark.parametrize("z", [0.0, 0.5, 4.0])
def test_pv_overlay_matches_the_rendered_cube_at_any_redshift(z):
    """The overlay's rotation is compressed by 1/(1+z) as the cube's: the brightest channel at
    each offset beyond two beams lies within one channel of it (at z = 0.5 the uncompressed
    curve would be 58 km/s off, nine channels)."""
    v_sys = gcc.radio_velocity(z)
    compression = 1 / (1 + z)
    galaxy = gcc.Galaxy(surface=gcc.SersicDisk(r_eff=6 * u.arcsec, n=1),
                        kinematics=gcc.FlatRotationCurve(v_flat=200 * KMS),
                        dispersion=8 * KMS, inclination=60 * u.deg, position_angle=90 * u.deg,
                        v_sys=v_sys, flux=40 * u.Jy * KMS)
    width = 6 * KMS * compression
    grid = gcc.CubeGrid(shape=(72, 48, 48), pixel_scale=1 * u.arcsec, channel_width=width,
                        beam=Beam(2 * u.arcsec), velocity_center=v_sys)
    cube = gcc.render(galaxy, grid)
    offsets, velocities, pv = pv_slice(cube, galaxy.position_angle)
    _, expected = galaxy_pv_curve(galaxy, offsets)
    sel = (np.abs(offsets) >= 5 * u.arcsec) & (np.abs(offsets) <= 14 * u.arcsec)
    assert sel.sum() >= 18
    peak = velocities[np.nanargmax(pv.value[:, sel], axis=0)]
    np.testing.assert_array_less(np.abs(peak - expected[sel]).to_value(KMS),
                                 width.to_value(KMS) + 1e-9)


def test_pv_slit_the_wrong_way_round_is_mirrored(model):
    galaxy, cube = model
    a = pv_slice(cube, galaxy.position_angle)[2].value
    b = pv_slice(cube, galaxy.position_angle + 180 * u.deg)[2].value
    np.testing.assert_allclose(a, b[:, ::-1], atol=1e-6 * np.nanmax(a))


def test_clean_noisy_residual(model):
    cube = model[1]
    noisy = gcc.SyntheticCube(
        data=gcc.apply_noise(cube.unitless_filled_data[:], 10, seed=1) * cube.unit,
        wcs=cube.wcs, beam=cube.beam)
    fig = compare_cubes(cube, noisy)
    assert len(wcs_axes(fig)) == 3
    labels = colorbar_labels(fig)
    assert any("residual" in t for t in labels) and all("Jy" in t for t in labels)


def foreign_cube(path, restfrq=True):
    """A cube built by hand with astropy: RA/Dec/FREQ, Jy/beam, a beam, no galcubecraft."""
    nu0 = 230.538e9
    data = np.zeros((30, 40, 40), np.float32)
    z, y, x = np.mgrid[:30, :40, :40]
    data += np.exp(-((x - 20 - (z - 15) * 0.4) ** 2 + (y - 20) ** 2) / 8.0
                   - (z - 15) ** 2 / 40.0)
    h = fits.Header()
    for k, v in dict(CTYPE1="RA---SIN", CRVAL1=150.0, CDELT1=-0.5 / 3600, CRPIX1=21,
                     CUNIT1="deg", CTYPE2="DEC--SIN", CRVAL2=2.0, CDELT2=0.5 / 3600, CRPIX2=21,
                     CUNIT2="deg", CTYPE3="FREQ", CRVAL3=nu0, CDELT3=-7.7e6, CRPIX3=16,
                     CUNIT3="Hz", BUNIT="Jy/beam", BMAJ=1.5 / 3600, BMIN=1.0 / 3600,
                     BPA=20.0, SPECSYS="LSRK").items():
        h[k] = v
    if restfrq:
        h["RESTFRQ"] = nu0
    fits.PrimaryHDU(data, h).writeto(path)
    return path


@pytest.mark.parametrize("kind", ["moments", "channels", "pv", "spectrum"])
def test_cli_plot_reads_another_tools_fits(tmp_path, kind, capsys):
    cube = foreign_cube(tmp_path / "casa_like.fits")
    out = tmp_path / f"{kind}.png"
    assert cli_main(["plot", str(cube), "--kind", kind, "-o", str(out), "--pa", "90 deg"]) == 0
    assert out.stat().st_size > 5000
    assert not list(tmp_path.glob(".*part"))


def test_cli_plot_errors(tmp_path, capsys):
    cube = foreign_cube(tmp_path / "no_restfrq.fits", restfrq=False)
    assert cli_main(["plot", str(cube), "-o", str(tmp_path / "a.png")]) == 2
    assert "RESTFRQ" in capsys.readouterr().err
    good = foreign_cube(tmp_path / "ok.fits")
    (tmp_path / "exists.png").write_bytes(b"x")
    assert cli_main(["plot", str(good), "-o", str(tmp_path / "exists.png")]) == 2
    assert (tmp_path / "exists.png").read_bytes() == b"x"


def test_the_spectrum_of_a_cube_with_blank_pixels_is_its_flux(model, tmp_path):
    """Most ALMA and VLA cubes are blanked (NaN) outside their primary beam: the spectrum
    sums what is there (it was all NaN, an empty plot)."""
    from astropy.io import fits
    galaxy, cube = model
    path = tmp_path / "c.fits"
    cube.write(path)
    with fits.open(path, mode="update") as hdul:
        hdul[0].data[:, :, :5] = np.nan          # a blank strip, far from the galaxy
    blanked = SpectralCube.read(path)
    flux = spectrum(blanked).axes[0].lines[0].get_ydata()
    full = spectrum(cube).axes[0].lines[0].get_ydata()
    assert np.all(np.isfinite(flux))
    np.testing.assert_allclose(flux, full, rtol=1e-3, atol=1e-5 * np.max(full))
    dv = abs(np.diff(cube.spectral_axis.to_value(KMS))[0])
    assert np.sum(flux) * dv == pytest.approx(galaxy.flux.to_value(u.Jy * KMS), rel=2e-3)


@pytest.mark.parametrize("clip", ["3 sigma", "2 mJy/beam"])
def test_moment_maps_of_a_noisy_cube_can_be_clipped(model, tmp_path, clip):
    """Moment 1 of a noisy cube is noise everywhere unless clipped; --clip keeps the disk."""
    from astropy.io import fits
    galaxy, cube = model
    path = tmp_path / "noisy.fits"
    cube.write(path)
    with fits.open(path, mode="update") as hdul:
        rng = np.random.default_rng(1)
        hdul[0].data = hdul[0].data + rng.normal(0, 5e-4, hdul[0].data.shape).astype("f4")
    for args, name in (([], "plain.png"), (["--clip", clip], "clipped.png")):
        assert cli_main(["plot", str(path), "-o", str(tmp_path / name), *args]) == 0
    noisy = SpectralCube.read(path)
    fig = moment_maps(noisy, moments=(1,))
    unclipped = np.isfinite(np.asarray(fig.axes[0].images[0].get_array(), float)).mean()
    from galcubecraft.visualise import clip_mask
    fig = moment_maps(noisy, mask=clip_mask(noisy, clip), moments=(1,))
    clipped = np.isfinite(np.asarray(fig.axes[0].images[0].get_array(), float)).mean()
    assert unclipped > 0.9 and clipped < 0.5


def test_plot_clip_errors_name_the_option(model, tmp_path, capsys):
    galaxy, cube = model
    cube.write(tmp_path / "c.fits")
    assert cli_main(["plot", str(tmp_path / "c.fits"), "-o", str(tmp_path / "x.png"),
                     "--clip", "3 km/s"]) == 2
    assert "--clip" in capsys.readouterr().err
