"""observe(): noise as part of the observation, masks and labels, in one call."""

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from spectral_cube import SpectralCube

import galcubecraft as gcc
from conftest import JYKMS, KMS, make_galaxy
from galcubecraft.noise import NoiseModel
from galcubecraft.response import Hanning
from fits_rules import assert_valid_cube

JYB = u.Jy / u.beam


def grid(response=None, shape=(32, 48, 48), beam=3 * u.arcsec):
    return gcc.CubeGrid(shape=shape, pixel_scale=1 * u.arcsec, channel_width=20 * KMS,
                        beam=beam, spectral_response=response)


def pair():
    return [make_galaxy(offset=[-9, 0] * u.arcsec),
            make_galaxy(offset=[10, 6] * u.arcsec, flux=10 * JYKMS, v_sys=60 * KMS,
                        position_angle=120 * u.deg)]


@pytest.mark.parametrize("correlation", ["white", "beam"])
def test_noise_rms_is_the_target_within_2_percent(correlation):
    g = grid(shape=(40, 128, 128))
    noise = NoiseModel(rms=2 * u.mJy / u.beam, correlation=correlation).draw(
        g, 2 * u.mJy / u.beam, seed=1)
    assert noise.std() / 2e-3 == pytest.approx(1, abs=0.02)


def test_beam_correlated_noise_has_the_beam_as_autocorrelation():
    g = grid(shape=(64, 96, 96), beam=4 * u.arcsec)
    n = NoiseModel(rms=1 * JYB).draw(g, 1.0, seed=2)
    sigma = 4 / 2.3548200450309493                       # beam sigma in pixels
    for lag in (1, 2, 3, 4):
        rho = np.mean(n[:, :, lag:] * n[:, :, :-lag]) / np.mean(n * n)
        assert rho == pytest.approx(np.exp(-lag**2 / (2 * sigma**2)), abs=0.02)


def test_hanning_noise_correlates_channels_by_two_thirds_and_one_sixth():
    g = grid(response=Hanning(), shape=(200, 48, 48))
    n = NoiseModel(rms=1 * JYB, correlation="white").draw(g, 1.0, seed=3)
    var = np.mean(n * n)
    assert var == pytest.approx(1, abs=0.01)
    assert np.mean(n[1:] * n[:-1]) / var == pytest.approx(2 / 3, abs=0.01)
    assert np.mean(n[2:] * n[:-2]) / var == pytest.approx(1 / 6, abs=0.01)
    assert abs(np.mean(n[3:] * n[:-3]) / var) < 0.01
    # spectral=False leaves channels independent
    m = NoiseModel(rms=1 * JYB, correlation="white", spectral=False).draw(g, 1.0, seed=3)
    assert abs(np.mean(m[1:] * m[:-1])) < 0.01


def test_integrated_snr_uses_the_exact_noise_of_the_masked_sum():
    """Monte Carlo: the std of the noise summed over the mask is what NoiseModel says."""
    g = grid(response=Hanning(), shape=(16, 32, 32))
    model = NoiseModel(integrated_snr=5)
    mask = np.zeros(g.shape, bool)
    mask[4:10, 8:20, 10:18] = True
    sums = [model.draw(g, 1.0, seed=k)[mask].sum() for k in range(400)]
    assert np.std(sums) == pytest.approx(model.sum_sigma(g, mask), rel=0.08)
    white = NoiseModel(integrated_snr=5, correlation="white", spectral=False)
    assert white.sum_sigma(g, mask) == pytest.approx(np.sqrt(mask.sum()))


