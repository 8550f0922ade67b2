"""GalCubeCraft 0.1.0's random population: each distribution, drawn many times."""
import math

import astropy.units as u
import numpy as np
import pytest
from scipy import stats

from galcubecraft.galaxy import default_cosmology
from galcubecraft.population import RESOLUTION_RANGES, VISUALISE_RATIOS, SeedPopulation

KMS = u.km / u.s
N_DRAWS = 800


def draws(population, n=N_DRAWS, seed=0):
    rng = np.random.default_rng(seed)
    return [population.draw(i, rng) for i in range(n)]


@pytest.fixture(scope="module")
def mixed():
    """Draws with 1 or 2 galaxies, resolution 'all'."""
    return draws(SeedPopulation())


@pytest.fixture(scope="module")
def pairs():
    """Draws of a primary and two satellites."""
    return draws(SeedPopulation(n_gals=3, offset_gals=4), n=400, seed=1)


def column(ds, name, unit=None, role=None):
    out = []
    for d in ds:
        t = d["galaxies"]
        if role is not None:
            t = t[t["role"] == role]
        col = t[name]
        out.extend(np.atleast_1d(col.to_value(unit) if unit is not None else np.asarray(col)))
    return np.asarray(out)


def test_galaxies_per_cube_is_one_or_two(mixed):
    counts = np.array([len(d["galaxies"]) for d in mixed])
    assert set(counts) == {1, 2}
    assert abs(np.mean(counts == 1) - 0.5) < 0.05


def test_fixed_galaxies_per_cube(pairs):
    assert all(len(d["galaxies"]) == 3 for d in pairs)


@pytest.mark.parametrize("resolution", sorted(RESOLUTION_RANGES))
def test_resolution_ratio_is_log_uniform_in_its_range(resolution):
    low, high = RESOLUTION_RANGES[resolution]
    pop = SeedPopulation(n_gals=1, resolution=resolution)
    rng = np.random.default_rng(2)
    r = np.array([pop.resolution_ratio(i, rng) for i in range(600)])
    assert [pop.resolution_ratio(i, np.random.default_rng(5)) for i in range(3)] == \
        [d["r"] for d in (pop.draw(i, np.random.default_rng(5)) for i in range(3))]
    assert r.min() >= low and r.max() <= high
    # log10 r is uniform on [log low, log high] (and r itself is not)
    log_low, log_high = math.log10(low), math.log10(high)
    assert stats.kstest(np.log10(r), stats.uniform(log_low, log_high - log_low).cdf).pvalue > 1e-3
    assert stats.kstest(r, stats.uniform(low, high - low).cdf).pvalue < 1e-6


def test_visualise_and_fixed_ratios():
    pop = SeedPopulation(n_gals=1, resolution="visualise")
    rng = np.random.default_rng(0)
    assert [pop.draw(i, rng)["r"] for i in range(7)] == [*VISUALISE_RATIOS, *VISUALISE_RATIOS[:2]]
    assert SeedPopulation(n_gals=1, resolution=2.5).draw(0, rng)["r"] == 2.5


def test_effective_radius_and_pixel_scale_follow_r(mixed):
    """R_e = r * bmin / 2 pixels, and the primary's R_e is 5 kpc."""
    r = np.array([d["r"] for d in mixed])
    re_pix = column(mixed, "r_eff_pix", role="primary")
    np.testing.assert_allclose(re_pix, r * 4 / 2)
    np.testing.assert_allclose(column(mixed, "r_eff", u.kpc, role="primary"), 5.0)
    pix = np.array([d["pix_spatial_scale"] for d in mixed])
    np.testing.assert_allclose(pix, 5.0 / re_pix)
    # each cube's distance makes one pixel (1 arcsec) pix_spatial_scale kpc across
    dist = np.array([d["distance"].to_value(u.kpc) for d in mixed])
    np.testing.assert_allclose(dist * (1 * u.arcsec).to_value(u.rad), pix)


def test_primary_uniform_ranges(mixed):
    checks = {
        ("scale_height", u.kpc): (0.5, 1.0),
        ("sersic_n", None): (0.5, 1.5),
        ("dispersion", KMS): (30, 50),
        ("inclination", u.deg): (0, 85),
        ("position_angle", u.deg): (0, 85),
    }
    for (name, unit), (low, high) in checks.items():
        x = column(mixed, name, unit, role="primary")
        assert x.min() >= low and x.max() <= high, name
        assert stats.kstest(x, stats.uniform(low, high - low).cdf).pvalue > 1e-3, name
    np.testing.assert_allclose(column(mixed, "v_0", KMS), 200)


def test_surface_brightness_scales_as_r_to_the_minus_1p5(mixed):
    r = np.array([d["r"] for d in mixed])
    base = column(mixed, "S_e", role="primary") * r**1.5
    assert base.min() >= 0.08 and base.max() <= 0.12
    assert stats.kstest(base, stats.uniform(0.08, 0.04).cdf).pvalue > 1e-3


