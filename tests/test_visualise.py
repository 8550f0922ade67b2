"""Plots run headless, carry world coordinates and units, and save what they say."""
import matplotlib

matplotlib.use("Agg")

import astropy.units as u  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
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
