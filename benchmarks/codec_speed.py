"""Which HDF5 filter should carry the run file's maps? Write speed and ratio on one CPU core.

Maps like a capture's: 17 token rows × 10 stored steps × 26,944 values (SD 1.4's
16 layers at 512²), smooth in space and drifting over steps, encoded as the
storage modes encode them (float16 step XOR for lossless, uint8 step
differences for quantised), written through h5py into an in-memory file in
chunks ``(1 row, 10 steps, w)`` — the shape :class:`attnscope.store.compression.Storage`
gave when the codec was chosen (it now gives 3 or 4 steps: ``benchmarks/writer_drain.py``) —
6 times over. Speeds are MB of encoded input per second; ratio is stored bytes ÷ input bytes.

    python benchmarks/codec_speed.py
"""

from __future__ import annotations

import time

import h5py
import hdf5plugin
import numpy as np

from attnscope.store.compression import quantise, xor_steps

ROWS, STEPS, WIDTH = 17, 10, 26944


def maps(seed: int = 0) -> np.ndarray:
    """``(rows, steps, L)`` float16 probabilities that drift slowly over the steps."""
    rng = np.random.default_rng(seed)
    base = rng.random((ROWS, 1, WIDTH)) / 20
    drift = 1 + 0.02 * np.cumsum(rng.standard_normal((ROWS, STEPS, WIDTH)), axis=1)
    return np.clip(base * drift, 0, 1).astype(np.float16)


def write_speed(encoded: np.ndarray, chunk_width: int, filters: dict, repeats: int = 6) -> tuple[float, float]:
    """(MB/s, stored ÷ input) of appending ``encoded`` ``repeats`` times with ``filters``."""
    with h5py.File(f"codec-{id(encoded)}.h5", "w", driver="core", backing_store=False) as file:
        dataset = file.create_dataset("maps", (0, STEPS, WIDTH), maxshape=(None, STEPS, WIDTH), dtype=encoded.dtype,
                                      chunks=(1, STEPS, chunk_width), **filters)
        started = time.perf_counter()
        for index in range(repeats):
            dataset.resize(((index + 1) * ROWS, STEPS, WIDTH))
            dataset[index * ROWS :] = encoded
        file.flush()
        seconds = time.perf_counter() - started
        stored = dataset.id.get_storage_size()
    size = encoded.nbytes * repeats
    return size / seconds / 1e6, stored / size


def main() -> int:
    probabilities = maps()
    lossless, quantised = xor_steps(probabilities), quantise(probabilities)
    blosc2 = hdf5plugin.Blosc2
    rows = [
        ("lossless", lossless, "Blosc2, zstd 1, byte shuffle", dict(blosc2(cname="zstd", clevel=1, filters=blosc2.SHUFFLE))),
        ("lossless", lossless, "HDF5 shuffle + Zstandard 1", {"shuffle": True, **hdf5plugin.Zstd(clevel=1)}),
        ("quantised", quantised, "Blosc2, zstd 1, bit shuffle", dict(blosc2(cname="zstd", clevel=1, filters=blosc2.BITSHUFFLE))),
        ("quantised", quantised, "Bitshuffle + Zstandard 1", dict(hdf5plugin.Bitshuffle(cname="zstd", clevel=1))),
    ]
    print("| mode | filter | chunk width | write MB/s | ratio |\n|---|---|---:|---:|---:|")
    for width in (3849, WIDTH):
        for mode, encoded, name, filters in rows:
            speed, ratio = write_speed(encoded, width, filters)
            print(f"| {mode} | {name} | {width:,} | {speed:.0f} | {ratio:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
