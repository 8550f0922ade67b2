"""Agreement with KinMS (Davis et al. 2013) once conventions are matched.

KinMS samples the same disk with random clouds, so its error against an exact render is
its sampling noise; the test asks that the difference between KinMS (two seeds of 5e6 clouds
averaged) and our converged render is no more than that noise plus a small systematic
allowance, for three disks: a thick one at 65 deg, a concentrated Sérsic n = 4 one, and a thick
one at 85 deg (where the line-of-sight integral matters most).

Conventions: KinMS's cube is (x, y, v) with its centre at pixel and channel n/2 (ours
(n - 1)/2); it bins clouds into pixels and convolves with the beam sampled on them, which is
our ``pixel_sampling='average'``; ``diskThick`` is an exponential scale height, as our
`ExponentialVertical`; it scales its cube so that its padded field holds ``intFlux``, so the
cubes are compared as shapes (each over its sum in our field).
"""
import math
import warnings

import astropy.units as u
import numpy as np
import pytest
import torch
from radio_beam import Beam

import galcubecraft as gcc
from galcubecraft.functional import sersic_bn

kinms = pytest.importorskip("kinms")
KMS = u.km / u.s
N_PIX, N_CHAN, DV, PAD = 64, 24, 25.0, 12

#: name: (surface, KinMS profile of radius, scale height (arcsec), inclination (deg), pixel
#: (arcsec)).  The n = 4 disk is drawn on 0.5" pixels: on 1" pixels (a 3-pixel beam) the
#: light of its cusp within a pixel is placed by both codes only to second order in
#: pixel / beam, and they differ by 1.8% L1 (against a render on 5x finer pixels, averaged
#: over the 1" ones: KinMS 1.1%, ours 0.33%, 0.67% before the multipoles of its cusp,
#: ours with ``min_beam_sigma=3.5`` 0.01%).
MODELS = {
    "thick disk at 65 deg": (gcc.ExponentialDisk(scale_length=3 * u.arcsec),
                             lambda r: np.exp(-r / 3.0), 0.6, 65, 1.0),
    "Sersic n = 4 disk": (gcc.SersicDisk(r_eff=3 * u.arcsec, n=4),
                          lambda r: np.exp(-float(sersic_bn(4.0)) * ((r / 3.0) ** 0.25 - 1)),
                          0.2, 50, 0.5),
    "thick disk at 85 deg": (gcc.ExponentialDisk(scale_length=3 * u.arcsec),
                             lambda r: np.exp(-r / 3.0), 0.6, 85, 1.0),
}


def ours(model, **sampling):
    surface, _, height, inclination, pixel = MODELS[model]
    galaxy = gcc.Galaxy(surface=surface, vertical=gcc.ExponentialVertical(height * u.arcsec),
                        kinematics=gcc.ArctanRotationCurve(v_max=200 * KMS, r_turn=2 * u.arcsec),
                        dispersion=15 * KMS, inclination=inclination * u.deg,
                        position_angle=30 * u.deg, flux=20 * u.Jy * KMS)
    grid = gcc.CubeGrid(shape=(N_CHAN, N_PIX, N_PIX), pixel_scale=pixel * u.arcsec,
                        channel_width=DV * KMS, beam=Beam(3 * u.arcsec), pixel_sampling="average")
    with torch.no_grad():
        return gcc.render_tensor(galaxy, grid, dtype=torch.float64, **sampling).numpy()


