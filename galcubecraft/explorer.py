"""An interactive explorer for Jupyter: sliders for a galaxy and its observation, live maps.

    from galcubecraft.explorer import Explorer
    Explorer()            # in a notebook cell

Every slider change re-renders the cube with the torch projector and redraws the moment-0 and
moment-1 maps and the spectrum; "Save FITS" writes the current cube (atomically).  Needs
``ipywidgets`` (``pip install "galcubecraft[explorer]"``).
"""
import io

import astropy.units as u
import numpy as np
import torch
from matplotlib.figure import Figure
from radio_beam import Beam

from .galaxy import Galaxy
from .grid import CubeGrid
from .render import render
from .visualise import emission_mask, tidy_sky_axes

__all__ = ["Explorer"]

_KMS = u.km / u.s

#: name: (label, min, max, step, default).  Galaxy sliders are named after the parameters'
#: declarations and move in their table units (deg, arcsec, km/s); ``beam`` is the grid's FWHM.
SLIDERS = {
    "inclination": ("inclination", 0.0, 90.0, 1.0, 60.0),
    "position_angle": ("PA", 0.0, 360.0, 1.0, 30.0),
    "r_eff": ("R_e", 0.5, 20.0, 0.1, 6.0),
    "n": ("Sérsic n", 0.5, 4.0, 0.05, 1.0),
    "scale_height": ("h_z", 0.0, 3.0, 0.05, 0.5),
    "v_max": ("v_max", 0.0, 400.0, 5.0, 200.0),
    "r_turn": ("r_turn", 0.1, 10.0, 0.1, 2.0),
    "dispersion": ("σ", 0.0, 100.0, 1.0, 10.0),
    "beam": ("beam FWHM", 0.5, 10.0, 0.1, 3.0),
}
#: Sliders that are settings of the grid, not of the galaxy, and their units.
_GRID_SLIDERS = {"beam": u.arcsec}


def slider_unit(name):
    """The unit a slider moves in: its parameter's table unit (from the declarations)."""
    if name in _GRID_SLIDERS:
        return _GRID_SLIDERS[name]
    return Galaxy.flat_parameters()[name].table_unit or u.dimensionless_unscaled


