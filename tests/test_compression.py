"""Storage modes of the run file: lossless shuffle + Zstandard by default, opt-in 8-bit quantisation, raw; old files open."""

import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from attnscope import capture
from attnscope.sampling import Job, SamplerSettings, generate
from attnscope.store import RunFile, RunFileError, compression, merge_shards
from attnscope.store.compression import MAX_ERROR, dequantise, quantise
from attnscope.store.schema import CaptureSchema, RunRecord, layout
from attnscope.store.writer import RunWriter

SETTINGS = SamplerSettings(steps=3, height=64, width=64)
JOBS = [Job("a wooden bench and a bird", 0), Job("a red car", 1)]
MID = "mid_block.*"


def captured(sd, path, storage):
    with capture(sd, sink=path, storage=storage) as cap:
        generate(sd, JOBS, SETTINGS, progress=False, cap=cap)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, sd, one_thread):
    """The same two runs captured in each storage mode: ``{mode: path}``."""
    folder = tmp_path_factory.mktemp("modes")
    return {mode: captured(sd, folder / f"{mode}.h5", mode) for mode in compression.MODES}


def every_map(runs: RunFile) -> np.ndarray:
    """All runs' maps of every layer, decoded: ``(rows, steps, L)`` float32."""
    return np.concatenate([runs.maps(run, layer.name).astype(np.float32).ravel()
                           for run in range(len(runs)) for layer in runs.layers])


def test_quantisation_error_is_bounded_for_every_float16_probability():
    probabilities = np.arange(2**16, dtype=np.uint16).view(np.float16)
    probabilities = probabilities[(probabilities >= 0) & (probabilities <= 1)]  # every float16 in [0, 1]
    rng = np.random.default_rng(0)
    steps = np.stack([rng.permutation(probabilities) for _ in range(5)], axis=0)  # (steps, L): big jumps between steps
    maps = steps[None]  # (rows=1, steps, L)
    back = dequantise(quantise(maps))
    error = np.abs(back - maps.astype(np.float32)).max()
    assert error <= MAX_ERROR + 1e-6 and MAX_ERROR < 2e-3
    assert back.dtype == np.float32 and back.shape == maps.shape


def test_quantised_maps_are_within_the_stated_error_of_raw_ones(files):
    with RunFile(files["raw"]) as exact, RunFile(files["quantised"]) as rounded:
        error = np.abs(every_map(exact) - every_map(rounded)).max()
        assert 0 < error <= MAX_ERROR + 1e-6
        assert rounded.maps(0, MID, word="bench").dtype == np.float32
        assert "storage: quantised" in rounded.summary()


def test_lossless_is_bit_identical_and_read_by_plain_h5py_with_hdf5plugin(files):
    hdf5plugin = pytest.importorskip("hdf5plugin")
    raw, lossless = files["raw"], files["lossless"]
    with RunFile(raw) as exact, RunFile(lossless) as packed:
        assert np.array_equal(every_map(exact), every_map(packed))
    with h5py.File(raw, "r") as exact, h5py.File(lossless, "r") as packed:
        assert {"shuffle", str(hdf5plugin.ZSTD_ID)} <= set(packed["maps"]._filters)
        assert packed["maps"].attrs["codec"] == "zstd-1-shuffle"
        assert packed["maps"].attrs["encoding"] == "float-step-xor"
        bits = np.bitwise_xor.accumulate(packed["maps"][:].view(np.uint16), axis=1)  # docs/format.md, no attnscope
        assert np.array_equal(bits.view(np.float16), exact["maps"][:])
        assert packed["maps"].id.get_storage_size() < exact["maps"].id.get_storage_size()


