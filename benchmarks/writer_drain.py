"""How long does a capture wait for its writer after the last step? Steps per chunk, side by side.

A capture hands each block of stored steps (one chunk's worth) to the run
writer while the next block samples; when sampling ends, the writer still has
the last block to compress, plus whatever of the block before it has not
finished. That wait — the *drain* — is paid once per capture context, and
counts fully in short captures (a benchmark's two calls, a notebook's one).

This script replays a capture's hand-offs on the CPU without a model: a
sampling thread that takes ``step`` seconds per step (sleeping, as it would
while the GPU works) hands blocks of maps like a capture's to a
:class:`~attnscope.store.writer.RunWriter` writing a lossless run file to
disk, then its records, then closes it. Maps drift slowly over steps as real
maps do (so the codec works as hard as on them). Per shape and chunking it
reports the drain (median over repeats), the whole capture's wall time ÷
the sampling time alone, and the writer thread's own time.

Shapes: SD 1.4 at 512², batch 8 (16 layers, L = 26,944; 17 token rows per
image; 50 steps at 60 ms — an H100's plain sampling, ``capture_overhead.md``),
SD3.5-medium at 1024², batch 1 (24 layers × 4096; 34 rows from its CLIP and
T5 streams; 28 steps at 84 ms) and Flux.1-dev at 1024², batch 1 (57 layers ×
4096; 17 rows; 28 steps at 176 ms), from ``capture_overhead_dit.md``.

    python benchmarks/writer_drain.py --out benchmarks/results/writer_drain.md    # ~3 minutes
    python benchmarks/writer_drain.py --smoke --repeats 1                         # checks the script
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from attnscope.store import RunFile
from attnscope.store.compression import Storage
from attnscope.store.schema import CaptureSchema, RunRecord, layout
from attnscope.store.writer import BatchRows, RunWriter

# name -> (runs, token rows per run, L, stored steps, seconds per step)
SHAPES = {
    "SD 1.4, batch 8": (8, 17, 26944, 50, 0.060),
    "SD3.5-medium, batch 1": (1, 34, 24 * 4096, 28, 0.084),
    "Flux.1-dev, batch 1": (1, 17, 57 * 4096, 28, 0.176),
}
SMOKE = {"tiny": (2, 3, 64, 10, 0.001)}
CHUNKINGS = {"10 steps per chunk (before)": Storage("lossless", step_block=10), "default": Storage("lossless")}


def drifting_maps(runs: int, rows: int, width: int, steps: int, seed: int = 0) -> torch.Tensor:
    """``(steps, runs, rows, L)`` float16 values in [0, 1] that drift slowly from step to step."""
    rng = np.random.default_rng(seed)
    base = rng.random((1, runs, rows, width), dtype=np.float32) / 20
    drift = 1 + 0.02 * np.cumsum(rng.standard_normal((steps, 1, rows, width), dtype=np.float32), axis=0)
    return torch.from_numpy(np.clip(base * drift, 0, 1).astype(np.float16))


def schema(steps: int, width: int) -> CaptureSchema:
    return CaptureSchema(
        height=512, width=512, latent_height=64, latent_width=64,
        layers=tuple(layout([("maps", "down", 1, width, 1)])), steps=tuple(range(steps)),
        timesteps=tuple(float(step) for step in range(steps)), heads="mean", branch="cond", dtype="float16",
    )


def records(runs: int, rows: int) -> list[RunRecord]:
    """One record per run of a replayed batch, ``rows`` labelled tokens each."""
    return [RunRecord("a prompt", "", run, 7.5, [(row, "t", row) for row in range(rows)]) for run in range(runs)]


def replay(path: Path, maps: torch.Tensor, step_seconds: float, storage: Storage) -> tuple[float, float, float, float]:
    """``(sampling seconds, drain seconds, writer seconds, stored ÷ raw bytes)`` of one capture context that
    writes ``maps`` to ``path``."""
    steps, runs, rows, width = maps.shape
    writer = RunWriter(path, overwrite=True, storage=storage)
    writer.open(schema(steps, width))
    owned = BatchRows([list(range(rows))] * runs)
    block = writer.step_block
    started = time.perf_counter()
    for first in range(0, steps, block):
        count = min(block, steps - first)
        time.sleep(step_seconds * count)  # the GPU samples the block's steps
        writer.submit_steps(owned, first, maps[first : first + count].clone())
    writer.submit_runs(owned, records(runs, rows), writer.reserve(runs))
    sampled = time.perf_counter()
    writer.close()
    drain = time.perf_counter() - sampled
    with RunFile(path) as written:
        return sampled - started, drain, writer.timing.writing, written.storage().maps_bytes / maps.numpy().nbytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="Markdown sheet to write")
    parser.add_argument("--smoke", action="store_true", help="one tiny shape, to check the script")
    args = parser.parse_args(argv)
    lines = ["# Writer drain: steps per chunk", "",
             f"`python benchmarks/writer_drain.py --repeats {args.repeats}` (method in its docstring) on "
             f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, h5py {h5py.__version__}; lossless run "
             "files on local disk; chunkings interleaved within each repeat. Drain: seconds from the last block's "
             "hand-off to the closed file; capture ÷ sampling: one capture context of one batch, against its "
             "sampling time alone; writer s: the writer thread's time encoding, compressing and writing the batch "
             "(beside the sampling: it costs the sampling only where the two compete for the host); stored ÷ raw: "
             "the maps' bytes on disk.", "",
             "| shape | chunking | steps per chunk | last block | drain s (median) | drain s (min – max) "
             "| capture ÷ sampling (median) | writer s per batch (median) | stored ÷ raw |",
             "|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as scratch:
        for name, (runs, rows, width, steps, step_seconds) in (SMOKE if args.smoke else SHAPES).items():
            maps = drifting_maps(runs, rows, width, steps)
            measured = {chunking: [] for chunking in CHUNKINGS}
            for repeat in range(args.repeats):
                order = list(CHUNKINGS) if repeat % 2 == 0 else list(CHUNKINGS)[::-1]
                for chunking in order:
                    path = Path(scratch) / "drain.h5"
                    measured[chunking].append(replay(path, maps, step_seconds, CHUNKINGS[chunking]))
                    path.unlink()
            for chunking, storage in CHUNKINGS.items():
                per_chunk = storage.steps_per_chunk(steps)
                drains = [drain for _, drain, _, _ in measured[chunking]]
                ratios = [(sampled + drain) / sampled for sampled, drain, _, _ in measured[chunking]]
                writing = statistics.median(busy for _, _, busy, _ in measured[chunking])
                lines.append(f"| {name} | {chunking} | {per_chunk} | {steps - per_chunk * ((steps - 1) // per_chunk)} "
                             f"| {statistics.median(drains):.3f} | {min(drains):.3f} – {max(drains):.3f} "
                             f"| {statistics.median(ratios):.3f} | {writing:.2f} | {measured[chunking][0][3]:.3f} |")
                print(lines[-1], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
