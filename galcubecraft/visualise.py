"""Look at a cube: moment maps and the integrated spectrum.

`visualise` keeps GalCubeCraft 0.1.0's call (``visualise(results, idx,
save=False, fname_save=None)``) and draws the same two figures, with sky
coordinates (WCSAxes), the beam, colour bars in physical units and the
spectrum as a flux density in Jy.  `moment_maps` and `spectrum` draw one figure
each from any `~spectral_cube.SpectralCube`.
"""
import os
import warnings
from pathlib import Path

import astropy.units as u
import matplotlib.pyplot as plt
import numpy as np
import torch
from spectral_cube import SpectralCube

from ._files import atomic_path
from .cube import to_spectral_cube
from .grid import CubeGrid
from .noise import beam_from_info
from .parameters import parse_quantity
from .units import velocity_compression

__all__ = ["visualise", "moment_maps", "spectrum", "emission_mask", "channel_maps",
           "pv_slice", "pv_diagram", "galaxy_pv_curve", "compare_cubes", "velocity_cube",
           "clip_mask", "tidy_sky_axes", "overview"]

_KMS = u.km / u.s


def _pixel_scale(cube):
    """Angular size of a (square) pixel of ``cube``."""
    celestial = cube.wcs.celestial
    return abs(celestial.wcs.cdelt[1]) * u.Unit(celestial.wcs.cunit[1])


def emission_mask(cube, noise_rms=None, threshold=3.0, fraction=1e-3):
    """Voxels above ``threshold * noise_rms``, or above ``fraction`` of the peak without noise."""
    data = cube.filled_data[:].value if isinstance(cube, SpectralCube) else np.asarray(cube)
    if noise_rms is not None:
        level = threshold * u.Quantity(noise_rms).value
    else:
        level = fraction * np.nanmax(data)
    return data > level


def clip_mask(cube, clip, name="clip"):
    """Voxels above ``clip``: ``'N sigma'`` (N times the cube's robust rms, from the median
    absolute deviation) or a brightness (a Quantity or text such as ``'2 mJy/beam'``)."""
    from astropy.stats import mad_std
    data = cube.filled_data[:].value
    text = str(clip).strip()
    if text.endswith("sigma"):
        try:
            factor = float(text[:-5])
        except ValueError:
            raise ValueError(f"{name}: cannot read {text!r}; give e.g. '3 sigma' or "
                             "'2 mJy/beam'") from None
        return data > factor * float(mad_std(data, ignore_nan=True))
    level = parse_quantity(name, clip)
    if not level.unit.is_equivalent(cube.unit):
        raise ValueError(f"{name} must be 'N sigma' or a brightness in {cube.unit}, got {clip}")
    return data > level.to_value(cube.unit)


def _scale_bar(ax, cube, kpc_per_pixel, color):
    ny, nx = cube.shape[1:]
    length = max(1, round(nx * 25 / 72))
    x0, y0 = nx * 0.6, ny * 0.07
    ax.plot([x0, x0 + length], [y0, y0], color=color, lw=2, transform=ax.get_transform("pixel"))
    ax.text(x0 + length / 2, y0 + ny * 0.03, f"{length * kpc_per_pixel:.1f} kpc", color=color,
            ha="center", va="bottom", fontsize=11, weight="bold",
            transform=ax.get_transform("pixel"))


def _add_beam(ax, cube, color):
    beam = getattr(cube, "beam", None)
    if beam is None:
        return
    pixscale = _pixel_scale(cube)
    ny, nx = cube.shape[1:]
    size = (beam.major / pixscale).decompose().value
    ellipse = beam.ellipse_to_plot(size / 2 + 0.05 * nx, size / 2 + 0.05 * ny, pixscale)
    ellipse.set_facecolor("none")
    ellipse.set_edgecolor(color)
    ellipse.set_linewidth(1.5)
    ax.add_patch(ellipse)


def velocity_cube(cube):
    """The cube with its spectral axis in radio velocity (km/s); FREQ axes need RESTFRQ."""
    try:
        return cube.with_spectral_unit(_KMS, velocity_convention="radio")
    except (ValueError, u.UnitsError) as exc:
        raise ValueError(f"cannot express the spectral axis as a radio velocity ({exc}); a "
                         "frequency axis needs a rest frequency (RESTFRQ)") from None