def kinms_cube(model, seed, n_clouds=5_000_000):
    """KinMS's cube on our grid: (x, y, v) -> (v, y, x); its centre is pixel and channel n/2,
    ours (n - 1)/2; it drops clouds outside its field before convolving, so it renders a
    larger field, cropped."""
    _, profile, height, inclination, pixel = MODELS[model]
    r = np.arange(0, 100, 0.002)
    size = (N_PIX + 2 * PAD) * pixel
    cube = kinms.KinMS(size, size, N_CHAN * DV, pixel, DV, [3.0, 3.0, 0.0],
                       nSamps=n_clouds, fixSeed=True, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cube = cube.model_cube(inc=inclination, posAng=30, gasSigma=15, diskThick=height,
                               sbProf=profile(r), sbRad=r, velRad=r,
                               velProf=2 / np.pi * 200 * np.arctan(r / 2.0), intFlux=20,
                               phaseCent=[-pixel / 2, -pixel / 2], vOffset=-DV / 2)
    return np.transpose(cube, (2, 1, 0))[:, PAD:-PAD, PAD:-PAD]


def l1(a, b):
    return np.abs(a / a.sum() - b / b.sum()).sum()


@pytest.fixture(scope="module", params=list(MODELS))
def case(request):
    """Ours on the grid's pixels (``finer_radius=0``), where KinMS bins its clouds: on them the
    thick disk at 85 deg (r_eff 5 pixels) is 0.26% L1 from our render on 6x finer pixels and
    KinMS 0.40%; our default, which renders it on pixels twice finer, is 0.03% from it."""
    return request.param, ours(request.param, oversample=4, minor_density=2, finer_radius=0)


def test_agrees_with_kinms_within_its_sampling_noise(case):
    model, reference = case
    a, b = kinms_cube(model, 1), kinms_cube(model, 2)
    noise_of_mean = l1(a, b) / 2                 # L1 of (a - b)/2: the noise of (a + b)/2
    diff = l1(0.5 * (a + b), reference)
    systematic = math.sqrt(max(diff**2 - noise_of_mean**2, 0.0))
    assert noise_of_mean < 0.01                  # the comparison can see a 0.5% difference
    assert systematic < 0.003, (diff, noise_of_mean)
    # conventions matter: a one-channel or one-pixel slip is far outside the noise
    assert l1(np.roll(0.5 * (a + b), 1, axis=0), reference) > 5 * diff
    assert l1(np.roll(0.5 * (a + b), 1, axis=2), reference) > 3 * diff


def test_default_sampling_is_within_half_a_percent(case):
    """The default cells against 2x the cells and 2x the minor-axis bins, on the same pixels:
    the grid's (measured 0.02-0.08%), and pixels twice finer, where the default renders these
    disks (measured 0.01-0.08%)."""
    model, reference = case
    assert l1(ours(model, finer_radius=0), reference) < 0.005
    assert l1(ours(model), ours(model, oversample=4, minor_density=2)) < 0.005


# ----------------------------------------------------------------------------- real galaxies
#: Warps and radial motions (`galcubecraft.rings`) against KinMS's ``inc``/``posAng`` arrays and
#: its `kinms.radial_motion` classes.  KinMS measures the disk-plane azimuth theta from the
#: approaching major axis, turning the other way from ours (theta = 180 deg - phi): its
#: ``pure_radial(v)`` is our ``RadialFlow(v)`` (an outflow recedes on the same side of the sky
#: in both), and its ``bisymmetric_flow(v2t, v2r, phib)`` is our
#: ``BisymmetricFlow(-v2t, -v2r, -phib)`` (Spekkens & Sellwood's eq. 5 in either azimuth).
#: A one-sign or one-angle slip is 50-95% L1 away (checked below).
_R = np.arange(0, 100, 0.002)
_WARP_NODES = ([0, 10, 30], [40, 55, 80], [30, 40, 70])
REAL = {
    "warp 40 -> 80 deg": (
        dict(warp=gcc.Warp(_WARP_NODES[0] * u.arcsec, inclination=_WARP_NODES[1] * u.deg,
                           position_angle=_WARP_NODES[2] * u.deg)),
        lambda: dict(inc=np.interp(_R, _WARP_NODES[0], _WARP_NODES[1]),
                     posAng=np.interp(_R, _WARP_NODES[0], _WARP_NODES[2]))),
    "pure radial inflow": (
        dict(flows=[gcc.RadialFlow([-50, -20] * KMS, radius=[0, 20] * u.arcsec)]),
        lambda: dict(radial_motion_func=kinms.radial_motion.pure_radial(
            _R, np.interp(_R, [0, 20], [-50, -20])))),
    "bisymmetric flow": (
        dict(flows=[gcc.BisymmetricFlow(-40 * KMS, -25 * KMS, -30 * u.deg)]),
        lambda: dict(radial_motion_func=kinms.radial_motion.bisymmetric_flow(
            _R, np.full_like(_R, 40.0), np.full_like(_R, 25.0), 30.0))),
}


def ours_real(model, **sampling):
    galaxy = gcc.Galaxy(surface=gcc.ExponentialDisk(scale_length=5 * u.arcsec),
                        vertical=gcc.ExponentialVertical(0.5 * u.arcsec),
                        kinematics=gcc.ArctanRotationCurve(v_max=200 * KMS, r_turn=2 * u.arcsec),
                        dispersion=15 * KMS, inclination=60 * u.deg, position_angle=30 * u.deg,
                        flux=20 * u.Jy * KMS, **REAL[model][0])
    grid = gcc.CubeGrid(shape=(N_CHAN, N_PIX, N_PIX), pixel_scale=1 * u.arcsec,
                        channel_width=DV * KMS, beam=Beam(3 * u.arcsec), pixel_sampling="average")
    with torch.no_grad():
        return gcc.render_tensor(galaxy, grid, dtype=torch.float64, **sampling).numpy()


def kinms_real(model, seed, n_clouds=5_000_000):
    size = N_PIX + 2 * PAD
    kw = dict(inc=60, posAng=30)
    kw.update(REAL[model][1]())
    cube = kinms.KinMS(size, size, N_CHAN * DV, 1.0, DV, [3.0, 3.0, 0.0], nSamps=n_clouds,
                       fixSeed=True, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cube = cube.model_cube(gasSigma=15, diskThick=0.5, sbProf=np.exp(-_R / 5.0), sbRad=_R,
                               velRad=_R, velProf=2 / np.pi * 200 * np.arctan(_R / 2.0),
                               intFlux=20, phaseCent=[-0.5, -0.5], vOffset=-DV / 2, **kw)
    return np.transpose(cube, (2, 1, 0))[:, PAD:-PAD, PAD:-PAD]


@pytest.mark.parametrize("model", list(REAL))
def test_warps_and_radial_motions_agree_with_kinms(model):
    """1e7 KinMS clouds (two seeds) against our converged render: the same cube within KinMS's
    sampling noise plus 0.3% L1; and our default render within 0.5%."""
    reference = ours_real(model, oversample=6)
    a, b = kinms_real(model, 1), kinms_real(model, 2)
    noise_of_mean = l1(a, b) / 2
    diff = l1(0.5 * (a + b), reference)
    systematic = math.sqrt(max(diff**2 - noise_of_mean**2, 0.0))
    assert noise_of_mean < 0.01
    assert systematic < 0.003, (diff, noise_of_mean)
    assert l1(ours_real(model), reference) < 0.005


def test_the_harmonic_convention_matters():
    """Our bisymmetric flow with KinMS's own signs and angle is far from KinMS's cube."""
    kinms_cube_ = kinms_real("bisymmetric flow", 1, n_clouds=1_000_000)
    REAL["wrong"] = (dict(flows=[gcc.BisymmetricFlow(40 * KMS, 25 * KMS, 30 * u.deg)]), None)
    try:
        wrong = ours_real("wrong")
    finally:
        del REAL["wrong"]
    assert l1(kinms_cube_, wrong) > 0.3
