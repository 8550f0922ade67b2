"""Kernels against references: scipy, astropy.modeling, radio_beam, numerical quadrature."""
import math

import astropy.units as u
import numpy as np
import pytest
import torch
from astropy.modeling.models import Sersic1D, Sersic2D
from radio_beam import Beam
from scipy import integrate
from scipy.special import gammaincinv

from galcubecraft import functional as F

D = torch.float64


@pytest.mark.parametrize("n", [0.2, 0.5, 1.0, 1.5, 2.5, 4.0, 8.0, 15.0])
def test_sersic_bn_is_exact(n):
    """b_n halves the light: P(2n, b_n) = 1/2 by torch's own incomplete gamma function, and
    the root is where that function crosses 1/2 (1e-8 either side; torch's gammainc is
    itself good to about 1e-10 at n = 15)."""
    b = F.sersic_bn(torch.tensor([n], dtype=D))
    a = torch.tensor([2 * n], dtype=D)
    assert torch.special.gammainc(a, b).item() == pytest.approx(0.5, abs=1e-9)
    assert torch.special.gammainc(a, b * (1 - 1e-8)).item() < 0.5
    assert torch.special.gammainc(a, b * (1 + 1e-8)).item() > 0.5


def test_sersic_bn_derivative_matches_scipy_finite_difference():
    n = torch.tensor([0.7, 1.0, 3.0], dtype=D, requires_grad=True)
    (grad,) = torch.autograd.grad(F.sersic_bn(n).sum(), n)
    h = 1e-6
    expected = [(gammaincinv(2 * (x + h), 0.5) - gammaincinv(2 * (x - h), 0.5)) / (2 * h)
                for x in (0.7, 1.0, 3.0)]
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("n", [0.5, 1.0, 2.0, 4.0])
def test_sersic_matches_astropy_sersic1d_and_2d(n):
    r = np.geomspace(0.01, 50, 200)
    ours = F.sersic(torch.tensor(r, dtype=D), torch.tensor(2.5, dtype=D),
                    torch.tensor(7.0, dtype=D), torch.tensor(n, dtype=D)).numpy()
    np.testing.assert_allclose(ours, Sersic1D(amplitude=2.5, r_eff=7.0, n=n)(r), rtol=1e-10)
    x, y = np.meshgrid(np.linspace(-20, 20, 41), np.linspace(-20, 20, 41))
    ref2 = Sersic2D(amplitude=2.5, r_eff=7.0, n=n, x_0=0, y_0=0, ellip=0)(x, y)
    ours2 = F.sersic(torch.tensor(np.hypot(x, y), dtype=D), torch.tensor(2.5, dtype=D),
                     torch.tensor(7.0, dtype=D), torch.tensor(n, dtype=D)).numpy()
    np.testing.assert_allclose(ours2, ref2, rtol=1e-10)


@pytest.mark.parametrize("n", [0.5, 1.0, 4.0])
def test_sersic_total_flux_is_the_integral(n):
    model = Sersic1D(amplitude=1.0, r_eff=3.0, n=n)
    numeric, _ = integrate.quad(lambda r: 2 * np.pi * r * model(r), 0, np.inf, limit=500)
    total = F.sersic_total_flux(torch.tensor(1.0, dtype=D), torch.tensor(3.0, dtype=D),
                                torch.tensor(n, dtype=D))
    assert total.item() == pytest.approx(numeric, rel=1e-7)


def _window(y, y1, y2, lam):
    """Reference window: P[Z in ((y - y2) / t, (y - y1) / t)] with Laplace CDF, numerically."""
    def cdf(x):
        e = np.exp(-np.abs(x) / lam)
        return np.where(x < 0, 0.5 * e, 1 - 0.5 * e)
    return cdf(y - y1) - cdf(y - y2)


@pytest.mark.parametrize("lam", [1e-6, 0.05, 0.7, 30.0])
@pytest.mark.parametrize("start, width", [(-3.0, 0.4), (-0.3, 0.5), (0.9, 0.2), (5.0, 2.0),
                                          (-40.0, 80.0)])