def _sky_axes(fig, n_rows, n_cols, index, n_panels, cube):
    """Panel ``index`` (1-based) of a grid; tick labels only on the outer edges."""
    ax = fig.add_subplot(n_rows, n_cols, index, projection=cube.wcs.celestial)
    first_column, bottom = (index - 1) % n_cols == 0, index + n_cols > n_panels
    ax.coords[0].set_axislabel("Right ascension" if bottom else " ")
    ax.coords[1].set_axislabel("Declination" if first_column else " ")
    ax.coords[0].set_ticklabel_visible(bottom)
    ax.coords[1].set_ticklabel_visible(first_column)
    tidy_sky_axes(ax)
    return ax


def tidy_sky_axes(ax):
    """Right-ascension labels that do not overlap: at most three, overlapping ones dropped
    (sexagesimal RA labels are long; four or more collide on a panel a few inches wide)."""
    ax.coords[0].set_ticks(number=3)
    ax.coords[0].set_ticklabel(exclude_overlapping=True)
    ax.coords[1].set_ticklabel(exclude_overlapping=True)


def moment_maps(cube, mask=None, kpc_per_pixel=None, moments=(0, 1), figsize=None):
    """Moment maps of a `~spectral_cube.SpectralCube`, side by side, on RA/Dec axes.

    Parameters
    ----------
    cube : `~spectral_cube.SpectralCube`
    mask : bool array, optional
        Voxels used for moments 1 and 2 (default: all voxels above 1e-3 of the peak).
    kpc_per_pixel : float, optional
        Draws a scale bar in kpc.
    moments : sequence of {0, 1, 2}
        Which maps: integrated intensity, intensity-weighted velocity, velocity
        dispersion (``linewidth_sigma``).

    Returns
    -------
    `matplotlib.figure.Figure`
    """
    cube = velocity_cube(cube)
    if mask is None:
        mask = emission_mask(cube)
    masked = cube.with_mask(mask)
    fig = plt.figure(figsize=figsize or (5 * len(moments), 4.8))
    styles = {0: ("Moment 0", "RdBu_r", None, "white"), 1: ("Moment 1", "RdBu_r", "sym", "black"),
              2: ("Moment 2", "viridis", None, "white")}
    for k, order in enumerate(moments):
        title, cmap, scale, color = styles[order]
        with np.errstate(invalid="ignore", divide="ignore"):  # pixels with no emission: NaN
            image = (cube.moment0() if order == 0 else
                     masked.moment1() if order == 1 else masked.linewidth_sigma())
        ax = fig.add_subplot(1, len(moments), k + 1, projection=cube.wcs.celestial)
        tidy_sky_axes(ax)
        values = image.value
        kwargs = {}
        if scale == "sym" and np.any(np.isfinite(values)):
            centre = np.nanmedian(values)
            half = np.nanmax(np.abs(values - centre))
            kwargs = {"vmin": centre - half, "vmax": centre + half}
        im = ax.imshow(values, origin="lower", cmap=cmap, **kwargs)
        bar = fig.colorbar(im, ax=ax, orientation="horizontal", location="top", pad=0.02,
                           fraction=0.05)
        bar.set_label(f"{title} [{image.unit.to_string('latex_inline')}]")
        ax.set_xlabel("Right ascension")
        ax.set_ylabel("Declination" if k == 0 else " ")
        _add_beam(ax, cube, color)
        if kpc_per_pixel is not None:
            _scale_bar(ax, cube, kpc_per_pixel, color)
    fig.subplots_adjust(wspace=0.35)
    return fig


