"""Nothing lost: every output path of every command is checked against every input and against
the other outputs (any spelling, symbolic link, hard link) before any work or write."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from galcubecraft.cli import main
from galcubecraft.dataset import (CorruptShard, CubeDataset, DatasetInUse, generate_dataset,
                                  lock_folder)
from test_dataset import PRIORS, arrays
from test_header import casa_header, write


@pytest.fixture
def folder(tmp_path):
    """An observation, a link to it, a hard link to it, a priors file and a scene file."""
    header = casa_header(n_chan=16, n_pix=32)
    data = np.random.default_rng(0).normal(0, 1e-3, (1, 16, 32, 32)).astype(np.float32)
    cube = write(header, tmp_path / "obs.fits", data)
    os.symlink(cube, tmp_path / "link.fits")
    os.link(cube, tmp_path / "hard.fits")
    (tmp_path / "sub").mkdir()
    (tmp_path / "priors.toml").write_text('[galaxy]\nr_eff = "1.5 arcsec"\nv_max = "80 km/s"\n'
                                          '[placement]\nn = 1\nseed = 1\nedge = "6 arcsec"\n')
    (tmp_path / "scene.toml").write_text('[grid]\nshape = [8, 24, 24]\n')
    return tmp_path


def spellings(folder, name="obs.fits"):
    """Ways of naming the input: as is, through 'sub/..', relative, a link, a hard link."""
    return {"same": folder / name, "other spelling": folder / "sub" / ".." / name,
            "relative": os.path.relpath(folder / name), "symlink": folder / "link.fits",
            "hard link": folder / "hard.fits"}


def snapshot(folder):
    return {p.relative_to(folder): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def run(capsys, *args):
    status = main([str(a) for a in args])
    err = capsys.readouterr().err
    return status, err


INJECT = ["inject", "{cube}", "--priors", "{priors}"]


@pytest.mark.parametrize("spelling", ["same", "other spelling", "relative", "symlink",
                                      "hard link"])
@pytest.mark.parametrize("role", ["--output", "--truth"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_inject_never_writes_over_its_input(folder, capsys, spelling, role, overwrite):
    before = snapshot(folder)
    target = spellings(folder)[spelling]
    args = ["inject", folder / "obs.fits", "--priors", folder / "priors.toml"]
    if role == "--output":
        args += ["-o", target]
    else:
        args += ["-o", folder / "out.fits", "--truth", target]
    status, err = run(capsys, *args, *(["--overwrite"] if overwrite else []))
    assert status == 2
    assert role in err and "input" in err and err.count("\n") == 1
    assert snapshot(folder) == before


@pytest.mark.parametrize("truth", ["same", "symlink", "other spelling"])
def test_inject_output_and_truth_must_differ(folder, capsys, truth):
    out = folder / "out.fits"
    out.write_bytes(b"earlier result")
    os.symlink(out, folder / "out_link.fits")
    target = {"same": out, "symlink": folder / "out_link.fits",
              "other spelling": folder / "sub" / ".." / "out.fits"}[truth]
    before = snapshot(folder)
    status, err = run(capsys, "inject", folder / "obs.fits", "--priors", folder / "priors.toml",
                      "-o", out, "--truth", target, "--overwrite")
    assert status == 2 and "the same file" in err
    assert snapshot(folder) == before


def test_an_existing_truth_table_is_refused_before_the_cube_is_written(folder, capsys):
    (folder / "out_truth.ecsv").write_text("earlier truth")
    before = snapshot(folder)
    status, err = run(capsys, "inject", folder / "obs.fits", "--priors", folder / "priors.toml",
                      "-o", folder / "out.fits")
    assert status == 2 and "--truth" in err and "--overwrite" in err
    assert snapshot(folder) == before                    # out.fits was not written either


def test_inject_writes_both_when_all_is_well(folder, capsys):
    status, _ = run(capsys, "inject", folder / "obs.fits", "--priors", folder / "priors.toml",
                    "-o", folder / "out.fits")
    assert status == 0
    assert (folder / "out.fits").exists() and (folder / "out_truth.ecsv").exists()


@pytest.mark.parametrize("spelling", ["same", "other spelling", "symlink"])
def test_render_never_writes_over_its_config(folder, capsys, spelling):
    os.symlink(folder / "scene.toml", folder / "scene_link.toml")
    target = {"same": folder / "scene.toml", "other spelling": folder / "sub/../scene.toml",
              "symlink": folder / "scene_link.toml"}[spelling]
    before = snapshot(folder)
    status, err = run(capsys, "render", "--config", folder / "scene.toml", "-o", target,
                      "--overwrite")
    assert status == 2 and "--config" in err
    assert snapshot(folder) == before


@pytest.mark.parametrize("spelling", ["same", "symlink", "hard link"])
def test_plot_never_writes_over_its_cube(folder, capsys, spelling):
    target = spellings(folder)[spelling]
    before = snapshot(folder)
    status, err = run(capsys, "plot", folder / "obs.fits", "-o", target, "--overwrite")
    assert status == 2 and "input" in err
    assert snapshot(folder) == before


@pytest.mark.parametrize("output, message", [("x.txt", "cannot write a .txt image"),
                                             ("x.fits", "cannot write a .fits image")])
def test_plot_refuses_formats_it_cannot_write_before_reading_anything(folder, capsys, output,
                                                                      message):
    status, err = run(capsys, "plot", folder / "obs.fits", "-o", folder / output)
    assert status == 2 and message in err and err.count("\n") == 1
    assert not (folder / output).exists()


def test_plot_of_a_file_that_is_not_a_cube_is_one_line(folder, capsys):
    status, err = run(capsys, "plot", folder / "priors.toml", "-o", folder / "x.png")
    assert status == 2 and "cannot read" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- datasets


def test_swapped_shards_are_caught_by_resume_and_by_cube_dataset(tmp_path):
    """Two shards and their checksum files swapped: each checksum matches its file, but the
    shards say which cubes they hold; CubeDataset refuses them, a rerun remakes them."""
    d = tmp_path / "d"
    generate_dataset(PRIORS, 7, d, progress=False)
    before = arrays(d)
    for suffix in (".h5", ".sha256"):
        a, b = d / f"shard_000000{suffix}", d / f"shard_000001{suffix}"
        a.rename(tmp_path / "swap"), b.rename(a), (tmp_path / "swap").rename(b)
    data = CubeDataset(d)
    with pytest.raises(CorruptShard, match="shard_000000.h5: checksum mismatch"):
        data[0]
    assert data[6]["noisy"].shape == (12, 24, 24)        # the untouched shard still serves
    generate_dataset(PRIORS, 7, d, progress=False)
    after = arrays(d)
    for key in before:
        assert before[key].tobytes() == after[key].tobytes(), key
    assert CubeDataset(d)[0]["index"] == 0


def test_a_flipped_byte_is_caught_when_the_shard_is_first_read(tmp_path):
    d = tmp_path / "d"
    generate_dataset(PRIORS, 4, d, compression=None, progress=False)
    shard = d / "shard_000001.h5"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    shard.write_bytes(bytes(raw))
    (d / "shard_000001.sha256").write_text(
        f"{__import__('hashlib').sha256(bytes(raw)).hexdigest()}  shard_000001.h5\n")
    data = CubeDataset(d)
    data[0]
    with pytest.raises(CorruptShard, match="checksum mismatch"):
        data[3]
    assert CubeDataset(d, verify=False)[3]["index"] == 3          # on request only


def test_a_damaged_manifest_does_not_block_resume(tmp_path):
    d = tmp_path / "d"
    generate_dataset(PRIORS, 7, d, progress=False)
    before = arrays(d)
    text = (d / "manifest.json").read_text()
    (d / "manifest.json").write_text(text[: len(text) // 3])
    (d / "shard_000002.h5").unlink()
    generate_dataset(PRIORS, 7, d, progress=False)
    json.loads((d / "manifest.json").read_text())
    after = arrays(d)
    for key in before:
        assert before[key].tobytes() == after[key].tobytes(), key


def test_corrected_priors_replace_a_manifest_that_has_no_shard_yet(tmp_path):
    d = tmp_path / "d"
    generate_dataset(PRIORS, 3, d, progress=False)
    for shard in d.glob("shard_*"):
        shard.unlink()              # as if the first shard had failed
    changed = {**PRIORS, "dataset": {"seed": 8, "shard_size": 3}}
    generate_dataset(changed, 3, d, progress=False)
    assert json.loads((d / "manifest.json").read_text())["seed"] == 8


def test_stale_temporary_files_are_removed_and_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel").mkdir()
    (tmp_path / "rel" / ".shard_000000.h5.abc.part").write_bytes(b"killed mid-write")
    manifest = generate_dataset(PRIORS, 2, "rel", progress=False)
    assert manifest.is_absolute()          # what Dask workers on other hosts are given
    assert not list((tmp_path / "rel").glob(".*.part"))


def test_a_held_folder_is_refused_before_anything_is_touched(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    code = (f"from galcubecraft.dataset import generate_dataset; "
            f"generate_dataset({PRIORS!r}, 2, {str(d)!r}, progress=False)")
    with lock_folder(d):
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode != 0 and "DatasetInUse" in run.stderr and "in use by process" \
        in run.stderr
    assert sorted(p.name for p in d.iterdir()) == [".lock"]
    with pytest.raises(DatasetInUse):        # and in Python, while another process holds it
        holder = subprocess.Popen([sys.executable, "-c",
                                   f"from galcubecraft.dataset import lock_folder; import time\n"
                                   f"with lock_folder({str(d)!r}):\n"
                                   f"    print('held', flush=True); time.sleep(20)"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            generate_dataset(PRIORS, 2, d, progress=False)
        finally:
            holder.kill()
            holder.wait()


@pytest.mark.parametrize("seeds", [(7, 7), (7, 9)])
def test_two_runs_into_one_folder_never_both_succeed_wrongly(tmp_path, seeds):
    """Two CLI runs started together on one folder: one makes the dataset; the other is told
    the folder is in use (or, if it starts after the first finished, resumes the same
    dataset or refuses another); the cubes on disk are one seed's, complete."""
    d = tmp_path / "d"
    priors = tmp_path / "p.toml"
    shutil.copy(Path_to_priors(tmp_path), priors)
    runs = [subprocess.Popen([sys.executable, "-m", "galcubecraft.cli", "dataset", str(priors),
                              "--n", "24", "--out", str(d), "--seed", str(s), "--no-progress"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for s in seeds]
    results = [(r.wait(timeout=300), r.stderr.read()) for r in runs]
    ok = [k for k, (status, _) in enumerate(results) if status == 0]
    assert ok, results
    for status, err in results:
        if status != 0:
            assert status == 2 and err.count("\n") == 1
            assert "in use by process" in err or "holds another dataset" in err
    if seeds[0] != seeds[1]:
        assert len(ok) == 1
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["seed"] == seeds[ok[0]] and len(manifest["shards"]) == 8
    data = CubeDataset(d)
    assert all(data[i]["index"] == i for i in range(0, 24, 5))


def Path_to_priors(tmp_path):
    """PRIORS as a TOML file."""
    lines = []
    for table, values in PRIORS.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            if isinstance(value, dict):
                inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{{inner}}}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    path = tmp_path / "priors_source.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- memory and disk
def rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


@pytest.mark.parametrize("shape, beam", [((256, 4096, 4096), "4 arcsec"),
                                         ((40, 128, 128), "3600 arcsec"),
                                         ((64, 4096, 4096), "60 arcsec")])
def test_renders_too_large_for_memory_are_refused_with_the_estimate(
        tmp_path, capsys, shape, beam, monkeypatch):
    """The largest legal shape, a beam that pads every channel to thousands of pixels: refused
    before anything large is allocated, with the estimate and how to override it (the limit
    is set to 16 GB, so that the test means the same on any machine)."""
    monkeypatch.setenv("GALCUBECRAFT_MAX_MEMORY", "16 GB")
    before = rss_mb()
    status = main(["render", "-o", str(tmp_path / "x.fits"), "--shape", *map(str, shape),
                   "--beam", beam])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert "needs about" in err and "GB of memory" in err and "GALCUBECRAFT_MAX_MEMORY" in err
    assert rss_mb() - before < 2048
    assert not (tmp_path / "x.fits").exists()


PEAK = """
import sys, astropy.units as u, galcubecraft as gcc
from radio_beam import Beam
n_chan, n_pix, pa = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
grid = gcc.CubeGrid(shape=(n_chan, n_pix, n_pix), pixel_scale=1 * u.arcsec,
                    channel_width=20 * u.km / u.s,
                    beam=Beam(4 * u.arcsec, 3 * u.arcsec, pa * u.deg))
galaxy = gcc.Galaxy(surface=gcc.SersicDisk(r_eff=n_pix / 10 * u.arcsec), inclination=60 * u.deg,
                    kinematics=gcc.FlatRotationCurve(v_flat=200 * u.km / u.s),
                    position_angle=30 * u.deg, flux=1 * u.Jy * u.km / u.s)
projector = gcc.Projector(grid)

def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))

with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")                      # resets the peak (VmHWM) to what is resident now
before = status("VmRSS")
gcc.render(galaxy, grid)
print(status("VmHWM") - before, projector.memory_estimate())
"""


@pytest.mark.parametrize("n_chan, n_pix, pa", [(40, 128, 0), (32, 512, 0), (16, 512, 30)])
def test_the_memory_estimate_covers_the_measured_peak(n_chan, n_pix, pa):
    """What a render really takes (its peak resident memory over what was resident before it,
    in a fresh process, the peak reset first) is within the estimate, and the estimate is not
    far above it: separable and rotated (FFT) beams, small and large grids."""
    run = subprocess.run([sys.executable, "-c", PEAK, str(n_chan), str(n_pix), str(pa)],
                         capture_output=True, text=True, check=True)
    peak, estimate = map(float, run.stdout.split())
    assert peak <= estimate <= 4 * peak + 100e6


def test_the_memory_limit_is_the_users_to_set(monkeypatch):
    import astropy.units as u
    import galcubecraft as gcc
    from galcubecraft.resources import MemoryLimitError
    grid = gcc.CubeGrid(shape=(40, 128, 128), pixel_scale=1 * u.arcsec,
                        channel_width=20 * u.km / u.s, beam=4 * u.arcsec)
    with pytest.raises(MemoryLimitError, match="more than the 50.0 MB allowed"):
        gcc.Projector(grid, max_memory="50 MB")
    monkeypatch.setenv("GALCUBECRAFT_MAX_MEMORY", "50MB")
    with pytest.raises(MemoryLimitError):
        gcc.Projector(grid)
    projector = gcc.Projector(grid, max_memory="1 GB")
    (law, params), = gcc.stack_parameters([gcc.Galaxy(
        surface=gcc.SersicDisk(r_eff=4 * u.arcsec), inclination=30 * u.deg,
        kinematics=gcc.FlatRotationCurve(v_flat=100 * u.km / u.s), position_angle=0 * u.deg,
        flux=1 * u.Jy * u.km / u.s)] * 64)
    with pytest.raises(MemoryLimitError, match="rendering 64 x 40 channels"):
        projector(params, law)                           # a batch is checked too


FREED = r"""
import resource, sys
import torch
if sys.argv[1] == "keep":
    from galcubecraft.resources import keep_freed_memory
    assert keep_freed_memory()
elif sys.argv[1] == "environ":
    import os
    from galcubecraft.resources import freed_memory_environ
    assert all(os.environ[k] == v for k, v in freed_memory_environ().items())
for _ in range(3):                          # 128 MB, made and freed
    torch.ones(2**25)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    torch.ones(2**25)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_memory_is_kept_where_asked_and_only_there():
    """After keep_freed_memory (or with its environment from the start), 128 MB arrays made
    again reuse the freed pages: at most one array's 32,768 page faults (where the heap's
    layout takes one more), not the 8 x 32,768 of fresh pages."""
    from galcubecraft.resources import freed_memory_environ, keep_freed_memory

    # glibc's defaults, whatever this process's environment sets
    plain = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def faults(mode, env=None):
        run = subprocess.run([sys.executable, "-c", FREED, mode], capture_output=True,
                             text=True, env={**plain, **(env or {})}, check=True)
        return int(run.stdout.split()[-1])
    applies = subprocess.run(
        [sys.executable, "-c", "from galcubecraft.resources import keep_freed_memory as k; "
                               "print(k())"], capture_output=True, text=True, env=plain,
        check=True).stdout.split()[-1]
    if applies != "True":
        pytest.skip("this C library refuses the threshold (keep_freed_memory returns False)")
    fresh = faults("none")
    assert fresh > 8 * 2**15 * 0.9
    assert faults("keep") <= 2**15 + 1000
    assert faults("environ", freed_memory_environ()) <= 2**15 + 1000
    for bad in (0, 2**31):
        with pytest.raises(ValueError, match="largest"):
            keep_freed_memory(bad)


def test_a_dataset_larger_than_the_disk_is_refused_before_any_work(tmp_path, capsys):
    priors = Path_to_priors(tmp_path)
    status = main(["dataset", str(priors), "--n", str(10**10), "--out", str(tmp_path / "d"),
                   "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and "on disk" in err and "--no-space-check" in err
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path, capsys):
    """A render killed mid-write leaves ``.galaxy.fits.<host>-<pid>.*.part``; the next write of
    that file removes it, and leaves alone those of live processes and other hosts."""
    from galcubecraft._files import atomic_path
    with atomic_path(tmp_path / "probe.txt") as tmp:
        owner = tmp.name.split(".")[3]                      # <host>-<pid> of this process
        tmp.write_text("x")
    host = owner.rsplit("-", 1)[0]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".galaxy.fits.{host}-{dead.pid}.a1b2c3.part"
    live = tmp_path / f".galaxy.fits.{owner}.d4e5f6.part"
    elsewhere = tmp_path / ".galaxy.fits.otherhost-1.g7h8.part"
    for part in (stale, live, elsewhere):
        part.write_bytes(b"\0" * 1000)
    assert main(["render", "-o", str(tmp_path / "galaxy.fits"), "--shape", "4", "16", "16"]) == 0
    assert not stale.exists() and live.exists() and elsewhere.exists()
