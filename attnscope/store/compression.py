"""How a run file stores its maps: ``lossless`` (default), ``quantised`` or ``raw``.

* ``lossless``: the capture dtype's bit patterns (float16 by default), each
  stored step XOR the step before it (the first stored step as is), through
  HDF5's byte shuffle and the Zstandard filter (level 1) of ``hdf5plugin``. A map changes
  little from one step to the next, so sign, exponent and leading mantissa
  bits XOR to zero and compress; the values come back bit for bit (decoding:
  a cumulative XOR along the steps). Without ``hdf5plugin`` the writer warns
  and falls back to HDF5's built-in gzip (level 1, shuffle): readable
  everywhere, larger and slower to write.
* ``quantised``: probabilities rounded to multiples of ``QUANTUM = 1/255``
  (``uint8`` codes 0…255), stored as differences between consecutive stored
  steps (mod 256; the first stored step holds the code itself), bit-shuffled
  and compressed. Maps change little from one step to the
  next, so the differences are mostly 0 and ±1 and compress well. The filter
  is ``hdf5plugin``'s Bitshuffle with Zstandard (level 1). Maximum
  absolute error on a probability: ``MAX_ERROR = QUANTUM / 2 ≈ 1.96e-3``. The
  rounding is absolute, not per map: a map whose values all lie under 0.01
  keeps only two or three levels — analyse such maps from a lossless file.
* ``raw``: the capture dtype, uncompressed (the format-1 layout).

Chunks are ``(1 row, s stored steps, chunk_width map values)``: one token
of one run over a block of steps, a slice of ``L``. A capture hands each
block of steps to the writer while the next one samples, so what is left to
compress when sampling ends is the last block and the tail of the one
before: short blocks keep that wait short (:meth:`Storage.steps_per_chunk`). A run's maps are
its rows' chunks side by side; one layer of one token across many runs
touches only the chunks of that layer's slice of ``L``. ``docs/format.md``
has the numbers.

The dataset's attributes say how to decode it: ``encoding`` is ``"float"``
(values as stored: raw files, and lossless files of format 2),
``"float-step-xor"`` (``bitwise_xor.accumulate(bits, axis=1)`` viewed as the
dtype) or ``"uint8-step-delta"`` (``cumsum(codes, axis=1) mod 256 ×
quantum``); ``codec`` names the filter. Files of format 1 have no
``encoding`` attribute and are read as ``"float"``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import h5py
import numpy as np
import torch

try:  # registers the Zstandard and Bitshuffle HDF5 filters with h5py
    import hdf5plugin
except ImportError:  # pragma: no cover - depends on the machine
    hdf5plugin = None

MODES = ("lossless", "quantised", "raw")
QUANTUM = 1 / 255  # quantised mode: probabilities are stored as multiples of this
MAX_ERROR = QUANTUM / 2  # the largest absolute error the quantised mode makes on a value in [0, 1]
FLOAT, STEP_XOR, STEP_DELTA = "float", "float-step-xor", "uint8-step-delta"
ENCODING = {"lossless": STEP_XOR, "quantised": STEP_DELTA, "raw": FLOAT}  # what each mode writes today
DEFAULT_CHUNK_WIDTH = 4096  # at most this many map values per chunk along L (one 64×64 map)
STEPS_PER_CHUNK = 4  # stored steps per chunk by default (3 where that leaves a shorter last block)


class MissingCodecError(RuntimeError):
    """A run file's maps use a filter this installation cannot decode."""


