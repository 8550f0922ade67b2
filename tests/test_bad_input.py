"""Bad input, table-driven: every case raises a clear error of the right class whose message
names the parameter (or the command-line option), before any work and without writing a file;
no command-line case prints a traceback."""
import math

import astropy.units as u
import numpy as np
import pytest
import torch
from radio_beam import Beam

import galcubecraft as gcc
from conftest import JYKMS, KMS, make_galaxy
from galcubecraft.cli import main
from galcubecraft.components import RotationCurve
from galcubecraft.dataset import DatasetSpec
from galcubecraft.diffuse import Stream, bridge, halo, tail
from galcubecraft.priors import GalaxyPriors
from test_dataset import PRIORS

# ------------------------------------------------------------------- every declared parameter
#: A value of the wrong kind of unit for each kind of parameter.
WRONG_UNIT = {"size": 3 * KMS, "angle": 3 * KMS, "velocity": 3 * u.arcsec,
              "line_flux": 3 * u.Jy, "distance": 3 * KMS}
VALID = {
    gcc.Galaxy: lambda **kw: make_galaxy(**kw),
    gcc.SersicDisk: lambda **kw: gcc.SersicDisk(**{"r_eff": 2 * u.arcsec, **kw}),
    gcc.ExponentialVertical: lambda **kw: gcc.ExponentialVertical(**kw),
    Stream: lambda **kw: Stream(**{"start": (0, 0) * u.arcsec, "end": (5, 0) * u.arcsec,
                                   "width": 1 * u.arcsec, "flux": 1 * JYKMS,
                                   "v_start": 0 * KMS, "v_end": 10 * KMS, **kw}),
    gcc.ArctanRotationCurve: lambda **kw: gcc.ArctanRotationCurve(
        **{"v_max": 100 * KMS, "r_turn": 1 * u.arcsec, **kw}),
    gcc.FlatRotationCurve: lambda **kw: gcc.FlatRotationCurve(**{"v_flat": 100 * KMS, **kw}),
    gcc.AnalyticRotationCurve: lambda **kw: gcc.AnalyticRotationCurve(**kw),
    gcc.TabulatedRotationCurve: lambda **kw: gcc.TabulatedRotationCurve(
        **{"radius": [1, 2] * u.arcsec, "velocity": [50, 60] * KMS, **kw}),
}
assert set(RotationCurve.laws.values()) <= set(VALID)


def bad_values(p):
    """``(label, value, exception, message)`` that the declaration ``p`` must refuse."""
    shape = p.shape if p.shape not in (None, "1d") else ((2,) if p.shape == "1d" else ())
    ones = np.ones(shape) if shape else 1.0
    if p.kind == "dimensionless":
        yield "text", "two", TypeError, "must be a real number"
        yield "nan", math.nan, ValueError, "must be finite"
        yield "quantity", 2 * u.km, u.UnitsError, "must be dimensionless"
        if p.positive:
            yield "zero", 0.0, ValueError, "must be positive"
        if p.maximum is not None:
            yield "above", p.maximum + 1, ValueError, f"must be <= {p.maximum}"
        if p.minimum is not None:
            yield "below", p.minimum - 1, ValueError, f"must be >= {p.minimum}"
        return
    unit = p.table_unit
    yield "bare number", ones, u.UnitTypeError, "Quantity"
    yield "wrong unit", ones * WRONG_UNIT[p.kind], u.UnitsError, "must be"
    yield "nan", ones * math.nan * unit, ValueError, "must be finite"
    yield "infinite", ones * math.inf * unit, ValueError, "must be finite"
    if p.positive:
        yield "zero", ones * 0 * unit, ValueError, "must be positive"
    if p.nonnegative:
        yield "negative", -ones * unit, ValueError, "must not be negative"
    if p.maximum is not None:
        yield "above", ones * (p.maximum + 1) * unit, ValueError, "must be <="
    if p.kind == "velocity":
        yield "faster than light", ones * 3e5 * KMS, ValueError, "speed of light"
    if p.shape == (2,):
        yield "wrong shape", [1, 2, 3] * unit, ValueError, "must have shape"


DECLARED = [(cls, name, label, value, exc, match)
            for cls in VALID for name, p in cls.declarations.items()
            if not (cls is gcc.Galaxy and name == "redshift")
            for label, value, exc, match in bad_values(p)]


@pytest.mark.parametrize("cls, name, label, value, exc, match", DECLARED,
                         ids=[f"{c.__name__}.{n}-{lab}" for c, n, lab, *_ in DECLARED])
