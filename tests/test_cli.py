"""The command line: `galcubecraft render`."""

import astropy.units as u
import numpy as np
import pytest
from spectral_cube import SpectralCube

from galcubecraft.cli import main


def test_render_without_a_beam(tmp_path):
    """--beam none: a beam-free cube in Jy/pixel (the reference grid's other beam settings do
    not get in the way)."""
    out = tmp_path / "nobeam.fits"
    assert main(["render", "-o", str(out), "--shape", "40", "64", "64", "--beam", "none",
                 "--r-eff", "3 arcsec"]) == 0
    cube = SpectralCube.read(out)
    assert cube.unit == u.Jy / u.pix
    assert float(np.sum(cube.unitless_filled_data[:])) * 20 == pytest.approx(30, rel=2e-3)


def test_render_defaults(tmp_path, capsys):
    out = tmp_path / "galaxy.fits"
    assert main(["render", "-o", str(out), "--shape", "20", "48", "48"]) == 0
    cube = SpectralCube.read(out)
    assert cube.shape == (20, 48, 48)
    assert "integrated flux" in capsys.readouterr().out


def test_render_from_toml_with_two_galaxies(tmp_path):
    cfg = tmp_path / "scene.toml"
    cfg.write_text("""
[grid]
shape = [16, 40, 40]
pixel_scale = "1 arcsec"
channel_width = "40 km/s"
beam = "3 arcsec"

[[galaxy]]
r_eff = "1 kpc"
distance = "50 Mpc"
rotation = "analytic"
v_0 = "180 km/s"
flux = "5 Jy km/s"
offset = ["-6 arcsec", "4 arcsec"]

[[galaxy]]
r_eff = "3 arcsec"
rotation = "tabulated"
radius = ["1 arcsec", "3 arcsec", "10 arcsec"]
velocity = ["100 km/s", "150 km/s", "160 km/s"]
flux = "7 Jy km/s"
inclination = "30 deg"
""")
    out = tmp_path / "scene.fits"
    assert main(["render", "--config", str(cfg), "-o", str(out)]) == 0
    cube = SpectralCube.read(out)
    pixel_area = (cube.header["CDELT2"] * u.deg) ** 2
    total = float(np.sum(cube.unitless_filled_data[:])) * 40 * float(
        (pixel_area / cube.beam.sr).decompose())
    assert total == pytest.approx(12, rel=2e-3)


