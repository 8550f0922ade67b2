"""Batched observation on tensors (observe_batch) and batched streaming: the same cubes as one at
a time, labels against per-galaxy renders, and batches served as tensors."""
import math
from contextlib import contextmanager

import astropy.units as u
import numpy as np
import pytest
import torch

import galcubecraft as gcc
from galcubecraft.response import Hanning
from galcubecraft.dataset import DatasetSpec, StreamingCubes, generate_dataset, CubeDataset
from galcubecraft.noise import NoiseModel, white_normals

KMS = u.km / u.s
GRID = gcc.CubeGrid(shape=(10, 24, 24), pixel_scale=1 * u.arcsec, channel_width=30 * KMS,
                    beam=3 * u.arcsec, spectral_response=Hanning())
PRIORS = {
    "dataset": {"seed": 5, "shard_size": 4},
    "grid": {"shape": [14, 20, 20], "pixel_scale": "1 arcsec", "channel_width": "30 km/s",
             "beam": "3 arcsec"},
    "noise": {"integrated_snr": {"distribution": "loguniform", "low": 5, "high": 50}},
    "scene": {"n_galaxies": {"distribution": "choice", "values": [1, 2, 3]}, "edge": "3 arcsec"},
    "galaxy": {"r_eff": {"distribution": "uniform", "low": "1.2 arcsec", "high": "2.5 arcsec"},
               "v_max": {"distribution": "uniform", "low": "60 km/s", "high": "120 km/s"}},
}


