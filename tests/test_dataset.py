"""Datasets: determinism across workers and shard sizes, resume after SIGKILL, corrupt shards,
true catalogues, and torch datasets."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import astropy.units as u
import h5py
import numpy as np
import pytest
import torch

import galcubecraft as gcc
from galcubecraft.dataset import (CubeDataset, DatasetSpec, StreamingCubes, export_fits,
                                  generate_dataset, read_catalogue)
from galcubecraft.inject import galaxies_from_table
from galcubecraft.projector import FINER_RADIUS
from fits_rules import assert_valid_cube


PRIORS = {
    "dataset": {"seed": 7, "shard_size": 3},
    "grid": {"shape": [12, 24, 24], "pixel_scale": "1 arcsec", "channel_width": "30 km/s",
             "beam": "3 arcsec", "spectral_response": "hanning"},
    "noise": {"peak_snr": {"distribution": "loguniform", "low": 5, "high": 20}},
    "scene": {"n_galaxies": {"distribution": "choice", "values": [1, 2]}, "edge": "4 arcsec"},
    "galaxy": {"r_eff": {"distribution": "uniform", "low": "1.2 arcsec", "high": "2.5 arcsec"},
               "v_max": {"distribution": "uniform", "low": "60 km/s", "high": "120 km/s"}},
}


def arrays(path):
    out = {}
    manifest = json.loads((Path(path) / "manifest.json").read_text())
    for j in range(manifest["n_shards"]):
        with h5py.File(Path(path) / f"shard_{j:06d}.h5", "r") as f:
            for key in ("noisy", "clean", "mask", "labels"):
                out.setdefault(key, []).append(f[key][()])
    return {k: np.concatenate(v) for k, v in out.items()}


def same_catalogues(a, b):
    (ca, ga), (cb, gb) = read_catalogue(a), read_catalogue(b)
    for x, y in ((ca, cb), (ga, gb)):
        assert x.colnames == y.colnames
        for name in x.colnames:
            if name == "shard":
                continue
            np.testing.assert_array_equal(np.asarray(x[name]), np.asarray(y[name]))


def test_two_dask_workers_and_one_process_give_the_same_bytes(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(3)        # one process renders on torch's threads, a worker on one
    try:
        generate_dataset(PRIORS, 8, tmp_path / "one", progress=False)
    finally:
        torch.set_num_threads(threads)
    generate_dataset(PRIORS, 8, tmp_path / "two", workers=2, progress=False)
    a, b = arrays(tmp_path / "one"), arrays(tmp_path / "two")
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    same_catalogues(tmp_path / "one", tmp_path / "two")
    # and another shard size: the same cubes
    generate_dataset(PRIORS, 8, tmp_path / "five", shard_size=5, progress=False)
    c = arrays(tmp_path / "five")
    for key in a:
        assert a[key].tobytes() == c[key].tobytes(), key


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_and_rerun_equals_an_uninterrupted_run(tmp_path, workers):
    priors = tmp_path / "priors.toml"
    priors.write_text('''
[dataset]
seed = 11
shard_size = 2
[grid]
shape = [12, 24, 24]
channel_width = "30 km/s"
beam = "3 arcsec"
[noise]
peak_snr = 10
[galaxy]
r_eff = {distribution = "uniform", low = "1.2 arcsec", high = "2.5 arcsec"}
v_max = "100 km/s"
''')
    out = tmp_path / "killed"
    args = ["dataset", str(priors), "--n", "60", "--out", str(out), "--no-progress",
            "--workers", str(workers)]
    code = f"from galcubecraft.cli import main; main({args!r})"
    # its own process group: the kill takes the run and its Dask workers at once
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.sha256"))) < 3:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(out.glob("*.sha256")))
    assert 3 <= done < 30, f"the kill came at {done} of 30 shards"
    assert not (out / "cubes.ecsv").exists()
    from galcubecraft.cli import main
    assert main(args) == 0
    assert main(["dataset", str(priors), "--n", "60", "--out", str(tmp_path / "whole"),
                 "--no-progress"]) == 0
    a, b = arrays(out), arrays(tmp_path / "whole")
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    same_catalogues(out, tmp_path / "whole")
    cubes, _ = read_catalogue(out)
    assert list(cubes["index"]) == list(range(60))          # none missing, none twice
    assert not list(out.glob(".shard_*.part"))


def test_a_dask_worker_killed_mid_run_loses_nothing(tmp_path):
    """A run on a scheduler at an address, one of whose workers is SIGKILLed mid-run: the
    scheduler gives its shard to another worker, and the dataset is an uninterrupted run's."""
    distributed = pytest.importorskip("distributed")
    out, errors = tmp_path / "dask", []

    def run(address):
        try:
            generate_dataset(PRIORS, 24, out, shard_size=2, scheduler=address, progress=False)
        except Exception as exc:       # noqa: BLE001 -- reported by the test below
            errors.append(exc)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        pids = sorted(client.run(os.getpid).values())
        thread = threading.Thread(target=run, args=(cluster.scheduler_address,))
        thread.start()
        deadline = time.time() + 120
        while time.time() < deadline and len(list(out.glob("*.sha256"))) < 2:
            time.sleep(0.02)
        os.kill(pids[0], signal.SIGKILL)
        thread.join(timeout=300)
    assert not errors and not thread.is_alive()
    done = len(list(out.glob("*.sha256")))
    assert done == 12
    generate_dataset(PRIORS, 24, tmp_path / "whole", shard_size=2, progress=False)
    a, b = arrays(out), arrays(tmp_path / "whole")
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    same_catalogues(out, tmp_path / "whole")
    assert not list(out.glob(".shard_*.part"))


