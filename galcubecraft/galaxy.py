"""A galaxy (components + geometry + flux) and a scene of galaxies."""
import astropy.units as u
import torch

from .components.base import to_tensor
from .components.flows import Flow, Warp
from .components.kinematics import AnalyticRotationCurve, RotationCurve
from .components.surface import SersicDisk, Surface, SurfaceSum
from .components.vertical import ExponentialVertical, VerticalProfile
from .distance import Placed, default_cosmology
from .parameters import Parameter, resolve_aliases
from .rings import DiskModel
from .units import radio_velocity

__all__ = ["Galaxy", "Scene", "default_cosmology", "radio_velocity"]

_KMS = u.km / u.s


class Galaxy(Placed):
    r"""A rotating disk galaxy: components, orientation, position and flux.

    The emission density is :math:`\Sigma(R)\,\rho(z)` in the disk frame,
    with :math:`\Sigma` the surface profile normalised so that the galaxy's
    total line flux is ``flux`` and :math:`\rho` the vertical profile.  The
    gas moves on circular orbits with the speed of the rotation curve and an
    isotropic Gaussian velocity dispersion; the line-of-sight velocity is

    .. math:: v = v_{\rm sys} + v_c(R)\,\sin i\,\cos\phi

    with :math:`\phi` the azimuth in the disk plane, measured from the receding
    half of the major axis.  Real disks add ``flows`` (radial, vertical, lagging,
    bisymmetric and lopsided motions, a dispersion profile: `galcubecraft.components.flows`)
    and a ``warp`` (tilted rings).

    Parameters
    ----------
    surface : `~galcubecraft.components.Surface` or `~galcubecraft.SurfaceSum`
        Face-on surface-brightness profile: `~galcubecraft.SersicDisk`,
        `~galcubecraft.GaussianRing`, `~galcubecraft.TabulatedSurface`, or a sum of
        profiles with their shares of the flux (bulge + disk, disk + ring).
    kinematics : `~galcubecraft.RotationCurve`
        Rotation law.
    inclination : `~astropy.units.Quantity` [angle]
        0 deg (face-on) to 90 deg (edge-on).
    position_angle : `~astropy.units.Quantity` [angle]
        Angle of the *receding* half of the major axis, measured from north
        through east (the radio convention, as `radio_beam.Beam.pa`).
    flux : `~astropy.units.Quantity` [spectral flux density x speed]
        Total line flux, e.g. in Jy km/s (>= 0): the observed-frame :math:`S\Delta V`
        (velocities at the line's observed frequency), as `galcubecraft.lines` uses it; on
        the grid's radio-velocity axis the line integrates to ``flux (1 - v_sys / c)``.
    vertical : `~galcubecraft.components.VerticalProfile`, optional
        Vertical profile (`~galcubecraft.ExponentialVertical`,
        `~galcubecraft.Sech2Vertical`, `~galcubecraft.GaussianVertical`); razor-thin by
        default.
    dispersion : `~astropy.units.Quantity` [speed]
        Line-of-sight velocity dispersion (Gaussian sigma, not FWHM), >= 0;
        default 10 km/s.
    v_sys : `~astropy.units.Quantity` [speed], optional
        Systemic velocity in the radio convention, ``c (1 - f / f0)``, with ``f0``
        the grid's rest frequency.  Default: the radio velocity of ``redshift``,
        ``c z / (1 + z)``, when a redshift is given, else 0 km/s.  The rotation and
        dispersion are physical velocities in the galaxy's frame; in radio
        velocity they appear compressed by ``1 - v_sys / c = 1 / (1 + z)``.
    offset : `~astropy.units.Quantity` [angle or length], shape (2,)
        ``(east, north)`` offset of the centre from the grid's field centre, in
        the grid's tangent plane (default ``(0, 0) arcsec``).
    distance : `~astropy.units.Quantity` [length], optional
        Angular-diameter distance, needed for sizes given as lengths.
    redshift : float, optional
        Redshift; the distance is then the angular-diameter distance of
        ``cosmology`` (default `~galcubecraft.default_cosmology`, Planck18).
    cosmology : `~astropy.cosmology.Cosmology`, optional
        Cosmology for ``redshift``.
    flows : sequence of `~galcubecraft.components.Flow`, optional
        Motions besides rotation, at most one of each kind.
    warp : `~galcubecraft.Warp`, optional
        Tilted rings: inclination, position angle, scale height (a flare), centre and
        systemic velocity over radius; its tables replace ``inclination``,
        ``position_angle`` and the vertical profile's ``scale_height``, which still hold
        where the warp gives no table.

    Examples
    --------
    >>> import astropy.units as u
    >>> import galcubecraft as gcc
    >>> galaxy = gcc.Galaxy(
    ...     surface=gcc.SersicDisk(r_eff=5 * u.kpc, n=1),
    ...     kinematics=gcc.ArctanRotationCurve(v_max=200 * u.km / u.s, r_turn=1 * u.kpc),
    ...     inclination=60 * u.deg, position_angle=30 * u.deg,
    ...     flux=30 * u.Jy * u.km / u.s, distance=20 * u.Mpc)
    >>> round(float(galaxy.to_arcsec("r_eff", galaxy.surface.r_eff)), 3)
    51.566
    """

    inclination = Parameter("angle", minimum=0, maximum=90,
                            description="inclination, 0 face-on to 90 deg edge-on")
    position_angle = Parameter("angle", description="PA of the receding major axis, east of "
                                                    "north")
    flux = Parameter("line_flux", nonnegative=True,
                     description="total line flux (observed-frame S dV)")
    dispersion = Parameter("velocity", nonnegative=True, default=10 * _KMS,
                           description="velocity dispersion (Gaussian sigma)")
    v_sys = Parameter("velocity", optional=True, default=None,
                      description="systemic radio velocity")
    offset = Parameter("size", shape=(2,), default=[0.0, 0.0] * u.arcsec,
                       description="(east, north) offset of the centre from the field centre")

    #: The parts of a galaxy: attribute -> base class of the component it holds.
    COMPONENTS = {"surface": Surface, "vertical": VerticalProfile,
                  "kinematics": RotationCurve}

    def __init__(self, *, surface, kinematics, inclination, position_angle, flux,
                 vertical=None, dispersion=10 * _KMS, v_sys=None, offset=None,
                 distance=None, redshift=None, cosmology=None, flows=(), warp=None):
        if vertical is None:
            vertical = ExponentialVertical(0 * u.arcsec)
        for name, value in (("surface", surface), ("kinematics", kinematics),
                            ("vertical", vertical)):
            base = self.COMPONENTS[name]
            if not isinstance(value, base) and not (name == "surface"
                                                    and isinstance(value, SurfaceSum)):
                raise TypeError(f"{name} must be a {base.__name__}, got {value!r}")
        if isinstance(flows, Flow):
            flows = (flows,)
        flows = tuple(flows)
        for flow in flows:
            if not isinstance(flow, Flow):
                raise TypeError(f"flows must be Flow objects (RadialFlow, BisymmetricFlow, "
                                f"...), got {flow!r}")
        # one order for every galaxy (the order of Flow.kinds): flows add, so it changes
        # nothing but how galaxies compare, batch and print
        order = {kind: k for k, kind in enumerate(Flow.kinds)}
        flows = tuple(sorted(flows, key=lambda f: order.get(type(f), len(order))))
        kinds = [type(f) for f in flows]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"flows: at most one of each kind, got {[k.__name__ for k in kinds]}")
        if warp is not None and not isinstance(warp, Warp):
            raise TypeError(f"warp must be a Warp, got {warp!r}")
        if (isinstance(kinematics, AnalyticRotationCurve) and kinematics.r_0 is None
                and not (isinstance(surface.main, SersicDisk) and not surface.main.key_prefix)):
            raise ValueError("kinematics: an AnalyticRotationCurve without r_0 is tied to a "
                             f"Sersic profile's r_eff and n; {type(surface.main).__name__} has "
                             "none: give r_0")
        self.surface, self.kinematics, self.vertical = surface, kinematics, vertical
        self.flows, self.warp = flows, warp
        self.inclination = inclination
        self.position_angle = position_angle
        self.flux = flux
        self.dispersion = dispersion
        self._v_sys_given = v_sys is not None
        self.offset = [0.0, 0.0] * u.arcsec if offset is None else offset
        self._place(distance, redshift, cosmology)
        if v_sys is None:
            v_sys = radio_velocity(self.redshift) if self.redshift is not None else 0 * _KMS
        self.v_sys = v_sys

    def _init_arguments(self):
        return {**super()._init_arguments(), **self.components,
                "v_sys": self.v_sys if self._v_sys_given else None,
                "flows": self.flows, "warp": self.warp}

    def _values(self):
        return {**self._init_arguments(), "v_sys": self.v_sys}

    @property
    def components(self):
        return {"surface": self.surface, "vertical": self.vertical,
                "kinematics": self.kinematics}

    def _parts(self):
        """Every component: surface, vertical profile, rotation law, flows and warp."""
        return [*self.components.values(), *self.flows,
                *([] if self.warp is None else [self.warp])]

    @property
    def model(self):
        """The classes of this galaxy's parts (`galcubecraft.rings.DiskModel`): what the
        projector needs besides the tensors, and what galaxies rendered in one batch share."""
        terms = getattr(self.surface, "terms", (self.surface,))
        return DiskModel(surface=type(terms[0]), terms=tuple(type(t) for t in terms[1:]),
                         vertical=type(self.vertical),
                         kinematics=type(self.kinematics),
                         flows=tuple(type(f) for f in self.flows),
                         warp=None if self.warp is None else type(self.warp))

    #: The `tensors` that keep float64 whatever the dtype asked for: a radio velocity (at
    #: high redshift float32 would lose the line's width; the projector subtracts the band's
    #: centre before its own cast).
    FLOAT64 = ("v_sys",)

    def numbers(self):
        """All parameters in internal units, what `tensors` makes tensors of: floats, and
        numpy arrays for tables (`stack_parameters` stacks many galaxies' at once)."""
        d = self.declarations
        offset = d["offset"]
        out = {"x0": offset.to_internal(self.offset[0], self.to_arcsec),
               "y0": offset.to_internal(self.offset[1], self.to_arcsec)}
        for name in ("inclination", "position_angle", "flux", "dispersion", "v_sys"):
            out[name] = d[name].to_internal(getattr(self, name))
        for component in self._parts():
            out.update(component.numbers(self.to_arcsec))
        return out

    @classmethod
    def tensor_dtype(cls, key, dtype):
        """The dtype of `tensors`' ``key`` when ``dtype`` is asked for (`FLOAT64`)."""
        return torch.float64 if key in cls.FLOAT64 and dtype.is_floating_point else dtype

    def tensors(self, device=None, dtype=torch.float32):
        """All parameters as plain tensors in internal units, the projector's input.

        Keys: ``x0``, ``y0`` (east and north offset, arcsec), ``inclination``,
        ``position_angle`` (rad), ``flux`` (Jy km/s), ``dispersion``, ``v_sys``
        (km/s, float64: `FLOAT64`), and each component's parameters (sizes in arcsec).
        """
        return {k: to_tensor(v, device, self.tensor_dtype(k, dtype))
                for k, v in self.numbers().items()}

    # ------------------------------------------------------------------ flat dictionaries
    #: The parts a flat dictionary names by law: key -> (base class, default law, in words).
    LAWS = {"surface": (Surface, "sersic", "surface profile"),
            "vertical": (VerticalProfile, "exponential", "vertical profile"),
            "rotation": (RotationCurve, "arctan", "rotation law")}

    @classmethod
    def flat_parameters(cls):
        """Every parameter a flat galaxy dictionary may hold: name -> `Parameter`.

        The galaxy's own, those of every surface profile, vertical profile and rotation law
        (one of each is chosen by the ``surface``, ``vertical`` and ``rotation`` keys), and
        those of every flow and of a warp, each under its key (``ring_radius``,
        ``bar_v_2t``, ``warp_inclination``); the names are unique.  This is what TOML
        ``[[galaxy]]`` tables, command-line flags, catalogues and truth tables are made of.
        """
        out = dict(cls.declarations)
        owners = [*Surface.laws.values(), *Surface.addends.values(),
                  *VerticalProfile.laws.values(), *RotationCurve.laws.values(), *Flow.kinds,
                  Warp]
        for owner in owners:
            for name, p in owner.flat_declarations().items():
                if name in out:
                    continue          # shared by name (scale_height; a law's v_max alias)
                out[name] = p
        out.update(cls._fraction_declarations())
        return out

    @staticmethod
    def _fraction_declarations():
        """``<prefix>flux_fraction`` of every profile a `SurfaceSum` may add."""
        return {p.name: p for p in (c.fraction_declaration() for c in Surface.addends.values())}

    def laws(self):
        """The names of this galaxy's surface, vertical and rotation laws."""
        named = {"surface": self.surface.main, "vertical": self.vertical,
                 "rotation": self.kinematics}
        out = {}
        for key, part in named.items():
            law = type(part).law
            if law is None:
                raise ValueError(f"{type(part).__name__} has no law name; it cannot be written "
                                 "as a flat dictionary")
            out[key] = law
        return out

    def to_dict(self):
        """The galaxy as a flat dictionary of Quantities and numbers (``surface``,
        ``vertical`` and ``rotation``: its laws; flows and a warp under their keys).

        `Galaxy.from_dict` makes the same galaxy from it; truth tables and catalogues
        are rows of these.
        """
        out = self.laws()
        out.update(self.parameters)
        for part in self._parts():
            out.update(part.flat())
        out["v_sys"] = self.v_sys
        return out

    @classmethod
    def from_dict(cls, values, *, defaults=None, where="galaxy", cosmology=None):
        """A galaxy from a flat dictionary: Quantities, or text such as ``'8.4 arcsec'``.

        Keys are the names of `flat_parameters` plus ``surface`` (a name of
        `Surface.laws`, default ``'sersic'``), ``vertical`` (of `VerticalProfile.laws`,
        default ``'exponential'``) and ``rotation`` (of `RotationCurve.laws`, default
        ``'arctan'``).  A flow or a warp is made when any of its keys is given.
        ``defaults`` fills keys the dictionary lacks (the reference galaxy of the command
        line, say), its ``laws`` entry the chosen rotation law's own (``{"flat": {"v_flat":
        ...}, ...}``); keys of other laws than the chosen ones are refused, old spellings are
        accepted with a `DeprecationWarning`, and errors name the key.
        """
        flat = cls.flat_parameters()
        values = {k: v for k, v in dict(values).items() if v is not None}
        chosen = {}
        for key, (base, default, _) in cls.LAWS.items():
            law = str(values.pop(key, (defaults or {}).get(key, default))).lower()
            if law not in base.laws:
                raise ValueError(f"{where}: {key} must be one of {sorted(base.laws)}, got "
                                 f"{law!r}")
            chosen[key] = base.laws[law]
        law_cls = chosen["rotation"]
        law = law_cls.law
        # profiles added to the surface law's (a SurfaceSum): those given a flux fraction
        main = chosen["surface"]
        if main.key("flux_fraction") in values:
            raise ValueError(f"{where}: {main.key('flux_fraction')}: the {main.law!r} profile is "
                             "the galaxy's surface; a flux fraction is for a profile added "
                             "to it")
        added = [c for c in Surface.addends.values() if c.key("flux_fraction") in values]
        extras = [*Flow.kinds, Warp]
        mine = {**cls.declarations}
        for owner in (main, chosen["vertical"], law_cls, *extras, *added):
            mine.update(owner.flat_declarations())
        mine.update({c.key("flux_fraction"): c.fraction_declaration() for c in added})
        values = resolve_aliases(values, mine, where)
        unknown = set(values) - set(flat)
        if unknown:
            raise ValueError(f"{where}: unknown galaxy setting(s) {sorted(unknown)}; known: "
                             f"{sorted(flat)}")
        other = set(values) - set(mine)
        for key, (base, _, part) in cls.LAWS.items():
            owners = [*base.laws.values(), *(Surface.addends.values() if key == "surface" else ())]
            theirs = {n for c in owners for n in c.flat_declarations()}
            stray = sorted(other & theirs)
            if stray:
                hint = ""
                if key == "surface":
                    hint = (" (a profile added to it needs its share of the flux: "
                            f"{sorted(c.key('flux_fraction') for c in Surface.addends.values())})")
                raise ValueError(f"{where}: {stray} belong to another {part} than "
                                 f"{chosen[key].law!r}, which takes "
                                 f"{list(chosen[key].flat_declarations())}{hint}")
        merged = dict((defaults or {}).get("laws", {}).get(law, {}))
        merged.update({k: v for k, v in (defaults or {}).items()
                       if k in mine and k not in law_cls.declarations})
        merged.update(values)
        parsed = {}
        for name, value in merged.items():
            p = mine[name]
            text = isinstance(value, (str, list, tuple))
            parsed[name] = p.parse(value, name) if text else p.validate(value, name)
        needed = {**cls.declarations, **chosen["surface"].flat_declarations(),
                  **chosen["vertical"].flat_declarations(), **law_cls.declarations}
        missing = [n for n, p in needed.items() if p.required and n not in parsed]
        if missing:
            raise ValueError(f"{where}: missing {missing} (surface {chosen['surface'].law!r} "
                             f"needs {list(chosen['surface'].flat_declarations())}, rotation "
                             f"{law!r} {list(law_cls.param_names)})")

        def given(owner):
            declared = owner.flat_declarations()
            if not any(k in values for k in declared):
                return False
            lacking = [k for k, p in declared.items() if p.required and k not in parsed]
            if lacking:
                raise ValueError(f"{where}: a {owner.__name__} needs {lacking} too")
            return True
        flows = [f.from_flat(parsed) for f in Flow.kinds if given(f)]
        warp = Warp.from_flat(parsed) if given(Warp) else None
        for term in added:
            lacking = [k for k, p in term.flat_declarations().items()
                       if p.required and k not in parsed]
            if lacking:
                raise ValueError(f"{where}: a {term.__name__} added with "
                                 f"{term.key('flux_fraction')} needs {lacking} too")
        try:
            surface = SurfaceSum.from_flat(main.from_flat(parsed), parsed)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        own = {n: parsed[n] for n in cls.declarations if n in parsed}
        return cls(surface=surface,
                   vertical=chosen["vertical"].from_flat(parsed),
                   kinematics=law_cls.from_flat(parsed), cosmology=cosmology, flows=flows,
                   warp=warp, **own)

    def __repr__(self):
        where = ""
        if self.distance is not None:
            where = f", distance={self.distance}"
        elif self.redshift is not None:
            where = f", redshift={self.redshift}"
        extra = "".join(f" flow={f!r}" for f in self.flows)
        if self.warp is not None:
            extra += f" warp={self.warp!r}"
        return (f"<Galaxy surface={self.surface!r} vertical={self.vertical!r} "
                f"kinematics={self.kinematics!r}{extra} inclination={self.inclination} "
                f"position_angle={self.position_angle} flux={self.flux} "
                f"dispersion={self.dispersion} v_sys={self.v_sys} offset={self.offset}{where}>")


