"""Rest frequencies of common lines, so that a grid can say ``rest_frequency="CO(3-2)"``.

Sources: the CO ladder and [CII] 158 µm from the Cologne Database for Molecular Spectroscopy
(CDMS; Müller et al. 2005, J. Mol. Struct. 742, 215) as listed by Splatalogue; HI 21 cm from
Hellwig et al. (1970, IEEE Trans. Instrum. Meas. 19, 200); Hα and [OIII] 5007 as *vacuum*
wavelengths from the NIST Atomic Spectra Database (their air wavelengths are 6562.80 Å and
5006.84 Å).
"""
import astropy.units as u

__all__ = ["LINES", "rest_frequency"]

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
