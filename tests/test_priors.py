"""Priors: distributions with units, checked before any work starts."""
import astropy.units as u
import numpy as np
import pytest
from scipy import stats

from conftest import JYKMS, KMS
from galcubecraft.priors import (Choice, Fixed, GalaxyPriors, Isotropic, LogUniform, Normal,
                                 TruncatedNormal, Uniform, distribution_from_spec,
                                 read_priors_file)


def test_distributions_have_the_stated_shape():
    rng = np.random.default_rng(0)
    n = 20000
    x = LogUniform(1 * u.arcsec, 100 * u.arcsec).sample(rng, n)
    assert x.unit == u.arcsec
    assert stats.kstest(np.log10(x.value), "uniform", args=(0, 2)).pvalue > 1e-3
    i = Isotropic(0 * u.deg, 90 * u.deg).sample(rng, n)
    assert stats.kstest(np.cos(i.to_value(u.rad)), "uniform").pvalue > 1e-3
    t = TruncatedNormal(10 * KMS, 5 * KMS, 5 * KMS, 12 * KMS).sample(rng, n)
    assert t.min() >= 5 * KMS and t.max() <= 12 * KMS
    g = Normal(3 * u.kpc, 0.5 * u.kpc).sample(rng, n)
    assert np.std(g.value) == pytest.approx(0.5, rel=0.03)
    c = Choice([0.5, 1, 2], weights=[1, 2, 1]).sample(rng, n)
    assert np.mean(c.value == 1) == pytest.approx(0.5, abs=0.02)
    assert Fixed("10 km/s").sample(rng) == 10 * KMS


def test_specs_from_a_priors_file(tmp_path):
    path = tmp_path / "priors.toml"
    path.write_text('''
[galaxy]
r_eff = {distribution = "loguniform", low = "1 arcsec", high = "4 arcsec"}
inclination = {distribution = "isotropic", low = "20 deg", high = "80 deg"}
dispersion = "12 km/s"
flux = {distribution = "uniform", low = "1 Jy km/s", high = "2 Jy km/s"}
n = {distribution = "choice", values = [0.5, 1.0]}

[placement]
n = 4
seed = 7
edge = "6 arcsec"
''')
    priors, placement = read_priors_file(path)
    assert placement == {"n": 4, "seed": 7, "edge": 6 * u.arcsec}
    draw = priors.sample(np.random.default_rng(1))
    assert 1 * u.arcsec <= draw["r_eff"] <= 4 * u.arcsec
    assert draw["dispersion"] == 12 * KMS
    assert draw["flux"].unit.is_equivalent(JYKMS)
    again = priors.sample(np.random.default_rng(1))
    assert all(np.all(draw[k] == again[k]) for k in draw)


@pytest.mark.parametrize("spec, error, match", [
    ({"colour": "red"}, ValueError, "unknown galaxy parameter"),
    ({"r_eff": "3 km/s"}, u.UnitsError, "r_eff must be an angle or a length"),
    ({"flux": {"distribution": "uniform", "low": "2 Jy km/s", "high": "1 Jy km/s"}},
     ValueError, "empty range"),
    ({"inclination": {"distribution": "uniform", "low": "10 deg", "high": "100 deg"}},
     ValueError, "inclination must be <= 90"),
    ({"n": 0}, ValueError, "n must be > 0"),
    ({"n": {"distribution": "uniform", "low": 1, "high": 50}}, ValueError, "n must be <= 20"),
    ({"dispersion": {"distribution": "normal", "mean": "10 km/s", "std": "3 km/s"}},
     ValueError, "dispersion must be >= 0"),
    ({"v_max": {"distribution": "gaussian", "mean": "1 km/s"}}, ValueError, "distribution must"),
    ({"v_max": {"distribution": "uniform", "low": "1 km/s"}}, ValueError, "needs"),
    ({"v_max": [100, 200]}, ValueError, "as a table"),
    ({"r_eff": {"distribution": "loguniform", "low": "0 arcsec", "high": "1 arcsec"}},
     ValueError, "positive"),
])
def test_bad_priors_are_refused_before_any_work(spec, error, match):
    with pytest.raises(error, match=match):
        GalaxyPriors(**spec)


@pytest.mark.parametrize("text, match", [
    ("[galaxies]\nr_eff = '1 arcsec'\n", "unknown section"),
    ("[placement]\nn = 0\n", "positive integer"),
    ("[placement]\nnumber = 3\n", "unknown \\[placement\\]"),
    ("[galaxy\n", "not valid TOML"),
])
def test_priors_file_errors(tmp_path, text, match):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_priors_file(path)


def test_old_spelling_of_the_sersic_index_still_works_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="'sersic_n' is now called 'n'"):
        priors = GalaxyPriors(sersic_n=2.0)
    assert priors.distributions["n"].sample(np.random.default_rng(0)) == 2.0
    with pytest.raises(ValueError, match="not both"):
        GalaxyPriors(sersic_n=2.0, n=3.0)


def test_a_distribution_passes_through():
    assert isinstance(distribution_from_spec("x", Uniform(1 * u.m, 2 * u.m)), Uniform)