def test_a_corrupt_shard_is_detected_and_remade(tmp_path):
    generate_dataset(PRIORS, 7, tmp_path / "d", progress=False)
    before = arrays(tmp_path / "d")
    shard = tmp_path / "d" / "shard_000001.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    (tmp_path / "d" / ".shard_000002.h5.x.part").write_bytes(b"partial")
    generate_dataset(PRIORS, 7, tmp_path / "d", progress=False)
    after = arrays(tmp_path / "d")
    for key in before:
        assert before[key].tobytes() == after[key].tobytes()
    assert not list((tmp_path / "d").glob(".shard_*.part"))
    with pytest.raises(ValueError, match="another dataset"):
        generate_dataset(PRIORS, 7, tmp_path / "d", seed=8, progress=False)


def test_the_catalogue_re_renders_the_stored_clean_cubes(tmp_path):
    generate_dataset(PRIORS, 6, tmp_path / "d", progress=False)
    data = CubeDataset(tmp_path / "d", keys=("clean", "labels"))
    _, galaxies = read_catalogue(tmp_path / "d")
    grid = data.grid
    for index in (0, 4):
        rows = galaxies[galaxies["index"] == index]
        obs = gcc.observe(galaxies_from_table(rows, grid), grid)
        stored = data[index]["clean"].numpy()
        np.testing.assert_allclose(obs.clean.unitless_filled_data[:], stored, rtol=0,
                                   atol=1e-5 * stored.max())
        assert len(rows) == data[index]["params"]["n_galaxies"]


def test_torch_datasets_with_several_workers_repeat_no_cube(tmp_path):
    generate_dataset(PRIORS, 7, tmp_path / "d", progress=False)
    data = CubeDataset(tmp_path / "d", transform=lambda s: {**s, "peak": s["clean"].max()})
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=2, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    seen = []
    for batch in loader:
        seen += batch["index"].tolist()
        assert batch["noisy"].shape[1:] == (12, 24, 24) and "peak" in batch
    assert sorted(seen) == list(range(7))
    stream = StreamingCubes(PRIORS, stop=6, device="cpu")
    got = {}
    for batch in torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2):
        got[batch["index"]] = batch["clean"]
    assert sorted(got) == list(range(6))
    for i in range(6):          # the same cubes as the written dataset
        np.testing.assert_allclose(got[i].numpy(), data[i]["clean"].numpy(), rtol=0,
                                   atol=1e-6 * float(data[i]["clean"].max()))


