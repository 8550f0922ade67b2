"""Injection of model galaxies into real cubes: flux, units, blanks, headers, truth."""

import astropy.constants as const
import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable
from astropy.wcs import WCS

import galcubecraft as gcc
from conftest import JYKMS, KMS
from galcubecraft.header import parse_bunit
from galcubecraft.inject import (brightness_factors, galaxies_from_table, inject,
                                 random_galaxies)
from galcubecraft.priors import GalaxyPriors, LogUniform, Uniform
from test_header import STYLES, casa_header, muse_header, write
from fits_rules import assert_valid_cube

C_KMS = const.c.to_value(KMS)


def disk(grid, x, y, v_sys, **kw):
    """A galaxy at array pixel (x, y) of ``grid`` with radio velocity ``v_sys`` (km/s)."""
    params = dict(surface=gcc.SersicDisk(r_eff=3 * u.arcsec, n=1),
                  vertical=gcc.ExponentialVertical(0.3 * u.arcsec),
                  kinematics=gcc.ArctanRotationCurve(v_max=120 * KMS, r_turn=1 * u.arcsec),
                  inclination=50 * u.deg, position_angle=70 * u.deg, flux=5 * JYKMS,
                  dispersion=15 * KMS)
    params.update(kw)
    return gcc.Galaxy(offset=grid.offset_of_pixel(x, y), v_sys=v_sys * KMS, **params)


def noise_cube(header, path, rms, seed=0):
    shape = tuple(header[f"NAXIS{k}"] for k in range(header["NAXIS"], 0, -1))
    data = np.random.default_rng(seed).normal(0, rms, shape).astype(np.float32)
    return write(header, path, data)


def spectral_axis_number(header):
    return next(k for k in range(1, header["NAXIS"] + 1)
                if header[f"CTYPE{k}"].strip() not in ("STOKES",)
                and not header[f"CTYPE{k}"].startswith(("RA", "DEC")))


def test_injected_flux_is_recovered_from_a_noise_cube(tmp_path):
    """The flux measured in the truth mask equals the injected flux there, within the noise."""
    rms = 2e-3
    header = casa_header(n_chan=40, n_pix=64)
    path = noise_cube(header, tmp_path / "noise.fits", rms)
    grid = gcc.CubeGrid.from_fits(path)
    priors = GalaxyPriors(r_eff=LogUniform(1.5 * u.arcsec, 3 * u.arcsec),
                          v_max=Uniform(80 * KMS, 150 * KMS), flux=LogUniform(2 * JYKMS, 6 * JYKMS))
    galaxies = random_galaxies(grid, 3, priors=priors, seed=11, min_separation=26 * u.arcsec)
    result = inject(path, galaxies)
    truth = result.truth
    # everything of galaxies placed away from the edges lands in the cube
    np.testing.assert_allclose(truth["flux_in_cube"].to_value(JYKMS),
                               truth["flux"].to_value(JYKMS), rtol=2e-3)
    model = result.model.reshape(grid.shape)
    data = result.hdu.data.reshape(grid.shape)
    mask = model > 0.05 * rms
    measured = grid.integrated_flux(np.where(mask, data, 0)).to_value(JYKMS)
    expected = grid.integrated_flux(np.where(mask, model, 0)).to_value(JYKMS)
    # white noise: the sum over the mask has sigma rms sqrt(N), in flux units
    sigma = (rms * np.sqrt(mask.sum()) * abs(grid.channel_width.to_value(KMS))
             * float(grid.pixel_area / grid.beam.sr))
    assert abs(measured - expected) < 4 * sigma
    assert expected > 0.95 * truth["flux"].sum().to_value(JYKMS)
    # the galaxies are where the truth table says: the model's centroids
    for row in truth:
        ys, xs = np.mgrid[:grid.shape[1], :grid.shape[2]]
        near = np.hypot(xs - row["x_pix"], ys - row["y_pix"]) < 12
        mom0 = np.where(near, model.sum(axis=0), 0)
        assert np.sum(mom0 * xs) / mom0.sum() == pytest.approx(row["x_pix"], abs=0.05)
        assert np.sum(mom0 * ys) / mom0.sum() == pytest.approx(row["y_pix"], abs=0.05)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_injection_into_cubes_written_by_other_tools(style, tmp_path):
    header = STYLES[style]()
    path = noise_cube(header, tmp_path / "in.fits", 1e-4)
    before = path.read_bytes()
    grid = gcc.CubeGrid.from_fits(path)
    v_mid = float(np.mean(grid.spectral_axis.to_value(KMS)))
    galaxy = disk(grid, 21.3, 26.6, v_mid + 15)
    result = inject(path, [galaxy])
    assert path.read_bytes() == before                       # the input is only read
    out = result.hdu
    assert out.data.shape == fits.getdata(path).shape
    for key in ("CTYPE1", "CTYPE2", "CTYPE3", "CDELT3", "CRVAL3", "BUNIT", "SPECSYS"):
        assert out.header[key] == header[key]
    assert "galcubecraft" in str(out.header["HISTORY"])
    model = result.model.reshape(grid.shape)
    # flux conserved, in the data's own unit and channels
    assert grid.integrated_flux(model).to_value(JYKMS) == pytest.approx(5.0, rel=2e-3)
    # the systemic velocity lands where the header's WCS puts it (astropy, not our code)
    spec = WCS(header).sub([spectral_axis_number(header)])
    world = spec.pixel_to_world(np.arange(grid.n_chan))
    velocity = world.to_value(KMS, doppler_rest=grid.rest_frequency,
                              doppler_convention="radio")
    spectrum = model.sum(axis=(1, 2))
    assert np.sum(spectrum * velocity) / spectrum.sum() == pytest.approx(v_mid + 15, abs=0.5)
    # and the position: the model's centroid is at the table's pixel and sky position
    ys, xs = np.mgrid[:grid.shape[1], :grid.shape[2]]
    mom0 = model.sum(axis=0)
    x, y = np.sum(mom0 * xs) / mom0.sum(), np.sum(mom0 * ys) / mom0.sum()
    assert (x, y) == pytest.approx((21.3, 26.6), abs=0.02)
    sky = WCS(header).celestial.pixel_to_world(x, y)
    row = result.truth[0]
    assert sky.separation(gcc.CubeGrid.from_fits(path).wcs.celestial.pixel_to_world(
        row["x_pix"], row["y_pix"])).to_value(u.arcsec) < 0.03