def test_window_integral_matches_quadrature(lam, start, width):
    y1, y2 = -0.5, 1.0
    numeric, _ = integrate.quad(_window, start, start + width, args=(y1, y2, lam),
                                points=[y1, y2], limit=200, epsabs=1e-13)
    t = lambda v: torch.tensor(v, dtype=D)  # noqa: E731
    ours = F.window_integral(t(start - y1), t(start - y2), t(width), t(lam)).item()
    assert ours == pytest.approx(numeric, rel=1e-8, abs=1e-12)


def _trapezoid_window(y, y1, y2, lam, ramp):
    """The window of a box [y1, y2] convolved with a normalised box of width ``ramp``, by
    quadrature over the narrow box's shifts."""
    value, _ = integrate.quad(lambda s: _window(y - s, y1, y2, lam), -ramp / 2, ramp / 2,
                              limit=200, epsabs=1e-14)
    return value / ramp


@pytest.mark.parametrize("lam", [1e-3, 0.05, 0.7, 30.0])
@pytest.mark.parametrize("ramp", [1e-3, 0.3, 1.5])
@pytest.mark.parametrize("start, width", [(-3.0, 0.4), (-0.3, 0.5), (0.9, 0.2), (5.0, 2.0),
                                          (-40.0, 80.0), (-0.8, 0.1)])
def test_trapezoid_window_integral_matches_quadrature(lam, ramp, start, width):
    """A square cell seen at an angle: its footprint across the minor axis, a box convolved
    with a narrower box (``ramp``), integrated exactly with the Laplace window over a bin."""
    y1, y2 = -0.5, 1.0
    kinks = [y1 - ramp / 2, y1 + ramp / 2, y2 - ramp / 2, y2 + ramp / 2]
    if start < kinks[0] - 40 * lam and start + width > kinks[-1] + 40 * lam:
        numeric = y2 - y1               # the whole window (quad misses its narrow features)
    else:
        numeric, _ = integrate.quad(_trapezoid_window, start, start + width,
                                    args=(y1, y2, lam, ramp), points=kinks, limit=200,
                                    epsabs=1e-13)
    t = lambda v: torch.tensor(v, dtype=D)  # noqa: E731
    ours = F.window_integral(t(start - y1), t(start - y2), t(width), t(lam), ramp=t(ramp))
    assert ours.item() == pytest.approx(numeric, rel=1e-7, abs=1e-11)


@pytest.mark.parametrize("lam", [1e-6, 0.05, 0.7, 30.0])
@pytest.mark.parametrize("ramp", [None, 1e-3, 0.4])
def test_bin_window_integrals_are_each_bins_and_the_window_at_its_edges(lam, ramp):
    """The windows of contiguous bins (uneven, one of zero width) from the exponentials at
    their edges: each `window_integral`'s, and, with the tails, the whole window; and the
    window at each edge, against its closed form (the box) or quadrature (the trapezoid)."""
    y1, y2 = -0.5, 1.0
    half = 0.0 if ramp is None else ramp / 2
    lo, hi = y1 - half - 3 * lam - 0.2, y2 + half + 3 * lam + 0.1
    u = np.sinh(np.linspace(-2.0, 1.5, 14))
    u = np.insert(u, 6, u[6])                                  # a zero-width bin
    edges = torch.tensor(lo + (hi - lo) * (u - u[0]) / (u[-1] - u[0]), dtype=D)
    t = lambda v: torch.tensor(v, dtype=D)  # noqa: E731
    r = None if ramp is None else t(ramp)
    full, values = F.bin_window_integrals(edges, t(y1), t(y2), t(lam), ramp=r)
    start, width = edges[:-1], edges[1:] - edges[:-1]
    each = F.window_integral(start - y1, start - y2, width, t(lam), ramp=r)
    np.testing.assert_allclose(full.numpy(), each.numpy(), rtol=1e-9, atol=1e-13)
    assert float(full[6]) == 0.0
    lower = F.window_tail(t(lo - y1), t(lo - y2), t(lam), "lower", ramp=r)
    upper = F.window_tail(t(hi - y1), t(hi - y2), t(lam), "upper", ramp=r)
    assert float(lower + full.sum() + upper) == pytest.approx(y2 - y1, rel=1e-10)
    points = edges.numpy()
    if ramp is None:
        expected = _window(points, y1, y2, lam)
    else:
        expected = np.array([_trapezoid_window(x, y1, y2, lam, ramp) for x in points])
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-7, atol=1e-9)


