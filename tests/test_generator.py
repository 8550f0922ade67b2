"""GalCubeCraft 0.1.0's generator, as its users call it, on the new renderer."""
import subprocess
import sys

import astropy.units as u
import numpy as np
import pytest
from astropy.table import QTable
from spectral_cube import SpectralCube

from galcubecraft import GalCubeCraft, GeneratedCube
from fits_rules import assert_valid_cube

KMS = u.km / u.s
SEED_KEYS = {"galaxy_centers", "average_vels", "beam_info", "n_gals", "pix_spatial_scale"}


def small(**kw):
    """A small, fast generator (48 x 48 pixels, 24 channels)."""
    args = dict(n_gals=None, n_cubes=2, resolution="all", grid_size=48, n_spectral_slices=24,
                verbose=False, seed=11, save=False)
    args.update(kw)
    return GalCubeCraft(**args)


def test_seed_quick_start(tmp_path, monkeypatch):
    """The 0.1.0 README's quick start with only the import line changed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    script = '''  # noqa: E501 (the README's lines, verbatim)
from galcubecraft import GalCubeCraft

# Create a generator: one cube, grid 125x125, 40 spectral channels (internally oversampled)
g = GalCubeCraft(n_gals=None, n_cubes=1, resolution='all', grid_size=125, n_spectral_slices=40, seed=42)

# Run the generation pipeline and collect results
results = g.generate_cubes()

# Each element in results is a tuple (spectral_cube, params_dict)

cube, params_dict = results[0]
print('cube shape (nz, ny, nx) =', cube.shape)
print('geenration parameter keys =', list(params_dict.keys()))
g.visualise(results, idx=0, save=True)
'''
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "cube shape (nz, ny, nx) = (40, 125, 125)" in run.stdout
    for key in SEED_KEYS:
        assert f"'{key}'" in run.stdout
    saved = tmp_path / "data" / "raw_data" / "40x125x125"
    assert (saved / "cube_1.npy").is_file() and (saved / "cube_1.fits").is_file()
    figures = tmp_path / "figures" / "40x125x125"
    for name in ("mom0_mom1.pdf", "mom0_mom1.png", "vel_spectrum.pdf", "vel_spectrum.png"):
        assert (figures / name).stat().st_size > 1000
    # a progress bar, not a wall of prints
    assert run.stdout.count("\n") == 2


def test_results_contract():
    g = small()
    assert len(g) == 2
    results = g.generate_cubes()
    assert len(results) == 2
    for result in results:
        assert isinstance(result, GeneratedCube)
        cube, params = result
        assert cube.shape == (24, 48, 48) and cube.dtype == np.float32
        assert SEED_KEYS <= set(params)
        assert params["n_gals"] == len(params["galaxies"]) == len(params["galaxy_centers"])
        np.testing.assert_allclose(params["average_vels"], np.linspace(-575, 575, 24))
        assert params["beam_info"] == (4, 4, 0)
        assert isinstance(params["galaxies"], QTable)
        assert params["galaxies"]["r_eff"].unit == u.kpc
        assert params["noise_rms"] is None and result.noisy is None
        assert np.all(np.isfinite(cube)) and cube.min() > -1e-6 * cube.max()
    # 0.1.0's per-cube attributes
    assert [len(x) for x in g.all_Re] == g.n_gals
    assert len(g.all_pix_spatial_scales) == len(g.all_Se) == 2


def test_same_seed_same_cubes_and_cube_i_independent_of_n_cubes():
    a = small(n_cubes=3).generate_cubes()
    b = small(n_cubes=3).generate_cubes()
    c = [small(n_cubes=6).generate_one(i) for i in range(3)]
    d = GalCubeCraft(n_cubes=3, grid_size=48, n_spectral_slices=24, verbose=False, seed=11,
                     save=False).generate_one(2)
    for i in range(3):
        np.testing.assert_array_equal(a[i].cube, b[i].cube)
        np.testing.assert_array_equal(a[i].cube, c[i].cube)
    np.testing.assert_array_equal(a[2].cube, d.cube)
    other = small(n_cubes=3, seed=12).generate_cubes()
    assert not np.array_equal(a[0].cube, other[0].cube)


def test_unseeded_sets_can_be_made_again():
    g = small(seed=None, n_cubes=1)
    again = small(seed=int(g.entropy), n_cubes=1)
    np.testing.assert_array_equal(g.generate_one(0).cube, again.generate_one(0).cube)


def test_flux_of_the_cube_is_the_galaxies_flux():
    """Sum of galaxy line fluxes = integrated flux of the cube (wide band, big field)."""
    g = GalCubeCraft(n_gals=2, n_cubes=2, resolution=0.6, grid_size=64, n_spectral_slices=32,
                     velocity_range=(-1000, 1000) * KMS, offset_gals=2, verbose=False, seed=3,
                     save=False)
    for result in g.generate_cubes():
        truth = result.params["galaxies"]["flux"].sum()
        measured = result.grid.integrated_flux(result.clean * result.grid.unit)
        assert measured.to_value(u.Jy * KMS) == pytest.approx(truth.to_value(u.Jy * KMS),
                                                              rel=2e-3)


def test_spectral_smoothing_broadens_by_its_sigma_and_keeps_flux():
    """The Gaussian spectral response adds sigma^2 to the spectrum's variance, conserving flux."""
    kw = dict(n_gals=1, n_cubes=1, resolution=1.0, grid_size=40, n_spectral_slices=40,
              velocity_range=(-400, 400) * KMS, verbose=False, seed=5, save=False)
    sharp = GalCubeCraft(spectral_smoothing=0, **kw).generate_one(0)
    smooth = GalCubeCraft(spectral_smoothing=1.5, **kw).generate_one(0)
    v = sharp.params["average_vels"]
    moments = []
    for r in (sharp, smooth):
        spec = r.cube.sum(axis=(1, 2)).astype(float)
        mean = (spec * v).sum() / spec.sum()
        moments.append((spec.sum(), (spec * (v - mean) ** 2).sum() / spec.sum()))
    assert moments[1][0] == pytest.approx(moments[0][0], rel=1e-4)
    assert moments[1][1] - moments[0][1] == pytest.approx((1.5 * 20) ** 2, rel=0.02)


