"""Rest frequencies of common lines, so that a grid can say ``rest_frequency="CO(3-2)"``.

Sources: the CO ladder and [CII] 158 µm from the Cologne Database for Molecular Spectroscopy
(CDMS; Müller et al. 2005, J. Mol. Struct. 742, 215) as listed by Splatalogue; HI 21 cm from
Hellwig et al. (1970, IEEE Trans. Instrum. Meas. 19, 200); Hα and [OIII] 5007 as *vacuum*
wavelengths from the NIST Atomic Spectra Database (their air wavelengths are 6562.80 Å and
5006.84 Å).
"""
import astropy.constants as const
import astropy.units as u

from .distance import default_cosmology
from .units import validate_number, validate_quantity

__all__ = ["LINES", "rest_frequency", "line_luminosity", "line_flux_from_luminosity",
           "line_flux_from_gas_mass", "ALPHA_CO"]

#: CO-to-H2 conversion factor of the Milky Way, including helium (Bolatto, Wolfire & Leroy
#: 2013, ARA&A 51, 207): M_gas = alpha_CO L'_CO(1-0).
ALPHA_CO = 4.3 * u.Msun / (u.K * u.km / u.s * u.pc**2)
_LPRIME = u.K * u.km / u.s * u.pc**2

_CO = {"CO(1-0)": 115.2712018, "CO(2-1)": 230.538, "CO(3-2)": 345.7959899,
       "CO(4-3)": 461.0407682, "CO(5-4)": 576.2679305, "CO(6-5)": 691.4730763,
       "CO(7-6)": 806.651806, "CO(8-7)": 921.7997, "CO(9-8)": 1036.912393,
       "CO(10-9)": 1151.985452}

#: Line name -> rest frequency (radio lines) or vacuum rest wavelength (optical lines).
LINES = {**{name: value * u.GHz for name, value in _CO.items()},
         "[CII]158": 1900.5369 * u.GHz,
         "HI": 1420.405751768 * u.MHz,
         "Halpha": 6564.614 * u.AA,
         "[OIII]5007": 5008.240 * u.AA}
_ALIASES = {"[CII]": "[CII]158", "CII": "[CII]158", "HI21": "HI", "H-alpha": "Halpha",
            "Hα": "Halpha", "[OIII]": "[OIII]5007", "OIII": "[OIII]5007"}


def rest_frequency(line):
    """The rest frequency of ``line`` (a name of `LINES` or an alias), in GHz.

    Names are case-insensitive and ignore spaces (``"co(3-2)"``, ``"[CII]"``).
    Optical lines' vacuum wavelengths are converted with ``c / lambda``.
    """
    if not isinstance(line, str):
        raise TypeError(f"line must be a name such as 'CO(3-2)', got {line!r}")
    key = line.replace(" ", "").lower()
    table = {name.lower(): name for name in LINES}
    table.update({alias.lower(): name for alias, name in _ALIASES.items()})
    if key not in table:
        raise ValueError(f"unknown line {line!r}; known lines: {', '.join(LINES)}")
    return LINES[table[key]].to(u.GHz, equivalencies=u.spectral())


def _distances(redshift, cosmology):
    z = validate_number("redshift", redshift, positive=True)
    cosmo = cosmology or default_cosmology()
    return z, cosmo.luminosity_distance(z)


def _frequency(line):
    if isinstance(line, str):
        return rest_frequency(line)
    return validate_quantity("line", line, u.Hz, positive=True)


def line_luminosity(flux, redshift, line, cosmology=None):
    r"""The line luminosity :math:`L'` (K km/s pc²) of a line flux :math:`S\Delta v` at a redshift.

    Solomon & Vanden Bout (2005, ARA&A 43, 677, eq. 3), with the constant
    :math:`c^2 / 2 k_B` exact rather than rounded to 3.25e7:

    .. math:: L' = \frac{c^2}{2 k_B}\, S\Delta v\, \nu_{\rm obs}^{-2}\, D_L^2\, (1 + z)^{-3},
              \qquad \nu_{\rm obs} = \nu_0 / (1 + z)

    with :math:`D_L` the luminosity distance of ``cosmology`` (default Planck18).
    ``line`` is a name of `LINES` or a rest frequency.
    """
    flux = validate_quantity("flux", flux, u.Jy * u.km / u.s, nonnegative=True)
    z, d_l = _distances(redshift, cosmology)
    nu_obs = _frequency(line) / (1 + z)
    return (const.c**2 / (2 * const.k_B) * flux * d_l**2 / (nu_obs**2 * (1 + z)**3)).to(_LPRIME)


def line_flux_from_luminosity(luminosity, redshift, line, cosmology=None):
    """The line flux (Jy km/s) of a line of luminosity :math:`L'` at a redshift (inverse of
    `line_luminosity`)."""
    luminosity = validate_quantity("luminosity", luminosity, _LPRIME, nonnegative=True)
    unit_flux = line_luminosity(1 * u.Jy * u.km / u.s, redshift, line, cosmology)
    return (luminosity / unit_flux).decompose() * u.Jy * u.km / u.s


def line_flux_from_gas_mass(mass, redshift, line="CO(1-0)", alpha_co=ALPHA_CO, r_j1=1.0,
                            cosmology=None):
    r"""The CO line flux (Jy km/s) of a molecular gas mass at a redshift.

    :math:`L'_{\rm CO(1-0)} = M / \alpha_{\rm CO}` and
    :math:`L'_{J \to J-1} = r_{J1} L'_{\rm CO(1-0)}`, with the line ratio ``r_j1``
    (1 for CO(1-0); typical values for high-redshift star-forming galaxies are
    0.8, 0.6, 0.4 for J = 2, 3, 4, Carilli & Walter 2013, ARA&A 51, 105).
    """
    mass = validate_quantity("mass", mass, u.Msun, nonnegative=True)
    alpha_co = validate_quantity("alpha_co", alpha_co, ALPHA_CO.unit, positive=True)
    r_j1 = validate_number("r_j1", r_j1, positive=True)
    return line_flux_from_luminosity(r_j1 * mass / alpha_co, redshift, line, cosmology)