def test_injection_into_a_kelvin_cube_uses_the_beam_at_each_channel(tmp_path):
    header = casa_header(n_chan=40, n_pix=48)
    jy = noise_cube(header, tmp_path / "jy.fits", 0.0)
    header_k = header.copy()
    header_k["BUNIT"] = "K"
    kelvin = noise_cube(header_k, tmp_path / "k.fits", 0.0)
    grid = gcc.CubeGrid.from_fits(jy)
    galaxy = disk(grid, 24, 23, float(np.mean(grid.spectral_axis.to_value(KMS))))
    model_jy = inject(jy, [galaxy]).model.reshape(grid.shape)
    model_k = inject(kelvin, [galaxy]).model.reshape(grid.shape)
    freqs = grid.frequencies
    for k in (5, 20, 33):
        jtok = grid.beam.jtok(freqs[k]).to_value(u.K)   # K per Jy/beam
        np.testing.assert_allclose(model_k[k], model_jy[k] * jtok, rtol=1e-5,
                                   atol=1e-7 * model_k.max())
    # Rayleigh-Jeans: T = S c^2 / (2 k nu^2 Omega) at the channel's frequency
    nu = freqs[20].to_value(u.Hz)
    rj = (const.c.si.value**2 / (2 * const.k_B.si.value * nu**2 * grid.beam.sr.value)) * 1e-26
    assert model_k[20].max() == pytest.approx(model_jy[20].max() * rj, rel=1e-4)