def test_observe_returns_noisy_clean_mask_and_params_in_one_call(tmp_path):
    g = grid(response=Hanning())
    obs = gcc.observe(pair(), g, NoiseModel(peak_snr=8), seed=5)
    noisy, clean, mask, params = obs
    c, n = clean.unitless_filled_data[:], noisy.unitless_filled_data[:]
    rms = params["noise_rms"].to_value(JYB)
    assert c.max() / rms == pytest.approx(8)
    assert (n - c).std() / rms == pytest.approx(1, abs=0.05)
    assert noisy.header["NOISERMS"] == pytest.approx(rms)
    assert clean.header["PEAKSNR"] == pytest.approx(8)
    np.testing.assert_array_equal(mask, c >= params["mask_threshold"].to_value(JYB))
    assert g.integrated_flux(np.where(mask, c, 0)).to_value(JYKMS) > 0.99 * 40
    # labels: each galaxy owns the voxels at its centre, and only masked voxels are labelled
    assert set(np.unique(obs.labels)) == {0, 1, 2}
    assert np.all((obs.labels > 0) == mask)
    for k, row in enumerate(params["galaxies"]):
        column = obs.labels[:, int(round(row["y_pix"])), int(round(row["x_pix"]))]
        assert np.bincount(column[column > 0]).argmax() == k + 1
    # the same seed, the same noise
    again = gcc.observe(pair(), g, NoiseModel(peak_snr=8), seed=5)
    np.testing.assert_array_equal(again.noisy.unitless_filled_data[:], n)
    paths = obs.write(tmp_path / "obs")
    assert fits.getdata(paths["mask"]).sum() == mask.sum()
    assert fits.getheader(paths["labels"])["CTYPE3"] == "VRAD"
    read = SpectralCube.read(paths["noisy"])
    np.testing.assert_allclose(read.unitless_filled_data[:], n, rtol=1e-6)
    with pytest.raises(FileExistsError):
        obs.write(tmp_path / "obs")


def test_observe_with_an_integrated_snr_and_a_sigma_mask():
    g = grid()
    obs = gcc.observe(pair(), g, NoiseModel(integrated_snr=30), seed=1)
    assert obs.noisy.header["INTSNR"] == pytest.approx(30)
    # independent noise: the masked sum has sigma rms sqrt(N), so rms = S / (30 sqrt(N))
    white = gcc.observe(pair(), g, NoiseModel(integrated_snr=30, correlation="white",
                                              spectral=False), seed=1)
    clean = white.clean.unitless_filled_data[:]
    expected = clean[white.mask].sum() / (30 * np.sqrt(white.mask.sum()))
    assert white.params["noise_rms"].to_value(JYB) == pytest.approx(expected, rel=1e-6)  # float32
    # beam- and channel-correlated noise adds up over the mask faster than independent noise,
    # so the same integrated S/N needs a smaller rms
    assert obs.params["noise_rms"] < white.params["noise_rms"]
    sig = gcc.observe(pair(), g, NoiseModel(rms=1 * u.mJy / u.beam), seed=1,
                      mask_threshold="2 sigma")
    assert sig.params["mask_threshold"].to_value(JYB) == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="sigma"):
        gcc.observe(pair(), g, NoiseModel(peak_snr=3), mask_threshold="2 sigma")
    clean_only = gcc.observe(pair(), g)
    assert "noise_rms" not in clean_only.params
    np.testing.assert_array_equal(clean_only.noisy.unitless_filled_data[:],
                                  clean_only.clean.unitless_filled_data[:])


def test_bad_noise_models():
    with pytest.raises(ValueError, match="exactly one"):
        NoiseModel()
    with pytest.raises(ValueError, match="exactly one"):
        NoiseModel(rms=1 * JYB, peak_snr=3)
    with pytest.raises(u.UnitTypeError):
        NoiseModel(rms=1e-3)
    with pytest.raises(ValueError, match="rms"):
        NoiseModel(rms=np.nan * JYB)
    with pytest.raises(ValueError, match="correlation"):
        NoiseModel(rms=1 * JYB, correlation="pink")
    with pytest.raises(ValueError, match="beam"):
        NoiseModel(rms=1 * u.Jy / u.pix).draw(grid(beam=None), 1.0)


def test_stokes_axis_on_request(tmp_path):
    cube = gcc.render(make_galaxy(), grid())
    cube.write(tmp_path / "s.fits", stokes=True)
    cube.write(tmp_path / "p.fits")
    assert fits.getheader(tmp_path / "s.fits")["NAXIS"] == 4
    assert fits.getheader(tmp_path / "s.fits")["CTYPE4"] == "STOKES"
    assert fits.getheader(tmp_path / "p.fits")["NAXIS"] == 3
    assert gcc.CubeGrid.from_fits(tmp_path / "s.fits").stokes == 4
    with pytest.warns(Warning, match="Stokes"):
        read = SpectralCube.read(tmp_path / "s.fits")
    np.testing.assert_array_equal(read.unitless_filled_data[:], cube.unitless_filled_data[:])
    assert_valid_cube(str(tmp_path / "s.fits"))
