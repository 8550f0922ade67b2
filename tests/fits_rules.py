"""The rules a FITS spectral cube must follow for astropy, spectral-cube, radio-beam and
(when importable) casatools, the way CASA, CARTA and spectral-cube will read it: a test helper.

    from fits_rules import assert_valid_cube
    assert_valid_cube("cube.fits")

`check_cube` returns one ``(PASS|FAIL|WARN|SKIP, check, detail)`` per rule.  These are the
rules of the project's shared validator (``shared/tools/validate_fits_cube.py``), kept here
so that every clone of the repository runs them.

casatools runs offline when `casadata` is installed too (`pip install casatools casadata`): the
validator then writes a site config pointing CASA at casadata with auto-updates off. Without
casatools the CASA checks are skipped.

Rules (each one measured against the consumers themselves):
* CUNIT3 must be present: wcslib silently assumes SI (m/s, Hz) without it,
  so km/s values would be read 1000x too small.
* CTYPE3 must be a FITS-standard spectral type that wcslib keeps as written
  (FREQ, VRAD, VOPT, VELO, WAVE, ... with optional -F2V style code).
  'VELOCITY' is not spectral for wcslib or CASA ('Linear' axis); AIPS-style
  'VELO-LSR' / 'FELO-HEL' are rewritten to optical velocity (VOPT), which
  shifts radio velocities silently.
* BMAJ, BMIN and BPA must all be present: radio-beam/spectral-cube default a
  missing BMIN to BMAJ and BPA to 0, while casacore (CASA, CARTA) drops the
  whole beam if any one is missing.
* Jy/beam must be spelled so casacore parses it as Jy/beam ('Jy/beam' or
  'JY/BEAM'); 'Jy beam-1' (what spectral-cube's own writer emits) becomes
  'Jy.beam-1' in CASA and its statistics give no flux density.
* A rest frequency (RESTFRQ or RESTFREQ) is required: without it a FREQ cube
  cannot be converted to km/s by spectral-cube, and CASA reports rest 0 Hz.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import warnings

import numpy as np

#: The checks of the current run: ``(status, name, detail)``.
RESULTS = []


def line(status, name, detail=""):
    RESULTS.append((status, name, detail))


def check(cond, name, ok="", bad=""):
    line("PASS" if cond else "FAIL", name, ok if cond else bad)
    return bool(cond)


SPEC_RE = re.compile(r"^(FREQ|ENER|WAVN|VRAD|WAVE|VOPT|ZOPT|AWAV|VELO|BETA)(-[A-Z2]{3})?$")
SPEC_UNIT = {"FREQ": "Hz", "VRAD": "m/s", "VOPT": "m/s", "VELO": "m/s", "WAVE": "m", "AWAV": "m",
             "ZOPT": "", "BETA": "", "ENER": "J", "WAVN": "1/m"}

CASA_SNIPPET = textwrap.dedent(r"""
    import json, sys, numpy as np
    import casatools
    path, out = sys.argv[1], sys.argv[2]
    r = {}
    ia = casatools.image()
    ia.open(path)
    rb = ia.restoringbeam()
    r["beam"] = ({k: rb[k]["value"] for k in ("major", "minor", "positionangle")} |
                 {"units": [rb[k]["unit"] for k in ("major", "minor", "positionangle")]}) if rb else None
    r["bunit"] = ia.brightnessunit()
    cs = ia.coordsys()
    r["types"] = list(cs.axiscoordinatetypes())
    try:
        rf = cs.restfrequency()
        r["rest_hz"] = float(rf["value"][0]) if len(rf["value"]) else 0.0
    except Exception as e:
        r["rest_hz"] = 0.0
    r["refcodes"] = list(cs.referencecode())
    cs.done()
    st = ia.statistics(verbose=False)
    r["max"] = float(st["max"][0]); r["has_flux"] = "flux" in st
    r["moments"] = None
    if "Spectral" in r["types"]:
        try:
            # no clipping: the same estimator as spectral-cube's moment1
            im = ia.moments(moments=[1], outfile=out, overwrite=True)
            arr = np.squeeze(im.getchunk()); msk = np.squeeze(im.getchunk(getmask=True))
            unit = im.brightnessunit(); im.done()
            np.save(out + ".npy", np.where(msk, arr, np.nan).T)   # casa order is x,y -> y,x
            r["moments"] = unit
        except Exception as e:
            r["moments"] = "ERROR " + str(e)[:100]
    ia.close(); ia.done()
    print("CASAJSON" + json.dumps(r))