def test_export_to_fits(tmp_path):
    generate_dataset(PRIORS, 4, tmp_path / "d", progress=False)
    written = export_fits(tmp_path / "d", [1, 3], tmp_path / "fits")
    assert len(written) == 4
    from spectral_cube import SpectralCube
    cube = SpectralCube.read(written[0])
    np.testing.assert_allclose(cube.unitless_filled_data[:],
                               CubeDataset(tmp_path / "d")[1]["noisy"].numpy(), rtol=1e-6)
    assert cube.header["NOISERMS"] > 0
    assert_valid_cube(str(written[0]))


@pytest.mark.parametrize("change, error, match", [
    ({"extra": {}}, ValueError, "unknown table"),
    ({"grid": {"pixel": "1 arcsec"}}, ValueError, "unknown key"),
    ({"grid": {"pixel_scale": "1 km/s"}}, u.UnitsError, "pixel_scale"),
    ({"noise": {"rms": "1 km/s"}}, u.UnitsError, "rms"),
    ({"noise": {"rms": "1 mJy/beam", "peak_snr": 3}}, ValueError, "one of"),
    ({"scene": {"n_galaxies": 0}}, ValueError, "n_galaxies"),
    ({"galaxy": {"flux": "1 Jy"}}, u.UnitsError, "flux"),
    ({"dataset": {"shard_size": 0}}, ValueError, "shard_size"),
    ({"galaxy": {"v_max": "400 km/s"}}, ValueError, r"\[scene\]/\[galaxy\].*too narrow"),
    ({"scene": {"edge": "-1 arcsec"}}, ValueError, r"\[scene\].*edge must not be negative"),
    ({"scene": {"min_separation": "-2 arcsec"}}, ValueError,
     r"\[scene\].*min_separation must not be negative"),
    ({"render": {"supersample": 2}}, ValueError, r"unknown key.*\[render\]"),
    ({"render": {"min_beam_sigma": -1}}, ValueError, r"\[render\].*min_beam_sigma"),
    ({"render": {"oversample": 0}}, ValueError, r"\[render\].*oversample"),
    ({"render": {"finer_radius": -1}}, ValueError, r"\[render\].*finer_radius"),
])
def test_bad_priors_fail_before_any_work(change, error, match, tmp_path):
    config = {**PRIORS, **change}
    with pytest.raises(error, match=match):
        generate_dataset(config, 3, tmp_path / "d", progress=False)
    assert not (tmp_path / "d").exists()


def test_a_seed_is_required():
    config = {k: v for k, v in PRIORS.items() if k != "dataset"}
    with pytest.raises(ValueError, match="seed"):
        generate_dataset(config, 3, "/nonexistent/never", progress=False)
    assert DatasetSpec(config).seed is None


def test_the_seed_population_is_a_ready_preset(tmp_path):
    config = {"dataset": {"seed": 3, "shard_size": 2},
              "preset": {"name": "galcubecraft-0.1", "grid_size": 32, "n_spectral_slices": 16,
                         "n_gals": 2},
              "noise": {"peak_snr": 10}}
    generate_dataset(config, 3, tmp_path / "d", progress=False)
    cubes, galaxies = read_catalogue(tmp_path / "d")
    assert list(cubes["n_galaxies"]) == [2, 2, 2] and len(galaxies) == 6
    spec = DatasetSpec(config)
    assert spec.grid.shape == (16, 32, 32)
    # the generator's cube 1 is the dataset's cube 1 before noise: the same stream
    # SeedSequence(seed, spawn_key=(1, 0)) draws the same galaxies
    g = gcc.GalCubeCraft(n_gals=2, n_cubes=3, grid_size=32, n_spectral_slices=16, seed=3,
                         verbose=False, save=False)
    clean = CubeDataset(tmp_path / "d", keys=("clean",))[1]["clean"].numpy()
    np.testing.assert_allclose(g.generate_one(1).clean, clean, rtol=0, atol=1e-5 * clean.max())
    with pytest.raises(ValueError, match="remove"):
        DatasetSpec({**config, "galaxy": {}})
    with pytest.raises(ValueError, match="name"):
        DatasetSpec({"preset": {"name": "galcubecraft-9"}})