def test_injection_into_an_optical_cube_in_f_lambda(tmp_path):
    """MUSE-like: AWAV axis, no beam in the header (PSF given), 1e-20 erg/s/cm2/A per spaxel.
    The line flux integrated over wavelength equals (nu0 / c) times the flux in Jy km/s."""
    header = muse_header(n_chan=40, n_pix=40, rotation=20.0)
    path = noise_cube(header, tmp_path / "muse.fits", 0.0)
    with pytest.raises(ValueError, match="no beam"):
        inject(path, [], rest_frequency="Halpha")
    grid = gcc.CubeGrid.from_fits(path, rest_frequency="Halpha", beam=0.7 * u.arcsec)
    v_mid = float(np.mean(grid.spectral_axis.to_value(KMS)))
    galaxy = disk(grid, 19.5, 20.5, v_mid, surface=gcc.SersicDisk(r_eff=1 * u.arcsec, n=1),
                  kinematics=gcc.ArctanRotationCurve(v_max=150 * KMS, r_turn=0.3 * u.arcsec),
                  vertical=gcc.ExponentialVertical(0.1 * u.arcsec), dispersion=40 * KMS,
                  flux=1e-3 * JYKMS)
    result = inject(path, [galaxy], rest_frequency="Halpha", beam=0.7 * u.arcsec)
    model = result.model.reshape(grid.shape) * parse_bunit("10**(-20)*erg/s/cm**2/Angstrom")
    # channel widths in (air) wavelength straight from the header: linear, 1.25 A
    line_flux = (model.sum() * 1.25 * u.AA).to(u.erg / u.s / u.cm**2)
    f0 = gcc.lines.rest_frequency("Halpha")
    expected = (1e-3 * u.Jy * u.km / u.s * f0 / const.c).to(u.erg / u.s / u.cm**2)
    # air and vacuum channel widths differ by the dispersion of n(air) (~3e-6)
    assert line_flux.value == pytest.approx(expected.value, rel=1e-3)
    factors = brightness_factors(grid, parse_bunit("10**(-20)*erg/s/cm**2/Angstrom"))
    assert np.all(np.diff(factors) < 0)       # f_lambda per f_nu falls with wavelength


def test_blank_voxels_stay_blank_and_receive_nothing(tmp_path):
    header = casa_header(n_chan=24, n_pix=48)
    shape = (1, 24, 48, 48)
    data = np.zeros(shape, np.float32)
    data[:, :, :, :24] = np.nan                     # the eastern half is outside the mosaic
    path = write(header, tmp_path / "blank.fits", data)
    grid = gcc.CubeGrid.from_fits(path)
    galaxy = disk(grid, 23.5, 24.0, float(np.mean(grid.spectral_axis.to_value(KMS))),
                  position_angle=0 * u.deg)
    result = inject(path, [galaxy])
    assert np.all(np.isnan(result.hdu.data[..., :24]))
    assert np.all(np.isfinite(result.hdu.data[..., 24:]))
    assert np.all(result.model[..., :24] == 0)
    # a galaxy symmetric about the boundary: half its flux lands in the cube
    assert result.truth["flux_in_cube"][0].to_value(JYKMS) == pytest.approx(2.5, rel=0.01)


def test_truth_table_recreates_the_injected_model(tmp_path):
    header = casa_header(n_chan=32, n_pix=56)
    path = noise_cube(header, tmp_path / "in.fits", 1e-3)
    grid = gcc.CubeGrid.from_fits(path)
    galaxies = random_galaxies(grid, 2, seed=5, priors=GalaxyPriors(
        r_eff=LogUniform(1.5 * u.arcsec, 2.5 * u.arcsec), v_max=Uniform(80 * KMS, 200 * KMS)))
    galaxies.append(disk(grid, 28, 28, float(grid.spectral_axis[16].to_value(KMS)),
                         kinematics=gcc.AnalyticRotationCurve(v_0=150 * KMS)))
    result = inject(path, galaxies)
    paths = result.write(tmp_path / "out.fits")
    with pytest.raises(FileExistsError):
        result.write(tmp_path / "out.fits")
    truth = QTable.read(paths[1])
    assert len(truth) == 3 and truth["rotation"][2] == "analytic"
    again = inject(path, galaxies_from_table(truth, grid))
    np.testing.assert_allclose(again.model, result.model, rtol=0, atol=1e-6 * result.model.max())
    # positions by sky coordinate give the same galaxies
    by_sky = truth.copy()
    by_sky.remove_columns(["x_pix", "y_pix"])
    np.testing.assert_allclose(inject(path, galaxies_from_table(by_sky, grid)).model,
                               result.model, rtol=0, atol=1e-5 * result.model.max())
    with pytest.raises(ValueError, match="r_eff"):
        galaxies_from_table(truth[["ra", "dec", "v_sys"]], grid)


