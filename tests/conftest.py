"""Shared fixtures: small grids, beams, galaxies, device."""
import os

import astropy.units as u
import pytest
import torch
from astropy.coordinates import SkyCoord
from radio_beam import Beam

import galcubecraft as gcc

KMS = u.km / u.s
JYKMS = u.Jy * u.km / u.s

# under pytest-xdist (pyproject's ``-n``) each worker gets its share of the cores: torch's
# default of one thread per core in every worker would oversubscribe them
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1)
                              // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


@pytest.fixture
def beam():
    return Beam(2 * u.arcsec, 1 * u.arcsec, 30 * u.deg)


@pytest.fixture
def small_grid():
    """A 24 x 48 x 48 cube of 1" pixels and 20 km/s channels, 3" beam."""
    return gcc.CubeGrid(shape=(24, 48, 48), pixel_scale=1 * u.arcsec, channel_width=20 * KMS,
                        beam=Beam(3 * u.arcsec), center=SkyCoord(150 * u.deg, 2 * u.deg))


def make_galaxy(**overrides):
    """The DESIGN reference galaxy, scaled to fit the small grid, with overrides."""
    kw = dict(surface=gcc.SersicDisk(r_eff=4 * u.arcsec, n=1.0),
              vertical=gcc.ExponentialVertical(scale_height=0.3 * u.arcsec),
              kinematics=gcc.ArctanRotationCurve(v_max=200 * KMS, r_turn=2 * u.arcsec),
              dispersion=15 * KMS, inclination=60 * u.deg, position_angle=30 * u.deg,
              v_sys=0 * KMS, flux=30 * JYKMS)
    kw.update(overrides)
    return gcc.Galaxy(**kw)


@pytest.fixture
def galaxy():
    return make_galaxy()


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return request.param


def casatools_or_skip():
    """casatools, or skip: not installed, or installed without its data (casaconfig raises
    errors that are not ImportError at import)."""
    try:
        import casatools
    except Exception as exc:          # noqa: BLE001 - any failure means "not usable here"
        pytest.skip(f"casatools not usable here: {type(exc).__name__}: {exc}")
    return casatools