def test_every_declared_parameter_refuses_bad_values(cls, name, label, value, exc, match):
    with pytest.raises(exc, match=match) as info:
        VALID[cls](**{name: value})
    assert name in str(info.value)


# --------------------------------------------------------------------------- the rest of the API
def grid(**kw):
    args = dict(shape=(8, 16, 16), pixel_scale=1 * u.arcsec, channel_width=20 * KMS,
                beam=3 * u.arcsec)
    args.update(kw)
    return gcc.CubeGrid(**args)


def tensors(**changes):
    (law, params), = gcc.stack_parameters([make_galaxy()])
    params = dict(params)
    params.update({k: torch.tensor([v], dtype=torch.float32) for k, v in changes.items()})
    return params, law


API = [
    # grids
    ("shape not three", lambda: grid(shape=(8, 16)), ValueError, "shape"),
    ("shape zero", lambda: grid(shape=(0, 16, 16)), ValueError, "shape"),
    ("shape float", lambda: grid(shape=(8.5, 16, 16)), ValueError, "shape"),
    ("shape text", lambda: grid(shape="big"), ValueError, "shape"),
    ("shape too many voxels", lambda: grid(shape=(257, 4096, 4096)), ValueError, "voxels"),
    ("pixel_scale speed", lambda: grid(pixel_scale=1 * KMS), u.UnitsError, "pixel_scale"),
    ("pixel_scale bare", lambda: grid(pixel_scale=1.0), u.UnitTypeError, "pixel_scale"),
    ("pixel_scale negative", lambda: grid(pixel_scale=-1 * u.arcsec), ValueError,
     "pixel_scale"),
    ("channel_width zero", lambda: grid(channel_width=0 * KMS), ValueError, "channel_width"),
    ("channel_width angle", lambda: grid(channel_width=1 * u.deg), u.UnitsError,
     "channel_width"),
    ("beam negative", lambda: grid(beam=-2 * u.arcsec), ValueError, "beam"),
    ("beam text", lambda: grid(beam="big"), TypeError, "beam"),
    ("beam nan", lambda: grid(beam=Beam(np.nan * u.arcsec)), ValueError, "beam"),
    ("center not a SkyCoord", lambda: grid(center=(1, 2)), TypeError, "center"),
    ("rest_frequency negative", lambda: grid(rest_frequency=-1 * u.GHz), ValueError,
     "rest_frequency"),
    ("rest_frequency unknown line", lambda: grid(rest_frequency="CO(99-98)"), ValueError,
     "CO\\(99-98\\)"),
    ("spectral_type", lambda: grid(spectral_type="WAVE"), ValueError, "spectral_type"),
    ("projection", lambda: grid(projection="SINE"), ValueError, "projection"),
    ("velocity_center and redshift", lambda: grid(velocity_center=0 * KMS, redshift=0.1),
     ValueError, "redshift"),
    ("band beyond c", lambda: grid(velocity_center=299700 * KMS, channel_width=30 * KMS),
     ValueError, "speed of light|beyond c"),
    ("spectral_response", lambda: grid(spectral_response="hanning"), TypeError,
     "spectral_response"),
    ("from_dict unknown key", lambda: gcc.CubeGrid.from_dict(
        {"shape": [4, 8, 8], "pixel_scale": "1 arcsec", "channel_width": "10 km/s",
         "colour": "red"}), ValueError, "colour"),
    ("from_dict missing", lambda: gcc.CubeGrid.from_dict({"shape": [4, 8, 8]}), ValueError,
     "pixel_scale"),
    ("from_dict bare number", lambda: gcc.CubeGrid.from_dict(
        {"shape": [4, 8, 8], "pixel_scale": 1, "channel_width": "10 km/s"}), ValueError,
     "pixel_scale"),
    ("from_header not a header", lambda: gcc.CubeGrid.from_header("x.fits"), TypeError,
     "Header"),
    ("replace unknown", lambda: grid().replace(colour=1), TypeError, "colour"),
    # galaxies
    ("surface not a profile", lambda: make_galaxy(surface=3), TypeError, "surface"),
    ("kinematics not a law", lambda: make_galaxy(kinematics="flat"), TypeError, "kinematics"),
    ("vertical not a profile", lambda: make_galaxy(vertical=0.3 * u.arcsec), TypeError,
     "vertical"),
    ("distance and redshift", lambda: make_galaxy(distance=10 * u.Mpc, redshift=0.1),
     ValueError, "redshift"),
    ("redshift negative", lambda: make_galaxy(redshift=-0.5), ValueError, "redshift"),
    ("cosmology", lambda: make_galaxy(redshift=0.1, cosmology="Planck18"), TypeError,
     "cosmology"),
    ("kpc without distance", lambda: make_galaxy(
        surface=gcc.SersicDisk(2 * u.kpc)).tensors(), ValueError, "r_eff"),
    ("tabulated not increasing", lambda: gcc.TabulatedRotationCurve(
        [2, 1] * u.arcsec, [1, 2] * KMS), ValueError, "radius"),
    ("tabulated lengths differ", lambda: gcc.TabulatedRotationCurve(
        [1, 2, 3] * u.arcsec, [1, 2] * KMS), ValueError, "radius and velocity"),
    ("exponential disk n", lambda: gcc.ExponentialDisk(r_eff=1 * u.arcsec, n=2), ValueError,
     "n = 1"),
    ("exponential disk nothing", lambda: gcc.ExponentialDisk(), TypeError, "scale_length"),
    ("scene empty", lambda: gcc.Scene([]), ValueError, "at least one"),
    ("scene of text", lambda: gcc.Scene(["galaxy"]), TypeError, "Scene holds"),
    ("render nothing", lambda: gcc.render([], grid()), ValueError, "no galaxies"),
    ("render text", lambda: gcc.render(["galaxy"], grid()), TypeError, "Galaxy"),
    ("halo host", lambda: halo("host", flux=1 * JYKMS), TypeError, "host"),
    ("halo lag", lambda: halo(make_galaxy(), flux=1 * JYKMS, lag=2), ValueError, "lag"),
    ("bridge satellite", lambda: bridge(make_galaxy(), 3, flux=1 * JYKMS), TypeError,
     "satellite"),
    ("tail on its host", lambda: tail(make_galaxy(), host=make_galaxy(), length=5 * u.arcsec,
                                      flux=1 * JYKMS), ValueError, "sits on its host"),
    ("from_dict law", lambda: gcc.Galaxy.from_dict({"rotation": "warp"}), ValueError,
     "rotation"),
    # the projector and its tensors
    ("projector device", lambda: gcc.Projector(grid(), device="tpu"), ValueError, "device"),
    ("projector no cuda", lambda: gcc.Projector(grid(), device="cuda:7"), ValueError,
     "cuda"),
    ("projector dtype", lambda: gcc.Projector(grid(), dtype=torch.float16), ValueError,
     "dtype"),
    ("projector int dtype", lambda: gcc.Projector(grid(), dtype=torch.int32), ValueError,
     "dtype"),
    ("projector oversample", lambda: gcc.Projector(grid(), oversample=0), ValueError,
     "oversample"),
    ("projector line_integration", lambda: gcc.Projector(grid(), line_integration="fast"),
     ValueError, "line_integration"),
    ("projector threads", lambda: gcc.Projector(grid(), threads=0), ValueError, "threads"),
    ("projector max_memory", lambda: gcc.Projector(grid(), max_memory="lots"), ValueError,
     "lots"),
    ("tensor n zero", lambda: gcc.Projector(grid())(*tensors(n=0.0)), ValueError, "n must"),
    ("tensor n nan", lambda: gcc.Projector(grid())(*tensors(n=math.nan)), ValueError,
     "n must"),
    ("tensor r_eff negative", lambda: gcc.Projector(grid())(*tensors(r_eff=-1.0)),
     ValueError, "r_eff must"),
    ("tensor flux inf", lambda: gcc.Projector(grid())(*tensors(flux=math.inf)), ValueError,
     "flux must"),
    ("tensor inclination", lambda: gcc.Projector(grid())(*tensors(inclination=2.0)),
     ValueError, "inclination must"),
    ("tensor v_sys beyond c", lambda: gcc.Projector(grid())(*tensors(v_sys=4e5)), ValueError,
     "v_sys must"),
    ("tensor missing", lambda: gcc.Projector(grid())(
        {k: v for k, v in tensors()[0].items() if k != "flux"}, tensors()[1]), ValueError,
     "flux"),
    # noise and observation
    ("noise two levels", lambda: gcc.NoiseModel(rms=1 * u.Jy / u.beam, peak_snr=3),
     ValueError, "exactly one"),
    ("noise none", lambda: gcc.NoiseModel(), ValueError, "exactly one"),
    ("noise rms bare", lambda: gcc.NoiseModel(rms=0.1), u.UnitTypeError, "rms"),
    ("noise peak_snr negative", lambda: gcc.NoiseModel(peak_snr=-2), ValueError, "peak_snr"),
    ("noise correlation", lambda: gcc.NoiseModel(peak_snr=2, correlation="pink"), ValueError,
     "correlation"),
    ("noise beam without beam", lambda: gcc.observe(make_galaxy(), grid(beam=None),
                                                    gcc.NoiseModel(peak_snr=3)),
     ValueError, "beam"),
    ("apply_noise 1-d", lambda: gcc.apply_noise(np.ones(5), 3), ValueError, "2 dimensions"),
    ("apply_noise seed", lambda: gcc.apply_noise(np.ones((2, 2)), 3, seed=-1), ValueError,
     "seed"),
    # priors and datasets
    ("priors unknown", lambda: GalaxyPriors(colour="red"), ValueError, "colour"),
    ("priors n 50", lambda: GalaxyPriors(n=50), ValueError, "n must be <= 20"),
    ("priors inclination unit", lambda: GalaxyPriors(inclination="30 km/s"), u.UnitsError,
     "inclination"),
    ("priors flux range", lambda: GalaxyPriors(flux={"distribution": "uniform",
                                                     "low": "-1 Jy km/s",
                                                     "high": "1 Jy km/s"}),
     ValueError, "flux must be >= 0"),
    ("priors v_max faster than light", lambda: GalaxyPriors(v_max="4e5 km/s"), ValueError,
     "v_max"),
    ("dataset table", lambda: DatasetSpec({**PRIORS, "galaxies": {}}), ValueError,
     "galaxies"),
    ("dataset grid key", lambda: DatasetSpec({**PRIORS, "grid": {"colour": 1}}), ValueError,
     "colour"),
    ("dataset seed", lambda: DatasetSpec({**PRIORS, "dataset": {"seed": -1}}), ValueError,
     "seed"),
    ("dataset shard_size", lambda: DatasetSpec({**PRIORS, "dataset": {"shard_size": 0}}),
     ValueError, "shard_size"),
    ("dataset noise two levels", lambda: DatasetSpec({**PRIORS, "noise": {
        "rms": "1 mJy/beam", "peak_snr": 3}}), ValueError, "one of rms"),
    ("dataset noise unit", lambda: DatasetSpec({**PRIORS, "noise": {"rms": "1 km/s"}}),
     u.UnitsError, "rms"),
    ("dataset placement impossible", lambda: DatasetSpec({**PRIORS, "scene": {
        "n_galaxies": 4, "min_separation": "30 arcsec"}}), ValueError, "min_separation"),
    ("dataset edge", lambda: DatasetSpec({**PRIORS, "scene": {"edge": "30 arcsec"}}),
     ValueError, "edge"),
    ("dataset n_galaxies", lambda: DatasetSpec({**PRIORS, "scene": {"n_galaxies": 0}}),
     ValueError, "n_galaxies"),
    ("dataset band", lambda: DatasetSpec({**PRIORS, "galaxy": {"v_max": "900 km/s"}}),
     ValueError, "too narrow"),
    ("dataset preset", lambda: DatasetSpec({"preset": {"name": "other"}}), ValueError,
     "preset"),
    ("subgrid selects nothing", lambda: grid().subgrid(slice(0, 0)), ValueError, "channels"),
]


