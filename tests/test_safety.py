"""Nothing lost: every output path of every command is checked against every input and against
the other outputs (any spelling, symbolic link, hard link) before any work or write."""
import os

import numpy as np
import pytest

from galcubecraft.cli import main
from test_header import casa_header, write


@pytest.fixture
def folder(tmp_path):
    """An observation, a link to it, a hard link to it, a priors file and a scene file."""
    header = casa_header(n_chan=16, n_pix=32)
    data = np.random.default_rng(0).normal(0, 1e-3, (1, 16, 32, 32)).astype(np.float32)
    cube = write(header, tmp_path / "obs.fits", data)
    os.symlink(cube, tmp_path / "link.fits")
    os.link(cube, tmp_path / "hard.fits")
    (tmp_path / "sub").mkdir()
    (tmp_path / "priors.toml").write_text('[galaxy]\nr_eff = "1.5 arcsec"\nv_max = "80 km/s"\n'
                                          '[placement]\nn = 1\nseed = 1\nedge = "6 arcsec"\n')
    (tmp_path / "scene.toml").write_text('[grid]\nshape = [8, 24, 24]\n')
    return tmp_path


def spellings(folder, name="obs.fits"):
    """Ways of naming the input: as is, through 'sub/..', relative, a link, a hard link."""
    return {"same": folder / name, "other spelling": folder / "sub" / ".." / name,
            "relative": os.path.relpath(folder / name), "symlink": folder / "link.fits",
            "hard link": folder / "hard.fits"}


def snapshot(folder):
    return {p.relative_to(folder): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def run(capsys, *args):
    status = main([str(a) for a in args])
    err = capsys.readouterr().err
    return status, err


INJECT = ["inject", "{cube}", "--priors", "{priors}"]


@pytest.mark.parametrize("spelling", ["same", "other spelling", "relative", "symlink",
                                      "hard link"])
@pytest.mark.parametrize("role", ["--output", "--truth"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_inject_never_writes_over_its_input(folder, capsys, spelling, role, overwrite):
    before = snapshot(folder)
    target = spellings(folder)[spelling]
    args = ["inject", folder / "obs.fits", "--priors", folder / "priors.toml"]
    if role == "--output":
        args += ["-o", target]
    else:
        args += ["-o", folder / "out.fits", "--truth", target]
    status, err = run(capsys, *args, *(["--overwrite"] if overwrite else []))
    assert status == 2
    assert role in err and "input" in err and err.count("\n") == 1
    assert snapshot(folder) == before


@pytest.mark.parametrize("truth", ["same", "symlink", "other spelling"])
def test_inject_output_and_truth_must_differ(folder, capsys, truth):
    out = folder / "out.fits"
    out.write_bytes(b"earlier result")
    os.symlink(out, folder / "out_link.fits")
    target = {"same": out, "symlink": folder / "out_link.fits",
              "other spelling": folder / "sub" / ".." / "out.fits"}[truth]
    before = snapshot(folder)
    status, err = run(capsys, "inject", folder / "obs.fits", "--priors", folder / "priors.toml",
                      "-o", out, "--truth", target, "--overwrite")
    assert status == 2 and "the same file" in err
    assert snapshot(folder) == before


def test_an_existing_truth_table_is_refused_before_the_cube_is_written(folder, capsys):
    (folder / "out_truth.ecsv").write_text("earlier truth")
    before = snapshot(folder)
    status, err = run(capsys, "inject", folder / "obs.fits", "--priors", folder / "priors.toml",
                      "-o", folder / "out.fits")
    assert status == 2 and "--truth" in err and "--overwrite" in err
    assert snapshot(folder) == before                    # out.fits was not written either


def test_inject_writes_both_when_all_is_well(folder, capsys):
    status, _ = run(capsys, "inject", folder / "obs.fits", "--priors", folder / "priors.toml",
                    "-o", folder / "out.fits")
    assert status == 0
    assert (folder / "out.fits").exists() and (folder / "out_truth.ecsv").exists()


@pytest.mark.parametrize("spelling", ["same", "other spelling", "symlink"])
def test_render_never_writes_over_its_config(folder, capsys, spelling):
    os.symlink(folder / "scene.toml", folder / "scene_link.toml")
    target = {"same": folder / "scene.toml", "other spelling": folder / "sub/../scene.toml",
              "symlink": folder / "scene_link.toml"}[spelling]
    before = snapshot(folder)
    status, err = run(capsys, "render", "--config", folder / "scene.toml", "-o", target,
                      "--overwrite")
    assert status == 2 and "--config" in err
    assert snapshot(folder) == before


@pytest.mark.parametrize("spelling", ["same", "symlink", "hard link"])
def test_plot_never_writes_over_its_cube(folder, capsys, spelling):
    target = spellings(folder)[spelling]
    before = snapshot(folder)
    status, err = run(capsys, "plot", folder / "obs.fits", "-o",
                      str(target).replace(".fits", ".png") if spelling == "none" else target,
                      "--overwrite")
    assert status == 2
    assert snapshot(folder) == before


@pytest.mark.parametrize("output, message", [("x.txt", "cannot write a .txt image"),
                                             ("x.fits", "cannot write a .fits image")])
def test_plot_refuses_formats_it_cannot_write_before_reading_anything(folder, capsys, output,
                                                                      message):
    status, err = run(capsys, "plot", folder / "obs.fits", "-o", folder / output)
    assert status == 2 and message in err and err.count("\n") == 1
    assert not (folder / output).exists()


def test_plot_of_a_file_that_is_not_a_cube_is_one_line(folder, capsys):
    status, err = run(capsys, "plot", folder / "priors.toml", "-o", folder / "x.png")
    assert status == 2 and "cannot read" in err and err.count("\n") == 1