def test_the_catalogue_is_written_shard_by_shard_as_the_stacked_tables(tmp_path):
    """Shards whose galaxies hold tables of different lengths (warps, tabulated curves): the
    catalogue written one shard at a time equals the shards' tables stacked in memory."""
    from galcubecraft.catalogue import stack_tables
    from galcubecraft.dataset import _table_from_h5
    preset = Path(__file__).resolve().parents[1] / "examples" / "realistic_disks.toml"
    out = tmp_path / "d"
    generate_dataset(preset, 10, out, shard_size=2, progress=False)
    tables = []
    for j in range(5):
        with h5py.File(out / f"shard_{j:06d}.h5", "r") as f:
            tables.append(_table_from_h5(f["galaxies"]))
    widths = {tuple(t[c].shape[1] for t in tables) for c in tables[0].colnames
              if tables[0][c].ndim == 2}
    assert any(len(set(w)) > 1 for w in widths), "no array column differs between shards"
    want = stack_tables(tables)
    cubes, got = read_catalogue(out)
    assert list(got["id"]) == list(range(len(want))) and list(cubes["index"]) == list(range(10))
    assert got.colnames == want.colnames
    for name in want.colnames:
        if name != "id":
            np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]))


def test_the_render_table_sets_the_projector_of_datasets_and_streams(tmp_path):
    """``[render]`` (the projector's sampling) is part of the priors: the dataset, the stream
    and `DatasetSpec.make` render with it, and it changes the cubes (``finer_radius = 0``:
    these small disks on the grid's pixels under a 3-pixel beam, not on pixels twice finer:
    docs/rendering.rst)."""
    config = {**PRIORS, "render": {"finer_radius": 0}}
    projector = DatasetSpec(config).projector()
    assert (projector.supersampling, projector.finer_radius) == (1, 0)
    assert DatasetSpec(PRIORS).projector().finer_radius == FINER_RADIUS
    generate_dataset(config, 2, tmp_path / "d", progress=False)
    generate_dataset(PRIORS, 2, tmp_path / "p", progress=False)
    stored, plain = CubeDataset(tmp_path / "d"), CubeDataset(tmp_path / "p")
    stream = list(StreamingCubes(config, stop=2, device="cpu"))
    for i in range(2):
        clean = stored[i]["clean"].numpy()
        scale = float(np.abs(clean).max())
        np.testing.assert_allclose(stream[i]["clean"].numpy(), clean, rtol=0, atol=1e-6 * scale)
        one = DatasetSpec(config).make(i, 7).clean.unitless_filled_data[:]
        np.testing.assert_allclose(one, clean, rtol=0, atol=1e-5 * scale)
        change = np.abs(plain[i]["clean"].numpy() - clean).sum() / np.abs(clean).sum()
        assert change > 1e-3


def test_a_dataset_of_the_former_format_is_read_but_not_finished(tmp_path):
    """Format 1 rendered each cube alone: its shards stay readable (their own format
    checked), and this code, whose cubes are rendered by blocks, refuses to finish it."""
    import hashlib
    import galcubecraft.dataset as ds
    generate_dataset(PRIORS, 4, tmp_path / "d", progress=False)
    manifest_path = tmp_path / "d" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for j, entry in enumerate(manifest["shards"]):
        path = tmp_path / "d" / entry["file"]
        with h5py.File(path, "r+") as f:
            f.attrs["format_version"] = 1
        entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        path.with_suffix(".sha256").write_text(f"{entry['sha256']}  {path.name}\n")
    manifest["format_version"] = 1
    manifest_path.write_text(json.dumps(manifest, indent=1))
    data = CubeDataset(tmp_path / "d")
    assert len(data) == 4 and data[3]["clean"].shape == (12, 24, 24)
    with pytest.raises(ValueError, match="format_version"):
        generate_dataset(PRIORS, 4, tmp_path / "d", progress=False)
    # a shard whose own format is not its dataset's is not read
    manifest["format_version"] = ds.FORMAT_VERSION
    manifest_path.write_text(json.dumps(manifest, indent=1))
    with pytest.raises(ds.CorruptShard, match="format_version"):
        CubeDataset(tmp_path / "d")[0]