def test_quantised_files_are_the_smallest_on_smooth_softmax_maps(tmp_path):
    """Softmax over 8 tokens of smooth random logit fields drifting over 20 steps: how real maps look."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:32] / 32
    centres = rng.random((8, 2))
    blobs = -((y - centres[:, :1, None]) ** 2 + (x - centres[:, 1:, None]) ** 2) * 20  # (tokens, 32, 32)
    drift = np.linspace(0.2, 1, 20)[:, None, None, None]
    logits = blobs[None] * drift + 0.05 * rng.standard_normal((20, 8, 32, 32))  # (steps, tokens, 32, 32)
    maps = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    maps = maps.reshape(20, 8, -1).transpose(1, 0, 2).astype(np.float16)  # (tokens, steps, L)
    schema = CaptureSchema(256, 256, 32, 32, tuple(layout([("a.attn2", "up", 32, 32, 1)])), tuple(range(20)),
                           tuple(range(20)), "mean", "cond", "float16")
    record = RunRecord("p", "", 0, 7.5, [(i, f"t{i}", i) for i in range(8)])
    sizes = {}
    for mode in ("raw", "lossless", "quantised"):
        with RunWriter(tmp_path / f"{mode}.h5", storage=mode) as writer:
            writer.open(schema)
            writer.submit(torch.from_numpy(maps[None]), None, [record], writer.reserve(1))
        with h5py.File(tmp_path / f"{mode}.h5", "r") as f:
            sizes[mode] = f["maps"].id.get_storage_size()
        with RunFile(tmp_path / f"{mode}.h5") as runs:
            back = runs.maps(0, "a.attn2")[:, :, 0].reshape(20, 8, -1).swapaxes(0, 1)
            assert np.abs(back.astype(np.float32) - maps.astype(np.float32)).max() <= MAX_ERROR + 1e-6
    assert sizes["quantised"] < sizes["lossless"] / 2 and sizes["lossless"] < sizes["raw"] / 1.2, sizes


def test_lossless_files_of_the_blosc2_codec_still_open(tmp_path, files):
    """Before Zstandard, lossless files (same step-XOR encoding) went through Blosc2; the filter is in the file."""
    hdf5plugin = pytest.importorskip("hdf5plugin")
    path = Path(shutil.copy(files["lossless"], tmp_path / "blosc2.h5"))
    with RunFile(path) as runs:
        expected = every_map(runs)
    with h5py.File(path, "r+") as f:
        old = f["maps"]
        stored, attrs, chunks = old[:], dict(old.attrs), old.chunks
        del f["maps"]
        blosc = hdf5plugin.Blosc2(cname="zstd", clevel=1, filters=hdf5plugin.Blosc2.SHUFFLE)
        maps = f.create_dataset("maps", data=stored, maxshape=(None, *stored.shape[1:]), chunks=chunks, **blosc)
        maps.attrs.update({**attrs, "codec": "blosc2-zstd-1-shuffle"})
    with RunFile(path) as runs:
        assert np.array_equal(every_map(runs), expected)


def test_files_of_format_1_still_open(tmp_path, sd, files):
    """Format 1: raw maps chunked one token row per chunk, no storage attributes on /maps."""
    path = Path(shutil.copy(files["raw"], tmp_path / "old.h5"))
    with RunFile(path) as runs:
        expected = runs.maps(1, MID, word="car")
    with h5py.File(path, "r+") as f:
        maps = f["maps"][:]
        del f["maps"]
        f.create_dataset("maps", data=maps, maxshape=(None,) + maps.shape[1:], chunks=(1,) + maps.shape[1:])
        f.attrs["format_version"] = 1
    with RunFile(path) as runs:
        assert "encoding" not in runs.file["maps"].attrs and runs.file["maps"].chunks == (1,) + maps.shape[1:]
        assert np.array_equal(runs.maps(1, MID, word="car"), expected)
        assert "storage: raw" in runs.summary()
    with capture(sd, sink=path, resume=True, storage="raw") as cap:  # and take more runs
        generate(sd, JOBS[:1], SETTINGS, progress=False, cap=cap)
    with RunFile(path) as runs:
        assert len(runs) == 3 and runs.complete.all()


def test_resume_refuses_another_storage_mode(tmp_path, sd, files):
    path = shutil.copy(files["lossless"], tmp_path / "run.h5")
    with pytest.raises(RunFileError, match="stores maps lossless, not quantised"):
        with capture(sd, sink=path, resume=True, storage="quantised") as cap:
            generate(sd, JOBS[:1], SETTINGS, progress=False, cap=cap)


def test_quantised_shards_merge_and_decode(tmp_path, sd, one_thread):
    for rank in range(2):
        with capture(sd, sink=tmp_path / f"shard-{rank}.h5", storage="quantised") as cap:
            generate(sd, JOBS[rank:rank + 1], SETTINGS, progress=False, cap=cap)
    merge_shards([tmp_path / "shard-0.h5", tmp_path / "shard-1.h5"], tmp_path / "all.h5")
    with RunFile(tmp_path / "all.h5") as merged, RunFile(tmp_path / "shard-1.h5") as last:
        assert np.array_equal(merged.maps(1, MID, word="car"), last.maps(0, MID, word="car"))


def test_without_hdf5plugin_the_writer_falls_back_to_gzip_and_says_so(tmp_path, sd, monkeypatch, one_thread):
    monkeypatch.setattr(compression, "hdf5plugin", None)
    with pytest.warns(UserWarning, match="hdf5plugin is not installed.*gzip"):
        path = captured(sd, tmp_path / "gzip.h5", "lossless")
    with h5py.File(path, "r") as f:
        assert f["maps"].compression == "gzip" and f["maps"].attrs["codec"] == "gzip-1-shuffle"
    with warnings.catch_warnings(), RunFile(path) as runs:
        warnings.simplefilter("error")  # reading a gzip file needs nothing extra
        assert np.isfinite(runs.maps(0, MID, word="bench")).all()


def test_unknown_storage_modes_are_refused():
    with pytest.raises(ValueError, match="lossless, quantised, raw"):
        compression.Storage("zip")


def test_chunks_of_few_steps_leave_a_short_last_block_to_compress_after_sampling():
    storage = compression.Storage()
    assert storage.chunk(50, 26944) == (1, 4, 3850)  # 12 blocks of 4 steps, then 2; L in 7 pieces
    assert storage.steps_per_chunk(28) == 3  # 9 blocks of 3, then 1 (4 steps would leave 4)
    assert storage.steps_per_chunk(10) == 3 and storage.steps_per_chunk(2) == 2
    assert compression.Storage(step_block=10).steps_per_chunk(28) == 10  # asked for: kept
    assert compression.Storage("raw").steps_per_chunk(50) == 50  # nothing to compress: one chunk


def test_capture_command_writes_the_storage_asked_for(tmp_path, one_thread):
    from attnscope.cli import build_parser, main

    for mode in compression.MODES:  # the command offers every mode (listed without importing h5py)
        assert build_parser().parse_args(["capture", "--prompt", "a red car", "--storage", mode]).storage == mode
    out = tmp_path / "run.h5"
    assert main(["capture", "--model", "tiny-sd", "--prompt", "a red car", "--steps", "2", "--height", "64",
                 "--width", "64", "--storage", "quantised", "--no-progress", "--out", str(out)]) == 0
    with RunFile(out) as runs:
        assert compression.storage_mode(runs.file["maps"]) == "quantised" and runs.complete.all()


def test_steps_written_in_blocks_while_sampling_equal_one_write_of_all_steps(tmp_path, sd, one_thread):
    """Chunks of 2 steps: a batch's steps go to the file 2 at a time as it samples; quantised step
    differences run on from block to block."""
    for mode in ("lossless", "quantised"):
        path = captured(sd, tmp_path / f"{mode}.h5", compression.Storage(mode, step_block=2))
        one_chunk = captured(sd, tmp_path / f"{mode}-whole.h5", compression.Storage(mode, step_block=1000))
        with RunFile(path) as blocks, RunFile(one_chunk) as whole:
            steps = len(whole.steps)
            assert steps > 2 and blocks.file["maps"].chunks[1] == 2 and whole.file["maps"].chunks[1] == steps
            assert np.array_equal(every_map(blocks), every_map(whole))


def test_lossless_files_of_format_2_still_open_and_resume(tmp_path, sd, files, one_thread):
    """Format 2: lossless maps stored as plain float16 values (encoding "float") in chunks of every step."""
    path = Path(shutil.copy(files["lossless"], tmp_path / "v2.h5"))
    with RunFile(path) as runs:
        expected = every_map(runs)
    with h5py.File(path, "r+") as f:
        maps = compression.read(f["maps"], slice(None))
        del f["maps"]
        dataset = compression.Storage("lossless", step_block=maps.shape[1]).create_maps(
            f, maps.shape[1], maps.shape[2], "float16", encoding=compression.FLOAT)
        dataset.resize(maps.shape)
        dataset[:] = maps
        f.attrs["format_version"] = 2
    with RunFile(path) as runs:
        assert runs.file["maps"].attrs["encoding"] == "float" and np.array_equal(every_map(runs), expected)
    with capture(sd, sink=path, resume=True) as cap:  # new runs are written as the file encodes them
        generate(sd, JOBS[:1], SETTINGS, progress=False, cap=cap)
    with RunFile(path) as runs, RunFile(files["lossless"]) as v3:
        assert len(runs) == 3 and np.array_equal(runs.maps(2, MID), v3.maps(0, MID))


def test_storage_says_what_each_mode_takes_on_disk(files):
    stored = {}
    for mode, path in files.items():
        with RunFile(path) as runs:
            stored[mode] = runs.storage()
            assert stored[mode].codec == runs.file["maps"].attrs["codec"]
            assert stored[mode].token_rows == runs.file["maps"].shape[0]
        assert stored[mode].runs == len(JOBS)
        assert 0 < stored[mode].maps_bytes < stored[mode].file_bytes == path.stat().st_size
    assert stored["lossless"].maps_bytes < stored["raw"].maps_bytes