def channel_maps(cube, n_panels=12, n_cols=4, figsize=None):
    """A grid of channels (every k-th, at most ``n_panels``), one colour scale, velocity labels."""
    cube = velocity_cube(cube)
    n_chan = cube.shape[0]
    step = max(1, int(np.ceil(n_chan / n_panels)))
    channels = list(range(step // 2, n_chan, step))[:n_panels]
    n_rows = int(np.ceil(len(channels) / n_cols))
    data = cube.filled_data[:]
    vmax = float(np.nanmax(data.value))
    fig = plt.figure(figsize=figsize or (2.6 * n_cols + 1.2, 2.6 * n_rows + 0.6))
    velocities = cube.spectral_axis.to_value(_KMS)
    im = None
    for k, chan in enumerate(channels):
        ax = _sky_axes(fig, n_rows, n_cols, k + 1, len(channels), cube)
        im = ax.imshow(data[chan].value, origin="lower", cmap="inferno", vmin=0, vmax=vmax)
        ax.text(0.05, 0.9, f"{velocities[chan]:.0f} km/s", color="white", fontsize=9,
                transform=ax.transAxes)
        _add_beam(ax, cube, "white")
    bar = fig.colorbar(im, ax=fig.axes, fraction=0.03, pad=0.02)
    bar.set_label(f"Brightness [{data.unit.to_string('latex_inline')}]")
    return fig


def pv_slice(cube, position_angle, center=None, length=None):
    """Position-velocity slice along a line through ``center`` at ``position_angle``.

    The slit is one pixel wide and sampled every pixel (bilinear interpolation
    of each channel, `scipy.ndimage.map_coordinates`): offsets are positive
    towards ``position_angle`` (east of north), so for a galaxy's kinematic
    position angle the receding side is at positive offset.

    Returns
    -------
    offsets : `~astropy.units.Quantity` [arcsec]
    velocities : `~astropy.units.Quantity` [km/s]
    pv : `~astropy.units.Quantity`, shape ``(n_chan, n_offsets)``
    """
    from scipy.ndimage import map_coordinates
    cube = velocity_cube(cube)
    celestial = cube.wcs.celestial
    ny, nx = cube.shape[1:]
    if center is None:
        cy, cx = (ny - 1) / 2, (nx - 1) / 2
    else:
        cx, cy = celestial.world_to_pixel(center)
    pixel = _pixel_scale(cube)
    pa = u.Quantity(position_angle, u.deg).to_value(u.rad)
    half = (length / pixel).decompose().value / 2 if length is not None else min(ny, nx) / 2
    steps = np.arange(-np.floor(half), np.floor(half) + 1)
    # east is towards decreasing column (CDELT1 < 0), north towards increasing row
    sign = -1.0 if celestial.wcs.cdelt[0] < 0 else 1.0
    cols = cx + sign * steps * np.sin(pa)
    rows = cy + steps * np.cos(pa)
    data = cube.filled_data[:]
    pv = np.array([map_coordinates(np.nan_to_num(plane.value), [rows, cols], order=1,
                                   mode="constant", cval=np.nan) for plane in data])
    return steps * pixel.to(u.arcsec), cube.spectral_axis.to(_KMS), pv * data.unit


def pv_diagram(cube, position_angle, center=None, rotation_curve=None, figsize=(7, 4.8)):
    """Position-velocity diagram along ``position_angle``, with a model curve if given.

    ``rotation_curve`` is ``(offsets, velocities)`` Quantities to overlay (e.g.
    ``v_sys +/- v_c(R) sin i`` from `galaxy_pv_curve`).
    """
    offsets, velocities, pv = pv_slice(cube, position_angle, center)
    fig, ax = plt.subplots(figsize=figsize)
    x, v = offsets.to_value(u.arcsec), velocities.to_value(_KMS)
    dx, dv = (x[1] - x[0]) / 2, (v[1] - v[0]) / 2 if len(v) > 1 else 1.0
    im = ax.imshow(pv.value, origin="lower", aspect="auto", cmap="inferno",
                   extent=[x[0] - dx, x[-1] + dx, v[0] - dv, v[-1] + dv])
    if rotation_curve is not None:
        rx, rv = rotation_curve
        ax.plot(u.Quantity(rx).to_value(u.arcsec), u.Quantity(rv).to_value(_KMS), "c--", lw=1.5,
                label="model rotation curve")
        ax.legend(loc="upper left", fontsize=9)
    bar = fig.colorbar(im, ax=ax)
    bar.set_label(f"Brightness [{pv.unit.to_string('latex_inline')}]")
    ax.set_xlabel(f"Offset along PA {u.Quantity(position_angle, u.deg).value:.0f}° [arcsec]")
    ax.set_ylabel(r"Radio velocity [km s$^{-1}$]")
    fig.tight_layout()
    return fig


def galaxy_pv_curve(galaxy, offsets):
    """Where a `~galcubecraft.Galaxy`'s line lies along its major axis, as the cube shows it.

    ``v_sys + sign(x) v_c(|x|) sin i (1 - v_sys / c)``: the rotation is a velocity in the
    galaxy's frame, compressed by ``1 / (1 + z)`` on the cube's radio-velocity axis
    (`galcubecraft.units.velocity_compression`).  ``offsets`` (angles, positive towards the
    position angle) as `pv_slice` returns them.
    """
    offsets = u.Quantity(offsets, u.arcsec)
    params = galaxy.tensors(dtype=torch.float64)
    radius = torch.as_tensor(np.abs(offsets.value), dtype=torch.float64)
    v_c = galaxy.kinematics.circular_velocity(radius, params).numpy() * _KMS
    compression = velocity_compression(galaxy.v_sys.to_value(_KMS))
    return offsets, (galaxy.v_sys + np.sign(offsets.value) * v_c * compression
                     * np.sin(galaxy.inclination)).to(_KMS)


def overview(cube, position_angle, title=None, center=None, mask=None, curve=None,
             figsize=(13, 3.9)):
    """Moment 0, moment 1 and the position-velocity diagram along ``position_angle``, in one
    row: what a galaxy's structure and kinematics look like at a glance.

    The moments are of the voxels in ``mask`` (e.g. ``cube > 3 * rms`` for real data;
    default all); moment 1 is drawn where moment 0 exceeds 1% of its peak.  ``curve``:
    ``(offsets, velocities)`` Quantities drawn over the PV diagram (a model's projected
    rotation curve).
    """
    cube = velocity_cube(cube)
    pv_cube = cube
    if mask is not None:
        cube = cube.with_mask(np.asarray(mask, dtype=bool))
    m0 = cube.moment0().to(cube.unit * _KMS)
    m1 = cube.moment1().to(_KMS).value
    shown = np.where(m0.value > 0.01 * np.nanmax(m0.value), m1, np.nan)
    offsets, velocities, pv = pv_slice(pv_cube, position_angle, center)
    fig = plt.figure(figsize=figsize)
    for k, (image, label, cmap) in enumerate(((m0.value, "moment 0 [%s]" % m0.unit.to_string(),
                                               "inferno"),
                                              (shown, "moment 1 [km/s]", "RdBu_r"))):
        ax = fig.add_subplot(1, 3, k + 1, projection=cube.wcs.celestial)
        im = ax.imshow(np.nan_to_num(image) if k == 0 else image, origin="lower", cmap=cmap)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label(label, fontsize=8)
        tidy_sky_axes(ax)
    ax = fig.add_subplot(1, 3, 3)
    x, v = offsets.to_value(u.arcsec), velocities.to_value(_KMS)
    dx, dv = (x[1] - x[0]) / 2, (v[1] - v[0]) / 2 if len(v) > 1 else 1.0
    ax.imshow(pv.value, origin="lower", aspect="auto", cmap="inferno",
              extent=[x[0] - dx, x[-1] + dx, v[0] - dv, v[-1] + dv])
    if curve is not None:
        ax.plot(curve[0].to_value(u.arcsec), curve[1].to_value(_KMS), color="cyan", lw=1.2,
                label="model rotation")
        ax.set_xlim(x[0] - dx, x[-1] + dx)
        ax.set_ylim(*sorted((v[0] - dv, v[-1] + dv)))
        ax.legend(fontsize=7, loc="upper left")
    ax.set_xlabel(f"offset along PA {u.Quantity(position_angle, u.deg).value:.0f}° [arcsec]")
    ax.set_ylabel("radio velocity [km/s]")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def compare_cubes(clean, noisy, channel=None, figsize=(15, 4.6)):
    """Clean, noisy and residual (noisy - clean) side by side: one channel, or moment 0."""
    clean, noisy = velocity_cube(clean), velocity_cube(noisy)
    if channel is None:
        images = [clean.moment0(), noisy.moment0()]
        label = "Moment 0"
    else:
        images = [clean[channel], noisy[channel]]
        label = f"Channel {channel}"
    images.append(images[1] - images[0])
    fig = plt.figure(figsize=figsize)
    vmax = float(np.nanmax(images[1].value))
    for k, (image, title) in enumerate(zip(images, ("clean", "noisy", "residual"))):
        ax = fig.add_subplot(1, 3, k + 1, projection=clean.wcs.celestial)
        tidy_sky_axes(ax)
        kwargs = ({"vmin": -vmax / 4, "vmax": vmax / 4, "cmap": "RdBu_r"} if k == 2 else
                  {"vmin": min(0, float(np.nanmin(images[1].value))), "vmax": vmax,
                   "cmap": "inferno"})
        im = ax.imshow(image.value, origin="lower", **kwargs)
        bar = fig.colorbar(im, ax=ax, orientation="horizontal", location="top", pad=0.02,
                           fraction=0.05)
        bar.set_label(f"{label}, {title} [{image.unit.to_string('latex_inline')}]")
        ax.set_xlabel("Right ascension")
        ax.set_ylabel("Declination" if k == 0 else " ")
        _add_beam(ax, clean, "white" if k < 2 else "black")
    fig.subplots_adjust(wspace=0.35)
    return fig


def spectrum(cube, figsize=(7, 4.5)):
    """The integrated spectrum (flux density summed over the field, Jy) against velocity."""
    cube = velocity_cube(cube)
    data = cube.filled_data[:]
    # blank (NaN) pixels, the edges of most ALMA and VLA cubes, hold no flux
    total = np.nansum(data.value, axis=(1, 2)) * data.unit
    if data.unit.is_equivalent(u.Jy / u.beam):
        beam_pixels = (cube.beam.sr / _pixel_scale(cube)**2).decompose().value
        flux = (total / beam_pixels).value * u.Jy
    else:
        flux = total
    fig, ax = plt.subplots(figsize=figsize)
    ax.step(cube.spectral_axis.to_value(_KMS), flux.value, where="mid", color="xkcd:blue",
            lw=1.2)
    ax.set_xlabel(r"Line-of-sight velocity (radio) [km s$^{-1}$]")
    ax.set_ylabel(f"Flux density [{flux.unit.to_string('latex_inline')}]")
    ax.grid(True, alpha=0.4)
    fig.tight_layout()
    return fig


def _as_cube(item):
    """(SpectralCube, params) from a `GeneratedCube`, a (cube, params) pair or a SpectralCube."""
    if isinstance(item, SpectralCube):
        return item, {}
    cube, params = item
    if isinstance(cube, SpectralCube):
        return cube, params
    if hasattr(item, "to_spectral_cube"):
        return item.to_spectral_cube(), params
    # a bare 0.1.0-style pair: rebuild the grid from its keys (1" pixels)
    vels = np.asarray(params["average_vels"], dtype=float)
    width = float(np.diff(vels).mean()) if vels.size > 1 else 1.0
    grid = CubeGrid(shape=np.shape(cube), pixel_scale=1 * u.arcsec, channel_width=width * _KMS,
                    beam=beam_from_info(params["beam_info"]),
                    velocity_center=float(vels.mean()) * _KMS)
    return to_spectral_cube(np.asarray(cube), grid), params


def _show(fig):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-interactive.*")
        plt.show()


def visualise(data, idx, save=False, fname_save=None, show=True):
    """Moment-0 and moment-1 maps and the spectrum of ``data[idx]`` (GalCubeCraft 0.1.0's call).

    Parameters
    ----------
    data : sequence
        Results of `GalCubeCraft.generate_cubes` (or ``(cube, params)`` pairs,
        or SpectralCubes).
    idx : int
        Which cube.
    save : bool
        Write ``mom0_mom1.pdf``/``.png`` and ``vel_spectrum.pdf``/``.png``.
    fname_save : str or path, optional
        Folder for the figures (default ``figures/<nz>x<ny>x<nx>``).
    show : bool
        Call `matplotlib.pyplot.show` (a no-op on non-interactive backends).

    Returns
    -------
    (`matplotlib.figure.Figure`, `matplotlib.figure.Figure`)
        The moment maps and the spectrum.
    """
    cube, params = _as_cube(data[idx])
    mask = None
    if params.get("noise_rms") is not None:
        mask = emission_mask(cube, params["noise_rms"])
    fig_maps = moment_maps(cube, mask=mask, kpc_per_pixel=params.get("pix_spatial_scale"))
    fig_spec = spectrum(cube)
    if save:
        folder = Path(fname_save) if fname_save is not None else (
            Path(os.getcwd()) / "figures" / "x".join(str(s) for s in cube.shape))
        folder.mkdir(parents=True, exist_ok=True)
        for fig, name in ((fig_maps, "mom0_mom1"), (fig_spec, "vel_spectrum")):
            for ext in ("pdf", "png"):
                with atomic_path(folder / f"{name}.{ext}", overwrite=True) as tmp:
                    fig.savefig(tmp, format=ext, bbox_inches="tight", dpi=150)
    if show:
        _show(fig_maps)
    return fig_maps, fig_spec
