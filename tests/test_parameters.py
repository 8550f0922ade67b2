"""Parameters declared once: validation, values, flat dictionaries and truth tables derive from
the declarations, for every rotation law."""
import warnings

import astropy.units as u
import numpy as np
import pytest
import torch

import galcubecraft as gcc
from conftest import JYKMS, KMS, make_galaxy
from galcubecraft.catalogue import galaxies_from_table, truth_table
from galcubecraft.diffuse import Stream
from galcubecraft.parameters import Parameter
from galcubecraft.units import C_KMS

LAWS = {
    "arctan": gcc.ArctanRotationCurve(v_max=180 * KMS, r_turn=1.5 * u.arcsec),
    "flat": gcc.FlatRotationCurve(v_flat=120 * KMS),
    "analytic": gcc.AnalyticRotationCurve(v_0=150 * KMS),
    "analytic_r0": gcc.AnalyticRotationCurve(v_0=150 * KMS, r_0=3 * u.arcsec),
    "tabulated": gcc.TabulatedRotationCurve([1, 3, 9] * u.arcsec, [80, 140, 150] * KMS),
}


@pytest.mark.parametrize("law", LAWS)
def test_flat_dictionaries_round_trip_for_every_law(law):
    galaxy = make_galaxy(kinematics=LAWS[law], surface=gcc.SersicDisk(r_eff=3 * u.kpc, n=2.5),
                         offset=(1.5, -2) * u.arcsec, distance=40 * u.Mpc, v_sys=35 * KMS)
    flat = galaxy.to_dict()
    assert flat["rotation"] == law.split("_")[0]
    again = gcc.Galaxy.from_dict(flat)
    assert again == galaxy
    text = {k: ([str(x) for x in v] if isinstance(v, u.Quantity) and v.ndim else
                str(v) if isinstance(v, u.Quantity) else v) for k, v in flat.items()}
    from_text = gcc.Galaxy.from_dict(text)          # as a TOML file would give them
    for name, value in again.tensors(dtype=torch.float64).items():
        torch.testing.assert_close(from_text.tensors(dtype=torch.float64)[name], value)


@pytest.mark.parametrize("law", ["arctan", "flat", "analytic", "analytic_r0"])
def test_truth_tables_re_create_the_galaxies_of_every_law(small_grid, law):
    galaxies = [make_galaxy(kinematics=LAWS[law], offset=(3, -4) * u.arcsec, v_sys=40 * KMS),
                make_galaxy(kinematics=LAWS["arctan"], inclination=35 * u.deg)]
    table = truth_table(small_grid, galaxies)
    assert list(table["rotation"]) == [law.split("_")[0], "arctan"]
    back = galaxies_from_table(table, small_grid)
    for a, b in zip(galaxies, back):
        for name, value in a.tensors(dtype=torch.float64).items():
            torch.testing.assert_close(b.tensors(dtype=torch.float64)[name], value,
                                       rtol=1e-9, atol=1e-9)


def test_values_cannot_be_changed_only_replaced():
    galaxy = make_galaxy()
    with pytest.raises(AttributeError, match=r"replace\(flux="):
        galaxy.flux = 3 * JYKMS
    with pytest.raises(AttributeError, match="replace"):
        galaxy.surface.n = 2.0
    brighter = galaxy.replace(flux=60 * JYKMS)
    assert brighter.flux == 60 * JYKMS and galaxy.flux == 30 * JYKMS
    assert brighter != galaxy and galaxy.replace() == galaxy
    with pytest.raises(ValueError, match="inclination must be <= 90"):
        galaxy.replace(inclination=100 * u.deg)
    with pytest.raises(TypeError, match="no parameter"):
        galaxy.replace(colour="red")
    assert galaxy.kinematics.replace(v_max=50 * KMS).v_max == 50 * KMS
    disk = gcc.ExponentialDisk(scale_length=2 * u.arcsec)
    assert disk.replace() == disk and type(disk.replace()) is gcc.ExponentialDisk


def test_a_galaxy_without_its_own_v_sys_follows_its_redshift():
    galaxy = make_galaxy(v_sys=None, redshift=0.1)
    assert galaxy.v_sys == gcc.radio_velocity(0.1)
    assert galaxy.with_distance(redshift=0.2).v_sys == gcc.radio_velocity(0.2)
    fixed = make_galaxy(v_sys=5 * KMS, redshift=0.1)
    assert fixed.with_distance(redshift=0.2).v_sys == 5 * KMS


def test_streams_are_values_too():
    s = Stream(start=(0, 0) * u.arcsec, end=(10, 0) * u.arcsec, width=2 * u.arcsec,
               flux=1 * JYKMS, v_start=0 * KMS, v_end=50 * KMS)
    assert s.replace(taper=0.5).taper == 0.5 and s.taper == 0.0
    with pytest.raises(ValueError, match="taper must be <= 1"):
        s.replace(taper=2)
    assert s.with_distance(distance=10 * u.Mpc).distance == 10 * u.Mpc
    assert "Stream" in repr(s) and "width=2.0 arcsec" in repr(s)


