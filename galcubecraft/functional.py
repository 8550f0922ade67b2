"""Pure torch kernels: the physics and the bookkeeping of the projector.

Every function here takes and returns plain tensors in the internal unit
system (:data:`galcubecraft.units.INTERNAL`): angles and disk-plane lengths in
*arcsec*, velocities in *km/s*, orientations in *radians*, line fluxes in
*Jy km/s*.  No function here knows about astropy units, files or plots; all
broadcast over leading (batch) dimensions and are differentiable.

Conventions
-----------
* Sky offsets are ``(east, north)`` in the tangent plane of the grid
  (``east`` grows towards increasing right ascension).
* The position angle is measured from north through east to the *receding*
  half of the major axis (the radio convention, as `radio_beam.Beam.pa`).
  :func:`sky_to_disk` is the single place where that angle is turned into
  disk-frame coordinates.
* The inclination is 0 for face-on and pi/2 for edge-on.
"""
import math

import numpy as np
import torch
from scipy.special import gammainc, gammaincinv, gammaln

__all__ = [
    "sersic_bn", "sersic_enclosing_radius", "sersic_central_spread", "sersic_total_flux",
    "sersic", "sersic_efold", "sersic_log_slope", "sersic_power",
    "midpoint_correction", "midpoint_corrections", "radial_directions", "exponential_vertical",
    "window_integral", "bin_window_integrals", "window_tail", "sparse_product", "deposit_rows",
    "sky_to_disk",
    "line_of_sight_velocity", "velocity_moments",
    "channel_cdf", "erf_at_edges", "line_nodes", "deposit_lines", "node_to_channel_matrix",
    "NODE_ACCUMULATOR", "node_accumulator", "node_weights",
    "beam_transfer_function", "convolve_beam", "beam_is_separable", "beam_matrices",
    "convolve_beam_separable", "read_pixels", "translate", "shift_phase", "point_share",
    "MULTIPOLES", "cell_multipoles", "multipole_factor", "multipole_spectrum", "from_spectrum",
    "interpolate_linear",
    "interpolate_pchip", "cloud_weights", "positive_mask", "pick",
]

_SQRT2 = math.sqrt(2.0)


# --------------------------------------------------------------------------- branches
def positive_mask(x):
    """Where ``x > 0``, as `pick` takes it: a pair of float tensors, 1.0 there and 0.0
    elsewhere, and its complement (no gradient)."""
    positive = x.detach().sign().clamp_(min=0.0)
    return positive, 1.0 - positive


def pick(mask, yes, no):
    """``torch.where(mask, yes, no)`` for branches that are finite by construction (their
    gradients too), with ``mask`` a pair as `positive_mask` gives it: ``yes * mask + no * (1 -
    mask)``, the same values (a zero may change its sign), and a zero gradient to the branch
    not taken.  On the CPU `torch.where` is slow (torch 2.13, one thread, 96,000 float32
    elements: 0.31 ms, against 0.035 ms for this and as much for `positive_mask`)."""
    return torch.addcmul(no * mask[1], yes, mask[0])