def test_noise_is_added_with_the_requested_peak_snr():
    g = small(n_cubes=1, grid_size=64, n_spectral_slices=32, peak_snr=5)
    result = g.generate_one(0)
    rms = result.params["noise_rms"]
    assert rms.unit == u.Jy / u.beam
    assert rms.value == pytest.approx(result.clean.max() / 5, rel=1e-6)
    residual = result.cube - result.clean
    assert residual.std() == pytest.approx(rms.value, rel=0.03)
    assert result.noisy is result.cube
    white = small(n_cubes=1, grid_size=64, n_spectral_slices=32, peak_snr=5,
                  noise="white").generate_one(0)
    np.testing.assert_array_equal(white.clean, result.clean)
    assert not np.array_equal(white.cube, result.cube)
    # noise is reproducible and tied to the cube, not to the call
    np.testing.assert_array_equal(result.cube, g.generate_one(0).cube)


def test_saved_files(tmp_path):
    g = small(n_cubes=2, fname=tmp_path / "set", save=True, peak_snr=8)
    results = g.generate_cubes()
    for i, result in enumerate(results, start=1):
        files = result.params["files"]
        assert files["npy"] == tmp_path / "set" / f"cube_{i}.npy"
        np.testing.assert_array_equal(np.load(files["npy"]), result.cube)
        cube = SpectralCube.read(files["fits"])
        assert cube.unit == u.Jy / u.beam and u.isclose(cube.beam.major, 4 * u.arcsec)
        np.testing.assert_array_equal(cube.unmasked_data[:].value, result.cube)
        assert cube.header["NOISERMS"] == pytest.approx(result.params["noise_rms"].value)
        table = QTable.read(files["galaxies"], format="ascii.ecsv")
        assert table["flux"].unit == u.Jy * KMS
        np.testing.assert_allclose(table["flux"].value, result.params["galaxies"]["flux"].value)
    assert not list((tmp_path / "set").glob(".*part"))


