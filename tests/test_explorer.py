"""The Jupyter explorer, driven from code: sliders re-render, the figure follows, Save writes."""
import astropy.units as u
import numpy as np
import pytest
from spectral_cube import SpectralCube

pytest.importorskip("ipywidgets")
from galcubecraft.explorer import SLIDERS, Explorer  # noqa: E402

KMS = u.km / u.s


@pytest.fixture
def explorer():
    return Explorer(shape=(24, 48, 48))


def images(e):
    """The moment-0 and moment-1 maps on display (the figure's first two panels)."""
    return [np.asarray(ax.images[0].get_array(), float).copy() for ax in e.figure.axes[:2]]


def test_every_slider_is_wired(explorer):
    from astropy.visualization.wcsaxes import WCSAxes
    assert set(explorer.sliders) == set(SLIDERS)
    assert all(isinstance(ax, WCSAxes) for ax in explorer.figure.axes[:2])
    box = explorer.widget()
    assert explorer.save_button in box.children[-1].children


def test_sliders_rerender_the_cube_and_the_figure(explorer):
    before_cube = explorer.cube.unitless_filled_data[:].copy()
    mom0, mom1 = images(explorer)
    explorer.sliders["inclination"].value = 20.0
    assert explorer.galaxy().inclination == 20 * u.deg
    after = images(explorer)
    assert not np.allclose(after[1], mom1, equal_nan=True)
    # less inclined: the velocity field spans less
    assert np.nanmax(np.abs(after[1])) < np.nanmax(np.abs(mom1))
    assert not np.array_equal(explorer.cube.unitless_filled_data[:], before_cube)
    # the flux stays the galaxy's (all but what falls outside the 48" field)
    total = explorer.grid().integrated_flux(explorer.cube.unitless_filled_data[:])
    assert total.to_value(u.Jy * KMS) == pytest.approx(30, rel=0.01)
    assert explorer.status.value.startswith("integrated flux")


def test_position_angle_turns_the_velocity_field(explorer):
    explorer.sliders["position_angle"].value = 0.0     # receding side to the north
    mom1 = images(explorer)[1]
    c = 23.5
    assert mom1[int(c + 8), int(c)] > 0 > mom1[int(c - 8), int(c)]
    explorer.sliders["position_angle"].value = 180.0
    mom1 = images(explorer)[1]
    assert mom1[int(c + 8), int(c)] < 0 < mom1[int(c - 8), int(c)]


def test_beam_slider_changes_the_beam(explorer):
    explorer.sliders["beam"].value = 5.0
    assert u.isclose(explorer.cube.beam.major, 5 * u.arcsec)


def test_save_button_writes_the_current_cube(explorer, tmp_path):
    explorer.filename.value = str(tmp_path / "first.fits")
    explorer.save_button.click()
    first = SpectralCube.read(tmp_path / "first.fits")
    np.testing.assert_allclose(first.unmasked_data[:].value,
                               explorer.cube.unitless_filled_data[:])
    explorer.sliders["dispersion"].value = 60.0
    path = explorer.save(str(tmp_path / "second.fits"))
    second = SpectralCube.read(path)
    assert not np.allclose(first.unmasked_data[:].value, second.unmasked_data[:].value)
    assert "saved" in explorer.status.value


def test_the_explorer_shows_its_maps_in_a_real_notebook(tmp_path):
    """Executed in a fresh kernel as a notebook is (nbclient): the explorer's output area holds
    an image/png of its maps, not the text '<Figure size ...>'."""
    import json
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from galcubecraft.explorer import Explorer\nExplorer(shape=(8, 24, 24))")]
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for o in outputs)
    state = json.dumps(nb.metadata["widgets"])
    assert "image/png" in state
    assert "Figure size" not in state
