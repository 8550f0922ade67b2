"""``GalCubeCraft``: GalCubeCraft 0.1.0's generator, on galcubecraft's components and projector.

Seed users change one line::

    from GalCubeCraft import GalCubeCraft      # 0.1.0
    from galcubecraft import GalCubeCraft      # now

and keep their calls.  What differs (physics done right, files, randomness) is
listed in the docs' "Migrating from GalCubeCraft 0.1" page.
"""
import os
from pathlib import Path

import astropy.units as u
import numpy as np
import torch
from tqdm.auto import tqdm

from ._files import atomic_path
from .cube import to_spectral_cube
from .noise import NoiseModel, peak_rms
from .population import SeedPopulation
from .projector import Projector
from .render import render_tensor
from .response import SampledGaussian
from .units import validate_number

__all__ = ["GalCubeCraft", "GeneratedCube"]

_KMS = u.km / u.s
_NOISE_KINDS = ("correlated", "white")


class GeneratedCube(tuple):
    """One generated cube: unpacks as 0.1.0's ``(cube, params)`` pair.

    Attributes
    ----------
    cube : `numpy.ndarray`, shape ``(n_chan, ny, nx)``
        What 0.1.0 returned: the noisy cube when noise was asked for, else the
        clean one (Jy/beam, float32).
    params : dict
        0.1.0's keys and the full truth (see `GalCubeCraft.generate_cubes`).
    clean : `numpy.ndarray`
        The noise-free cube.
    grid : `~galcubecraft.CubeGrid`
        Pixels, channels, beam and WCS of the cube.
    """

    def __new__(cls, cube, params, clean, grid):
        self = super().__new__(cls, (cube, params))
        self.clean = clean
        self.grid = grid
        return self

    @property
    def cube(self):
        return self[0]

    @property
    def params(self):
        return self[1]

    @property
    def noisy(self):
        """The noisy cube, or None when no noise was added."""
        return self[0] if self[1].get("noise_rms") is not None else None

    def to_spectral_cube(self, which="cube"):
        """The cube (``which='cube'``) or the clean model (``'clean'``) as a SpectralCube."""
        if which not in ("cube", "clean"):
            raise ValueError(f"which must be 'cube' or 'clean', got {which!r}")
        data = self.cube if which == "cube" else self.clean
        cards = {"BTYPE": "Intensity", "OBJECT": "galcubecraft model"}
        rms = self.params.get("noise_rms")
        if rms is not None and which == "cube":
            cards["NOISERMS"] = (float(rms.to_value(self.grid.unit)),
                                 f"[{self.grid.unit.to_string()}] rms of added noise")
            cards["PEAKSNR"] = (float(self.params["peak_snr"]), "peak S/N of the clean model")
        cards["NGAL"] = (int(self.params["n_gals"]), "galaxies in the cube")
        cards["PIXKPC"] = (float(self.params["pix_spatial_scale"]), "[kpc] pixel size")
        return to_spectral_cube(data, self.grid, meta={"fits_cards": cards})

    def __reduce__(self):
        return (GeneratedCube, (self[0], self[1], self.clean, self.grid))