def test_satellites_are_a_third_to_a_half_of_the_primary(pairs):
    for name in ("r_eff", "scale_height", "S_e"):
        for d in pairs:
            t = d["galaxies"]
            ratio = np.asarray(t[name][1:] / t[name][0])
            assert np.all((ratio >= 1 / 3) & (ratio <= 1 / 2)), name


def test_satellites_are_randomly_oriented(pairs):
    """Isotropic normals: cos i uniform on [0, 1], PA uniform on [0, 360)."""
    inc = column(pairs, "inclination", u.deg, role="satellite")
    pa = column(pairs, "position_angle", u.deg, role="satellite")
    assert stats.kstest(np.cos(np.radians(inc)), "uniform").pvalue > 1e-3
    assert stats.kstest(pa, stats.uniform(0, 360).cdf).pvalue > 1e-3


def test_satellite_offsets_and_systemic_velocities(pairs):
    offsets = np.array([[row["x_pix"], row["y_pix"], row["z_pix"]]
                        for d in pairs for row in d["galaxies"][1:]])
    centre = (125 - 1) / 2
    rel = offsets - [centre, centre, 0]
    assert np.all(np.abs(rel) <= 4) and np.all(rel == np.round(rel))
    assert set(np.unique(rel)) == set(range(-4, 5))
    h0 = default_cosmology().H0.to_value(KMS / u.Mpc)
    for d in pairs:
        t = d["galaxies"]
        np.testing.assert_allclose(t["v_hubble"].to_value(KMS),
                                   h0 * t["los_offset"].to_value(u.Mpc), atol=1e-9)
        np.testing.assert_allclose(t["v_sys"], t["v_hubble"] + t["v_peculiar"])
        assert t["v_sys"][0] == 0 * KMS
    pec = column(pairs, "v_peculiar", KMS, role="satellite")
    assert abs(pec.std() / (200 / math.sqrt(2)) - 1) < 0.05
    assert abs(pec.mean()) < 10


def test_hubble_only_satellites_as_in_0p1():
    pop = SeedPopulation(n_gals=2, satellite_velocity_dispersion=0 * KMS)
    for d in draws(pop, n=20):
        t = d["galaxies"]
        assert np.all(t["v_peculiar"] == 0 * KMS)
        assert np.all(np.abs(t["v_sys"]) < 5 * KMS)   # the Hubble term is a few km/s at most


def test_galaxy_objects_match_the_table(mixed):
    """The rendered Galaxy objects carry exactly the truth in the table."""
    for d in mixed[:50]:
        for row, gal in zip(d["galaxies"], d["objects"]):
            assert u.isclose(gal.surface.r_eff, row["r_eff"])
            assert u.isclose(gal.vertical.scale_height, row["scale_height"])
            assert gal.surface.n == pytest.approx(row["sersic_n"])
            assert u.isclose(gal.flux, row["flux"])
            assert u.isclose(gal.inclination, row["inclination"])
            assert u.isclose(gal.position_angle, row["position_angle"])
            assert u.isclose(gal.v_sys, row["v_sys"])
            assert u.isclose(gal.dispersion, row["dispersion"])
            assert u.isclose(gal.distance, d["distance"])
            # the analytic rotation curve's R_0 = 2 R_e / b_n^n, as 0.1.0 ties it
            radius = [0.5, 2.0, 8.0] * u.kpc
            v = gal.kinematics(radius, r_eff=gal.surface.r_eff, n=gal.surface.n)
            expected = 1.022 * row["v_0"] * (radius / row["r_0"]).decompose() ** 0.0803
            assert u.allclose(v, expected, rtol=1e-6)


def test_flux_is_the_emissivity_integral():
    """flux = S_e x emissivity_unit x integral of the profile over all space (pixel units)."""
    from scipy import integrate
    from scipy.special import gammaincinv
    d = SeedPopulation(n_gals=1).draw(0, np.random.default_rng(5))
    row = d["galaxies"][0]
    n, re, hz = row["sersic_n"], row["r_eff_pix"], row["scale_height_pix"]
    b = gammaincinv(2 * n, 0.5)
    radial, _ = integrate.quad(lambda R: 2 * np.pi * R * np.exp(-b * ((R / re)**(1 / n) - 1)),
                               0, np.inf)
    expected = row["S_e"] * 6 * radial * 2 * hz
    assert row["flux"].to_value(u.Jy * KMS) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"resolution": "high"}, "resolution"),
    ({"resolution": -1.0}, "resolution"),
    ({"n_gals": 0}, "n_gals"),
    ({"offset_gals": -1}, "offset_gals"),
    ({"grid_size": 0}, "grid_size"),
    ({"beam_info": [4, 0, 0]}, "bmaj"),
    ({"beam_info": [4, 4]}, "beam_info"),
    ({"velocity_range": [600, -600] * KMS}, "velocity_range"),
])
def test_bad_population_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SeedPopulation(**kwargs)


def test_population_units_checked():
    with pytest.raises(u.UnitsError):
        SeedPopulation(pixel_scale=1 * u.kpc)
    with pytest.raises(u.UnitTypeError):
        SeedPopulation(velocity_range=(-600, 600))
