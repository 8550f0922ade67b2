"""Fitting cubes (`galcubecraft.fitting`): the whitened likelihood, honest error bars, results.

The noise treatment is checked against draws of the noise it models (its chi-squared must be a
chi-squared variable of the stated degrees of freedom), and the error bars against mocks: over
mock cubes with beam-correlated noise the pulls (median - truth) / sigma must scatter as a unit
Gaussian, while the independent-pixel chi-squared, fitted to the same mocks, gives pulls
several times too wide (its error bars too small).
"""
import astropy.units as u
import numpy as np
import pytest
import torch
from radio_beam import Beam

import galcubecraft as gcc
from galcubecraft.fitting import FitSpace, fit, moment_guess, signal_mask
from galcubecraft.noise import NoiseModel
from galcubecraft.response import Hanning

KMS = u.km / u.s


@pytest.mark.parametrize("response", [None, Hanning()])
def test_the_whitened_chi2_of_the_noise_is_chi2_distributed(response):
    grid = gcc.CubeGrid(shape=(10, 20, 26), pixel_scale=1 * u.arcsec, channel_width=20 * KMS,
                        beam=Beam(4 * u.arcsec), spectral_response=response)
    noise = NoiseModel(rms=1 * u.Jy / u.beam)
    values = []
    for seed in range(150):
        chi2, n = noise.whitened_chi2(torch.as_tensor(noise.draw(grid, 0.3, seed=seed)), grid,
                                      0.3)
        values.append(float(chi2))
    values = np.array(values)
    assert n < 0.7 * grid.n_chan * 20 * 26               # the beam leaves most modes out
    assert abs(values.mean() - n) < 4 * np.sqrt(2 * n / len(values))
    assert 0.8 < values.std() / np.sqrt(2 * n) < 1.2
    # white noise: the plain sum of squares
    white = NoiseModel(rms=1 * u.Jy / u.beam, correlation="white", spectral=False)
    cube = white.draw(grid, 0.3, seed=1)
    chi2, n = white.whitened_chi2(torch.as_tensor(cube), grid, 0.3)
    assert n == cube.size and float(chi2) == pytest.approx((cube**2).sum() / 0.09)


GRID = gcc.CubeGrid(shape=(10, 16, 16), pixel_scale=2 * u.arcsec, channel_width=50 * KMS,
                    beam=Beam(6 * u.arcsec))
TRUTH = gcc.Galaxy(surface=gcc.ExponentialDisk(scale_length=4 * u.arcsec),
                   kinematics=gcc.ArctanRotationCurve(150 * KMS, 3 * u.arcsec),
                   inclination=55 * u.deg, position_angle=30 * u.deg, flux=20 * u.Jy * KMS,
                   dispersion=20 * KMS)
MODEL = dict(surface="sersic", r_eff="6.713 arcsec", n=1.0, rotation="arctan",
             r_turn="3 arcsec", dispersion="20 km/s", position_angle="30 deg",
             inclination={"distribution": "uniform", "low": "20 deg", "high": "85 deg"},
             v_max={"distribution": "uniform", "low": "50 km/s", "high": "300 km/s"},
             flux={"distribution": "loguniform", "low": "2 Jy km/s", "high": "200 Jy km/s"})
VALUES = {"inclination": 55.0, "v_max": 150.0, "flux": 20.0}


def test_error_bars_are_calibrated_only_with_the_whitened_likelihood():
    """Mocks at peak S/N 5, rendered at twice the fit's sampling, with beam-correlated noise:
    the whitened likelihood's pulls scatter as a unit Gaussian (the full check over 200 mocks
    is ``python -m benchmarks.fit_calibration``); the independent-pixel chi-squared's are
    twice as wide or more."""
    clean = gcc.render(TRUTH, GRID, oversample=2).unitless_filled_data[:]
    rms = float(clean.max()) / 5
    noise = NoiseModel(rms=1 * u.Jy / u.beam)
    pulls = {"whitened": [], "independent": []}
    for seed in range(6):
        data = clean + noise.draw(GRID, rms, seed=seed)
        for likelihood, out in pulls.items():
            result = fit(data, MODEL, grid=GRID, noise=rms, likelihood=likelihood, seed=seed,
                         starts=2, draws=2000)
            for row in result.table:
                sigma = 0.5 * (row["p84"] - row["p16"])
                out.append((row["median"] - VALUES[row["name"]]) / sigma)
    whitened, independent = np.std(pulls["whitened"]), np.std(pulls["independent"])
    assert 0.5 < whitened < 1.6, pulls["whitened"]
    assert independent > 1.8 * whitened, (whitened, independent)


