"""The stream renderer: gas along curves (`galcubecraft.diffuse.Stream`), beside the disk
integrator of `galcubecraft.projector`, before the same beam and spectral response.

A stream is a chain of circular Gaussian clouds spaced at most half its sigma (and half a
pixel) apart along its quadratic Bézier curve, weighted by the arc length each stands for and
the taper; every cloud is integrated exactly over the pixels (erf differences along the pixel
axes) and over the channels (erf differences of its line), so its flux is exact and smooth in
every parameter.  Plain tensors in, plain tensors out: no units.
"""
import math

import numpy as np
import torch

from .conventions import velocity_compression

__all__ = ["project_streams"]


def project_streams(p, *, pixel, sky_matrix, shape, margin, edges, velocity_origin=0.0):
    """Line flux (Jy km/s) of each stream in each channel and pixel of the padded grid.

    Parameters
    ----------
    p : dict of Tensor
        ``points`` (batch, 3, 2): the Bézier control points (arcsec, east and north of the
        field centre); ``sigma`` (arcsec), ``flux`` (Jy km/s), ``v_start``, ``v_end``,
        ``dispersion`` (km/s), ``taper``, each (batch,).
    pixel : float
        Pixel size (arcsec).
    sky_matrix : ndarray (2, 2)
        ``(east, north)`` per pixel step along ``(x, y)``.
    shape : tuple
        ``(n_chan, ny, nx)`` of the grid.
    margin : int
        Pixels of padding on each side (the beam's margin).
    edges : Tensor
        Channel edges (km/s, radio), ``n_chan + 1`` (with any spectral-response margin),
        like ``v_start`` and ``v_end`` relative to ``velocity_origin`` (km/s).

    Returns
    -------
    Tensor ``(batch, len(edges) - 1, ny + 2 margin, nx + 2 margin)``
    """
    points, sigma = p["points"], p["sigma"].clamp_min(1e-6)
    device, dtype = points.device, points.dtype
    with torch.no_grad():
        chord = (points[:, 1:] - points[:, :-1]).norm(dim=-1).sum(dim=-1)   # >= length
        spacing = 0.5 * torch.clamp(sigma, max=pixel)
        n = int(torch.clamp(torch.ceil(chord / spacing).max(), min=8, max=20000))
    t = (torch.arange(n, device=device, dtype=dtype) + 0.5) / n
    t = t.reshape(1, n, 1)
    p0, p1, p2 = points[:, 0:1], points[:, 1:2], points[:, 2:3]      # (B, 1, 2)
    pos = (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t**2 * p2      # (B, n, 2)
    speed = (2 * (1 - t) * (p1 - p0) + 2 * t * (p2 - p1)).norm(dim=-1)   # |dB/dt|
    tt = t.reshape(1, n)
    weight = speed * (1 + p["taper"].reshape(-1, 1) * (1 - 2 * tt))
    weight = weight / weight.sum(dim=1, keepdim=True).clamp_min(1e-30)
    flux = p["flux"].reshape(-1, 1) * weight                          # (B, n): observed S dV
    # cloud centres in the padded grid's pixel coordinates
    inv = torch.as_tensor(np.linalg.inv(sky_matrix), device=device, dtype=dtype)
    _, ny, nx = shape
    pix = pos @ inv.T                                                 # (B, n, 2): dx, dy
    x = pix[..., 0] + (nx - 1) / 2 + margin
    y = pix[..., 1] + (ny - 1) / 2 + margin
    s_pix = (sigma / pixel).reshape(-1, 1, 1) * math.sqrt(2)

    def pixel_integrals(centre, size):
        cuts = torch.arange(size + 1, device=device, dtype=dtype) - 0.5
        cdf = torch.erf((cuts.reshape(1, 1, -1) - centre.unsqueeze(-1)) / s_pix)
        return 0.5 * (cdf[..., 1:] - cdf[..., :-1])                   # (B, n, size)

    sx, sy = pixel_integrals(x, nx + 2 * margin), pixel_integrals(y, ny + 2 * margin)
    # velocity: linear along the curve; dispersion compressed like a galaxy's, widened by
    # the step between neighbouring clouds
    v = p["v_start"].reshape(-1, 1) + (p["v_end"] - p["v_start"]).reshape(-1, 1) * tt
    kin = velocity_compression(v + velocity_origin)
    step = ((p["v_end"] - p["v_start"]).abs() / n).reshape(-1, 1)
    disp = torch.sqrt((kin * p["dispersion"].reshape(-1, 1)).clamp_min(1e-6) ** 2
                      + step**2 / 12)
    cdf = torch.erf((edges.reshape(1, 1, -1) - v.unsqueeze(-1))
                    / (math.sqrt(2) * disp.unsqueeze(-1)))
    # each cloud's observed-frame S dV on the radio-velocity axis: times f_cloud / f0
    spectra = 0.5 * (cdf[..., 1:] - cdf[..., :-1]) * (flux * kin).unsqueeze(-1)   # (B, n, C)
    return torch.einsum("bkc,bky,bkx->bcyx", spectra, sy, sx)