class GalCubeCraft:
    """Generate cubes of random disk galaxies as GalCubeCraft 0.1.0 does, with real physics.

    The first ten parameters are 0.1.0's, in its order and with its meaning;
    the rest are keyword-only.

    Parameters
    ----------
    n_gals : int or None
        Galaxies per cube (None: 1 or 2 at random).
    n_cubes : int
        Number of cubes.
    resolution : {'all', 'resolved', 'unresolved', 'visualise'} or float
        Primary's ``R_e / (bmin / 2)``: log-uniform in [0.25, 4], [1, 4] or
        [0.25, 1]; 0.3, 1.2, 2, 3, 5 in turn; or this value.
    offset_gals : int
        Largest satellite offset from the primary, pixels, per axis.
    beam_info : sequence
        ``[bmin_px, bmaj_px, theta_deg]`` (or a `radio_beam.Beam`).
    grid_size : int
        Pixels per sky axis.
    n_spectral_slices : int
        Channels.
    fname : str or path or None
        Folder for the saved cubes; None: ``data/raw_data/<nz>x<ny>x<nx>``
        under the working directory.
    verbose : bool
        Show a progress bar.
    seed : int or None
        Seed of the whole set; cube ``i`` uses its own stream derived from
        ``(seed, i)``.  None draws fresh entropy (kept in ``self.entropy``,
        so the set can be made again).
    velocity_range : `~astropy.units.Quantity`, shape (2,)
        Lower and upper band edge (default -600, 600 km/s).
    pixel_scale : `~astropy.units.Quantity` [angle]
        Angular pixel size (default 1 arcsec); sets the WCS and each cube's
        distance.
    spectral_smoothing : float
        Sigma, in channels, of the Gaussian spectral response applied after
        channel integration (0.1.0 smooths with 0.6 channel); 0 turns it off.
    peak_snr : float or None
        Add noise with rms ``peak / peak_snr`` (None: no noise).  The returned
        cube is then the noisy one; the clean model is ``result.clean``.
    noise : {'correlated', 'white'}
        Noise correlated by the beam (autocorrelation = beam, as in an
        interferometric image) or white; either passes through the spectral response
        like the signal (`~galcubecraft.NoiseModel`, as in `~galcubecraft.observe` and
        the ``galcubecraft-0.1`` dataset preset).
    save : bool
        Write each cube (``cube_<i>.npy`` as 0.1.0, plus ``cube_<i>.fits`` with
        WCS and beam, and ``cube_<i>_galaxies.ecsv``, the truth table).
    device : str or `torch.device`, optional
        Where to render (e.g. ``'cuda'``).
    population : `~galcubecraft.population.SeedPopulation`, optional
        Use this population instead of one built from the arguments above.

    Examples
    --------
    >>> from galcubecraft import GalCubeCraft
    >>> g = GalCubeCraft(n_gals=1, n_cubes=1, grid_size=32, n_spectral_slices=16, seed=1,
    ...                  verbose=False, save=False)
    >>> cube, params = g.generate_cubes()[0]
    >>> cube.shape
    (16, 32, 32)
    """

    def __init__(self, n_gals=None, n_cubes=1, resolution="all", offset_gals=5,
                 beam_info=(4, 4, 0), grid_size=125, n_spectral_slices=40, fname=None,
                 verbose=True, seed=None, *, velocity_range=(-600, 600) * _KMS,
                 pixel_scale=1 * u.arcsec, spectral_smoothing=0.6, peak_snr=None,
                 noise="correlated", save=True, device=None, population=None):
        self.n_cubes = int(validate_number("n_cubes", n_cubes, minimum=1))
        if population is None:
            population = SeedPopulation(n_gals, resolution, offset_gals, beam_info, grid_size,
                                        n_spectral_slices, velocity_range=velocity_range,
                                        pixel_scale=pixel_scale)
        self.population = population
        self.spectral_smoothing = validate_number("spectral_smoothing", spectral_smoothing,
                                                  minimum=0)
        self.peak_snr = (None if peak_snr is None
                         else validate_number("peak_snr", peak_snr, positive=True))
        if noise not in _NOISE_KINDS:
            raise ValueError(f"noise must be one of {_NOISE_KINDS}, got {noise!r}")
        self.noise = noise
        self.fname = fname
        self.save = bool(save)
        self.verbose = bool(verbose)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.seed = seed
        self.entropy = seed if seed is not None else np.random.SeedSequence().entropy
        self.results = []
        self._draw_cache = {}
        self.grid = self.population.grid(
            SampledGaussian(self.spectral_smoothing) if self.spectral_smoothing > 0 else None)
        self._projector = None

    # ------------------------------------------------------------------ 0.1.0's attributes
    @property
    def n_gals(self):
        return [len(d["galaxies"]) for d in self._draws]

    @property
    def _draws(self):
        """Every cube's draw (made on first use: 0.1.0's per-cube attributes need them all)."""
        return [self.draw(i) for i in range(self.n_cubes)]

    def draw(self, index):
        """Cube ``index``'s galaxies: its `SeedPopulation.draw`, from its own random stream."""
        if index not in self._draw_cache:
            if not 0 <= index < self.n_cubes:
                raise IndexError(f"cube index {index} out of range for {self.n_cubes} cubes")
            self._draw_cache[index] = self.population.draw(index, self._rng(index, 0))
        return self._draw_cache[index]

    @property
    def resolution(self):
        return self.population.resolution

    @property
    def beam_info(self):
        return self.population.beam_info

    @property
    def grid_size(self):
        return self.population.grid_size

    @property
    def n_spectral_slices(self):
        return self.population.n_spectral_slices

    @property
    def offset_gals(self):
        return self.population.offset_gals

    def _column(self, name, unit=None):
        out = []
        for d in self._draws:
            col = d["galaxies"][name]
            out.append(np.asarray(col.to_value(unit) if unit is not None else col))
        return out

    @property
    def all_Re(self):
        """Effective radii in pixels, per cube (0.1.0's attribute)."""
        return self._column("r_eff_pix")

    @property
    def all_hz(self):
        """Scale heights in pixels, per cube."""
        return self._column("scale_height_pix")

    @property
    def all_Se(self):
        """Emissivity at R_e (0.1.0's S_e, in units of ``population.emissivity_unit``)."""
        return self._column("S_e")

    @property
    def all_n(self):
        return self._column("sersic_n")

    @property
    def all_gal_vz_sigmas(self):
        """Velocity dispersions, km/s."""
        return self._column("dispersion", _KMS)

    @property
    def all_gal_x_angles(self):
        """Inclinations, degrees."""
        return self._column("inclination", u.deg)

    @property
    def all_gal_y_angles(self):
        """Position angles (east of north, receding side), degrees."""
        return self._column("position_angle", u.deg)

    @property
    def all_gal_v_0(self):
        return self._column("v_0", _KMS)

    @property
    def all_pix_spatial_scales(self):
        return [np.full(len(d["galaxies"]), d["pix_spatial_scale"]) for d in self._draws]

    def __len__(self):
        return self.n_cubes

    def __repr__(self):
        return (f"<GalCubeCraft n_cubes={self.n_cubes} seed={self.seed} "
                f"population={self.population!r}>")

    # ------------------------------------------------------------------ generation
    def _rng(self, index, stream):
        return np.random.default_rng(np.random.SeedSequence(self.entropy,
                                                            spawn_key=(index, stream)))

    @property
    def output_dir(self):
        """Where cubes are saved."""
        if self.fname is not None:
            return Path(self.fname)
        g = self.population
        return (Path(os.getcwd()) / "data" / "raw_data"
                / f"{g.n_spectral_slices}x{g.grid_size}x{g.grid_size}")

    def _render(self, draw):
        if self._projector is None:
            self._projector = Projector(self.grid, device=self.device)
        with torch.no_grad():
            cube = render_tensor(draw["objects"], self.grid, projector=self._projector)
        return cube.cpu().numpy().astype(np.float32)

    def generate_one(self, index):
        """Make cube ``index`` (0-based) without saving it; returns a `GeneratedCube`."""
        if not 0 <= index < self.n_cubes:
            raise IndexError(f"cube index {index} out of range for {self.n_cubes} cubes")
        draw = self.draw(index)
        clean = self._render(draw)
        params = {
            "galaxy_centers": [np.array([row["x_pix"], row["y_pix"], row["z_pix"]])
                               for row in draw["galaxies"]],
            "average_vels": self.grid.spectral_axis.to_value(_KMS),
            "beam_info": self.population.beam_info,
            "n_gals": len(draw["galaxies"]),
            "pix_spatial_scale": draw["pix_spatial_scale"],
            "galaxies": draw["galaxies"],
            "resolution_ratio": draw["r"],
            "distance": draw["distance"],
            "pixel_scale": self.population.pixel_scale,
            "channel_width": self.grid.channel_width,
            "beam": self.grid.beam,
            "unit": self.grid.unit,
            "spectral_smoothing": self.spectral_smoothing,
            "seed": {"entropy": self.entropy, "spawn_key": (index,)},
            "index": index,
            "peak_snr": self.peak_snr,
            "noise": self.noise if self.peak_snr is not None else None,
            "noise_rms": None,
        }
        cube = clean
        if self.peak_snr is not None:
            rms = peak_rms(clean, self.peak_snr)
            # the one noise path of observations and datasets (the dataset preset of this
            # population draws the same kind of noise): through the spectral response too
            model = NoiseModel(peak_snr=self.peak_snr,
                               correlation="white" if self.noise == "white" else "beam")
            noise = model.draw(self.grid, rms, self._rng(index, 1))
            cube = (clean + noise).astype(np.float32)
            params["noise_rms"] = rms * self.grid.unit
        return GeneratedCube(cube, params, clean, self.grid)

    def save_cube(self, result, folder=None):
        """Write a `GeneratedCube` as ``cube_<i>.npy``, ``.fits`` and ``_galaxies.ecsv`` (atomic).

        ``i`` is 1-based, as in 0.1.0.  Returns the paths written.
        """
        folder = Path(folder) if folder is not None else self.output_dir
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"cube_{result.params['index'] + 1}"
        paths = {"npy": stem.with_suffix(".npy"), "fits": stem.with_suffix(".fits"),
                 "galaxies": stem.parent / (stem.name + "_galaxies.ecsv")}
        with atomic_path(paths["npy"], overwrite=True) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, result.cube)
        result.to_spectral_cube().write(paths["fits"], overwrite=True)
        with atomic_path(paths["galaxies"], overwrite=True) as tmp:
            result.params["galaxies"].write(tmp, format="ascii.ecsv", overwrite=True)
        result.params["files"] = paths
        return paths

    def generate_cubes(self):
        """Make (and, with ``save=True``, write) every cube.

        Returns
        -------
        list of `GeneratedCube`
            Each unpacks as ``(cube, params)``.  ``cube`` is a float32 array
            ``(n_spectral_slices, grid_size, grid_size)`` in Jy/beam.
            ``params`` has 0.1.0's keys, ``galaxy_centers`` (per galaxy
            ``[x, y, z]``: column and row of its centre, 0-based, and its
            line-of-sight offset in pixels), ``average_vels`` (channel centres,
            km/s), ``beam_info``, ``n_gals`` and ``pix_spatial_scale`` (kpc per
            pixel), and the truth: ``galaxies``, an `~astropy.table.QTable` with
            one row per galaxy and every parameter with its unit (documented in
            the migration page), plus ``resolution_ratio``, ``distance``,
            ``pixel_scale``, ``channel_width``, ``beam``, ``unit``,
            ``spectral_smoothing``, ``seed``, ``peak_snr``, ``noise``,
            ``noise_rms`` and, once saved, ``files``.
        """
        self.results = []
        for index in tqdm(range(self.n_cubes), disable=not self.verbose, unit="cube",
                          desc="GalCubeCraft"):
            result = self.generate_one(index)
            if self.save:
                self.save_cube(result)
            self.results.append(result)
        return self.results

    def visualise(self, data, idx, save=False, fname_save=None):
        """Moment-0 and moment-1 maps and the spectrum of ``data[idx]`` (0.1.0's helper).

        See `galcubecraft.visualise.visualise`.
        """
        from .visualise import visualise
        return visualise(data, idx, save=save, fname_save=fname_save)