def test_a_fit_result_holds_the_table_the_cubes_and_writes_them(tmp_path):
    clean = gcc.render(TRUTH, GRID).unitless_filled_data[:]
    rms = float(clean.max()) / 20
    data = clean + NoiseModel(rms=1 * u.Jy / u.beam).draw(GRID, rms, seed=3)
    result = fit(data, MODEL, grid=GRID, noise=rms, method="map", seed=0, starts=2)
    assert result.samples is None and list(result.table["name"]) == list(VALUES)
    assert abs(result["inclination"] - 55 * u.deg) < 5 * u.deg
    assert result.galaxy.inclination == result["inclination"]
    assert result.chi2 < 1.5 * result.n_modes
    residual = result.residual.unitless_filled_data[:]
    assert np.allclose(residual + result.model.unitless_filled_data[:], data, atol=1e-6)
    figures = result.plot()         # data, model, residual: moments and PV
    assert len(figures) == 3 and all(len(f.axes) >= 3 for f in figures)
    # the fitted rotation curve drawn over each PV diagram
    assert all(any(line.get_label() == "model rotation" for ax in f.axes for line in ax.lines)
               for f in figures)
    import matplotlib.pyplot as plt
    plt.close("all")
    result.write(tmp_path / "fit")
    assert {p.name for p in (tmp_path / "fit").iterdir()} == {"fit.ecsv", "model.fits",
                                                              "residual.fits"}
    with pytest.raises(FileExistsError, match="overwrite"):
        result.write(tmp_path / "fit")
    # the same seed, the same fit (the noise as a Quantity in any unit of brightness)
    again = fit(data, MODEL, grid=GRID, noise=rms * 1e3 * u.mJy / u.beam, method="map",
                seed=0, starts=2)
    assert np.allclose(again.table["best"], result.table["best"], rtol=1e-5)


def test_each_node_of_a_table_and_the_offset_can_be_free():
    space = FitSpace(dict(MODEL, offset=[{"distribution": "uniform", "low": "-3 arcsec",
                                          "high": "3 arcsec"}, "1 arcsec"],
                          warp_radius=["0 arcsec", "5 arcsec", "10 arcsec"],
                          warp_inclination=["55 deg", "55 deg", {"distribution": "uniform",
                                                                 "low": "50 deg",
                                                                 "high": "80 deg"}]))
    assert space.names == ["inclination", "v_max", "flux", "offset[0]", "warp_inclination[2]"]
    theta = torch.tensor([[60.0, 100.0, 10.0, -2.0, 70.0]], dtype=torch.float64)
    params = space.tensors(theta)
    assert float(params["x0"][0]) == -2.0 and float(params["y0"][0]) == 1.0
    assert np.allclose(params["warp_inclination"][0].numpy(), np.radians([55, 55, 70]))
    assert float(params["inclination"][0]) == pytest.approx(np.radians(60))
    galaxy = space.galaxy_at(theta[0])
    assert galaxy.warp.inclination[-1] == 70 * u.deg and galaxy.offset[0] == -2 * u.arcsec


def test_a_free_node_is_the_node_given_even_where_the_model_adds_nodes():
    """A rotation table without R = 0 starts at (0, 0): its free nodes are still the ones the
    model file lists (a regression: they were shifted by one, onto the added node)."""
    model = dict(MODEL, rotation="tabulated", radius=["3 arcsec", "6 arcsec", "9 arcsec"],
                 velocity=["100 km/s", {"distribution": "uniform", "low": "0 km/s",
                                        "high": "300 km/s"}, "160 km/s"])
    del model["v_max"], model["r_turn"]
    space = FitSpace(model)
    assert space.names == ["inclination", "flux", "velocity[1]"]
    theta = torch.tensor([[55.0, 20.0, 140.0]], dtype=torch.float64)
    galaxy = space.galaxy_at(theta[0])
    assert list(galaxy.kinematics.velocity.value) == [0, 100, 140, 160]
    params = space.tensors(theta)
    direct = gcc.Projector(GRID)(params, space.model)
    expected = gcc.render(galaxy, GRID).unitless_filled_data[:]
    assert np.allclose(direct[0].numpy(), expected, atol=1e-9 * expected.max())