""")


def casa_subprocess(path, thresh, m1_sc, sigmask):
    """Run casatools in a child process (own cwd, offline config)."""
    tmp = tempfile.mkdtemp(prefix="valcasa_")
    env = dict(os.environ)
    if "CASASITECONFIG" not in env:
        try:
            import casadata  # noqa: F401
            cfg = os.path.join(tmp, "casasiteconfig.py")
            with open(cfg, "w") as f:
                f.write("import casadata\ndatapath=[casadata.datapath]\nmeasurespath=casadata.datapath\n"
                        "measures_auto_update=False\ndata_auto_update=False\nnologfile=True\n")
            env["CASASITECONFIG"] = cfg
        except ImportError:
            pass
    script = os.path.join(tmp, "casa_probe.py")
    with open(script, "w") as f:
        f.write(CASA_SNIPPET)
    out = os.path.join(tmp, "mom1.im")
    p = subprocess.run([sys.executable, script, os.path.abspath(path), out, str(thresh)],
                       cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    js = [ln for ln in p.stdout.splitlines() if ln.startswith("CASAJSON")]
    if p.returncode != 0 or not js:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1][:160]
        line("FAIL", "casatools: open + probe", f"exit {p.returncode}: {tail}")
        return
    r = json.loads(js[0][len("CASAJSON"):])
    line("PASS", "casatools: image.open(FITS)", f"axes {r['types']}")
    check(r["beam"] is not None, "casatools: restoring beam",
          f"{r['beam']}" if r["beam"] else "", "none (casacore needs BMAJ, BMIN and BPA)")
    check("Spectral" in r["types"], "casatools: Spectral axis", "", f"axis types {r['types']}")
    check(r["rest_hz"] > 0, "casatools: rest frequency", f"{r['rest_hz']:.6g} Hz", "0 Hz")
    check(len(r["refcodes"]) and r["refcodes"][-1] not in ("", "Undefined"),
          "casatools: spectral frame", f"{r['refcodes']}", f"{r['refcodes']} (SPECSYS missing?)")
    if r["bunit"].lower().replace(" ", "") in ("jy/beam",):
        check(r["has_flux"], "casatools: statistics() flux density", "flux present", "no flux key")
    else:
        line("WARN" if "beam" in r["bunit"].lower() else "PASS", "casatools: brightness unit",
             f"{r['bunit']!r}")
    mom = r["moments"]
    if mom is None or str(mom).startswith("ERROR"):
        line("FAIL", "casatools: ia.moments offline", str(mom))
        return
    if m1_sc is None:
        line("SKIP", "casatools: moment-1 vs spectral-cube", "spectral-cube gave no moment-1")
        return
    m1c = np.load(out + ".npy")
    fac = 1e-3 if mom.strip() == "m/s" else 1.0
    both = sigmask & np.isfinite(m1c) & np.isfinite(m1_sc)
    if both.sum() == 0:
        line("FAIL", "casatools: moment-1 vs spectral-cube", "no overlapping finite pixels")
        return
    d = np.nanmax(np.abs(m1c[both] * fac - m1_sc[both]))
    check(d < 0.5, "casatools: ia.moments mom1 agrees with spectral-cube",
          f"max |diff| {d:.3g} km/s over {both.sum()} px (CASA unit {mom})", f"max |diff| {d:.3g} km/s")


def check_cube(path, no_casa=False, signal_frac=0.2):
    """Every rule's result for the cube at ``path``: a list of ``(status, check, detail)``,
    status PASS, FAIL, WARN or SKIP.  ``signal_frac``: the signal region is the spaxels whose
    peak is at least this fraction of the cube's maximum."""
    RESULTS.clear()
    a = argparse.Namespace(path=str(path), no_casa=no_casa, signal_frac=signal_frac)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _check(a)
    return list(RESULTS)