def test_razor_thin_trapezoid_window_is_the_overlap():
    """lam -> 0: the bin's overlap with the trapezoid, piecewise quadratic, in closed form."""
    y1, y2, ramp = -0.5, 1.0, 1.5                  # ramps -1.25..0.25 and 0.25..1.75
    t = lambda v: torch.tensor(v, dtype=D)  # noqa: E731
    for start, width, exact in [(-0.8, 0.1, 0.1 / 3), (-2.0, 0.75, 0.0), (-2.0, 5.0, 1.5),
                                (0.0, 0.5, 0.25 * (5 / 6 + 1))]:
        ours = F.window_integral(t(start - y1), t(start - y2), t(width), t(1e-9), ramp=t(ramp))
        assert ours.item() == pytest.approx(exact, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("lam", [1e-6, 0.3, 5.0])
@pytest.mark.parametrize("ramp", [None, 1e-3, 0.4, 1.5])
def test_window_tails_and_total(lam, ramp):
    """Tails and bins of a window (box, or trapezoid with ``ramp``) add up to its width; the
    lower tail matches quadrature."""
    y1, y2 = -0.5, 1.0
    half = 0.0 if ramp is None else ramp / 2
    lo, hi = y1 - half - 3 * lam, y2 + half + 3 * lam
    t = lambda v: torch.tensor(v, dtype=D)  # noqa: E731
    r = None if ramp is None else t(ramp)
    lower = F.window_tail(t(lo - y1), t(lo - y2), t(lam), "lower", ramp=r).item()
    upper = F.window_tail(t(hi - y1), t(hi - y2), t(lam), "upper", ramp=r).item()
    middle = F.window_integral(t(lo - y1), t(lo - y2), t(hi - lo), t(lam), ramp=r).item()
    assert lower + middle + upper == pytest.approx(y2 - y1, rel=1e-12 if ramp is None else 1e-10)
    if ramp is None:
        reference, _ = integrate.quad(_window, lo - 60 * lam, lo, args=(y1, y2, lam), epsabs=0)
        assert lower == pytest.approx(reference, rel=1e-7, abs=1e-14)
    elif lam > 1e-3:
        reference, _ = integrate.quad(_trapezoid_window, lo - 60 * lam - ramp, lo,
                                      args=(y1, y2, lam, ramp), epsabs=1e-14, limit=200)
        assert lower == pytest.approx(reference, rel=1e-7)


def test_channel_cdf_integrates_the_gaussian_exactly():
    edges = torch.linspace(-100, 100, 41, dtype=D)
    v, sigma = torch.tensor([13.0], dtype=D), torch.tensor([7.0], dtype=D)
    frac = torch.diff(F.channel_cdf(edges, v, sigma), dim=-1)[0].numpy()
    assert frac.sum() == pytest.approx(1.0, abs=1e-12)
    centres = 0.5 * (edges[1:] + edges[:-1]).numpy()
    assert (frac * centres).sum() == pytest.approx(13.0, abs=1e-9)
    # Sheppard: variance of channel-binned Gaussian = sigma^2 + dv^2 / 12
    var = (frac * (centres - 13.0) ** 2).sum()
    assert var == pytest.approx(49 + 25 / 12, rel=1e-6)


@pytest.mark.parametrize("pa", [0, 30, 75, 120])
def test_beam_transfer_matches_radio_beam_kernel(pa):
    """Convolving a point source gives radio_beam's Beam.as_kernel (orientation included)."""
    beam = Beam(6 * u.arcsec, 3 * u.arcsec, pa * u.deg)
    pix = 1 * u.arcsec
    kernel = beam.as_kernel(pix, x_size=41, y_size=41, mode="center").array
    img = torch.zeros(41, 41, dtype=D)
    img[20, 20] = 1.0
    sig = (6 / 1) / math.sqrt(8 * math.log(2)), (3 / 1) / math.sqrt(8 * math.log(2))
    transfer = F.beam_transfer_function((41, 41), *sig, math.pi / 2 + math.radians(pa), dtype=D)
    ours = F.convolve_beam(img, transfer, (41, 41)).numpy()
    # both are the continuous Gaussian sampled at pixel centres
    np.testing.assert_allclose(ours, kernel / kernel.sum(), atol=1e-4 * kernel.max())
    assert ours.sum() == pytest.approx(1.0, abs=1e-12)
    # the major axis lies along the PA: (dx, dy) = (-sin PA, cos PA), east to the left
    far = 4
    dx, dy = -math.sin(math.radians(pa)), math.cos(math.radians(pa))
    along = ours[20 + round(far * dy), 20 + round(far * dx)]
    across = ours[20 + round(far * dx), 20 - round(far * dy)]
    assert along > 3 * across


@pytest.mark.parametrize("beam_pa, separable",
                         [(None, True), (0, True), (90, True), (30, False)])
def test_separable_beam_matrices_are_the_fft_convolution_and_crop(beam_pa, separable):
    """My @ image @ Mx.T equals the FFT convolution followed by the crop, to rounding."""
    sig = (2.0, 2.0) if beam_pa is None else (2.5, 1.2)
    angle = math.pi / 2 + math.radians(beam_pa or 0)
    padded, fft_shape, crop = (37, 30), (40, 32), 6
    matrices = F.beam_matrices(fft_shape, padded, crop, *sig, angle, dtype=D)
    assert (matrices is not None) == separable
    if not separable:
        return
    images = torch.rand(3, 2, *padded, dtype=D)
    transfer = F.beam_transfer_function(fft_shape, *sig, angle, dtype=D)
    fft = F.convolve_beam(images, transfer, fft_shape)[..., crop:-crop, crop:-crop]
    dense = F.convolve_beam_separable(images, matrices)
    assert dense.shape == fft.shape == (3, 2, 25, 18)
    np.testing.assert_allclose(dense.numpy(), fft.numpy(), atol=1e-14)
    # an elliptical beam along y (PA 0) spreads along the columns' axis more than the rows'
    if beam_pa == 0:
        point = torch.zeros(*padded, dtype=D)
        point[18, 15] = 1.0
        out = F.convolve_beam_separable(point, matrices)
        assert out[12 + 3, 9] > 3 * out[12, 9 + 3]


def _random_lines(seed=0, batch=2, n_pix=3, n_samples=60):
    g = torch.Generator().manual_seed(seed)
    weight = torch.rand(batch, n_pix, n_samples, generator=g, dtype=D)
    velocity = (torch.rand(batch, n_pix, n_samples, generator=g, dtype=D) - 0.5) * 700
    # from point-like samples to boxes many nodes wide
    variance = torch.rand(batch, n_pix, n_samples, generator=g, dtype=D) ** 4 * 900
    return weight, velocity, variance


def test_deposited_lines_keep_flux_mean_and_variance_exactly():
    edges = torch.linspace(-400, 400, 41, dtype=D)
    weight, velocity, variance = _random_lines()
    sigma = torch.tensor([10.0, 37.0], dtype=D)
    origin, step, n_nodes = F.line_nodes(edges, sigma, 2.0)
    nodes = F.deposit_lines(weight, velocity, variance, origin.reshape(-1, 1, 1),
                            step.reshape(-1, 1, 1), n_nodes)
    u_k = origin.reshape(-1, 1, 1) + step.reshape(-1, 1, 1) * torch.arange(n_nodes, dtype=D)
    flux = weight.sum(-1)
    np.testing.assert_allclose(nodes.sum(-1), flux, rtol=1e-12)
    np.testing.assert_allclose((nodes * u_k).sum(-1), (weight * velocity).sum(-1),
                               rtol=1e-12, atol=1e-9)
    added = (step**2 * (0.25 + F._MIN_BOX**2 / 3)).reshape(-1, 1)
    np.testing.assert_allclose((nodes * u_k**2).sum(-1),
                               (weight * (velocity**2 + variance)).sum(-1) + flux * added,
                               rtol=1e-12)
    assert float(nodes.min()) > -1e-12


def test_deposited_lines_keep_a_point_sources_flux_in_float32():
    """2e5 float32 samples of one pixel at nearly one velocity (a point source's cells): the
    running sums are taken in float64, so the nodes past the line are empty and the flux is
    kept to float32 rounding (in float32 the sums left 1e-4 of the flux at every later node:
    0.25% of a point source's flux gained in the sweep of tests/test_accuracy.py)."""
    g = torch.Generator().manual_seed(4)
    count = 200_000
    weight = torch.rand(1, 1, count, generator=g) / count
    velocity = 3.0 + torch.rand(1, 1, count, generator=g) * 0.1
    edges = torch.linspace(-200.0, 200.0, 6)
    sigma = torch.tensor([17.0])
    origin, step, n_nodes = F.line_nodes(edges, sigma, 2.0)
    nodes = F.deposit_lines(weight, velocity, torch.zeros_like(velocity),
                            origin.reshape(-1, 1, 1), step.reshape(-1, 1, 1), n_nodes)
    assert nodes.dtype == torch.float32
    flux = float(weight.double().sum())
    u_k = origin + step * torch.arange(n_nodes)
    far = (u_k - 3.0).abs() > 2 * step
    assert float(nodes[0, 0, far].abs().max()) < 1e-6 * flux
    assert abs(float(nodes.double().sum()) - flux) < 1e-6 * flux


def test_node_integrated_lines_converge_to_exact_channel_integrals():
    """Point-like lines through the nodes: L1 error < 5e-4 at 2 nodes per sigma, falling at
    least 8x when the nodes are twice as dense (the error goes as the fourth power)."""
    edges = torch.linspace(-400, 400, 41, dtype=D)          # 20 km/s channels
    weight, velocity, _ = _random_lines(1)
    sigma = torch.tensor([10.0, 37.0], dtype=D)
    cdf = 0.5 * torch.erf((edges - velocity.unsqueeze(-1))
                          / (math.sqrt(2) * sigma.reshape(-1, 1, 1, 1)))
    exact = (weight.unsqueeze(-1) * (cdf[..., 1:] - cdf[..., :-1])).sum(-2)
    errors = []
    for density in (2.0, 4.0):
        origin, step, n_nodes = F.line_nodes(edges, sigma, density)
        nodes = F.deposit_lines(weight, velocity, torch.zeros_like(velocity),
                                origin.reshape(-1, 1, 1), step.reshape(-1, 1, 1), n_nodes)
        spectra = nodes @ F.node_to_channel_matrix(edges, origin, step, n_nodes, sigma)
        errors.append(float((spectra - exact).abs().sum() / exact.abs().sum()))
    assert errors[0] < 5e-4
    assert errors[1] < errors[0] / 8


def test_deposited_rows_sum_their_points():
    """Points deposited into shared rows equal their own deposits summed by row."""
    edges = torch.linspace(-400, 400, 41, dtype=D)
    weight, velocity, variance = _random_lines()
    sigma = torch.tensor([10.0, 37.0], dtype=D)
    origin, step, n_nodes = F.line_nodes(edges, sigma, 2.0)
    args = (origin.reshape(-1, 1, 1), step.reshape(-1, 1, 1), n_nodes)
    each = F.deposit_lines(weight, velocity, variance, *args)
    rows = torch.randint(0, 3, weight.shape[:2], generator=torch.Generator().manual_seed(1))
    shared = F.deposit_lines(weight, velocity, variance, *args, rows=rows, n_rows=3)
    expected = torch.zeros_like(shared)
    for b in range(weight.shape[0]):
        expected[b] = torch.zeros_like(shared[b]).index_add_(0, rows[b], each[b])
    np.testing.assert_allclose(shared, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [0.5, 1.0, 4.0])
def test_velocity_moments_shift_to_the_light_weighted_mean_over_a_cell(n):
    """The line of each sample sits at the light-weighted mean velocity of its cell: the
    midpoint value plus the shift matches a 201 x 201 point average over cells near the
    turnover of an arctan curve to third order (the shift alone is the leading error)."""
    r_eff, r_turn, v_max, sin_i = 3.0, 1.0, 200.0, math.sin(math.radians(60))
    b_n = F.sersic_bn(torch.tensor(n, dtype=D))

    def v_los(x, y):
        r = torch.hypot(x, y)
        return (2 / math.pi) * v_max * torch.atan(r / r_turn) * sin_i * x / r
    rng = np.random.default_rng(3)
    errors, shifts = [], []
    for _ in range(20):
        x0, y0 = rng.uniform(0.6, 3.0) * rng.choice([-1, 1]), rng.uniform(-2.5, 2.5)
        dx, dy = rng.uniform(0.1, 0.4), rng.uniform(0.1, 0.4)
        t = torch.linspace(-0.5, 0.5, 201, dtype=D)
        gx, gy = torch.meshgrid(x0 + dx * t, y0 + dy * t, indexing="ij")
        light = F.sersic(torch.hypot(gx, gy), 1.0, r_eff, n, b_n=b_n)
        exact = float((light * v_los(gx, gy)).sum() / light.sum())
        x, y = torch.tensor(x0, dtype=D), torch.tensor(y0, dtype=D)
        r = torch.hypot(x, y)
        q, dq = F.sersic_log_slope(r, r_eff, n, b_n)
        v = (2 / math.pi) * v_max * torch.atan(r / r_turn)
        dv = (2 / math.pi) * v_max * r_turn / (r_turn**2 + r**2)
        d2v = -(4 / math.pi) * v_max * r_turn * r / (r_turn**2 + r**2) ** 2
        share = 1 + F.midpoint_correction(x, y, r, dx, q, dq) + \
            F.midpoint_correction(y, x, r, dy, q, dq)
        shift, _ = F.velocity_moments(x, y, r, v, dv, d2v, sin_i, dx, dy, q, dq, share)
        centre = float(v_los(x, y))
        errors.append(abs(centre + float(shift) - exact))
        shifts.append(abs(centre - exact))
    assert max(errors) < 0.1 * max(shifts)
    assert max(errors) < 0.05          # km/s


def test_interpolate_linear_batched():
    xp = torch.tensor([[0.0, 1.0, 3.0], [0.0, 2.0, 4.0]], dtype=D)
    fp = torch.tensor([[0.0, 10.0, 30.0], [0.0, 5.0, 5.0]], dtype=D)
    x = torch.tensor([[0.5, 2.0, 9.0], [1.0, 3.0, -1.0]], dtype=D)
    out = F.interpolate_linear(x, xp, fp)
    np.testing.assert_allclose(out.numpy(), [[5, 20, 30], [2.5, 5, 0]])


def test_sky_to_disk_receding_axis_is_east_of_north():
    # a point 10" along PA = 90 deg (due east) lies on the receding major axis
    xi, eta = F.sky_to_disk(torch.tensor(10.0), torch.tensor(0.0), torch.tensor(0.0),
                            torch.tensor(0.0), torch.tensor(math.pi / 2))
    assert xi.item() == pytest.approx(10.0) and abs(eta.item()) < 1e-6


@pytest.mark.parametrize("n, r_eff, radius", [(1.0, 2.0, 0.5), (4.0, 3.0, 0.56), (0.5, 0.3, 1.0),
                                              (8.0, 0.01, 0.56)])
def test_sersic_central_spread_is_the_mean_squared_radius(n, r_eff, radius):
    """<r^2> of the light within a radius, against SciPy quadrature of the Sérsic law."""
    from scipy import integrate
    b = float(F.sersic_bn(n))

    def light(r, power):
        return r**power * np.exp(-b * ((r / r_eff) ** (1 / n) - 1))
    points = [min(r_eff, radius) * f for f in (1e-3, 1e-2, 0.1)]
    inner = integrate.quad(light, 0, radius, args=(3,), points=points, limit=200)[0]
    outer = integrate.quad(light, 0, radius, args=(1,), points=points, limit=200)[0]
    assert F.sersic_central_spread(radius, r_eff, n) == pytest.approx(inner / outer, rel=1e-6)


def test_midpoint_correction_is_confined_to_samples_clear_of_the_centre():
    """The series is applied in full a width or more from the centre, not at all within half
    a width (where a cusp's derivatives diverge), and zero-width samples (a batch's padding)
    give finite gradients."""
    r_eff, n = torch.tensor(2.0, dtype=D), torch.tensor(4.0, dtype=D)
    b_n = F.sersic_bn(n)
    width = 0.1
    along = torch.tensor([0.01, 0.04, 0.1, 0.3], dtype=D, requires_grad=True)
    across = torch.zeros(4, dtype=D)
    radius = torch.hypot(along, across)
    q, dq = F.sersic_log_slope(radius, r_eff, n, b_n)
    gated = F.midpoint_correction(along, across, radius, width, q, dq)
    series = width**2 / 24 * (q * q + dq)          # along the radius: Sigma'' / Sigma
    assert gated[0] == 0 and gated[1] == 0
    torch.testing.assert_close(gated[2:], series[2:])
    assert series[0] > 1                # what the centre's sample took before: more than itself
    padded = F.midpoint_correction(along, across, radius, torch.zeros(4, dtype=D), q, dq)
    (gated.sum() + padded.sum()).backward()
    assert torch.isfinite(along.grad).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_cell_multipoles_are_the_moments_of_light_spread_over_each_cell(seed):
    """Against Gauss-Legendre nodes across each square cell (exact for these polynomials)."""
    rng = np.random.default_rng(seed)
    weight = torch.tensor(rng.uniform(0.1, 2.0, (2, 3, 4, 5)), dtype=D)
    dx = torch.tensor(rng.uniform(-0.5, 0.5, (2, 1, 4, 1)), dtype=D)
    dy = torch.tensor(rng.uniform(-0.5, 0.5, (2, 1, 4, 1)), dtype=D)
    side = torch.tensor(rng.uniform(0.05, 1.0, (2, 1, 1, 1)), dtype=D)
    got = F.cell_multipoles(weight, dx, dy, side)
    assert got.shape == (2, 3, len(F.MULTIPOLES), 4, 5)
    t, w = np.polynomial.legendre.leggauss(4)
    u = side.numpy()[..., None, None] * t[:, None] / 2
    v = side.numpy()[..., None, None] * t[None, :] / 2
    ww = w[:, None] * w[None, :] / 4
    for k, (a, b) in enumerate(F.MULTIPOLES):
        mean = ((dx.numpy()[..., None, None] + u) ** a * (dy.numpy()[..., None, None] + v) ** b
                * ww).sum(axis=(-2, -1))
        np.testing.assert_allclose(got[:, :, k].numpy(), weight.numpy() * mean, rtol=1e-12)


def test_multipole_spectrum_places_light_within_its_pixel():
    """Points off their pixels' centres: the spectrum of the multipoles is the exact one,
    ``sum w exp(-2 pi i k.x) sinc(kx) sinc(ky)`` (the readout's box), to third order in
    ``k.d``: halving the offsets divides the error at a beam's frequencies by about 8 (a wrong
    sign or factor in any term would leave it first or second order)."""
    rng = np.random.default_rng(3)
    fft_shape = (15, 15)
    ky = np.fft.fftfreq(15)[:, None]
    kx = np.fft.rfftfreq(15)[None, :]
    low = np.hypot(kx, ky) < 0.2                       # where a beam of > 1.2 pixels passes
    errors = []
    for scale in (0.4, 0.2, 0.1):
        rows, cols = rng.integers(4, 11, 12), rng.integers(4, 11, 12)
        d = rng.uniform(-1, 1, (12, 2)) * scale
        w = rng.uniform(0.5, 1.5, 12)
        moments = torch.zeros((1, len(F.MULTIPOLES), 15, 15), dtype=D)
        for k, (a, b) in enumerate(F.MULTIPOLES):
            np.add.at(moments[0, k].numpy(), (rows, cols), w * d[:, 0] ** a * d[:, 1] ** b)
        got = F.multipole_spectrum(moments, fft_shape)[0].numpy()
        x, y = cols + d[:, 0], rows + d[:, 1]
        exact = (w[:, None, None] * np.exp(-2j * np.pi * (kx * x[:, None, None]
                                                          + ky * y[:, None, None]))).sum(0)
        exact = exact * np.sinc(kx) * np.sinc(ky)
        errors.append(np.abs(got - exact)[low].max() / w.sum())
    assert errors[0] < 0.02
    assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5