class Explorer:
    """Sliders for the main galaxy and observation parameters, re-rendered live.

    Parameters
    ----------
    shape : tuple of int
        ``(n_chan, ny, nx)`` of the explored cube (default 32 x 64 x 64, fast).
    pixel_scale, channel_width : `~astropy.units.Quantity`
        Pixel size and channel width.
    flux : `~astropy.units.Quantity` [Jy km/s]
        Line flux of the galaxy.
    device : str, optional
        Torch device to render on.

    Attributes
    ----------
    sliders : dict of `ipywidgets.FloatSlider`
        One per entry of `SLIDERS`; setting ``.value`` re-renders.
    cube : `~galcubecraft.SyntheticCube`
        The cube on display.
    figure : `matplotlib.figure.Figure`
        Moment 0, moment 1 and the spectrum of ``cube``.
    """

    def __init__(self, shape=(32, 64, 64), pixel_scale=1 * u.arcsec, channel_width=20 * _KMS,
                 flux=30 * u.Jy * _KMS, device=None):
        import ipywidgets as widgets
        self._widgets = widgets
        self.shape, self.pixel_scale, self.channel_width = shape, pixel_scale, channel_width
        self.flux, self.device = flux, device
        self.sliders = {
            name: widgets.FloatSlider(value=default, min=low, max=high, step=step,
                                      description=f"{label} [{slider_unit(name).to_string()}]"
                                      if slider_unit(name) != u.dimensionless_unscaled
                                      else label,
                                      continuous_update=False,
                                      style={"description_width": "initial"})
            for name, (label, low, high, step, default) in SLIDERS.items()}
        self.filename = widgets.Text(value="explorer.fits", description="file")
        self.save_button = widgets.Button(description="Save FITS", icon="save")
        self.status = widgets.Label()
        self.output = widgets.Output()
        self.save_button.on_click(lambda _: self.save())
        self._build_figure()
        self.update()
        for slider in self.sliders.values():
            slider.observe(lambda change: self.update(), names="value")

    # ------------------------------------------------------------------ model
    def value(self, name):
        """The slider ``name`` as a Quantity."""
        return self.sliders[name].value * slider_unit(name)

    def galaxy(self):
        """The `~galcubecraft.Galaxy` the sliders describe."""
        values = {name: (self.sliders[name].value if name == "n" else self.value(name))
                  for name in SLIDERS if name not in _GRID_SLIDERS}
        return Galaxy.from_dict({**values, "rotation": "arctan", "flux": self.flux},
                                where="explorer")

    def grid(self):
        """The `~galcubecraft.CubeGrid`, with the beam slider's beam."""
        return CubeGrid(shape=self.shape, pixel_scale=self.pixel_scale,
                        channel_width=self.channel_width, beam=Beam(self.value("beam")))

    # ------------------------------------------------------------------ drawing
    def _build_figure(self):
        self.figure = Figure(figsize=(12, 3.8))   # not pyplot's: shown only through the widget
        sky = self.grid().wcs.celestial
        self._axes = [self.figure.add_subplot(1, 3, 1, projection=sky),
                      self.figure.add_subplot(1, 3, 2, projection=sky),
                      self.figure.add_subplot(1, 3, 3)]
        for ax in self._axes[:2]:
            tidy_sky_axes(ax)
        blank = np.zeros(self.shape[1:])
        self._images = [self._axes[0].imshow(blank, origin="lower", cmap="inferno"),
                        self._axes[1].imshow(blank, origin="lower", cmap="RdBu_r")]
        for ax, title in zip(self._axes[:2], ("Moment 0 [Jy/beam km/s]", "Moment 1 [km/s]")):
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("Right ascension")
            ax.set_ylabel("Declination")
            self.figure.colorbar(ax.images[0], ax=ax, fraction=0.046)
        (self._line,) = self._axes[2].step([], [], where="mid")
        self._axes[2].set_xlabel("radio velocity [km/s]")
        self._axes[2].set_ylabel("flux density [Jy]")
        self.figure.tight_layout()

    def update(self):
        """Re-render the cube from the sliders and redraw the figure."""
        try:
            grid = self.grid()
            with torch.no_grad():
                self.cube = render(self.galaxy(), grid, device=self.device)
        except (ValueError, u.UnitsError) as exc:
            self.status.value = f"cannot render: {exc}"
            return
        data = self.cube.unitless_filled_data[:]
        velocity = grid.spectral_axis.to_value(_KMS)
        dv = abs(grid.channel_width.to_value(_KMS))
        mom0 = data.sum(axis=0) * dv
        weight = np.where(emission_mask(data), data, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mom1 = (weight * velocity[:, None, None]).sum(0) / weight.sum(0)
        self._images[0].set_data(mom0)
        self._images[0].set_clim(0, mom0.max())
        self._images[1].set_data(mom1)
        vmax = np.nanmax(np.abs(mom1)) if np.any(np.isfinite(mom1)) else 1.0
        self._images[1].set_clim(-vmax, vmax)
        self._line.set_data(velocity, data.sum(axis=(1, 2)) / grid.beam_pixel_ratio)
        self._axes[2].relim()
        self._axes[2].autoscale_view()
        total = grid.integrated_flux(data)
        self.status.value = f"integrated flux {total:.3g}"
        self._show()

    def _show(self):
        """Draw the figure into the output area as a PNG image.

        A bare matplotlib `~matplotlib.figure.Figure` is shown as its text repr
        (``<Figure size ...>``) wherever IPython's inline backend has not registered a
        formatter for it (Voila, nbconvert, a fresh kernel), so the image is sent itself.
        """
        from IPython.display import Image, clear_output, display
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=90)
        with self.output:
            clear_output(wait=True)
            display(Image(data=buffer.getvalue(), format="png"))

    # ------------------------------------------------------------------ saving
    def save(self, filename=None):
        """Write the current cube to FITS (``filename`` or the text box), replacing it."""
        path = filename or self.filename.value
        self.cube.write(path, overwrite=True)
        self.status.value = f"saved {path}"
        return path

    # ------------------------------------------------------------------ widget
    def widget(self):
        """The whole explorer as one ipywidgets box."""
        w = self._widgets
        sliders = list(self.sliders.values())
        half = (len(sliders) + 1) // 2
        controls = w.HBox([w.VBox(sliders[:half]), w.VBox(sliders[half:])])
        return w.VBox([controls, self.output,
                       w.HBox([self.filename, self.save_button, self.status])])

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget())