def test_saved_fits_pass_the_shared_validator(tmp_path):
    g = small(n_cubes=2, fname=tmp_path, save=True, peak_snr=10)
    for result in g.generate_cubes():
        assert_valid_cube(str(result.params["files"]["fits"]))


def test_default_folder_is_0p1s(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g = small(n_cubes=1, save=True)
    g.generate_cubes()
    assert (tmp_path / "data" / "raw_data" / "24x48x48" / "cube_1.npy").is_file()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n_cubes": 0}, ValueError, "n_cubes"),
    ({"resolution": "blurry"}, ValueError, "resolution"),
    ({"peak_snr": -3}, ValueError, "peak_snr"),
    ({"noise": "pink"}, ValueError, "noise"),
    ({"seed": -1}, ValueError, "seed"),
    ({"spectral_smoothing": float("nan")}, ValueError, "spectral_smoothing"),
    ({"velocity_range": (-600, 600)}, u.UnitTypeError, "velocity_range"),
    ({"pixel_scale": 1 * u.kpc}, u.UnitsError, "pixel_scale"),
])
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        small(**kwargs)


def test_moment1_of_a_generated_galaxy_follows_its_position_angle():
    """The receding side of the primary lies along its position angle (east of north)."""
    g = GalCubeCraft(n_gals=1, n_cubes=1, resolution=3.0, grid_size=64, n_spectral_slices=40,
                     verbose=False, seed=21, save=False)
    result = g.generate_one(0)
    row = result.params["galaxies"][0]
    cube = result.to_spectral_cube()
    mom1 = cube.with_mask(cube > 0.02 * cube.max()).moment1().to_value(KMS)
    pa = row["position_angle"].to_value(u.rad)
    # one R_e along the major axis toward the PA: east is -x (column), north is +y (row)
    step = row["r_eff_pix"]
    c = (64 - 1) / 2
    x, y = c - step * np.sin(pa), c + step * np.cos(pa)
    xr, yr = int(round(x)), int(round(y))
    xa, ya = int(round(2 * c - x)), int(round(2 * c - y))
    assert mom1[yr, xr] > 20 and mom1[ya, xa] < -20


def test_the_seed_population_gets_the_same_noise_from_either_entry_point():
    """GalCubeCraft(peak_snr=...) and the galcubecraft-0.1 dataset preset draw their noise the
    same way: beam-correlated and smoothed by the spectral response like the signal, so
    adjacent channels are correlated alike (they were independent through GalCubeCraft)."""
    from galcubecraft.dataset import DatasetSpec

    def adjacent_correlation(noise):
        a, b = noise[:-1].ravel(), noise[1:].ravel()
        return float(np.corrcoef(a, b)[0, 1])

    gen = small(n_cubes=1, grid_size=64, n_spectral_slices=48, peak_snr=5).generate_one(0)
    spec = DatasetSpec({"preset": {"name": "galcubecraft-0.1", "grid_size": 64,
                                   "n_spectral_slices": 48},
                        "noise": {"peak_snr": 5}})
    obs = spec.make(0, seed=11)
    via_generator = adjacent_correlation(np.asarray(gen.cube - gen.clean, float))
    via_dataset = adjacent_correlation(np.asarray(obs.noisy - obs.clean, float))
    # a Gaussian response of 0.6 channel correlates neighbours by exp(-1 / (4 * 0.6**2)) = 0.5
    assert via_generator == pytest.approx(via_dataset, abs=0.05)
    assert via_generator > 0.3