@pytest.mark.parametrize("cube, model, kw, match", [
    (np.full(GRID.shape, np.nan), MODEL, {}, "no finite value"),
    (np.zeros(GRID.shape), dict(MODEL, no_such="1 arcsec"), {}, "unknown galaxy parameter"),
    (np.zeros(GRID.shape), {k: v for k, v in MODEL.items() if not isinstance(v, dict)},
     {}, "no free parameter"),
    (np.zeros(GRID.shape), dict(MODEL, n={"distribution": "choice", "values": [1, 2]}), {},
     "cannot be fitted"),
    (np.zeros(GRID.shape), MODEL, {"method": "mcmc"}, "method"),
    (np.zeros(GRID.shape), MODEL, {"starts": 0}, "starts must be a whole number"),
    (np.zeros(GRID.shape), MODEL, {"live": 2.5}, "live must be a whole number"),
    (np.zeros((3, 4, 4)), MODEL, {}, "shape"),
    (np.zeros(GRID.shape), MODEL, {"noise": 0.0}, "noise"),
    (np.zeros(GRID.shape), dict(MODEL, v_sys={"distribution": "uniform", "low": "900 km/s",
                                              "high": "1000 km/s"}), {}, "outside the cube's band"),
    (np.zeros(GRID.shape), dict(MODEL, v_sys="-600 km/s"), {}, "outside the cube's band"),
    (np.zeros(GRID.shape), dict(MODEL, offset=["0 arcsec", {
        "distribution": "uniform", "low": "40 arcsec", "high": "60 arcsec"}]),
     {}, r"offset\[1\].*outside the cube's field"),
    (np.zeros(GRID.shape), MODEL, {"grid": GRID.replace(beam=None)}, "has no beam"),
    (np.where(np.arange(16) < 8, np.nan, 0.0) * np.ones(GRID.shape), MODEL, {}, "blank"),
    (np.where(np.arange(16) < 8, np.nan, 0.0) * np.ones(GRID.shape), MODEL,
     {"region": (slice(None), slice(None), slice(0, 8))}, "region .* no finite value"),
])
def test_bad_fits_are_refused_before_any_work(cube, model, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fit(cube, model, **{"grid": GRID, "noise": 1.0, **kw})


def test_the_moments_guess_the_geometry_of_a_galaxy():
    """Centre, v_sys, PA, inclination and flux from the moments of a noisy mock, within what a
    start needs; the smooth-clip-grow mask leaves the noise out."""
    grid = gcc.CubeGrid(shape=(24, 48, 48), pixel_scale=1 * u.arcsec, channel_width=20 * KMS,
                        beam=Beam(4 * u.arcsec))
    truth = TRUTH.replace(position_angle=250 * u.deg, inclination=60 * u.deg,
                          offset=[3, -2] * u.arcsec, v_sys=40 * KMS)
    clean = gcc.render(truth, grid).unitless_filled_data[:]
    rms = float(clean.max()) / 10
    data = clean + NoiseModel(rms=1 * u.Jy / u.beam).draw(grid, rms, seed=2)
    mask = signal_mask(data, grid)
    assert mask[clean > 0.3 * clean.max()].all()
    assert not mask[:, :4, :4].any() and not mask[:, -4:, -4:].any()     # noise left out
    guess = moment_guess(data, grid, mask)
    assert abs(guess["position_angle"] - 250 * u.deg) < 10 * u.deg
    assert abs(guess["inclination"] - 60 * u.deg) < 12 * u.deg
    assert np.all(np.abs(guess["offset"] - [3, -2] * u.arcsec) < 1 * u.arcsec)
    assert abs(guess["v_sys"] - 40 * KMS) < 10 * KMS
    assert abs(guess["flux"] / truth.flux - 1) < 0.15
    # the rotation curve, deprojected from moment 1 near the major axis: the plateau of the
    # arctan curve (150 km/s x 2/pi arctan(R / 3")) beyond 10" to 15%
    radii, speeds = guess["rotation_curve"]
    outer = (radii > 10 * u.arcsec) & (radii < 20 * u.arcsec)
    expected = 150 * 2 / np.pi * np.arctan(radii[outer].value / 3)
    assert np.all(np.abs(speeds[outer].value / expected - 1) < 0.15), speeds
    assert moment_guess(np.zeros(grid.shape), grid, np.zeros(grid.shape, bool)) == {}
    # the guesses become starts: a warp's tables flat at the guessed orientation, a scalar
    # rotation speed at the plateau
    space = FitSpace(dict(MODEL, warp_radius=["0 arcsec", "10 arcsec"],
                          warp_position_angle=[{"distribution": "uniform", "low": "200 deg",
                                                "high": "300 deg"}] * 2))
    start = space.initial(guess, np.random.default_rng(0), 4)[0]
    value = dict(zip(space.names, start.numpy()))
    assert value["warp_position_angle[0]"] == value["warp_position_angle[1]"] == pytest.approx(
        guess["position_angle"].value)
    assert value["v_max"] == pytest.approx(np.median(speeds[len(speeds) // 2:].value))


def test_a_region_is_fitted_as_its_own_cube(tmp_path):
    """Fitting a region of a file reads only it, and gives the fit of the cut-out cube (its
    offsets from the region's centre)."""
    clean = gcc.render(TRUTH, GRID).unitless_filled_data[:]
    rms = float(clean.max()) / 20
    data = clean + NoiseModel(rms=1 * u.Jy / u.beam).draw(GRID, rms, seed=5)
    big = np.zeros((14, 24, 24))
    big[2:12, 4:20, 6:22] = data
    grid = gcc.CubeGrid(shape=big.shape, pixel_scale=GRID.pixel_scale,
                        channel_width=GRID.channel_width, beam=GRID.beam,
                        velocity_center=0 * KMS)
    gcc.to_spectral_cube(big, grid).write(tmp_path / "big.fits")
    region = (slice(2, 12), slice(4, 20), slice(6, 22))
    whole = fit(tmp_path / "big.fits", MODEL, region=region, noise=rms, method="map")
    assert whole.grid.shape == GRID.shape
    alone = fit(data, MODEL, grid=whole.grid, noise=rms, method="map")
    assert np.allclose(whole.table["best"], alone.table["best"], rtol=1e-6)


def test_nested_sampling_gives_the_posterior_and_the_laplace_evidence():
    """nautilus on the batched likelihood: its posterior agrees with the Laplace one where
    the posterior is Gaussian, and so does its evidence (to its own error)."""
    clean = gcc.render(TRUTH, GRID, oversample=2).unitless_filled_data[:]
    rms = float(clean.max()) / 10
    data = clean + NoiseModel(rms=1 * u.Jy / u.beam).draw(GRID, rms, seed=0)
    laplace = fit(data, MODEL, grid=GRID, noise=rms, method="laplace", draws=2000)
    nested = fit(data, MODEL, grid=GRID, noise=rms, method="nested", draws=400, live=200)
    assert nested.table.meta["n_eff"] >= 400
    assert abs(nested.log_evidence - laplace.log_evidence) < 0.6
    for a, b in zip(nested.table, laplace.table):
        assert abs(a["median"] - b["median"]) < 0.5 * b["std"], a["name"]
        assert 0.7 < a["std"] / b["std"] < 1.4, a["name"]
    assert nested.samples["flux"].unit == u.Jy * KMS


def test_the_fit_command_writes_results_and_keeps_them(tmp_path, capsys):
    from galcubecraft.cli import main
    clean = gcc.render(TRUTH, GRID)
    rms = float(clean.unitless_filled_data[:].max()) / 20
    noise = NoiseModel(rms=1 * u.Jy / u.beam).draw(GRID, rms, seed=4)
    noisy = gcc.to_spectral_cube(clean.unitless_filled_data[:] + noise, GRID)
    noisy.write(tmp_path / "obs.fits")
    model = tmp_path / "model.toml"
    model.write_text("""
[galaxy]
surface = "sersic"
r_eff = "6.713 arcsec"
n = 1.0
rotation = "arctan"
r_turn = "3 arcsec"
dispersion = "20 km/s"
position_angle = "30 deg"
inclination = {distribution = "uniform", low = "20 deg", high = "85 deg"}
v_max = {distribution = "uniform", low = "50 km/s", high = "300 km/s"}
flux = {distribution = "loguniform", low = "2 Jy km/s", high = "200 Jy km/s"}
""")
    args = ["fit", str(tmp_path / "obs.fits"), "--model", str(model), "-o", str(tmp_path / "out"),
            "--noise", f"{rms} Jy/beam", "--starts", "2", "--no-progress",
            "--region", ",1:15,"]
    assert main(args) == 0
    assert "inclination" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "fit.ecsv", "samples.ecsv", "model.fits", "residual.fits", "data.png", "model.png",
        "residual.png", "corner.png"}
    before = (tmp_path / "out" / "fit.ecsv").read_text()
    assert main(args) == 2                                  # results kept
    assert "exists; use --overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "fit.ecsv").read_text() == before
    bad = tmp_path / "bad.toml"
    bad.write_text('[galaxy]\ninclination = "60 deg"\nno_such = "1 arcsec"\n')
    assert main(["fit", str(tmp_path / "obs.fits"), "--model", str(bad), "-o",
                 str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "unknown galaxy parameter 'no_such'" in err and "Traceback" not in err
    assert not (tmp_path / "o2").exists()