def assert_valid_cube(path, **kwargs):
    """Fail with every failed rule listed unless CASA, spectral-cube and radio-beam would read
    the cube at ``path`` as written."""
    results = check_cube(path, **kwargs)
    failed = [f"{name}: {detail}" for status, name, detail in results if status == "FAIL"]
    assert not failed, f"{path} breaks {len(failed)} rule(s):\n" + "\n".join(failed)
    assert any(status == "PASS" for status, _, _ in results)
    return results


def _check(a):
    import astropy.units as u
    from astropy.io import fits
    from astropy.wcs import WCS

    # ---- FITS + header keywords
    try:
        hdul = fits.open(a.path)
        hdu = next(h for h in hdul if h.is_image and h.header.get("NAXIS", 0) >= 3)
        h = hdu.header
    except Exception as e:  # noqa: BLE001
        line("FAIL", "fits: open, image HDU with NAXIS>=3", f"{type(e).__name__}: {e}")
        return
    check(h["NAXIS"] == 3 or (h["NAXIS"] == 4 and h.get("NAXIS4") == 1), "fits: 3-D (or 4-D, 1 Stokes)",
          f"NAXIS={h['NAXIS']} shape={hdu.shape}", f"NAXIS={h['NAXIS']} shape={hdu.shape}")
    for i in (1, 2, 3):
        miss = [k for k in (f"CTYPE{i}", f"CRVAL{i}", f"CRPIX{i}", f"CUNIT{i}") if k not in h]
        if f"CDELT{i}" not in h and f"CD{i}_{i}" not in h:
            miss.append(f"CDELT{i}")
        check(not miss, f"header: axis {i} keywords", f"{h.get(f'CTYPE{i}')!r} [{h.get(f'CUNIT{i}')}]",
              f"missing {miss}")
    for k in ("BUNIT", "BMAJ", "BMIN", "BPA", "SPECSYS"):
        check(k in h, f"header: {k}", repr(h.get(k)), "missing")
    rest = h.get("RESTFRQ", h.get("RESTFREQ"))
    check(rest is not None and float(rest) > 0, "header: RESTFRQ/RESTFREQ > 0", f"{rest}", f"{rest}")
    ct3 = str(h.get("CTYPE3", "")).strip()
    ok3 = bool(SPEC_RE.match(ct3)) and ct3 not in ("VELO-LSR", "VELO-HEL", "VELO-OBS") \
        and not ct3.startswith("FELO")
    check(ok3, "header: CTYPE3 is a FITS-standard spectral type", ct3,
          f"{ct3!r} (not standard; wcslib/CASA ignore or reinterpret it)")
    if ok3 and "CUNIT3" in h:
        want = SPEC_UNIT.get(ct3[:4], "")
        try:
            good = u.Unit(h["CUNIT3"]).is_equivalent(u.Unit(want)) if want else True
        except ValueError:
            good = False
        check(good, "header: CUNIT3 matches CTYPE3", f"{h['CUNIT3']} ~ {want}",
              f"{h['CUNIT3']!r} not {want}-like")
    # beam plausibility (degrees)
    try:
        bmaj, bmin = float(h["BMAJ"]), float(h["BMIN"])
        fov = max(abs(float(h["CDELT1"])) * h["NAXIS1"], abs(float(h["CDELT2"])) * h["NAXIS2"])
        pix = min(abs(float(h["CDELT1"])), abs(float(h["CDELT2"])))
        check(0 < bmin <= bmaj < fov, "header: beam plausible (deg, BMAJ>=BMIN>0, < field)",
              f"{bmaj*3600:.3g}\" x {bmin*3600:.3g}\" ({bmaj/pix:.2g} px)",
              f"BMAJ={bmaj} BMIN={bmin} deg vs field {fov:.3g} deg (arcsec written as deg?)")
    except (KeyError, ValueError, TypeError):
        line("SKIP", "header: beam plausible", "beam or CDELT1/2 missing")
    bunit = str(h.get("BUNIT", ""))
    try:
        bu = u.Unit(bunit, parse_strict="raise")
        line("PASS", "header: BUNIT parses (astropy)", f"{bunit!r} -> {bu}")
        if bu.is_equivalent(u.Jy / u.beam) or "beam" in bunit.lower():
            check(bunit.replace(" ", "").lower() == "jy/beam", "header: Jy/beam spelled for casacore",
                  repr(bunit), f"{bunit!r}: CASA reads it as a different unit and gives no flux")
    except ValueError:
        line("FAIL", "header: BUNIT parses (astropy)", repr(bunit))

    # ---- astropy.wcs
    try:
        w = WCS(h)
        line("PASS", "wcs: WCS(header)", f"ctype {list(w.wcs.ctype)}")
        check(w.has_celestial, "wcs: celestial axes", "", "no celestial pair")
        spec_ok = w.wcs.spec >= 0
        check(spec_ok, "wcs: wcslib spectral axis", f"axis {w.wcs.spec} {w.wcs.ctype[w.wcs.spec]}"
              if spec_ok else "", f"none (CTYPE3={ct3!r})")
        if spec_ok and w.wcs.ctype[w.wcs.spec].split("-")[0] != ct3.split("-")[0]:
            line("FAIL", "wcs: CTYPE3 kept as written", f"{ct3!r} -> {w.wcs.ctype[w.wcs.spec]!r}")
    except Exception as e:  # noqa: BLE001
        line("FAIL", "wcs: WCS(header)", f"{type(e).__name__}: {e}")

    # ---- radio_beam
    try:
        from radio_beam import Beam
        b = Beam.from_fits_header(h)
        line("PASS", "radio_beam: Beam.from_fits_header", f"{b.major.to(u.arcsec):.3g} x "
             f"{b.minor.to(u.arcsec):.3g} pa {b.pa.to(u.deg):.3g}")
    except ImportError:
        line("SKIP", "radio_beam", "not installed")
    except Exception as e:  # noqa: BLE001
        line("FAIL", "radio_beam: Beam.from_fits_header", f"{type(e).__name__}: {str(e)[:100]}")

    # ---- spectral_cube
    m1 = sig = None
    try:
        from spectral_cube import SpectralCube
    except ImportError:
        line("SKIP", "spectral_cube", "not installed")
        SpectralCube = None
    if SpectralCube is not None:
        try:
            cube = SpectralCube.read(a.path)
            line("PASS", "spectral_cube: read", f"{cube.shape} {cube.unit}")
        except Exception as e:  # noqa: BLE001
            line("FAIL", "spectral_cube: read", f"{type(e).__name__}: {str(e)[:120]}")
            cube = None
    if SpectralCube is not None and cube is not None:
        try:
            line("PASS", "spectral_cube: beam", str(cube.beam))
        except Exception as e:  # noqa: BLE001
            line("FAIL", "spectral_cube: beam", type(e).__name__)
        check(cube.unit != u.one, "spectral_cube: brightness unit", str(cube.unit), "dimensionless")
        try:
            ck = cube.with_spectral_unit(u.km / u.s, velocity_convention="radio")
            v = ck.spectral_axis.to_value(u.km / u.s)
            dv = np.diff(v)
            check(np.all(dv != 0) and np.allclose(dv, dv[0], rtol=1e-4), "spectral_cube: axis -> km/s (radio)",
                  f"{v[0]:.4g} .. {v[-1]:.4g} km/s, dv {dv[0]:.4g}", f"irregular channels {dv[:3]}")
            check(abs(dv[0]) > 1e-3, "spectral_cube: channel width plausible", f"{abs(dv[0]):.4g} km/s",
                  f"{abs(dv[0]):.3g} km/s (km/s values with CUNIT3 missing read as m/s?)")
            rf = float(rest) * u.Hz if rest else None
            cf = ck.with_spectral_unit(u.Hz, velocity_convention="radio", rest_value=rf)
            back = cf.with_spectral_unit(u.km / u.s, velocity_convention="radio", rest_value=rf)
            err = np.max(np.abs(back.spectral_axis.to_value(u.km / u.s) - v))
            check(err < 1e-6, "spectral_cube: km/s <-> Hz round trip", f"max err {err:.2g} km/s",
                  f"max err {err:.2g}")
            arr = ck.filled_data[:].value
            peak = np.nanmax(arr, axis=0)
            # robust rms from the median absolute deviation; moments 1/2 on voxels > 3 rms
            rms = 1.4826 * np.nanmedian(np.abs(arr - np.nanmedian(arr)))
            # signal region: bright spaxels (>= signal_frac x max) that are also >= 5 rms
            sigmask = (peak >= a.signal_frac * np.nanmax(peak)) & (peak >= 5 * rms)
            if not sigmask.any():
                line("WARN", "spectral_cube: signal region", f"no spaxel peaks >= 5 x rms ({rms:.3g}); "
                     "moment checks run on an empty region")
            masked = ck.with_mask(arr > 3 * rms)
            m0 = ck.moment0()
            m1_all = ck.moment1().to_value(u.km / u.s)      # unclipped: compared with CASA below
            m1q = masked.moment1().to_value(u.km / u.s)
            sigq = masked.linewidth_sigma().to_value(u.km / u.s)
            check(np.all(np.isfinite(m0.value[sigmask])), "spectral_cube: moment0 finite on signal",
                  f"{sigmask.sum()} px, unit {m0.unit}", "NaN in signal region")
            inband = np.all((m1q[sigmask] >= v.min() - 1e-6) & (m1q[sigmask] <= v.max() + 1e-6))
            check(np.all(np.isfinite(m1q[sigmask])) and inband, "spectral_cube: moment1 finite, in band",
                  f"{np.nanmin(m1q[sigmask]):.4g} .. {np.nanmax(m1q[sigmask]):.4g} km/s", "NaN or out of band")
            wide = sigmask & ((arr > 3 * rms).sum(axis=0) >= 3)   # >= 3 channels above 3 rms
            if not wide.any():
                line("WARN", "spectral_cube: linewidth_sigma > 0", "no spaxel with >= 3 channels > 3 rms "
                     "(S/N too low to test)")
            else:
                check(np.all(np.isfinite(sigq[wide]) & (sigq[wide] > 0)), "spectral_cube: linewidth_sigma > 0",
                      f"median {np.nanmedian(sigq[wide]):.4g} km/s on {wide.sum()} px (voxels > 3 x rms {rms:.3g})",
                      "NaN or <= 0")
            m1, sig = m1_all, sigmask
        except Exception as e:  # noqa: BLE001
            line("FAIL", "spectral_cube: km/s + moments", f"{type(e).__name__}: {str(e)[:120]}")

    # ---- casatools
    if a.no_casa:
        line("SKIP", "casatools", "--no-casa")
    else:
        try:
            import importlib.util
            have = importlib.util.find_spec("casatools") is not None
        except Exception:  # noqa: BLE001
            have = False
        if not have:
            line("SKIP", "casatools", "not importable")
        else:
            thr = 0.0
            try:
                thr = 0.05 * float(np.nanmax(hdu.data))
            except Exception:  # noqa: BLE001
                pass
            casa_subprocess(a.path, thr, m1, sig)
