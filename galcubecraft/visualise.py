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
from spectral_cube import SpectralCube

from ._files import atomic_path

__all__ = ["visualise", "moment_maps", "spectrum", "emission_mask"]

_KMS = u.km / u.s


def emission_mask(cube, noise_rms=None, threshold=3.0, fraction=1e-3):
    """Voxels above ``threshold * noise_rms``, or above ``fraction`` of the peak without noise."""
    data = cube.filled_data[:].value if isinstance(cube, SpectralCube) else np.asarray(cube)
    if noise_rms is not None:
        level = threshold * u.Quantity(noise_rms).value
    else:
        level = fraction * np.nanmax(data)
    return data > level


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
    pixscale = u.Quantity(abs(cube.wcs.celestial.wcs.cdelt[1]), cube.wcs.celestial.wcs.cunit[1])
    ny, nx = cube.shape[1:]
    size = (beam.major / pixscale).decompose().value
    ellipse = beam.ellipse_to_plot(size / 2 + 0.05 * nx, size / 2 + 0.05 * ny, pixscale)
    ellipse.set_facecolor("none")
    ellipse.set_edgecolor(color)
    ellipse.set_linewidth(1.5)
    ax.add_patch(ellipse)


def moment_maps(cube, mask=None, kpc_per_pixel=None, figsize=(10, 4.8)):
    """Moment-0 and moment-1 maps of a `~spectral_cube.SpectralCube`, side by side.

    Parameters
    ----------
    cube : `~spectral_cube.SpectralCube`
    mask : bool array, optional
        Voxels used for moment 1 (default: all voxels above 1e-3 of the peak).
    kpc_per_pixel : float, optional
        Draws a scale bar in kpc.

    Returns
    -------
    `matplotlib.figure.Figure`
    """
    cube = cube.with_spectral_unit(_KMS, velocity_convention="radio")
    if mask is None:
        mask = emission_mask(cube)
    mom0 = cube.moment0()
    with np.errstate(invalid="ignore", divide="ignore"):  # unmasked-free pixels: NaN, as wanted
        mom1 = cube.with_mask(mask).moment1()
    fig = plt.figure(figsize=figsize)
    panels = [(mom0, "Moment 0", "RdBu_r", None, "white"),
              (mom1, "Moment 1", "RdBu_r", "sym", "black")]
    for k, (image, title, cmap, scale, color) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1, projection=cube.wcs.celestial)
        values = image.value
        kwargs = {}
        if scale == "sym" and np.any(np.isfinite(values)):
            vmax = np.nanmax(np.abs(values))
            kwargs = {"vmin": -vmax, "vmax": vmax}
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


def spectrum(cube, figsize=(7, 4.5)):
    """The integrated spectrum (flux density summed over the field, Jy) against velocity."""
    cube = cube.with_spectral_unit(_KMS, velocity_convention="radio")
    data = cube.filled_data[:]
    if data.unit.is_equivalent(u.Jy / u.beam):
        pixel = abs(cube.wcs.celestial.wcs.cdelt[1]) * u.Unit(cube.wcs.celestial.wcs.cunit[1])
        beam_pixels = (cube.beam.sr / pixel**2).decompose().value
        flux = (data.sum(axis=(1, 2)) / beam_pixels).value * u.Jy
    else:
        flux = data.sum(axis=(1, 2))
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
    from .cube import to_spectral_cube
    from .grid import CubeGrid
    from .noise import beam_from_info
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