class Scene(Placed):
    """Several galaxies rendered into one cube, optionally sharing a distance.

    Galaxies without a distance or redshift of their own take the scene's.

    Parameters
    ----------
    galaxies : sequence of `~galcubecraft.Galaxy`
    distance : `~astropy.units.Quantity` [length], optional
    redshift : float, optional
    cosmology : `~astropy.cosmology.Cosmology`, optional
    """

    def __init__(self, galaxies, *, distance=None, redshift=None, cosmology=None):
        if isinstance(galaxies, Galaxy):
            galaxies = [galaxies]
        galaxies = list(galaxies)
        if not galaxies:
            raise ValueError("a Scene needs at least one galaxy, got none")
        for g in galaxies:
            if not isinstance(g, Placed) or isinstance(g, Scene):
                raise TypeError(f"Scene holds Galaxy and Stream objects, got {g!r}")
        self._place(distance, redshift, cosmology)
        self.galaxies = [g.with_distance(distance, redshift, cosmology)
                         if not g.is_placed and self.is_placed else g for g in galaxies]

    def _init_arguments(self):
        return {"galaxies": self.galaxies, **super()._init_arguments()}

    def __iter__(self):
        return iter(self.galaxies)

    def __len__(self):
        return len(self.galaxies)

    def __repr__(self):
        return f"<Scene of {len(self)} galaxies>"