# --------------------------------------------------------------------------- Sérsic
class _SersicBn(torch.autograd.Function):
    """b_n solving P(2n, b_n) = 1/2 (regularised lower incomplete gamma), with its derivative."""

    @staticmethod
    def forward(n):
        # scipy's inverse of the regularised incomplete gamma function, on the CPU in float64
        # (a handful of values: one call, where Newton steps on a tensor cost dozens of
        # dispatches per galaxy, and on a GPU a device wait each), returned on n's device
        n64 = n.detach().to(device="cpu", dtype=torch.float64)
        b = torch.from_numpy(np.asarray(gammaincinv(2 * n64.numpy(), 0.5), dtype=np.float64))
        return b.to(device=n.device, dtype=n.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        (n,) = inputs
        ctx.save_for_backward(n, output)

    @staticmethod
    def backward(ctx, grad_b):
        n, b = ctx.saved_tensors
        a = 2 * n.detach().to(torch.float64)
        b64 = b.detach().to(torch.float64)
        # Implicit differentiation of P(2n, b) = 1/2:  db/dn = -2 dP/da / dP/db.
        eps = 1e-6 * torch.clamp(a, min=1.0)
        gammainc = torch.special.gammainc
        dp_da = (gammainc(a + eps, b64) - gammainc(a - eps, b64)) / (2 * eps)
        dp_db = torch.exp((a - 1) * torch.log(b64) - b64 - torch.lgamma(a))
        return grad_b * (-2 * dp_da / dp_db).to(grad_b.dtype)


def sersic_bn(n):
    """Exact Sérsic b_n, the root of P(2n, b_n) = 1/2: the one home of b_n.

    ``scipy.special.gammaincinv(2 * n, 0.5)`` (float64, to ~1e-15 relative); for a
    tensor, on the tensor's device and dtype and differentiable in ``n`` by implicit
    differentiation.

    Parameters
    ----------
    n : Tensor, float or ndarray
        Sérsic index (dimensionless, > 0).
    """
    if not isinstance(n, torch.Tensor):
        return gammaincinv(2 * np.asarray(n, dtype=float), 0.5)
    return _SersicBn.apply(n)


def sersic_enclosing_radius(fraction, r_eff, n):
    """The radius enclosing ``fraction`` of a Sérsic disk's light (NumPy; same unit as r_eff).

    ``r = r_eff (P^-1(2n, fraction) / b_n)^n``; ``fraction = 1 - 1e-6`` is where the
    projector cuts a disk.
    """
    n = np.asarray(n, dtype=float)
    return np.asarray(r_eff) * (gammaincinv(2 * n, fraction) / sersic_bn(n)) ** n


def sersic_central_spread(radius, r_eff, n):
    """Mean squared radius ``<r^2>`` of a Sérsic disk's light within ``radius`` (NumPy).

    ``r_eff^2 b_n^(-2n) Gamma(4n) P(4n, x) / (Gamma(2n) P(2n, x))`` with
    ``x = b_n (radius / r_eff)^(1/n)`` and ``P`` the regularised incomplete gamma function.
    """
    n = np.asarray(n, dtype=float)
    r_eff = np.asarray(r_eff, dtype=float)
    b_n = sersic_bn(n)
    x = b_n * (np.asarray(radius) / r_eff) ** (1 / n)
    ratio = gammainc(4 * n, x) / np.maximum(gammainc(2 * n, x), 1e-300)
    return r_eff**2 * b_n ** (-2 * n) * np.exp(gammaln(4 * n) - gammaln(2 * n)) * ratio


def sersic_total_flux(amplitude, r_eff, n, b_n=None):
    """Total flux of a Sérsic disk of surface brightness ``amplitude`` at ``r_eff``.

    ``L = 2 pi n r_eff^2 amplitude e^{b_n} Gamma(2n) / b_n^{2n}``
    (*amplitude* in flux per arcsec^2, *r_eff* in arcsec).
    """
    b = sersic_bn(n) if b_n is None else b_n
    log_norm = b + torch.lgamma(2 * n) - 2 * n * torch.log(b)
    return 2 * math.pi * n * r_eff**2 * amplitude * torch.exp(log_norm)


def sersic_power(radius, r_eff, n):
    """``(R / r_eff)^(1/n)``, which `sersic` and `sersic_log_slope` share (pass it to both as
    ``power`` where both are wanted: one power per sample instead of two)."""
    return (radius / r_eff) ** (1.0 / n)


def sersic(radius, amplitude, r_eff, n, b_n=None, power=None):
    """Sérsic surface brightness ``amplitude * exp(-b_n ((R/r_eff)^(1/n) - 1))``.

    Parameters
    ----------
    radius : Tensor
        Disk-plane radius (*arcsec*).
    amplitude : Tensor
        Surface brightness at ``r_eff`` (any flux per arcsec^2).
    r_eff : Tensor
        Effective (half-light) radius (*arcsec*).
    n : Tensor
        Sérsic index.
    b_n : Tensor, optional
        Precomputed :func:`sersic_bn` of ``n``.
    power : Tensor, optional
        Precomputed :func:`sersic_power` of ``radius``.
    """
    if b_n is None:
        b_n = sersic_bn(n)
    if power is None:
        power = sersic_power(radius, r_eff, n)
    return amplitude * torch.exp(-b_n * (power - 1.0))


def sersic_efold(radius, r_eff, n, b_n):
    """The e-folding length of a Sérsic disk's light at ``radius``, ``-1 / (d ln Sigma / dR)``
    ``= n R / (b_n (R / r_eff)^(1/n))`` (tensors or NumPy arrays; same unit as ``radius``)."""
    return n * radius / (b_n * sersic_power(radius, r_eff, n))


def sersic_log_slope(radius, r_eff, n, b_n, power=None):
    """``d ln Sigma / dR`` of a Sérsic disk and its radial derivative (1/arcsec, 1/arcsec^2).

    ``q = -(b_n / (n R)) (R / r_eff)^(1/n)`` and ``dq/dR = q (1/n - 1) / R``; ``power``: a
    precomputed `sersic_power` of ``radius``.
    """
    if power is None:
        power = sersic_power(radius, r_eff, n)
    q = (-b_n / n) * power / radius
    return q, q * (1.0 / n - 1.0) / radius


def midpoint_correction(along, across, radius, width, q, dq, taper=None):
    """The midpoint rule's leading term for a radial profile ``Sigma(R) T(R)`` along a direction.

    A sample standing for a width ``w`` along a disk-plane direction (coordinates ``along``,
    ``across`` it, ``radius = hypot``) underestimates the integral of a convex profile by
    ``w^2 / 24`` times its second derivative there.  Returned divided by ``Sigma``:
    ``w^2 / 24 (K T + 2 q_s T_s + T_ss)`` with ``q = d ln Sigma / dR``, ``dq`` its
    derivative (`sersic_log_slope`), ``K = Sigma_ss / Sigma`` and ``taper = (T, T_R, T_RR)``
    (None: ``T = 1``).  The projector adds it to each sample's ``T``
    (`midpoint_corrections`, both directions of a sample at once).
    """
    return midpoint_corrections(along, across, radius, width, None, q, dq, taper)[0]


def radial_directions(x, y, radius):
    """``(1 / R, x / R, y / R, (x / R)^2, (y / R)^2)`` at disk-plane points ``(x, y)`` of
    ``radius``: what `midpoint_corrections` and `velocity_moments` both need (pass it to
    both as ``directions``: one set for a sample, not two)."""
    inv_r = 1.0 / radius
    c, s = x * inv_r, y * inv_r
    return inv_r, c, s, c * c, s * s


def midpoint_corrections(x, y, radius, dx, dy, q, dq, taper=None, directions=None):
    """`midpoint_correction` along both disk-plane directions of a sample ``dx`` by ``dy``
    (``dy`` None: along ``x`` only), sharing their terms: a tuple, along ``x`` then ``y``.
    ``directions``: `radial_directions` of the sample, where the caller has it.

    With ``c`` the direction's cosine to the radius and ``s`` the other's, the second
    derivative of ``Sigma T`` along it over ``Sigma`` is
    ``c^2 ((q^2 + dq) T + 2 q T_R + T_RR) + s^2 (q T + T_R) / R``.
    """
    inv_r, _, _, cx2, cy2 = radial_directions(x, y, radius) if directions is None \
        else directions
    if taper is None:
        radial, tangential = torch.addcmul(dq, q, q), q * inv_r
    else:
        t, t_r, t_rr = taper
        radial = torch.addcmul(torch.addcmul(dq, q, q) * t, q, t_r, value=2.0) + t_rr
        tangential = torch.addcmul(t_r, q, t) * inv_r
    out = []
    for width, c2, s2 in ((dx, cx2, cy2), (dy, cy2, cx2)):
        if width is None:
            continue
        correction = torch.addcmul(c2 * radial, s2, tangential) * (width * width / 24.0)
        # the series holds where the sample keeps away from the centre.  On a sample that
        # holds the centre, the light peaks within it, so the midpoint can only overestimate
        # it: a positive term there (a cusp's, which diverges) is phased out within one width
        # of the centre (none within half of one); a negative one (a cone's apex, n = 1) is
        # kept.  Zero-width samples, the padding of a batch, divide by one instead.
        width = torch.as_tensor(width, dtype=radius.dtype, device=radius.device)
        safe = pick(positive_mask(width), width, 1.0)
        gate = torch.clamp(2.0 * radius / safe - 1.0, 0.0, 1.0)
        # (gate <= 1: the gated term where it is positive, the term itself where negative)
        out.append(torch.minimum(correction, gate * correction))
    return tuple(out)


def exponential_vertical(z, scale_height):
    """Normalised exponential vertical profile ``exp(-|z|/h) / (2 h)`` (*z*, *h* in arcsec)."""
    return torch.exp(-torch.abs(z) / scale_height) / (2 * scale_height)


def _laplace_points(x, inv):
    """What the Laplace law's antiderivatives need at points ``x`` measured from its edge
    (``inv = 1 / lam``): ``x``, ``expm1(-|x| / lam)`` (in [-1, 0] however far ``x`` lies:
    ``e^{-x/lam}`` beyond the edge and ``e^{x/lam}`` before it are one plus it, and it is
    their ``expm1`` near it), whether ``x >= 0`` (1.0 or 0.0, and its complement: branches
    are picked with `pick`), and ``max(x, 0)``."""
    beyond = x.detach().sign().add_(1.0).clamp_(max=1.0)
    return x, torch.expm1(-x.abs() * inv), (beyond, 1.0 - beyond), x.clamp_min(0)


def _cut(points, part):
    """`_laplace_points` at the points ``part`` (a slice) of the last dimension."""
    return tuple(tuple(u[..., part] for u in t) if isinstance(t, tuple) else t[..., part]
                 for t in points)


def _bin_terms(w, lam, second):
    """What the antiderivatives' differences over bins of width ``w`` share: ``w``, the
    constant of the branch beyond the edge, ``scaled_em`` (``lam/2 expm1(-w / lam)``, times
    ``lam`` for the ``second`` antiderivative) and its negative."""
    if second:
        scaled_em = (0.5 * lam * lam) * torch.expm1(-w / lam)
        return w, w * (0.5 * w) - scaled_em, scaled_em, -scaled_em
    scaled_em = (0.5 * lam) * torch.expm1(-w / lam)
    return w, w + scaled_em, scaled_em, -scaled_em


def _delta_laplace_antiderivative(start, end, terms, lam):
    """``Lambda(b) - Lambda(a)`` over a bin (``start``, ``end``: `_laplace_points` at ``a``
    and ``b = a + w``; ``terms``: `_bin_terms`) for ``Lambda(x) = int_{-inf}^x L(t) dt``, L
    the Laplace CDF.

    ``Lambda(x) = lam/2 e^{x/lam}`` for x < 0 and ``x + lam/2 e^{-x/lam}`` for x >= 0.
    Written so that no branch overflows or cancels catastrophically, whatever the ratio of
    ``w`` (>= 0) to ``lam`` (> 0).
    """
    _, ea, a_beyond, _ = start
    _, eb, b_beyond, bp = end
    _, base, scaled_em, negative = terms
    beyond = torch.addcmul(base, ea, scaled_em)                       # w + (1 + ea) em
    before = torch.addcmul(negative, eb, scaled_em, value=-1)         # -(1 + eb) em
    across = torch.addcmul(bp, eb - ea, 0.5 * lam)
    return pick(a_beyond, beyond, pick(b_beyond, across, before))


def _delta_laplace_second_antiderivative(start, end, terms, lam):
    """``Lambda2(b) - Lambda2(a)`` over a bin (arguments as for
    `_delta_laplace_antiderivative`, ``terms`` those of the second antiderivative) for
    ``Lambda2(x) = int_{-inf}^x Lambda(t) dt``: the integral over the bin of a unit ramp
    ``max(x, 0)`` smoothed by the Laplace law.

    ``Lambda2(x) = lam^2/2 e^{x/lam}`` for x < 0 and ``x^2/2 + lam^2 - lam^2/2 e^{-x/lam}``
    for x >= 0; each branch written without overflow or cancellation within it.
    """
    a, ea, a_beyond, _ = start
    _, eb, b_beyond, bp = end
    w, base, scaled_em, negative = terms
    # w (a + w/2) - (1 + ea) em
    beyond = torch.addcmul(torch.addcmul(base, ea, scaled_em, value=-1), w, a)
    before = torch.addcmul(negative, eb, scaled_em, value=-1)         # -(1 + eb) em
    across = torch.addcmul((ea + eb) * (-0.5 * lam * lam), bp, bp, value=0.5)
    return pick(a_beyond, beyond, pick(b_beyond, across, before))


def _window_corners(y1, y2, ramp):
    """The points at which a window's antiderivatives are differenced, with their signs: the
    box's edges ``y1`` (+) and ``y2`` (-), or, with ``ramp``, the trapezoid's four corners
    (a second difference over the ramp, divided by it)."""
    if ramp is None:
        return ((y1, 1.0), (y2, -1.0))
    half = 0.5 * ramp
    return ((y1 - half, 1.0), (y1 + half, -1.0), (y2 - half, -1.0), (y2 + half, 1.0))


def window_integral(a1, a2, w, lam, ramp=None):
    """Integral over a bin of width ``w`` of the vertical window ``L(Y - y1) - L(Y - y2)``.

    ``a1 = start - y1`` and ``a2 = start - y2`` are the bin start relative to
    the window's box edges; ``lam`` is the Laplace scale ``h tan i`` (all in
    *arcsec* along the disk's minor axis).  For ``lam -> 0`` this is the
    overlap of the bin with the box ``[y1, y2]``.

    With ``ramp``, the box is convolved with a narrower box of that width (normalised: a
    trapezoid whose edges rise linearly over ``ramp``, the footprint of a square cell seen
    at an angle), exactly.  Its rounding error grows as ``(|a| + lam) / ramp``: keep ``ramp``
    above ~1e-3 of the bins' span (a trapezoid's change of width by that much changes the
    window by ~1e-6).  `bin_window_integrals` gives those of many contiguous bins at once.
    """
    inv = 1.0 / lam
    second = ramp is not None
    delta = _delta_laplace_second_antiderivative if second else _delta_laplace_antiderivative
    terms = _bin_terms(w, lam, second)
    total = None
    # the corners measured from the bin's start (y1 - start = -a1); the first's sign is +
    for corner, sign in _window_corners(-a1, -a2, ramp):
        part = delta(_laplace_points(-corner, inv), _laplace_points(w - corner, inv), terms,
                     lam)
        total = part if total is None else torch.add(total, part, alpha=sign)
    return total / ramp if second else total


def bin_window_integrals(edges, y1, y2, lam, ramp=None):
    """`window_integral` over each of the contiguous bins between ``edges`` (last dimension
    M + 1, non-decreasing), and the window itself at each edge: a pair of tensors (..., M)
    and (..., M + 1).

    The antiderivatives' differences need the Laplace law only at the bins' edges
    (`_laplace_points`), which neighbouring bins share: one exponential per edge and corner of
    the window, against two per bin for `window_integral` (whose terms it shares).  The window
    at a point is the first antiderivative's difference over the corners (the Laplace CDF's
    for the box, less its constant half; ``max(x, 0) + lam/2 expm1(-|x| / lam)`` for the
    trapezoid, divided by the ramp), from the same exponentials.  ``y1``, ``y2``, ``lam`` and
    ``ramp`` broadcast against ``edges`` without its last dimension.
    """
    width = edges[..., 1:] - edges[..., :-1]
    inv = 1.0 / lam
    second = ramp is not None
    delta = _delta_laplace_second_antiderivative if second else _delta_laplace_antiderivative
    terms = _bin_terms(width, lam, second)
    full = value = None
    for corner, sign in _window_corners(y1, y2, ramp):          # the first's sign is +
        points = _laplace_points(edges - corner, inv)
        whole = delta(_cut(points, slice(None, -1)), _cut(points, slice(1, None)), terms, lam)
        _, folded, beyond, positive = points
        # the constants (1/2, lam/2) cancel over the corners, whose signs sum to zero
        here = (torch.addcmul(positive, folded, 0.5 * lam) if second else
                folded * (0.5 - beyond[0]))
        full = whole if full is None else torch.add(full, whole, alpha=sign)
        value = here if value is None else torch.add(value, here, alpha=sign)
    return (full / ramp, value / ramp) if second else (full, value)


def _lower_ramp_tail(a, lam, ramp):
    """The integral below a point ``a`` before a ramped edge (``a <= -ramp / 2``) of the
    smoothed step of `window_integral`'s trapezoid (``ramp`` None: a sharp step)."""
    if ramp is None:
        return 0.5 * lam * torch.exp(a.clamp_max(0) / lam)
    return (0.5 * lam * lam / ramp * torch.exp((a + 0.5 * ramp).clamp_max(0) / lam)
            * -torch.expm1(-ramp / lam))


def window_tail(a1, a2, lam, side, ramp=None):
    """Integral of the window beyond a point outside its box (``side`` 'lower' or 'upper').

    For 'lower', ``a1, a2 < 0`` (the point lies below the box); for 'upper'
    ``a1, a2 >= 0``; with ``ramp`` (`window_integral`'s trapezoid), the point lies beyond the
    ramps too (``a1, a2 <= -ramp / 2``, or ``>= ramp / 2``).
    """
    if side == "lower":
        return _lower_ramp_tail(a1, lam, ramp) - _lower_ramp_tail(a2, lam, ramp)
    # the upper tail is the lower one of the window reflected about the point
    return _lower_ramp_tail(-a2, lam, ramp) - _lower_ramp_tail(-a1, lam, ramp)


# --------------------------------------------------------------------------- geometry
def sky_to_disk(east, north, x0, y0, position_angle):
    """Rotate sky offsets into the galaxy's major/minor-axis frame.

    Parameters
    ----------
    east, north : Tensor
        Sky offsets from the grid centre (*arcsec*).
    x0, y0 : Tensor
        Galaxy centre as (east, north) offsets (*arcsec*).
    position_angle : Tensor
        East of north to the receding major axis (*rad*).

    Returns
    -------
    xi, eta : Tensor
        ``xi`` along the receding major axis, ``eta`` along the minor axis (*arcsec*).
    """
    de, dn = east - x0, north - y0
    s, c = torch.sin(position_angle), torch.cos(position_angle)
    xi = de * s + dn * c
    eta = -de * c + dn * s
    return xi, eta


def line_of_sight_velocity(x_disk, radius, v_circ, v_sys, sin_i):
    """``v_sys + v_c(R) sin(i) cos(phi)`` with ``cos(phi) = x_disk / R`` (*km/s*).

    ``sin_i`` is the sine of the inclination (computed once per batch by the caller).
    """
    return v_sys + v_circ * sin_i * x_disk / radius


def interpolate_linear(x, xp, fp):
    """Piecewise-linear interpolation of ``fp(xp)`` at ``x``, constant beyond the ends.

    ``xp`` and ``fp`` have shape ``(..., K)`` with ``xp`` increasing; their
    leading dimensions are the leading (batch) dimensions of ``x``.
    Differentiable in ``x`` and ``fp``.
    """
    lead = xp.shape[:-1]
    xf = x.reshape(*lead, -1) if lead else x.reshape(-1)
    xc = torch.minimum(torch.maximum(xf, xp[..., :1]), xp[..., -1:])
    idx = torch.searchsorted(xp.contiguous(), xc.contiguous(), right=True)
    idx = idx.clamp(1, xp.shape[-1] - 1)
    x0, x1 = torch.gather(xp, -1, idx - 1), torch.gather(xp, -1, idx)
    f0, f1 = torch.gather(fp, -1, idx - 1), torch.gather(fp, -1, idx)
    t = (xc - x0) / (x1 - x0)
    return (f0 + t * (f1 - f0)).reshape(x.shape)


def _pchip_slopes(xp, fp):
    """Node slopes of the monotone cubic (Fritsch & Carlson 1980, with the end conditions of
    `scipy.interpolate.PchipInterpolator`)."""
    h = xp[..., 1:] - xp[..., :-1]
    delta = (fp[..., 1:] - fp[..., :-1]) / h
    if xp.shape[-1] == 2:
        return torch.cat([delta, delta], dim=-1)
    h0, h1 = h[..., :-1], h[..., 1:]
    d0, d1 = delta[..., :-1], delta[..., 1:]
    w1, w2 = 2 * h1 + h0, h1 + 2 * h0
    same = (d0 * d1) > 0
    safe0 = torch.where(same, d0, torch.ones_like(d0))
    safe1 = torch.where(same, d1, torch.ones_like(d1))
    inner = torch.where(same, (w1 + w2) / (w1 / safe0 + w2 / safe1), torch.zeros_like(d0))

    def edge(ha, hb, da, db):
        d = ((2 * ha + hb) * da - ha * db) / (ha + hb)
        d = torch.where(torch.sign(d) != torch.sign(da), torch.zeros_like(d), d)
        return torch.where((torch.sign(da) != torch.sign(db)) & (d.abs() > 3 * da.abs()),
                           3 * da, d)
    first = edge(h[..., :1], h[..., 1:2], delta[..., :1], delta[..., 1:2])
    last = edge(h[..., -1:], h[..., -2:-1], delta[..., -1:], delta[..., -2:-1])
    return torch.cat([first, inner, last], dim=-1)


def interpolate_pchip(x, xp, fp):
    """Monotone piecewise-cubic (PCHIP) interpolation of ``fp(xp)`` at ``x``, clamped to the
    end values beyond the table.

    As `scipy.interpolate.PchipInterpolator`: C1, no overshoot, a node table's local
    extrema kept.  Shapes as :func:`interpolate_linear`; differentiable in ``x`` and ``fp``.
    """
    lead = xp.shape[:-1]
    xf = x.reshape(*lead, -1) if lead else x.reshape(-1)
    xc = torch.minimum(torch.maximum(xf, xp[..., :1]), xp[..., -1:])
    idx = torch.searchsorted(xp.contiguous(), xc.contiguous(), right=True)
    idx = idx.clamp(1, xp.shape[-1] - 1)
    slopes = _pchip_slopes(xp, fp)
    x0, x1 = torch.gather(xp, -1, idx - 1), torch.gather(xp, -1, idx)
    f0, f1 = torch.gather(fp, -1, idx - 1), torch.gather(fp, -1, idx)
    m0, m1 = torch.gather(slopes, -1, idx - 1), torch.gather(slopes, -1, idx)
    h = x1 - x0
    t = (xc - x0) / h
    t2, t3 = t * t, t * t * t
    out = ((2 * t3 - 3 * t2 + 1) * f0 + (t3 - 2 * t2 + t) * h * m0
           + (-2 * t3 + 3 * t2) * f1 + (t3 - t2) * h * m1)
    return out.reshape(x.shape)


def cloud_weights(position, width):
    """Where a box of ``width`` pixels (<= 1) centred at ``position`` falls on unit pixels.

    Pixel ``k`` spans ``[k - 1/2, k + 1/2]``.  Returns ``(first, w_first)``: the box lies in
    pixels ``first`` and ``first + 1`` with shares ``w_first`` and ``1 - w_first``.  With
    ``width = 1`` these are the cloud-in-cell (bilinear) weights, which keep each sample's
    flux and centroid; the pixels then hold the sky convolved with a unit tent, which the
    beam's readout undoes (``cloud`` of :func:`beam_matrices`).  Differentiable in
    ``position``.
    """
    low = position - 0.5 * width
    with torch.no_grad():
        first = torch.floor(low + 0.5)
    share = ((first + 0.5 - low) / width).clamp(0.0, 1.0)
    return first.long(), share


def velocity_moments(x_disk, y_disk, radius, v_circ, dv_dr, d2v_dr2, sin_i, dx, dy, q, dq,
                     share, taper=None, directions=None):
    """Mean and variance of the line-of-sight velocity over a ``dx`` by ``dy`` disk-plane
    cell, weighted by the light ``Sigma T``: ``(shift, variance)`` (*km/s*, *(km/s)^2*).

    The velocity field ``v = v_c(R) sin i x / R`` is expanded about the cell's centre.  The
    shift of the mean from the central value is the midpoint rule's leading term, per
    direction ``s`` of width ``w``: ``w^2 / 24 (T v_ss + 2 (q_s T + T_s) v_s)`` divided by
    the sample's share (``T`` plus its flux correction, `midpoint_correction`): the
    curvature of the velocity field (the turnover of the rotation curve) and its
    correlation with the light's gradient.  It is bounded by the half-range of the linear
    field over the cell.  The variance is the linear field's, ``v_s^2 w^2 / 12`` per
    direction: added to the dispersion it makes each sample's line stand for its whole
    cell, which removes the leading error of point sampling where the velocity field is
    steep.  ``q``, ``dq`` as `sersic_log_slope`; ``taper = (T, T_R, T_RR)`` as
    `midpoint_correction` (None: ``T = 1``); ``directions``: `radial_directions` of the
    sample, where the caller has it.
    """
    # the field's derivatives over sin i (which scales the shift and, squared, the variance)
    inv_r, c, s, c2, s2 = radial_directions(x_disk, y_disk, radius) if directions is None \
        else directions
    cs2 = c * s2
    c3 = c2 * c
    v_r = v_circ * inv_r
    shear = dv_dr - v_r
    omega_r = shear * inv_r                          # d(v_c / R)/dR
    v_x = torch.addcmul(dv_dr * c2, v_r, s2)
    v_y = c * s * shear
    v_xx = torch.addcmul(d2v_dr2 * c3, omega_r, cs2, value=3.0)
    v_yy = torch.addcmul(d2v_dr2 * cs2, omega_r, torch.add(c3, cs2, alpha=-2.0))
    if taper is None:
        g = 2 * q
    else:
        t, t_r, _ = taper
        g = 2 * torch.addcmul(t_r, q, t)
        v_xx, v_yy = t * v_xx, t * v_yy
    dx2 = dx * dx
    dy2 = torch.as_tensor(dy * dy, dtype=radius.dtype, device=radius.device)
    along = torch.addcmul(v_xx, g * c, v_x) * dx2
    num = torch.addcmul(along, torch.addcmul(v_yy, g * s, v_y), dy2) * (sin_i / 24.0)
    positive = positive_mask(share - 1e-6)
    shift = num / pick(positive, share, 1.0) * positive[0]
    variance = torch.addcmul(v_x * v_x * dx2, v_y * v_y, dy2) * (sin_i * sin_i / 12.0)
    # (held off zero: the square root's slope there is infinite, and a Hessian would carry
    # it as 0 x inf)
    bound = torch.sqrt((3.0 * variance).clamp_min(1e-30))
    return torch.clamp(shift, -bound, bound), variance


# --------------------------------------------------------------------------- spectral
def channel_cdf(edges, velocity, dispersion):
    """Cumulative Gaussian line profile evaluated at the channel edges.

    ``0.5 * erf((edge - v) / (sqrt(2) sigma))``; the fraction of the line in
    channel ``j`` is the difference between consecutive edges, exact for any
    dispersion and channel width.  ``edges`` (E,) broadcasts against a new
    trailing dimension of ``velocity`` and ``dispersion``; *km/s* throughout.
    """
    return 0.5 * erf_at_edges(edges, velocity, dispersion)


def erf_at_edges(edges, velocity, dispersion, out=None):
    """``erf((edge - v) / (sqrt(2) sigma))`` for every sample and edge.

    The result has shape ``velocity.shape + (E,)``.  ``edges`` is ``(E,)``, or
    ``(B, E)`` with one row per leading index of ``velocity`` (a galaxy's channels seen
    from its rest frame).  This is the largest tensor the projector makes: outside
    autograd it can be written into a reused buffer ``out`` (at least
    ``velocity.numel() * E`` elements), which saves the page faults of a fresh
    allocation of tens of MB per chunk.
    """
    n_edges = edges.shape[-1]
    rows = edges.reshape(-1, 1, n_edges)
    inv = (1.0 / (_SQRT2 * dispersion)).reshape(rows.shape[0], -1, 1)
    shape = velocity.shape
    n = velocity.numel() * n_edges
    if out is None or torch.is_grad_enabled():
        arg = (rows - velocity.reshape(rows.shape[0], -1, 1)) * inv
        return torch.erf(arg).reshape(*shape, n_edges)
    buf = out[:n].view(rows.shape[0], -1, n_edges)
    torch.sub(rows, velocity.reshape(rows.shape[0], -1, 1), out=buf)
    buf.mul_(inv)
    torch.erf_(buf)
    return buf.view(*shape, n_edges)


#: Least half-width of a deposited box, in node spacings: keeps 1/width bounded (float32-safe);
#: its variance is taken out of the node-to-channel kernel, so second moments stay exact.
_MIN_BOX = 0.25
#: Nodes reach this many kernel sigmas beyond the outermost channel edges.
_NODE_REACH = 6.0


def line_nodes(edges, dispersion, nodes_per_sigma):
    """A uniform velocity grid per galaxy for :func:`deposit_lines`.

    ``edges`` is ``(E,)``, or ``(B, E)`` for each galaxy's own channel edges.
    Node ``k`` of galaxy ``b`` is at ``origin[b] + k * step[b]`` with
    ``step = dispersion / nodes_per_sigma``; the nodes cover the channel edges
    and ``6 sigma`` beyond them, plus two spare nodes at each end that catch
    whatever falls outside (they are left out of the kernel).  Returns
    ``(origin, step, n_nodes)`` (*km/s*, tensors of shape ``(batch,)``, int).
    """
    lo, step, reach, counts = _node_grid(edges, dispersion, nodes_per_sigma)
    return lo - reach - 2 * step, step, int(counts.max())


def line_node_counts(edges, dispersion, nodes_per_sigma):
    """Each galaxy's own number of velocity nodes in :func:`line_nodes` (the batch's grid has
    the most of them): a tensor of shape ``(batch,)``."""
    return _node_grid(edges, dispersion, nodes_per_sigma)[3]


def _node_grid(edges, dispersion, nodes_per_sigma):
    """The lowest edge, node step, reach beyond the edges and node count of each galaxy."""
    step = dispersion / nodes_per_sigma
    lo, hi = edges.amin(dim=-1), edges.amax(dim=-1)
    reach = _NODE_REACH * dispersion + 2 * step
    return lo, step, reach, torch.ceil((hi - lo + 2 * reach) / step) + 5


def _cubic_bspline(t):
    """Uniform cubic B-spline weights of the four nodes around a point ``t`` (``0 <= t < 1``)
    past the second of them."""
    t2 = t * t
    t3 = t2 * t
    return ((1 - t) ** 3 / 6, 2.0 / 3 - t2 + 0.5 * t3, 1.0 / 6 + 0.5 * (t + t2 - t3), t3 / 6)


def deposit_lines(weight, velocity, variance, origin, step, n_nodes, rows=None, n_rows=None,
                  out=None):
    """Spread each sample's flux over a uniform velocity grid, keeping its first two moments.

    A sample of flux ``weight`` at ``velocity`` whose velocities are spread with
    ``variance`` (the velocity field across the area it stands for) is a box of
    that variance (at least ``_MIN_BOX`` node spacings wide) convolved with the
    quadratic B-spline of the grid (variance ``step^2 / 4``), evaluated at the
    nodes: the nodes' weights add up to the flux, their mean is the velocity and
    their variance ``variance + step^2 (1/4 + _MIN_BOX^2 / 3)`` exactly, for any
    position between nodes.  :func:`node_to_channel_matrix` takes the added
    variance back out of the Gaussian it applies.

    The node weights are the running sum of ``c B3(lo) - c B3(hi)``, with ``B3``
    the cubic B-spline weights at the box's ends and ``c`` its height, so each
    box costs eight scatters and a share of one cumulative sum, whatever its
    width.  The differences are accumulated in `NODE_ACCUMULATOR` (float64) whatever the
    input's dtype: a rounding error left in a running sum persists at every later node, and
    in float32 the ~1e5 samples of one pixel's row lost or gained up to 0.25% of a point
    source's flux that way.  Boxes are clipped to the grid (its end nodes lie six kernel sigmas
    beyond the band).  ``weight``, ``velocity``, ``variance`` have shape
    ``(B, P, ...)``; ``origin``, ``step`` broadcast against them.  Returns
    ``(B, P, n_nodes)``, or with ``rows`` (B, P) ``(B, n_rows, n_nodes)``: point ``p``'s
    samples summed into row ``rows[:, p]``, in ``weight``'s dtype.  Differentiable (the
    weights are C2 in the velocity).  With ``out`` (a flat `NODE_ACCUMULATOR` tensor of
    ``B * n_rows * n_nodes`` elements, `node_accumulator`) the node weights' differences are
    added to it and it is returned, not yet summed: depositing many chunks then costs one
    cumulative sum, `node_weights`.
    """
    batch, n_pix = weight.shape[:2]
    w = weight.reshape(batch, n_pix, -1)
    centre = ((velocity - origin) / step).reshape(batch, n_pix, -1)
    half = torch.sqrt(3 * variance / step**2 + _MIN_BOX**2).reshape(batch, n_pix, -1)
    c = (w / (2 * half)).reshape(-1)
    if rows is None:
        rows, n_rows = torch.arange(n_pix, device=w.device).expand(batch, n_pix), n_pix
    flat = node_accumulator(batch * n_rows * n_nodes, w) if out is None else out
    # one row of differences per galaxy: the scatters run in parallel over the batch
    diff = flat.view(batch, n_rows * n_nodes)
    base = (rows * n_nodes).reshape(batch, n_pix, 1)
    grad = torch.is_grad_enabled()
    # without autograd each term is written, in the accumulator's dtype, into one buffer
    term = None if grad else torch.empty(c.shape, dtype=NODE_ACCUMULATOR, device=c.device)
    for end, height in ((centre - half, c), (centre + half, -c)):
        shifted = end.clamp(1.5, n_nodes - 3.5) - 0.5
        with torch.no_grad():
            first = torch.floor(shifted)                 # the first of the four nodes
            index = (base + first.long()).reshape(batch, -1)
        for j, b in enumerate(_cubic_bspline(shifted - first)):
            if not grad:
                torch.mul(height, b.reshape(-1), out=term)
                # node j of four: the view from j
                diff[:, j:].scatter_add_(1, index, term.view(batch, -1))
                continue
            term = (height * b.reshape(-1)).to(NODE_ACCUMULATOR).view(batch, -1)
            if out is not None:
                diff = diff.scatter_add(1, index + j, term)
            else:
                diff.scatter_add_(1, index + j, term)
    if out is not None:
        return diff.reshape(-1)
    return node_weights(diff, batch, n_rows, n_nodes, w.dtype)


#: The dtype in which `deposit_lines` accumulates its running sums.
NODE_ACCUMULATOR = torch.float64


def node_accumulator(size, like):
    """A zeroed flat `NODE_ACCUMULATOR` buffer of ``size`` elements on ``like``'s device, for
    the ``out`` of `deposit_lines`."""
    return torch.zeros(size, dtype=NODE_ACCUMULATOR, device=like.device)


def node_weights(diff, batch, n_rows, n_nodes, dtype):
    """The node weights ``(batch, n_rows, n_nodes)`` in ``dtype`` from the differences
    `deposit_lines` accumulated (its running sum, taken in `NODE_ACCUMULATOR`)."""
    return torch.cumsum(diff.reshape(batch, n_rows, n_nodes), dim=-1).to(dtype)


def node_to_channel_matrix(edges, origin, step, n_nodes, dispersion):
    """Fraction of a Gaussian line at each node of :func:`line_nodes` that falls in each channel.

    ``(B, n_nodes, n_chan)``: ``Phi((e_{c+1} - u_k) / s) - Phi((e_c - u_k) / s)`` with
    ``s^2 = dispersion^2 - step^2 (1/4 + _MIN_BOX^2 / 3)`` (the variance the deposit
    added), zero for the spare nodes at the ends.
    """
    k = torch.arange(n_nodes, device=edges.device, dtype=edges.dtype)
    nodes = origin.reshape(-1, 1) + step.reshape(-1, 1) * k                 # (B, K)
    var = dispersion**2 - step**2 * (0.25 + _MIN_BOX**2 / 3)
    inv = 1.0 / (_SQRT2 * torch.sqrt(var)).reshape(-1, 1, 1)
    cdf = 0.5 * torch.erf((edges.reshape(-1, 1, edges.shape[-1]) - nodes.unsqueeze(-1)) * inv)
    frac = cdf[..., 1:] - cdf[..., :-1]
    real = ((k >= 2) & (k < n_nodes - 2)).to(frac.dtype).reshape(1, -1, 1)
    return frac * real


# --------------------------------------------------------------------------- beam
def beam_transfer_function(fft_shape, sigma_major, sigma_minor, angle, *, step=1,
                           sampling="average", shift=None, cloud=0.0, device=None,
                           dtype=torch.float32):
    """Fourier transform of a unit-sum elliptical Gaussian on an ``rfft2`` grid.

    Parameters
    ----------
    fft_shape : tuple of int
        ``(ny, nx)`` of the (padded) image that will be transformed.
    sigma_major, sigma_minor : float
        Gaussian standard deviations in *pixels*.
    angle : float
        Angle of the major axis counter-clockwise from the +x (column) axis,
        *rad*.  For a sky position angle PA east of north on an image with
        east to the left this is ``pi/2 + PA`` (as `radio_beam.Beam.as_kernel`).
    step, sampling :
        As in :func:`beam_matrices`: with ``sampling='point'`` the transform also
        undoes the pixels' box and moves the result to the centres of blocks of
        ``step`` pixels (complex when ``step`` is even); pick the samples with
        :func:`read_pixels`.
    shift : tuple of Tensor, optional
        ``(dy, dx)``, ``(batch,)`` each: also move image ``b`` by ``dy`` rows and ``dx``
        columns (:func:`translate`); the transform is then ``(batch, 1, ky, kx)``.
    cloud : float
        As in :func:`beam_matrices`.

    Notes
    -----
    The transform of a normalised Gaussian is
    ``exp(-2 pi^2 k^T C k)`` with ``C`` the covariance matrix; its value at
    k = 0 is exactly 1, so convolution conserves flux to rounding.
    """
    ny, nx = fft_shape
    ky = torch.fft.fftfreq(ny, device=device, dtype=torch.float64)[:, None]
    kx = torch.fft.rfftfreq(nx, device=device, dtype=torch.float64)[None, :]
    cxx, cyy, cxy = _beam_covariance(sigma_major, sigma_minor, angle)
    quad = cxx * kx**2 + 2 * cxy * kx * ky + cyy * ky**2
    transfer = torch.exp(-2 * math.pi**2 * quad)
    if sampling == "point":
        transfer = transfer * _point_readout(ky, step) * _point_readout(kx, step)
    if cloud:
        transfer = transfer / (torch.sinc(cloud * ky) * torch.sinc(cloud * kx))
    if shift is not None:
        dy, dx = (torch.as_tensor(d, device=device).to(torch.float64) for d in shift)
        transfer = transfer * shift_phase(fft_shape, dy, dx, inner=1)
    if transfer.is_complex():
        return transfer.to(torch.complex128 if dtype == torch.float64 else torch.complex64)
    return transfer.to(dtype)


def _point_readout(freq, step):
    """Fourier factor from pixel integrals (a unit box) to point values at the centre of
    blocks of ``step`` pixels: 1 / sinc, and a half-pixel shift when ``step`` is even."""
    readout = 1 / torch.sinc(freq)
    shift = (step - 1) / 2 % 1
    return readout * torch.exp(2j * math.pi * shift * freq) if shift else readout


def read_pixels(images, crop, step, shape, sampling):
    """What the output pixels hold, from a beam-convolved image on pixels ``step`` times
    finer, padded by ``crop`` fine pixels: the sample at each block's centre
    (``'point'``, after :func:`beam_transfer_function` with ``sampling='point'``) or the
    block's mean (``'average'``).  ``shape`` is the output ``(ny, nx)``."""
    ny, nx = shape
    if sampling == "point":
        start = crop + (step - 1) // 2
        return images[..., start:start + step * ny:step, start:start + step * nx:step]
    images = images[..., crop:crop + step * ny, crop:crop + step * nx]
    if step == 1:
        return images
    return images.reshape(*images.shape[:-2], ny, step, nx, step).mean(dim=(-3, -1))


def _beam_covariance(sigma_major, sigma_minor, angle):
    c, s = math.cos(angle), math.sin(angle)
    a2, b2 = sigma_major**2, sigma_minor**2
    return a2 * c * c + b2 * s * s, a2 * s * s + b2 * c * c, (a2 - b2) * c * s


def convolve_beam(images, transfer, fft_shape):
    """Convolve the last two axes of ``images`` with a beam given by its transfer function.

    ``images`` must already be zero-padded enough that the circular convolution
    of the FFT does not wrap emission around (the projector pads by the beam's
    extent); ``fft_shape`` may be larger than the images (extra zero padding).
    """
    return from_spectrum(torch.fft.rfft2(images, s=fft_shape) * transfer, fft_shape,
                         images.shape[-2:])


def from_spectrum(spectrum, fft_shape, shape):
    """The images ``(..., ny, nx)`` (``shape``) whose ``rfft2`` on ``fft_shape`` is
    ``spectrum``: its inverse, cropped."""
    ny, nx = shape
    return torch.fft.irfft2(spectrum, s=fft_shape)[..., :ny, :nx]


def translate(images, dy, dx, fft_shape):
    """Translate each image of a batch by a fraction of a pixel with the shift theorem.

    ``images`` is ``(batch, ..., ny, nx)``; ``dy``, ``dx`` (``(batch,)``, pixels) move
    image ``b``'s content by ``+dy`` rows and ``+dx`` columns, circularly on the
    ``fft_shape`` grid (so the images must be padded with zeros enough not to wrap
    light into the field).  The result is the band-limited interpolation of the images:
    exact once a beam (or anything band-limited) is applied, which commutes with it, and
    differentiable in ``dy`` and ``dx``.  (:func:`beam_matrices` and
    :func:`beam_transfer_function` take the same move as ``shift``, at no extra cost.)
    """
    spectrum = torch.fft.rfft2(images, s=fft_shape)
    return from_spectrum(spectrum * shift_phase(fft_shape, dy, dx, images.dim() - 3),
                         fft_shape, images.shape[-2:])


def shift_phase(fft_shape, dy, dx, inner=0):
    """``exp(-2 pi i (ky dy + kx dx))`` on an ``rfft2`` grid, ``(batch, 1 x inner, ky, kx)``:
    the move of :func:`translate` (``dy``, ``dx``: ``(batch,)``, pixels)."""
    ky = torch.fft.fftfreq(fft_shape[0], device=dy.device, dtype=dy.dtype)
    kx = torch.fft.rfftfreq(fft_shape[1], device=dx.device, dtype=dx.dtype)
    lead = (-1,) + (1,) * inner
    return torch.exp(-2j * math.pi * (ky[:, None] * dy.reshape(*lead, 1, 1)
                                      + kx[None, :] * dx.reshape(*lead, 1, 1)))


def point_share(images, row, column, weight, fft_shape):
    """Give a share of one pixel's content the pixel's box, as light at its centre needs.

    The readouts of :func:`beam_matrices` treat a pixel's integral as light spread smoothly
    across the pixel.  ``weight`` (``(batch,)``) of what pixel ``(row, column)`` of image
    ``b`` holds (all its channels, ``images`` ``(batch, ..., ny, nx)``) is instead light
    much smaller than a pixel at the pixel's centre: that share is convolved with the
    pixel's box (``sinc(ky) sinc(kx)``, periodic on ``fft_shape``), so that the readout
    places it exactly.  Differentiable in the images.
    """
    ny, nx = images.shape[-2:]

    def axis(n_fft, n, at):
        kernel = torch.fft.ifft(torch.sinc(torch.fft.fftfreq(n_fft, dtype=torch.float64))).real
        index = (torch.arange(n)[None, :] - at.cpu()[:, None]) % n_fft
        box = kernel[index].to(images.device, images.dtype)                  # (batch, n)
        return box, torch.nn.functional.one_hot(at.long(), n).to(images.dtype)
    box_y, one_y = axis(fft_shape[0], ny, row)
    box_x, one_x = axis(fft_shape[1], nx, column)
    change = box_y[:, :, None] * box_x[:, None, :] - one_y[:, :, None] * one_x[:, None, :]
    b = torch.arange(images.shape[0], device=images.device)
    centre = images[b, ..., row, column] if images.dim() == 3 else images[b, :, row, column]
    lead = (-1,) + (1,) * (images.dim() - 3)
    return images + (weight.reshape(*lead) * centre)[..., None, None] * \
        change.reshape(change.shape[0], *(1,) * (images.dim() - 3), ny, nx)


#: The multipoles of a pixel's light that `cell_multipoles` gathers and `multipole_spectrum`
#: places: ``(a, b)`` is the moment ``sum w dx^a dy^b`` about the pixel's centre (``dx`` along
#: the columns, ``dy`` along the rows, pixels), for ``a + b`` up to 2: the light, its
#: centroid and its spread.  A pixel's integral alone (``(0, 0)``) keeps how much light it
#: holds, not where in it; the rest say where.  (With the third order too, ten moments, the
#: projector's compact disks of `benchmarks.compact_sources` moved by at most 0.15% L1 under
#: a beam of 1.2 pixels in sigma, some nearer, some further, and by 0.01% under 2.5.)
MULTIPOLES = tuple((a, order - a) for order in range(3) for a in range(order, -1, -1))


def cell_multipoles(weight, dx, dy, side):
    """The `MULTIPOLES` of light ``weight`` spread evenly over square cells of ``side``
    (pixels) centred ``dx``, ``dy`` pixels from their pixel's centre: ``(..., K, ...)``,
    the moments stacked on a new axis before ``weight``'s last two.

    A cell's ``sum (dx + u)^a`` over its area is ``dx^a`` plus the cell's own spread, the
    even moments ``(side / 2)^j / (j + 1)`` of ``u`` (uniform across the cell).
    """
    spread = side * side / 12.0

    def along(d, power):
        return (1.0, d, d * d + spread)[power]
    moments = [weight * along(dx, a) * along(dy, b) if a + b else weight
               for a, b in MULTIPOLES]
    return torch.stack([m.expand_as(weight) for m in moments], dim=-3)


def multipole_factor(k, order):
    """The transfer along one axis (frequencies ``k``, cycles per pixel) of a pixel's moment of
    ``order`` about its centre, read as its integral: ``sinc(k) (-2 pi i k)^order / order!``
    (:func:`multipole_spectrum`)."""
    return torch.sinc(k) * (-2j * math.pi * k) ** order / math.factorial(order)


def multipole_spectrum(moments, fft_shape):
    """The ``rfft2`` (on ``fft_shape``) of the pixel integrals equivalent to ``moments``,
    ``(batch, K, ..., ny, nx)``: each pixel's light placed by its `MULTIPOLES`.

    Light at ``d`` from a pixel's centre has the transform ``exp(-2 pi i k.d)``, the sum
    over ``a, b`` of ``(-2 pi i kx)^a (-2 pi i ky)^b / (a! b!)`` times its moment ``dx^a
    dy^b``, to second order in ``k.d``; the beam's readouts take a pixel's integral as light
    spread over the pixel, whose transform is that of its centre times ``sinc(kx)
    sinc(ky)`` (`multipole_factor`), so the spectrum is the series times that box.  What is
    left is third order in (the light's offset within its pixel) / (the beam's width): with
    the exact moments, a compact rotating disk under a beam of 1.2 pixels in sigma is
    0.1-0.3% L1 from the render on 7x finer pixels (3-10% with the pixel's integral alone),
    and 0.03% or less under 2.5 pixels.  Differentiable in the moments.
    """
    ky = torch.fft.fftfreq(fft_shape[0], device=moments.device,
                           dtype=torch.float64)[:, None]
    kx = torch.fft.rfftfreq(fft_shape[1], device=moments.device,
                            dtype=torch.float64)[None, :]
    spectrum = 0
    for (a, b), moment in zip(MULTIPOLES, moments.unbind(dim=1)):
        factor = (multipole_factor(kx, a) * multipole_factor(ky, b)).to(
            torch.complex128 if moments.dtype == torch.float64 else torch.complex64)
        spectrum = spectrum + torch.fft.rfft2(moment, s=fft_shape) * factor
    return spectrum


def convolve_spectral(cubes, kernel):
    """Convolve the channel axis (``-3``) of ``(..., n_chan, ny, nx)`` with a 1-D kernel.

    'Valid' convolution: the input must carry ``(len(kernel) - 1) / 2`` extra
    channels at each end (rendered beyond the band), which are consumed, so
    flux that the response moves across the band edges is handled exactly.
    """
    half = (kernel.numel() - 1) // 2
    n_chan = cubes.shape[-3]
    out = torch.zeros_like(cubes[..., half:n_chan - half, :, :])
    for j, w in enumerate(kernel.flip(0)):
        out = out + w * cubes[..., j:j + n_chan - 2 * half, :, :]
    return out


def beam_is_separable(sigma_major, sigma_minor, angle):
    """Whether a Gaussian beam's axes lie along the pixel axes (or it is circular)."""
    cxx, cyy, cxy = _beam_covariance(sigma_major, sigma_minor, angle)
    return abs(cxy) <= 1e-12 * (cxx + cyy)


#: `beam_matrices` drops entries below the dtype's rounding of the largest by this factor.
_SUBNORMAL_MARGIN = 1e-4


def beam_matrices(fft_shape, padded_shape, crop, sigma_major, sigma_minor, angle, *, step=1,
                  sampling="average", shift=None, cloud=0.0, device=None,
                  dtype=torch.float32, multipole=None):
    """The FFT beam convolution as two dense matrices, when the beam is separable.

    A Gaussian beam whose axes lie along the pixel axes (or a circular one)
    has a transfer function ``T(ky) T(kx)``, so the circular convolution that
    :func:`convolve_beam` does on the ``fft_shape`` grid, followed by the crop
    ``[crop : crop + n]`` of each axis, is ``My @ image @ Mx.T`` with
    ``My[i, j] = k_y[(crop + i - j) mod N_y]``, ``k_y`` the inverse transform
    of ``T(ky)``: the same linear operator (to rounding), and on a CPU several
    times faster than the FFT for the image sizes the projector makes.

    The image holds pixel integrals on pixels ``step`` times finer than the output's
    (the projector renders finer where the beam is narrower than a few output pixels).
    ``sampling`` says what an output pixel holds (`~galcubecraft.pixelgrid.PIXEL_SAMPLINGS`):

    - ``'average'``: the beam-convolved sky averaged over it: the mean of its
      ``step`` fine rows (columns) of the convolved image;
    - ``'point'``: the beam-convolved sky at its centre: the transfer is divided by
      the fine pixels' box ``sinc(k)`` (exact for a band-limited image: the beam
      has made it one where the fine pixels sample it) and shifted to the centre.

    With ``shift = (dy, dx)`` (``(batch,)`` each) image ``b`` is also moved by ``dy`` rows
    and ``dx`` columns (:func:`translate`, differentiable in the shifts): the matrices
    are then one pair per image, ``(batch, n_out, n_in)``.

    With ``cloud = c`` (> 0) the image's samples were deposited as boxes of ``c`` pixels
    (:func:`cloud_weights`; 1: cloud-in-cell), which convolved it with that box too: the
    transfer is divided by ``sinc(c k)`` as well.

    With ``multipole = (a, b)``, the image holds the moments ``sum w dx^a dy^b`` of each
    pixel's light about its centre (`MULTIPOLES`) instead of its integral: the matrices read
    out the light they place (the ``x`` one of order ``a``, the ``y`` one of order ``b``;
    :func:`multipole_spectrum` for the transfer).

    Returns ``(My, Mx)`` of shapes ``((ny - 2 crop) / step, ny)`` and
    ``((nx - 2 crop) / step, nx)`` for ``padded_shape = (ny, nx)``, or None when the
    beam is rotated with respect to the pixels (not separable).
    """
    if not beam_is_separable(sigma_major, sigma_minor, angle):
        return None
    cxx, cyy, _ = _beam_covariance(sigma_major, sigma_minor, angle)

    def matrix(n_fft, n_in, variance, move, order):
        k = torch.fft.fftfreq(n_fft, dtype=torch.float64, device=device)
        transfer = torch.exp(-2 * math.pi**2 * variance * k**2)
        if order is not None:
            transfer = transfer * multipole_factor(k, order)
        if cloud:
            transfer = transfer / torch.sinc(cloud * k)
        out = torch.arange((n_in - 2 * crop) // step, device=device)[:, None, None]
        cols = torch.arange(n_in, device=device)[None, :, None]
        if sampling == "point":
            transfer = transfer * _point_readout(k, step)
            rows = crop + step * out + (step - 1) // 2
        else:
            rows = crop + step * out + torch.arange(step, device=device)[None, None, :]
        if move is not None:
            move = torch.as_tensor(move, device=device).to(torch.float64)
            transfer = transfer * torch.exp(-2j * math.pi * k * move[:, None])
        kernel = torch.fft.ifft(transfer).real
        matrix = kernel[..., (rows - cols) % n_fft].mean(dim=-1)
        # entries below the dtype's rounding of the largest, by _SUBNORMAL_MARGIN, are zero:
        # their products with the image's faint pixels would be subnormal numbers, which a
        # CPU handles ~100x slower (the readout of a render twice finer: 8 ms, 1.4 ms without)
        tiny = torch.finfo(dtype).eps * _SUBNORMAL_MARGIN * matrix.abs().amax(dim=(-2, -1),
                                                                              keepdim=True)
        return torch.where(matrix.abs() >= tiny, matrix, 0.0).to(dtype=dtype)

    dy, dx = (None, None) if shift is None else shift
    a, b = (None, None) if multipole is None else multipole
    return (matrix(fft_shape[0], padded_shape[0], cyy, dy, b),
            matrix(fft_shape[1], padded_shape[1], cxx, dx, a))


def convolve_beam_separable(images, matrices):
    """Convolve (and crop) the last two axes of ``images`` with :func:`beam_matrices`'s pair
    (one pair for all, or one per image of ``(batch, ..., ny, nx)``)."""
    my, mx = matrices
    if my.dim() == 3:
        inner = (1,) * (images.dim() - 3)
        my = my.reshape(my.shape[0], *inner, *my.shape[1:])
        mx = mx.reshape(mx.shape[0], *inner, *mx.shape[1:])
    return torch.matmul(torch.matmul(my, images), mx.transpose(-1, -2))


class _SparseProduct(torch.autograd.Function):
    """``S @ dense`` for a sparse ``S`` given as ``(rows, cols, values)``, with a backward that
    never makes ``S`` dense (torch's own materialises ``grad @ dense^T`` before masking it),
    and is itself differentiable (a Hessian goes through it)."""

    @staticmethod
    def forward(rows, cols, values, n_rows, dense):
        matrix = torch.sparse_coo_tensor(torch.stack([rows, cols]), values,
                                         (n_rows, dense.shape[0]), check_invariants=False)
        return torch.sparse.mm(matrix, dense)

    @staticmethod
    def setup_context(ctx, inputs, output):
        rows, cols, values, n_rows, dense = inputs
        ctx.save_for_backward(rows, cols, values, dense)
        ctx.n_rows = n_rows

    @staticmethod
    def backward(ctx, grad):
        rows, cols, values, dense = ctx.saved_tensors
        grad_values = grad_dense = None
        if ctx.needs_input_grad[2]:
            grad_values = (grad[rows] * dense[cols]).sum(dim=-1)
        if ctx.needs_input_grad[4]:
            grad_dense = sparse_product(cols, rows, values, dense.shape[0], grad)
        return None, None, grad_values, None, grad_dense


def sparse_product(rows, cols, values, n_rows, dense):
    """``S @ dense`` (``n_rows`` x ``dense.shape[1]``) for the sparse matrix ``S`` of entries
    ``values`` at ``(rows, cols)`` (repeated entries add), differentiable in ``values`` and
    ``dense`` to any order without ever holding ``S`` dense."""
    return _SparseProduct.apply(rows, cols, values, n_rows, dense)


def deposit_rows(rows, shares, lines, n_rows):
    """``out[rows[k, l]] += shares[k, l] * lines[l]`` for every ``k`` and ``l``: ``lines``
    (``L`` x ``C``) spread onto ``n_rows`` rows, each line onto ``K`` rows (``rows`` and
    ``shares`` are ``K`` x ``L``; a row may receive many), differentiable to any order.

    On the CPU one scatter-add per ``k`` (its backward: one gather per ``k``, each the size of
    ``lines``, held in cache); elsewhere the sparse product (`sparse_product`), whose
    single launch is what a GPU wants.  The sum is the same to rounding."""
    if lines.device.type != "cpu":
        k = rows.shape[0]
        cols = torch.arange(lines.shape[0], device=lines.device).expand(k, -1)
        return sparse_product(rows.reshape(-1), cols.reshape(-1), shares.reshape(-1), n_rows,
                              lines)
    out = lines.new_zeros((n_rows, lines.shape[1]))
    for row, share in zip(rows, shares):
        out.index_add_(0, row, share[:, None] * lines)
    return out