@pytest.mark.parametrize("values, error, match", [
    ({"colour": "red"}, ValueError, "unknown galaxy setting"),
    ({"rotation": "spiral"}, ValueError, "rotation must be one of"),
    ({"rotation": "flat", "v_flat": "100 km/s", "r_turn": "1 arcsec"}, ValueError,
     "belong to another rotation law"),
    ({"rotation": "flat"}, ValueError, r"missing \['v_flat'\]"),
    ({"r_eff": "2"}, ValueError, "r_eff needs a unit"),
    ({"r_eff": 2.0}, u.UnitTypeError, "r_eff must be an angle or a length"),
    ({"r_eff": "2 km/s"}, u.UnitsError, "r_eff must be an angle or a length"),
    ({"n": "round"}, ValueError, "n must be a number"),
    ({"n": 25}, ValueError, "n must be <= 20"),
    ({"flux": "-1 Jy km/s"}, ValueError, "flux must not be negative"),
    ({"inclination": "nan deg"}, ValueError, "inclination must be finite"),
    ({"offset": ["1 arcsec"]}, ValueError, "offset must have shape"),
])
def test_flat_dictionary_errors_name_the_key(values, error, match):
    base = {"r_eff": "2 arcsec", "inclination": "30 deg", "position_angle": "0 deg",
            "flux": "1 Jy km/s", "v_max": "100 km/s", "r_turn": "1 arcsec"}
    if values.get("rotation") in ("flat", "spiral"):
        base = {k: v for k, v in base.items() if k not in ("v_max", "r_turn")}
    with pytest.raises(error, match=match):
        gcc.Galaxy.from_dict({**base, **values})


def test_old_spellings_are_read_with_a_deprecation_warning():
    base = {"r_eff": "2 arcsec", "inclination": "30 deg", "position_angle": "0 deg",
            "flux": "1 Jy km/s"}
    with pytest.warns(DeprecationWarning, match="'v_max' is now called 'v_flat'"):
        flat = gcc.Galaxy.from_dict({**base, "rotation": "flat", "v_max": "90 km/s"})
    assert flat.kinematics == gcc.FlatRotationCurve(v_flat=90 * KMS)
    with pytest.warns(DeprecationWarning, match="'sersic_n' is now called 'n'"):
        disk = gcc.Galaxy.from_dict({**base, "rotation": "flat", "v_flat": "90 km/s",
                                     "sersic_n": 2})
    assert disk.surface.n == 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gcc.Galaxy.from_dict({**base, "v_max": "90 km/s", "r_turn": "1 arcsec"})


def test_a_declaration_reads_as_what_it_is():
    p = gcc.Galaxy.inclination
    assert isinstance(p, Parameter) and p.name == "inclination" and p.kind == "angle"
    assert repr(p) == "Parameter('inclination', kind='angle', >= 0 <= 90)"
    assert p.flag == "--inclination"
    assert gcc.SersicDisk.n.aliases == ("sersic_n",)
    assert gcc.Galaxy.param_names[:2] == ("distance", "redshift")


def _legal(p, value):
    """Whether each of ``value``'s numbers is legal for ``p``, by the declaration's words (not
    `Parameter.validate`'s code): finite, its sign, below light speed, within its bounds."""
    x = value.to_value(p.table_unit if p.table_unit.is_equivalent(value.unit) else u.arcsec)
    ok = np.isfinite(x)
    with np.errstate(invalid="ignore"):
        if p.positive:
            ok &= x > 0
        if p.nonnegative:
            ok &= x >= 0
        if p.kind == "velocity":
            ok &= np.abs(value.to_value(KMS)) < C_KMS
        if p.minimum is not None:
            ok &= x >= p.minimum
        if p.maximum is not None:
            ok &= x <= p.maximum
    return ok


def test_every_declared_check_holds_for_scalars_arrays_and_other_units():
    # (the checks read only each value's least and largest: a seeded sweep of values at and
    # around every bound, in another unit of the kind, alone and mixed in arrays)
    other = {"size": u.arcmin, "angle": u.rad, "velocity": u.m / u.s, "distance": u.kpc,
             "line_flux": u.mJy * u.m / u.s, "velocity_gradient": u.m / u.s / u.arcmin}
    rng = np.random.default_rng(14)
    checked = 0
    for name, p in gcc.Galaxy.flat_parameters().items():
        if p.kind == "dimensionless" or p.shape not in (None, "1d"):
            continue
        unit = other[p.kind]
        base = p.table_unit if p.kind != "size" else u.arcsec
        marks = [0.0, 1.0, -1.0, 1e-300, -1e-300, C_KMS * 0.999, C_KMS, -C_KMS, 1e30,
                 np.nan, np.inf, -np.inf]
        marks += [b + d for b in (p.minimum, p.maximum) if b is not None
                  for d in (0.0, 1e-9 * max(1.0, abs(b)), -1e-9 * max(1.0, abs(b)))]
        values = (np.array(marks) * base).to(unit)
        arrays = [values[rng.choice(len(values), size=rng.integers(1, 4))] for _ in range(30)]
        shaped = [v.reshape(1) for v in values] + arrays + [values[:0]]
        cases = shaped if p.shape == "1d" else list(values) + shaped
        for value in cases:
            legal = bool(np.all(_legal(p, value)))
            if legal:
                assert p.validate(value) is value, (name, value)
            else:
                with pytest.raises(ValueError, match=name):
                    p.validate(value)
            checked += 1
    assert checked > 1000