def test_random_placement_avoids_edges_bright_emission_and_each_other():
    grid = gcc.CubeGrid.from_fits(casa_header(n_chan=40, n_pix=96))
    bright = np.zeros((96, 96))
    bright[30:60, 30:60] = 1.0
    small = GalaxyPriors(r_eff=Uniform(1 * u.arcsec, 3 * u.arcsec))
    galaxies = random_galaxies(grid, 6, seed=3, edge=8 * u.arcsec, avoid=bright,
                               avoid_threshold=0.5, min_separation=10 * u.arcsec,
                               priors=small)
    positions = np.array([grid.pixel_of(g.offset) for g in galaxies])
    assert np.all((positions >= 7.5) & (positions <= 96 - 8.5))
    inside_box = ((positions[:, 0] > 30 - 8) & (positions[:, 0] < 60 + 8)
                  & (positions[:, 1] > 30 - 8) & (positions[:, 1] < 60 + 8))
    assert not inside_box.any()
    d = np.hypot(*(positions[:, None, :] - positions[None, :, :]).transpose(2, 0, 1))
    assert d[np.triu_indices(6, 1)].min() >= 10
    again = random_galaxies(grid, 6, seed=3, edge=8 * u.arcsec, avoid=bright,
                            avoid_threshold=0.5, min_separation=10 * u.arcsec,
                            priors=small)
    assert [repr(g) for g in again] == [repr(g) for g in galaxies]
    with pytest.raises(ValueError, match="far enough"):
        random_galaxies(grid, 1, avoid=np.ones((96, 96)), avoid_threshold=0.5)
    # a placer made once draws the same galaxies for the same seeds, draw after draw, its
    # checks made when it is built
    from galcubecraft.catalogue import GalaxyPlacer
    placer = GalaxyPlacer(grid, edge=8 * u.arcsec, avoid=bright, avoid_threshold=0.5,
                          min_separation=10 * u.arcsec, priors=small)
    for seed in (3, 4, 3):
        assert placer.draw(6, seed) == random_galaxies(
            grid, 6, seed=seed, edge=8 * u.arcsec, avoid=bright, avoid_threshold=0.5,
            min_separation=10 * u.arcsec, priors=small)
    assert placer.draw(6, 3) == galaxies and placer.draw(0, 3) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        placer.draw(-1)
    with pytest.raises(ValueError, match="too narrow"):
        GalaxyPlacer(gcc.CubeGrid(shape=(4, 32, 32), pixel_scale=1 * u.arcsec,
                                  channel_width=10 * KMS))
    with pytest.raises(ValueError, match="avoid has shape"):
        GalaxyPlacer(grid, avoid=np.ones((3, 3)))


def test_injection_into_a_jy_per_pixel_cube_conserves_flux(tmp_path):
    header = casa_header(n_chan=40, n_pix=48)
    header["BUNIT"] = "Jy/pixel"
    path = noise_cube(header, tmp_path / "jypix.fits", 0.0)
    grid = gcc.CubeGrid.from_fits(path)
    galaxy = disk(grid, 24, 23, float(np.mean(grid.spectral_axis.to_value(KMS))))
    model = inject(path, [galaxy]).model.reshape(grid.shape)
    # Jy/pixel: the line flux is the plain sum times the channel width, no beam area
    flux = model.sum() * abs(grid.channel_width.to_value(KMS))
    assert flux == pytest.approx(5.0, rel=2e-3)


def test_injected_cube_of_a_valid_cube_stays_valid(tmp_path):
    grid = gcc.CubeGrid(shape=(24, 48, 48), pixel_scale=1 * u.arcsec, channel_width=20 * KMS,
                        beam=3 * u.arcsec, rest_frequency="CO(2-1)", spectral_type="FREQ")
    noise = np.random.default_rng(2).normal(0, 1e-3, grid.shape)
    gcc.to_spectral_cube(noise, grid).write(tmp_path / "obs.fits")
    result = inject(tmp_path / "obs.fits", random_galaxies(grid, 2, seed=1, priors=GalaxyPriors(
        r_eff=Uniform(1 * u.arcsec, 2 * u.arcsec), v_max=Uniform(50 * KMS, 100 * KMS))))
    out, _ = result.write(tmp_path / "injected.fits")
    assert_valid_cube(str(out))