@pytest.mark.parametrize("case, call, exc, match", API, ids=[c[0] for c in API])
def test_api_errors_are_clear(case, call, exc, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(exc, match=match):
        call()
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- the command line
CLI = [
    (["render", "--inclination", "120 deg"], "inclination"),
    (["render", "--inclination", "60"], "inclination needs a unit"),
    (["render", "--r-eff", "5 kpc"], "distance"),
    (["render", "--r-eff", "-5 arcsec"], "r_eff"),
    (["render", "--flux", "30"], "flux"),
    (["render", "--flux", "30 Jy"], "flux must be a line flux"),
    (["render", "--n", "-1"], "n must be positive"),
    (["render", "--n", "thirty"], "n must be a number"),
    (["render", "--n", "25"], "n must be <= 20"),
    (["render", "--dispersion", "-3 km/s"], "dispersion"),
    (["render", "--v-sys", "4e5 km/s"], "v_sys must be below the speed of light"),
    (["render", "--v-max", "3 arcsec"], "v_max"),
    (["render", "--rotation", "flat", "--r-turn", "2 arcsec"], "another rotation law"),
    (["render", "--rotation", "tabulated"], "radius"),
    (["render", "--offset", "1", "2"], "offset"),
    (["render", "--distance", "-3 Mpc"], "distance"),
    (["render", "--redshift", "soon"], "redshift"),
    (["render", "--distance", "3 Mpc", "--redshift", "0.1"], "redshift"),
    (["render", "--pixel-scale", "1 km/s"], "pixel_scale"),
    (["render", "--channel-width", "0 km/s"], "channel_width"),
    (["render", "--beam", "-3 arcsec"], "beam"),
    (["render", "--beam-minor", "5 arcsec", "--beam", "none"], "beam_minor"),
    (["render", "--rest-frequency", "CO(99-98)"], "CO(99-98)"),
    (["render", "--spectral-type", "WAVE"], "spectral_type"),
    (["render", "--spectral-response", "boxcar"], "spectral_response"),
    (["render", "--velocity-center", "3e5 km/s"], "beyond c"),
    (["render", "--device", "tpu"], "device"),
    (["render", "--device", "cuda:3"], "cuda"),
    (["render", "--config", "{tmp}/missing.toml"], "missing.toml"),
    (["render", "--config", "{tmp}/bad.toml"], "bad.toml"),
    (["render", "--config", "{tmp}/unknown.toml"], "colour"),
    (["render", "--shape", "256", "4096", "4096"], "needs about"),
    (["render", "--oversample", "0"], "oversample"),
    (["render", "-o", "{tmp}/cube.txt"], "--output must be a FITS file name"),
    (["plot", "{tmp}/missing.fits", "-o", "{tmp}/x.png"], "missing.fits"),
    (["plot", "{tmp}/bad.toml", "-o", "{tmp}/x.png"], "cannot read"),
    (["plot", "{tmp}/bad.toml", "-o", "{tmp}/x.txt"], "cannot write a .txt"),
    (["plot", "{tmp}/bad.toml", "-o", "{tmp}/x.png", "--kind", "pv", "--pa", "30"], "cannot"),
    (["inject", "{tmp}/missing.fits", "--random", "1", "-o", "{tmp}/o.fits"], "missing.fits"),
    (["inject", "{tmp}/bad.toml", "--random", "1", "-o", "{tmp}/o.fits"], "bad.toml"),
    (["dataset", "{tmp}/missing.toml", "--n", "4", "--out", "{tmp}/d"], "missing.toml"),
    (["dataset", "{tmp}/bad.toml", "--n", "4", "--out", "{tmp}/d"], "not valid TOML"),
    (["dataset", "{tmp}/unknown.toml", "--n", "4", "--out", "{tmp}/d"], "unknown table"),
    (["dataset", "{tmp}/priors.toml", "--n", "0", "--out", "{tmp}/d"], "n must be >= 1"),
    (["dataset", "{tmp}/priors.toml", "--n", "4", "--out", "{tmp}/d", "--seed", "-2"],
     "seed"),
    (["inject", "{tmp}/bad.toml", "--catalogue", "{tmp}/bad.toml", "-o", "{tmp}/o.fits"],
     "bad.toml"),
    (["render", "--config", "{tmp}/cube.fits"], "cube.fits: not valid TOML"),
    (["dataset", "{tmp}/cube.fits", "--n", "2", "--out", "{tmp}/d"], "cube.fits: not valid TOML"),
    (["export", "{tmp}/nothing", "--indices", "0:2", "-o", "{tmp}/e"], "nothing"),
    (["export", "{tmp}/bad.toml", "--indices", "0:2", "-o", "{tmp}/e"], "not a dataset folder"),
    (["export", "{tmp}", "--indices", "a:b", "-o", "{tmp}/e"], "--indices must be"),
    (["dataset", "{tmp}/priors.toml", "--n", "2", "--out", "{tmp}/bad.toml"], "is a file"),
]


@pytest.fixture
def cli_folder(tmp_path):
    (tmp_path / "bad.toml").write_text("[grid\nshape = 3\n")
    (tmp_path / "unknown.toml").write_text("[colour]\nred = 1\n")
    (tmp_path / "cube.fits").write_bytes(bytes(range(256)) * 8)    # binary, not TOML
    (tmp_path / "priors.toml").write_text('[dataset]\nseed = 1\n[grid]\nshape = [8, 48, 48]\n'
                                          'channel_width = "100 km/s"\n')
    return tmp_path


@pytest.mark.parametrize("args, message", CLI, ids=[" ".join(a[:3]) for a, _ in CLI])
def test_cli_errors_are_one_line_naming_the_option(args, message, cli_folder, capsys):
    args = [a.format(tmp=cli_folder) for a in args]
    out = cli_folder / "out.fits"
    before = sorted(p.name for p in cli_folder.iterdir())
    extra = ["-o", str(out)] if args[0] == "render" and "-o" not in args else []
    status = main(args + extra)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith(f"galcubecraft {args[0]}: error: "), err
    assert "Traceback" not in err
    assert message in err, err
    assert sorted(p.name for p in cli_folder.iterdir()) == before