@pytest.mark.parametrize("args, message", [
    (["--inclination", "120 deg"], "inclination"),
    (["--r-eff", "5 kpc"], "distance"),
    (["--flux", "30"], "flux"),
    (["--rotation", "analytic", "--n", "-1"], "n must be positive"),
    (["--pixel-sampling", "centre"], "pixel_sampling"),
])
def test_bad_flags_give_a_clear_error(tmp_path, capsys, args, message):
    assert main(["render", "-o", str(tmp_path / "x.fits"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.fits").exists()


@pytest.mark.parametrize("law, old, new", [("flat", "--v-max", "--v-flat"),
                                           ("analytic", "--v-max", "--v-0")])
def test_old_spellings_still_work_with_a_one_line_warning(tmp_path, capsys, law, old, new):
    """v_max was the flat and analytic laws' speed on the command line; it is v_flat / v_0
    now (as in truth tables); the old flag renders the same cube and says so in one line."""
    args = ["--shape", "8", "24", "24", "--rotation", law]
    assert main(["render", "-o", str(tmp_path / "old.fits"), *args, old, "150 km/s"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning" in err and new.lstrip("-").replace("-", "_") in err
    assert main(["render", "-o", str(tmp_path / "new.fits"), *args, new, "150 km/s"]) == 0
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(SpectralCube.read(tmp_path / "old.fits").filled_data[:],
                                  SpectralCube.read(tmp_path / "new.fits").filled_data[:])


@pytest.mark.parametrize("args, message", [
    (["--rotation", "flat", "--r-turn", "2 arcsec"], "belong to another rotation law"),
    (["--r-eff", "8"], "r_eff needs a unit"),
    (["--n", "abc"], "n must be a number"),
    (["--flux", "30 Jy"], "flux must be a line flux"),
])
def test_flag_errors_name_the_flag(tmp_path, capsys, args, message):
    assert main(["render", "-o", str(tmp_path / "x.fits"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x.fits").exists()


def test_render_pixel_sampling(tmp_path):
    """--pixel-sampling average (IFU spaxels) lowers the peak of the default galaxy under a
    3-pixel beam against the default point sampling (radio), and keeps its flux."""
    cubes = {}
    for sampling in ("point", "average"):
        out = tmp_path / f"{sampling}.fits"
        assert main(["render", "-o", str(out), "--shape", "20", "48", "48", "--beam",
                     "3 arcsec", "--pixel-sampling", sampling]) == 0
        cubes[sampling] = SpectralCube.read(out).unitless_filled_data[:]
    point, average = cubes["point"], cubes["average"]
    assert 0.001 < 1 - average.max() / point.max() < 0.05
    assert average.sum() == pytest.approx(point.sum(), rel=1e-4)


def test_render_on_finer_pixels(tmp_path, capsys):
    """--min-beam-sigma 2.5 --oversample 1 renders the default galaxy (r_eff 8.4 pixels),
    inclined under a 3-pixel beam, on pixels twice finer: the same flux, a cube that differs
    by more than the rounding; --finer-radius 10 renders it so as a small galaxy (the same
    cube); bad values are refused by name, with no traceback."""
    cubes = []
    for extra in ([], ["--min-beam-sigma", "2.5", "--oversample", "1"],
                  ["--finer-radius", "10"]):
        out = tmp_path / f"c{len(cubes)}.fits"
        assert main(["render", "-o", str(out), "--shape", "20", "48", "48", "--beam",
                     "3 arcsec", "--inclination", "70 deg"] + extra) == 0
        cubes.append(SpectralCube.read(out).unitless_filled_data[:])
    default, finer, small = cubes
    assert finer.sum() == pytest.approx(default.sum(), rel=1e-3)
    assert np.abs(finer - default).sum() / np.abs(finer).sum() > 1e-3
    np.testing.assert_allclose(small, finer, rtol=0, atol=1e-6 * np.abs(finer).max())
    for flag, name in (("--min-beam-sigma", "min_beam_sigma"), ("--finer-radius", "finer_radius")):
        capsys.readouterr()
        assert main(["render", "-o", str(tmp_path / "bad.fits"), flag, "-1"]) != 0
        err = capsys.readouterr().err
        assert name in err and "Traceback" not in err


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "x.fits"
    out.write_text("keep me")
    assert main(["render", "-o", str(out), "--shape", "4", "8", "8"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_text() == "keep me"


def test_help_is_complete(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["render", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config", "--beam", "--inclination", "--position-angle", "--rotation",
                 "--distance", "--offset", "east of north", "--v-flat", "--v-0"):
        assert flag in out


# ----------------------------------------------------------------------------- inject
def test_cli_inject_from_priors_and_from_the_truth_it_wrote(tmp_path):
    from astropy.io import fits
    from astropy.table import QTable
    from test_header import casa_header, write
    header = casa_header(n_chan=40, n_pix=64)
    data = np.random.default_rng(0).normal(0, 1e-3, (1, 40, 64, 64)).astype(np.float32)
    data[..., :6] = np.nan
    cube = write(header, tmp_path / "obs.fits", data)
    before = cube.read_bytes()
    priors = tmp_path / "priors.toml"
    priors.write_text('[galaxy]\nr_eff = {distribution = "uniform", low = "1.5 arcsec", '
                      'high = "2.5 arcsec"}\nv_max = "120 km/s"\n[placement]\nn = 3\nseed = 4\n'
                      'edge = "8 arcsec"\n')
    out = tmp_path / "injected.fits"
    assert main(["inject", str(cube), "--priors", str(priors), "-o", str(out),
                 "--avoid-threshold", "5 sigma"]) == 0
    assert cube.read_bytes() == before
    truth = QTable.read(tmp_path / "injected_truth.ecsv")
    assert len(truth) == 3
    assert np.all(truth["x_pix"] >= 6 + 8 - 0.5)             # clear of the blank strip
    injected = fits.getdata(out)
    assert np.all(np.isnan(injected[..., :6]))
    assert "galcubecraft" in str(fits.getheader(out)["HISTORY"])
    # the same galaxies again, from the truth table: the same cube
    again = tmp_path / "again.fits"
    assert main(["inject", str(cube), "--catalogue", str(tmp_path / "injected_truth.ecsv"),
                 "-o", str(again), "--truth", str(tmp_path / "t2.ecsv")]) == 0
    np.testing.assert_allclose(fits.getdata(again), injected, rtol=0, atol=1e-7, equal_nan=True)
    # never over the input, never over an existing output without --overwrite
    assert main(["inject", str(cube), "--random", "1", "-o", str(cube), "--overwrite"]) == 2
    assert cube.read_bytes() == before
    assert main(["inject", str(cube), "--random", "1", "-o", str(out)]) == 2


def test_cli_inject_reports_what_the_header_lacks(tmp_path, capsys):
    from test_header import muse_header, write
    cube = write(muse_header(), tmp_path / "muse.fits")
    assert main(["inject", str(cube), "--random", "1", "-o", str(tmp_path / "o.fits")]) == 2
    assert "rest_frequency" in capsys.readouterr().err
    assert main(["inject", str(cube), "--random", "1", "-o", str(tmp_path / "o.fits"),
                 "--rest-frequency", "Halpha"]) == 2
    assert "no beam" in capsys.readouterr().err
    assert main(["inject", str(cube), "--random", "1", "-o", str(tmp_path / "o.fits"),
                 "--rest-frequency", "Halpha", "--beam", "0.7 arcsec"]) == 2
    assert "far enough from its edges" in capsys.readouterr().err   # 2-6" disks, 8" field
    priors = tmp_path / "small.toml"
    priors.write_text('[galaxy]\nr_eff = "0.8 arcsec"\nv_max = "150 km/s"\n'
                      '[placement]\nn = 1\n')
    assert main(["inject", str(cube), "--priors", str(priors), "-o", str(tmp_path / "o.fits"),
                 "--rest-frequency", "Halpha", "--beam", "0.7 arcsec", "--seed", "1"]) == 0


def test_the_example_scene_renders(tmp_path, capsys):
    """examples/scene.toml (the docs' example) renders both its galaxies; the flux is theirs."""
    from pathlib import Path
    example = Path(__file__).resolve().parents[1] / "examples" / "scene.toml"
    out = tmp_path / "scene.fits"
    assert main(["render", "--config", str(example), "-o", str(out)]) == 0
    assert "2 galaxy(ies)" in capsys.readouterr().out
    cube = SpectralCube.read(out)
    assert cube.shape == (48, 128, 128)
    pixel_area = (cube.header["CDELT2"] * u.deg) ** 2
    total = float(np.nansum(cube.unitless_filled_data[:])) * 15 * float(
        (pixel_area / cube.beam.sr).decompose())
    assert total == pytest.approx(30, rel=5e-3)


def test_the_example_priors_make_a_dataset_and_every_toml_block_of_the_docs_parses(tmp_path):
    """examples/priors.toml (shown in the docs) makes a dataset; every ``code-block:: toml``
    of the docs is valid TOML (a multi-line inline table once was not)."""
    import re
    from pathlib import Path

    from galcubecraft.dataset import CubeDataset, DatasetSpec, generate_dataset
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    root = Path(__file__).resolve().parents[1]
    spec = DatasetSpec.from_toml(root / "examples" / "priors.toml")
    generate_dataset(spec, 2, tmp_path / "d", progress=False)
    assert len(CubeDataset(tmp_path / "d")) == 2
    shown = []                   # every TOML the docs show: inline blocks and included files
    for page in sorted((root / "docs").glob("*.rst")):
        text = page.read_text()
        shown += ["\n".join(line[4:] for line in block.splitlines()) for block in
                  re.findall(r"\.\. code-block:: toml\n\n((?:    .*\n|\n)+)", text)]
        shown += [(page.parent / name).read_text()
                  for name in re.findall(r"\.\. literalinclude:: (\S+\.toml)", text)]
    assert shown
    for text in shown:
        tomllib.loads(text)
    import galcubecraft.priors
    doc = galcubecraft.priors.__doc__
    tomllib.loads("\n".join(line[4:] for line in doc[doc.index("    [galaxy]"):].splitlines()))


def test_inject_random_galaxies_into_a_small_field_with_edge(tmp_path, capsys):
    """A small field (a 24 arcsec ALMA cube) cannot keep the default distance from its edges
    (twice the priors' largest r_eff); --edge and --min-separation set it."""
    from test_header import casa_header, write
    header = casa_header(n_chan=40, n_pix=24)
    cube = write(header, tmp_path / "small.fits")
    out = tmp_path / "o.fits"
    assert main(["inject", str(cube), "--random", "1", "-o", str(out)]) == 2
    assert "far enough from its edges" in capsys.readouterr().err
    assert main(["inject", str(cube), "--random", "2", "-o", str(out), "--edge", "3 arcsec",
                 "--min-separation", "4 arcsec", "--seed", "3"]) == 0
    from astropy.table import QTable
    truth = QTable.read(tmp_path / "o_truth.ecsv")
    assert len(truth) == 2
    assert main(["inject", str(cube), "--random", "1", "-o", str(tmp_path / "p.fits"),
                 "--edge", "3"]) == 2
    assert "--edge needs a unit" in capsys.readouterr().err