def _filter(mode: str) -> tuple[str, dict]:
    """``(codec name, h5py create_dataset keywords)`` for ``mode``'s maps on this installation."""
    if mode == "raw":
        return "none", {}
    if hdf5plugin is None:
        warnings.warn(
            f"hdf5plugin is not installed: {mode} run files fall back to gzip (level 1, shuffle), which is "
            "larger and slower to write; `pip install hdf5plugin` for Zstandard",
            stacklevel=3,
        )
        return "gzip-1-shuffle", {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    # Not Blosc2: its HDF5 filter builds a frame per chunk, which made it 2.5-4x slower on chunks of one
    # token's map (docs/format.md, "Choosing the codec") for the same bytes.
    if mode == "quantised":
        return "bitshuffle-zstd-1", dict(hdf5plugin.Bitshuffle(cname="zstd", clevel=1))
    return "zstd-1-shuffle", {"shuffle": True, **hdf5plugin.Zstd(clevel=1)}


@dataclass(frozen=True)
class Storage:
    """How to store maps: ``mode`` (see the module docstring), the chunk width along ``L`` and
    ``step_block``, the stored steps per chunk (a capture writes a batch's steps in blocks of that many
    as it samples; ``None``: :meth:`steps_per_chunk` picks)."""

    mode: str = "lossless"
    chunk_width: int = DEFAULT_CHUNK_WIDTH
    step_block: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"storage must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.chunk_width < 1 or (self.step_block is not None and self.step_block < 1):
            raise ValueError("chunk_width and step_block must be positive")

    @classmethod
    def of(cls, storage: "str | Storage") -> "Storage":
        """A mode name or a :class:`Storage` → a :class:`Storage`."""
        return storage if isinstance(storage, Storage) else cls(storage)

    def steps_per_chunk(self, steps: int) -> int:
        """Stored steps per chunk for ``steps`` stored steps: ``step_block`` when given (at most ``steps``);
        raw maps keep all steps in one chunk (nothing to compress while sampling, and a padded edge chunk
        would cost its full size); else :data:`STEPS_PER_CHUNK`, or one fewer where that leaves a shorter
        last block (50 steps: 4, the last block 2; 28 steps: 3, the last block 1).

        Short blocks keep the writer's wait after the last step short: the last block and the part of
        the one before that the writer has not compressed yet (``benchmarks/writer_drain.py``); much
        shorter ones write slower (more chunks, ``docs/format.md``).
        """
        if self.mode == "raw":
            return steps
        if self.step_block is not None:
            return min(self.step_block, steps)
        fitting = [s for s in (STEPS_PER_CHUNK, STEPS_PER_CHUNK - 1) if s <= steps] or [steps]
        return min(fitting, key=lambda s: ((steps - 1) % s, -s))  # the shortest last block, then the longer s

    def chunk(self, steps: int, width: int) -> tuple[int, int, int]:
        """``(1, s, w)``: :meth:`steps_per_chunk` steps and ``L`` cut into near-equal pieces of at most
        ``chunk_width`` values."""
        pieces = -(-width // self.chunk_width)
        return (1, self.steps_per_chunk(steps), -(-width // pieces))

    def create_maps(self, file: h5py.File, steps: int, width: int, dtype: str,
                    encoding: str | None = None) -> h5py.Dataset:
        """The empty, resizable ``/maps`` dataset ``(0, steps, width)`` for maps of ``dtype``; ``encoding``:
        the mode's (default) or that of a file being copied."""
        encoding = encoding or ENCODING[self.mode]
        codec, keywords = _filter(self.mode)
        stored = np.uint8 if encoding == STEP_DELTA else dtype
        dataset = file.create_dataset(
            "maps", (0, steps, width), maxshape=(None, steps, width), dtype=stored,
            chunks=self.chunk(steps, width), **keywords,
        )
        dataset.attrs["storage"] = self.mode
        dataset.attrs["codec"] = codec
        dataset.attrs["encoding"] = encoding
        if encoding == STEP_DELTA:
            dataset.attrs["quantum"] = QUANTUM
        return dataset


def _bits(maps: np.ndarray) -> np.ndarray:
    """The bit patterns of float maps as unsigned integers of the same width (a view)."""
    return maps.view(np.dtype(f"u{maps.dtype.itemsize}"))


def xor_steps(maps: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """Float maps ``(rows, steps, L)`` → each step's bit pattern XOR the step before (same dtype, same shape).

    ``previous``: ``(rows, L)`` the step before the first one (a later block of the same rows), or ``None``
    when the first step starts the rows and is kept as is.
    """
    bits = _bits(maps)  # any strides: one pass reads them and writes the contiguous result
    out = np.empty(bits.shape, bits.dtype)
    np.bitwise_xor(bits[:, 1:], bits[:, :-1], out=out[:, 1:])
    if previous is None:
        out[:, 0] = bits[:, 0]
    else:
        np.bitwise_xor(bits[:, 0], _bits(previous), out=out[:, 0])
    return out.view(maps.dtype)


def unxor_steps(stored: np.ndarray) -> np.ndarray:
    """:func:`xor_steps` undone over all stored steps ``(rows, steps, L)``."""
    return np.bitwise_xor.accumulate(_bits(stored), axis=1).view(stored.dtype)


def encode(kind: str, maps: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """Maps ``(rows, steps, L)`` as a dataset of encoding ``kind`` stores them; ``previous``: what
    :func:`carry` kept of the block of steps before (``None``: these steps start the rows)."""
    if kind == STEP_XOR:
        return xor_steps(maps, previous)
    if kind == STEP_DELTA:
        return quantise(maps, previous)
    return maps


def carry(kind: str, maps: np.ndarray) -> np.ndarray | None:
    """What the next block of steps of the same rows is encoded against: ``(rows, L)`` (``None``: nothing).

    Always a copy: ``maps`` may sit in a host buffer that is reused for the next block.
    """
    if kind == STEP_XOR:
        return maps[:, -1].copy()
    if kind == STEP_DELTA:
        return quantise(maps[:, -1:])[:, 0]
    return None


def quantise(maps: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """Probabilities ``(rows, steps, L)`` in [0, 1] → ``uint8`` step-difference codes of the same shape.

    ``previous``: ``(rows, L)`` uint8 levels ``round(p / QUANTUM)`` of the step before the first one (a later block of
    the same rows), or ``None`` when the first step starts the rows. Torch's CPU kernels (vectorised
    float16, several threads, no GIL) run this ~2× faster than numpy.
    """
    levels = torch.from_numpy(np.ascontiguousarray(maps)).float().mul_(1 / QUANTUM).round_().clamp_(0, 255)
    levels = levels.to(torch.uint8)
    codes = levels.clone()
    codes[:, 1:] -= levels[:, :-1]  # uint8 arithmetic wraps: mod 256
    if previous is not None:
        codes[:, 0] -= torch.from_numpy(previous)
    return codes.numpy()


def dequantise(codes: np.ndarray, quantum: float = QUANTUM) -> np.ndarray:
    """Step-difference codes ``(rows, steps, L)`` (all stored steps) → float32 probabilities."""
    levels = np.cumsum(codes, axis=1, dtype=np.uint8)  # wraps mod 256, undoing the differences
    return levels.astype(np.float32) * np.float32(quantum)


def encoding(dataset: h5py.Dataset) -> str:
    """``"float"``, ``"float-step-xor"`` or ``"uint8-step-delta"``; format-1 files (no attribute) are ``"float"``."""
    value = dataset.attrs.get("encoding", FLOAT)
    return value.decode() if isinstance(value, bytes) else str(value)


def storage_mode(dataset: h5py.Dataset) -> str:
    """The mode ``dataset`` was written with; format-1 files are ``"raw"``."""
    value = dataset.attrs.get("storage", "raw")
    return value.decode() if isinstance(value, bytes) else str(value)


def read(dataset: h5py.Dataset, rows: slice | np.ndarray, columns: slice = slice(None)) -> np.ndarray:
    """Decoded maps ``dataset[rows, :, columns]`` (float32 for quantised files, else the stored dtype)."""
    try:
        values = dataset[rows, :, columns]
    except OSError as error:
        if hdf5plugin is None and "filter" in str(error).lower():
            raise MissingCodecError(
                f"{dataset.file.filename}: its maps are compressed with {dataset.attrs.get('codec', '?')}; "
                "`pip install hdf5plugin` to read them"
            ) from error
        raise
    kind = encoding(dataset)
    if kind == STEP_DELTA:
        return dequantise(values, float(dataset.attrs["quantum"]))
    if kind == STEP_XOR:
        return unxor_steps(values)
    return values