@contextmanager
def torch_threads(n):
    """Run the block with torch on ``n`` threads, then set the caller's count back."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: `DatasetSpec.make_batch` itself, for spies to call.
MAKE_BATCH = DatasetSpec.make_batch


def spy_on_blocks(monkeypatch, fail_at=None):
    """Record the cube ranges `DatasetSpec.make_batch` observes, in a list returned (the range
    from ``fail_at`` raises RuntimeError instead)."""
    observed = []

    def spy(self, indices, *args, **kwargs):
        if indices.start == fail_at:
            raise RuntimeError(f"block {fail_at} failed")
        observed.append(indices)
        return MAKE_BATCH(self, indices, *args, **kwargs)
    monkeypatch.setattr(DatasetSpec, "make_batch", spy)
    return observed


def galaxy(x, y, flux=1.0, v_sys=0.0, pa=30.0):
    return gcc.Galaxy(surface=gcc.SersicDisk(r_eff=2 * u.arcsec),
                      kinematics=gcc.FlatRotationCurve(100 * KMS), inclination=50 * u.deg,
                      position_angle=pa * u.deg, flux=flux * u.Jy * KMS, v_sys=v_sys * KMS,
                      offset=[x, y] * u.arcsec)


def scenes():
    return [[galaxy(0, 0)],
            [galaxy(-4, 2, 2.0, 20), galaxy(4, -3, 1.0, -30, 120), galaxy(1, 5, 0.5)],
            [galaxy(3, 3, 1.5, 10, 200), galaxy(-3, -2)]]


@pytest.mark.parametrize("noise", [NoiseModel(peak_snr=8), NoiseModel(integrated_snr=30),
                                   NoiseModel(rms=0.002 * u.Jy / u.beam, correlation="white")])
def test_a_batch_is_its_cubes_observed_one_at_a_time(noise):
    projector = gcc.Projector(GRID)
    batch = gcc.observe_batch(scenes(), GRID, [noise] * 3, [1, 2, 3], projector=projector,
                              mask_threshold="2 sigma" if noise.rms is not None else None)
    for k, scene in enumerate(scenes()):
        obs = gcc.observe(scene, GRID, noise, seed=k + 1, projector=projector,
                          mask_threshold="2 sigma" if noise.rms is not None else None)
        # (the cubes observe returns hold float32)
        for name in ("clean", "noisy"):
            np.testing.assert_array_equal(getattr(batch, name)[k].float().numpy(),
                                          getattr(obs, name).unitless_filled_data[:])
        np.testing.assert_array_equal(batch.mask[k].numpy(), obs.mask)
        np.testing.assert_array_equal(batch.labels[k].numpy(), obs.labels)
        row = dict(zip(gcc.ObservedBatch.CUBE_COLUMNS, batch.cube_params[k].tolist()))
        assert row["n_galaxies"] == len(scene)
        assert row["noise_rms"] == pytest.approx(obs.params["noise_rms"].value, rel=1e-12)
        assert row["peak_snr"] == pytest.approx(obs.params["peak_snr"], rel=1e-12)
    if noise.integrated_snr is not None:      # the level it was asked for, measured back
        np.testing.assert_allclose(batch.cube_params[:, 4].numpy(), 30, rtol=1e-9)
    if noise.peak_snr is not None:
        np.testing.assert_allclose(batch.cube_params[:, 3].numpy(), 8, rtol=1e-12)


def test_labels_name_the_brightest_galaxy_of_each_voxel():
    """Against each galaxy rendered alone by `render` (the argmax taken by numpy)."""
    batch = gcc.observe_batch(scenes(), GRID)
    for k, scene in enumerate(scenes()):
        parts = np.stack([gcc.render(g, GRID).unitless_filled_data[:] for g in scene])
        want = np.where(batch.mask[k].numpy(), np.argmax(parts, axis=0) + 1, 0)
        np.testing.assert_array_equal(batch.labels[k].numpy(), want)
        assert set(np.unique(want)) == set(range(len(scene) + 1))
        np.testing.assert_allclose(batch.clean[k].numpy(), parts.sum(axis=0), rtol=0,
                                   atol=1e-6 * parts.max())


def test_rendering_the_scenes_together_changes_only_rounding():
    apart = gcc.observe_batch(scenes(), GRID, dtype=torch.float32)
    together = gcc.observe_batch(scenes(), GRID, dtype=torch.float32, together=True)
    peak = float(apart.clean.max())
    np.testing.assert_allclose(together.clean.numpy(), apart.clean.numpy(), rtol=0,
                               atol=2e-6 * peak)


def test_truth_and_parameter_tensors():
    batch = gcc.observe_batch(scenes(), GRID)
    table = batch.truth(first_index=10)
    assert list(table["index"]) == [10, 11, 11, 11, 12, 12]
    tensor, names = batch.galaxy_tensor()
    assert tensor.shape == (3, 3, len(names)) and "inclination" in names
    assert torch.isnan(tensor[0, 1:]).all() and not torch.isnan(tensor[1]).any()
    np.testing.assert_allclose(tensor[2, 0, names.index("flux")].item(), 1.5)
    np.testing.assert_allclose(tensor[:, 0, names.index("inclination")].numpy(),
                               math.radians(50), rtol=1e-6)


def test_bad_batches_are_refused():
    with pytest.raises(ValueError, match="one noise model and one seed per scene"):
        gcc.observe_batch(scenes(), GRID, [NoiseModel(peak_snr=3)], [1])
    with pytest.raises(ValueError, match="correlated alike"):
        gcc.observe_batch(scenes()[:2], GRID,
                          [NoiseModel(peak_snr=3), NoiseModel(peak_snr=3, correlation="white")],
                          [1, 2])
    with pytest.raises(ValueError, match="at least one scene"):
        gcc.observe_batch([], GRID)
    with pytest.raises(ValueError, match="batch_size"):
        StreamingCubes(PRIORS, batch_size=0)
    with pytest.raises(ValueError, match="keys"):
        StreamingCubes(PRIORS, keys=("noisy", "truth"))
    for start, stop in ((-1, None), (5, 4)):
        with pytest.raises(ValueError, match="0 <= start <= stop"):
            StreamingCubes(PRIORS, start=start, stop=stop)
    with pytest.raises(ValueError, match="device"):
        StreamingCubes(PRIORS, device="gpu0")


def test_a_batch_cut_and_joined_again_is_the_batch():
    batch = gcc.observe_batch(scenes(), GRID, [NoiseModel(peak_snr=8)] * 3, [1, 2, 3])
    parts = [batch[0:1], batch[1:3]]
    assert [len(p) for p in parts] == [1, 2]
    assert parts[1].galaxies(1) == batch.galaxies(2) and parts[1].seeds == [2, 3]
    joined = gcc.ObservedBatch.concatenate(parts)
    for name in ("noisy", "clean", "mask", "labels", "cube_params"):
        assert torch.equal(getattr(joined, name), getattr(batch, name)), name
    assert list(joined.truth()["index"]) == list(batch.truth()["index"]) == [0, 1, 1, 1, 2, 2]
    torch.testing.assert_close(joined.galaxy_tensor()[0], batch.galaxy_tensor()[0],
                               equal_nan=True)
    with pytest.raises(TypeError, match="slice"):
        batch[0]
    with pytest.raises(ValueError, match="at least one"):
        gcc.ObservedBatch.concatenate([])
    other = gcc.observe_batch(scenes()[:1], gcc.CubeGrid(
        shape=(10, 24, 24), pixel_scale=1 * u.arcsec, channel_width=30 * KMS, beam=GRID.beam))
    with pytest.raises(ValueError, match="different grids"):
        gcc.ObservedBatch.concatenate([batch, other])


def test_white_normals_are_each_seeds_own_draws():
    draws = white_normals((3, 4), [7, np.random.SeedSequence(9)])
    np.testing.assert_array_equal(draws[0].numpy(),
                                  np.random.default_rng(7).standard_normal((3, 4)))
    np.testing.assert_array_equal(draws[1].numpy(), np.random.default_rng(
        np.random.SeedSequence(9)).standard_normal((3, 4)))


def test_streamed_batches_are_the_datasets_cubes(tmp_path):
    generate_dataset(PRIORS, 10, tmp_path / "d", progress=False)
    data = CubeDataset(tmp_path / "d", keys=("noisy", "clean", "mask", "labels"))
    keys = ("noisy", "clean", "mask", "labels")
    stream = StreamingCubes(PRIORS, start=1, stop=10, batch_size=4, device="cpu", keys=keys)
    sizes = []
    for batch in stream:
        sizes.append(len(batch["index"]))
        assert batch["param_names"] == gcc.ObservedBatch.CUBE_COLUMNS
        assert batch["params"].shape == (len(batch["index"]), 5)
        for j, index in enumerate(batch["index"].tolist()):
            for key in keys:               # the same bytes, whatever the batch
                assert torch.equal(batch[key][j], data[index][key]), (index, key)
            assert batch["params"][j, 0] == data[index]["params"]["n_galaxies"]
            assert batch["params"][j, 4].item() == pytest.approx(
                data[index]["params"]["integrated_snr"], rel=1e-6)
        n = batch["params"][:, 0].long()
        assert ((~torch.isnan(batch["galaxies"][..., 0])).sum(dim=1) == n).all()
    assert sizes == [4, 4, 1]
    # batches from DataLoader workers: every cube once
    loader = torch.utils.data.DataLoader(
        StreamingCubes(PRIORS, stop=10, batch_size=3, device="cpu"), batch_size=None,
        num_workers=2)
    seen = sorted(i for batch in loader for i in batch["index"].tolist())
    assert seen == list(range(10))


def test_cubes_are_rendered_in_whole_render_blocks_whatever_the_shards(tmp_path, monkeypatch):
    """On a CPU the cubes are observed by render blocks (`render_blocks`), whole, whatever
    part of one a shard or a stream wants: at most RENDER_BATCH cubes at a time, and each cube
    the same bytes for any shard size, start or batch size; other blocks, other bytes."""
    import galcubecraft.dataset as ds
    generate_dataset(PRIORS, 6, tmp_path / "sixteen", shard_size=6, progress=False)
    monkeypatch.setattr(ds, "RENDER_BATCH", 4)
    observed = spy_on_blocks(monkeypatch)
    for size in (6, 4, 3):
        generate_dataset(PRIORS, 6, tmp_path / f"shards_of_{size}", shard_size=size,
                         progress=False)
    assert observed and all(len(r) == 4 and r.start % 4 == 0 for r in observed)
    # the shards of 3 cut the block [0, 4): both observe it whole, as do the others once
    assert observed.count(range(0, 4)) == 4
    keys = ("noisy", "clean", "mask", "labels")
    datasets = {name: CubeDataset(tmp_path / name, keys=keys)
                for name in ("sixteen", "shards_of_6", "shards_of_4", "shards_of_3")}
    with torch_threads(3):          # a stream renders on torch's threads, the same bytes
        stream = list(StreamingCubes(PRIORS, start=1, stop=6, batch_size=3, device="cpu",
                                     keys=keys))
    for i in range(6):
        cube = datasets["shards_of_4"][i]
        for name in ("shards_of_6", "shards_of_3"):
            for key in keys:
                assert torch.equal(datasets[name][i][key], cube[key]), (name, i, key)
        if i >= 1:
            batch = stream[(i - 1) // 3]
            for key in keys:
                assert torch.equal(batch[key][(i - 1) % 3], cube[key]), ("stream", i, key)
    # the blocks of 16 are other galaxy batches: the same cubes to float32 rounding only
    other = [datasets["sixteen"][i]["clean"] for i in range(6)]
    assert any(not torch.equal(o, datasets["shards_of_4"][i]["clean"])
               for i, o in enumerate(other))
    for i, o in enumerate(other):
        ref = datasets["shards_of_4"][i]["clean"]
        torch.testing.assert_close(o, ref, rtol=0, atol=1e-5 * float(ref.max()))
    spec = DatasetSpec(PRIORS)
    assert spec.make_batch(range(2), 5).clean.shape == (2, 14, 20, 20)
    assert list(ds.render_blocks(5, 21, 8)) == [range(0, 8), range(8, 16), range(16, 24)]
    assert list(ds.render_blocks(16, 16)) == []
    for args in ((0, 4, 0), (0, 4, 2.5), (-1, 4), (5, 4)):
        with pytest.raises(ValueError):
            list(ds.render_blocks(*args))


def test_render_blocks_are_observed_ahead_once_each_and_the_same_on_any_threads(monkeypatch):
    """On a CPU the render blocks that cover a stream's ranges are observed once each, as
    many at once as torch has threads, each on one thread: the float64 batches are the same
    bytes on one thread and on three (torch's FFTs, for one, are not), however the ranges cut
    the blocks, and the caller's threads are left as they were.  An endless stream is read
    lazily; ranges must be non-empty and increasing."""
    import itertools
    import threading
    import galcubecraft.dataset as ds
    monkeypatch.setattr(ds, "RENDER_BATCH", 4)
    # (planes of 32 x 32: torch splits their FFTs over threads, and rounds them otherwise)
    spec = DatasetSpec({**PRIORS, "grid": {**PRIORS["grid"], "shape": [14, 32, 32]}})
    projector = spec.projector("cpu")
    observed = spy_on_blocks(monkeypatch)
    ranges = [range(1, 3), range(3, 9), range(9, 10), range(13, 14)]
    runs = {}
    for n in (1, 3):
        observed.clear()
        with torch_threads(n):
            runs[n] = list(ds._observe_ranges(spec, ranges, 5, projector))
            later = []          # (a thread started now takes the caller's count, not one)
            thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
            thread.start()
            thread.join()
            assert torch.get_num_threads() == n and later == [n]
        assert sorted(observed, key=lambda r: r.start) == [
            range(0, 4), range(4, 8), range(8, 12), range(12, 16)]
    with torch_threads(1):
        whole = MAKE_BATCH(spec, range(4, 8), 5, projector, together=True)
    keys = ("noisy", "clean", "mask", "labels", "cube_params")
    assert [cubes for cubes, _ in runs[3]] == ranges
    for (cubes, a), (_, b) in zip(runs[1], runs[3]):
        assert len(a) == len(cubes) and a.noisy.dtype == torch.float64
        for key in keys:
            assert torch.equal(getattr(a, key), getattr(b, key)), (cubes, key)
    # [3, 9) is cut from three blocks: its cubes 4..7 are the block [4, 8)'s bytes
    for key in keys:
        assert torch.equal(getattr(runs[3][1][1], key)[1:5], getattr(whole, key)), key
    observed.clear()
    with torch_threads(3):
        endless = ds._observe_ranges(spec, (range(k, k + 2) for k in itertools.count(0, 2)),
                                     5, projector)
        firsts = [cubes for cubes, _ in itertools.islice(endless, 3)]
        endless.close()
    assert firsts == [range(0, 2), range(2, 4), range(4, 6)]
    assert range(0, 4) in observed and len(observed) <= 4     # the blocks needed, 2 ahead
    for bad in ([range(4, 6), range(2, 3)], [range(0, 2), range(2, 2)]):
        with pytest.raises(ValueError, match="non-empty and increasing"):
            list(ds._observe_ranges(spec, bad, 5, projector))
    # a block that fails on a thread fails the stream (no hang, no cube of it yielded)
    spy_on_blocks(monkeypatch, fail_at=8)
    got = []
    with torch_threads(3), pytest.raises(RuntimeError, match="block 8 failed"):
        for cubes, _ in ds._observe_ranges(spec, ranges, 5, projector):
            got.append(cubes)
    assert got == ranges[:1]


def test_the_denoiser_example_trains_on_streamed_batches():
    """examples/train_denoiser.py (the docs' end-to-end example) at toy size."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "examples" / "train_denoiser.py"
    spec = importlib.util.spec_from_file_location("train_denoiser", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--toy", "--minutes", "0.05", "--held-out", "8", "--device", "cpu"])
    assert out["steps"] >= 1 and out["data_rate"] > 0 and out["train_rate"] > 0
    assert math.isfinite(out["gain"]) and out["gain"] > 0


def test_uncompressed_shards_hold_the_same_cubes(tmp_path):
    generate_dataset(PRIORS, 4, tmp_path / "gzip", progress=False)
    generate_dataset(PRIORS, 4, tmp_path / "raw", progress=False, compression=None)
    import h5py
    with h5py.File(tmp_path / "gzip" / "shard_000000.h5") as f, \
            h5py.File(tmp_path / "raw" / "shard_000000.h5") as g:
        assert f["clean"].compression == "gzip" and f["noisy"].compression is None
        assert g["clean"].compression is None
        for key in ("noisy", "clean", "mask", "labels"):
            assert f[key][()].tobytes() == g[key][()].tobytes(), key


def test_the_cli_makes_an_uncompressed_dataset(tmp_path):
    from galcubecraft.cli import main
    priors = tmp_path / "priors.toml"
    priors.write_text('[dataset]\nseed = 1\n[grid]\nshape = [12, 16, 16]\n'
                      'channel_width = "40 km/s"\nbeam = "3 arcsec"\n[noise]\npeak_snr = 10\n'
                      '[galaxy]\nr_eff = "1.5 arcsec"\nv_max = "100 km/s"\n')
    assert main(["dataset", str(priors), "--n", "2", "--out", str(tmp_path / "d"),
                 "--no-compression", "--no-progress"]) == 0
    import h5py
    with h5py.File(tmp_path / "d" / "shard_000000.h5") as f:
        assert f["clean"].compression is None and f["clean"].shape == (2, 12, 16, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_streams_and_datasets_are_the_cpu_cubes_to_the_line_integration(tmp_path):
    """On a GPU (the batch's galaxies together, float32, the noise drawn there) a stream is
    the GPU dataset's cubes and noise to float32 rounding, whatever the batch, and a GPU
    dataset made twice the same; against the CPU's cubes, to the accuracy of the lines'
    integral, which a GPU takes by ``erf`` where a CPU takes velocity nodes (3.0e-4 of the
    peak, on an H200 and emulated on the CPU, 2026-11-28)."""
    from galcubecraft.dataset import read_catalogue
    keys = ("noisy", "clean", "mask", "labels")
    generate_dataset(PRIORS, 10, tmp_path / "cpu", progress=False)
    for name in ("gpu", "again"):
        generate_dataset(PRIORS, 10, tmp_path / name, progress=False, device="cuda")
    cpu, gpu, again = (CubeDataset(tmp_path / name, keys=keys) for name in ("cpu", "gpu", "again"))
    streamed = list(StreamingCubes(PRIORS, stop=10, batch_size=6, device="cuda", keys=keys))
    assert all(batch[key].device.type == "cuda" for batch in streamed
               for key in keys + ("params", "galaxies", "index"))
    stream = {key: torch.cat([batch[key] for batch in streamed]).cpu() for key in keys}
    for i in range(10):
        scale = float(cpu[i]["clean"].abs().max())
        for got in (again[i], {key: stream[key][i] for key in keys}):
            for key in ("clean", "noisy"):
                torch.testing.assert_close(got[key], gpu[i][key], rtol=0, atol=1e-5 * scale)
            for key in ("mask", "labels"):  # a voxel at the threshold may fall either side
                assert (got[key] != gpu[i][key]).float().mean() < 1e-3, (i, key)
        torch.testing.assert_close(gpu[i]["clean"], cpu[i]["clean"], rtol=0, atol=1e-3 * scale)
        for key in ("mask", "labels"):
            assert (gpu[i][key] != cpu[i][key]).float().mean() < 2e-3, (i, key)
        rms = gpu[i]["params"]["noise_rms"]
        assert rms == pytest.approx(cpu[i]["params"]["noise_rms"], rel=1e-3)
        assert float((gpu[i]["noisy"] - gpu[i]["clean"]).std()) == pytest.approx(rms, rel=0.3)
    (cubes, galaxies), (ref_cubes, ref_galaxies) = (read_catalogue(tmp_path / "gpu"),
                                                    read_catalogue(tmp_path / "cpu"))
    np.testing.assert_array_equal(cubes["n_galaxies"], ref_cubes["n_galaxies"])
    for name in ("noise_rms", "peak_snr", "integrated_snr"):
        np.testing.assert_allclose(np.asarray(cubes[name]), np.asarray(ref_cubes[name]),
                                   rtol=1e-3)
    assert len(galaxies) == len(ref_galaxies)
