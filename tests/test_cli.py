"""The command line: `galcubecraft render`."""
import subprocess
import sys

import astropy.units as u
import numpy as np
import pytest
from spectral_cube import SpectralCube

from galcubecraft.cli import main


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
v_max = "180 km/s"
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
])
def test_bad_flags_give_a_clear_error(tmp_path, capsys, args, message):
    assert main(["render", "-o", str(tmp_path / "x.fits"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.fits").exists()


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "x.fits"
    out.write_text("keep me")
    assert main(["render", "-o", str(out), "--shape", "4", "8", "8"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_text() == "keep me"


def test_help_is_complete():
    run = subprocess.run([sys.executable, "-m", "galcubecraft.cli", "render", "--help"],
                         capture_output=True, text=True)
    assert run.returncode == 0
    for flag in ("--config", "--beam", "--inclination", "--position-angle", "--rotation",
                 "--distance", "--offset", "east of north"):
        assert flag in run.stdout
