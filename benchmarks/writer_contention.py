"""Does the run writer slow the sampling thread? A launch-bound stand-in, with and without the writer beside it.

On the GPU machines capture runs on, sampling SD 1.4 at batch 8 is bound by
the host: the Python thread that launches kernels is busy all the time, and
it drops and retakes the GIL around every launch. The run writer is a second
thread of the same process; whatever it does while holding the GIL — and
every time it takes the GIL back from the sampling thread — delays a launch.

This script stands in for the sampling thread with a loop of tiny in-place
torch ops on the CPU (each drops and retakes the GIL, as a CUDA launch does)
in steps of ``--ops`` ops, and times a 50-step "batch" of it alone and with a
:class:`~attnscope.store.writer.RunWriter` beside it that gets SD 1.4 batch-8
maps (8 runs × 17 token rows × L = 26,944, float16, drifting over steps)
block by block as the steps complete, as a capture hands them over, and
writes a lossless run file to disk (creating and closing it, and its drain,
counted: they are part of a capture). Arms interleave, in alternating order;
per repeat the ratio to ``alone`` is taken (paired). A reference arm runs the
same writer in a forked child process that is told when each block is ready:
what the sampling thread would feel with the writer outside its process
(no GIL or address space shared; the process's start is counted).

    python benchmarks/writer_contention.py --out benchmarks/results/writer_contention.md
    python benchmarks/writer_contention.py --smoke     # checks the script
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from attnscope.store.compression import Storage
from attnscope.store.writer import BatchRows, RunWriter

sys.path.insert(0, str(Path(__file__).parent))
from writer_drain import drifting_maps, records, schema  # noqa: E402

RUNS, ROWS, WIDTH, STEPS = 8, 17, 26944, 50


def sampling_step(x: torch.Tensor, ops: int) -> None:
    """One stand-in sampling step: ``ops`` tiny in-place ops, each a GIL release and retake like a kernel launch."""
    for _ in range(ops):
        x.add_(1.0)


def batch_alone(x: torch.Tensor, ops: int, steps: int) -> tuple[float, float]:
    """``(sampling seconds, total seconds)`` of one stand-in batch without a writer (the two are equal)."""
    started = time.perf_counter()
    for _ in range(steps):
        sampling_step(x, ops)
    seconds = time.perf_counter() - started
    return seconds, seconds


def batch_with_writer(x: torch.Tensor, ops: int, maps: torch.Tensor, path: Path,
                      storage: Storage) -> tuple[float, float]:
    """``(sampling seconds, total seconds)`` of one stand-in batch whose maps a run writer writes to ``path``
    meanwhile: to the last block's hand-off, and until the file is closed."""
    steps, runs, rows, width = maps.shape
    started = time.perf_counter()
    with RunWriter(path, overwrite=True, storage=storage) as writer:
        writer.open(schema(steps, width))
        owned = BatchRows([list(range(rows))] * runs)
        block = writer.step_block
        for first in range(0, steps, block):
            count = min(block, steps - first)
            for _ in range(count):
                sampling_step(x, ops)
            writer.submit_steps(owned, first, maps[first : first + count])  # a view: no copy on this thread
        sampled = time.perf_counter() - started
        writer.submit_runs(owned, records(runs, rows), writer.reserve(runs))
    return sampled, time.perf_counter() - started


def _child_writer(connection, maps: torch.Tensor, path: Path, storage: Storage) -> None:
    """A run writer in another process: writes the block whose first step arrives on ``connection``."""
    steps, runs, rows, width = maps.shape
    with RunWriter(path, overwrite=True, storage=storage) as writer:
        writer.open(schema(steps, width))
        connection.send(writer.step_block)
        owned = BatchRows([list(range(rows))] * runs)
        while (first := connection.recv()) is not None:
            writer.submit_steps(owned, first, maps[first : first + writer.step_block])
        writer.submit_runs(owned, records(runs, rows), writer.reserve(runs))
    connection.send("closed")


def batch_with_writer_process(x: torch.Tensor, ops: int, maps: torch.Tensor, path: Path,
                              storage: Storage) -> tuple[float, float]:
    """As :func:`batch_with_writer`, with the writer in a forked process told each block's first step (the maps
    reach it by fork): what the sampling thread would feel with the writer out of its process."""
    steps = maps.shape[0]
    started = time.perf_counter()
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(target=_child_writer, args=(theirs, maps, path, storage))
    child.start()
    theirs.close()  # the child's end: if the child dies, recv() below ends instead of waiting forever
    with ours:
        block = ours.recv()
        for first in range(0, steps, block):
            for _ in range(min(block, steps - first)):
                sampling_step(x, ops)
            ours.send(first)
        sampled = time.perf_counter() - started
        ours.send(None)
        closed = ours.recv()
    child.join()
    if closed != "closed" or child.exitcode != 0:
        raise RuntimeError(f"the writer process failed (exit code {child.exitcode})")
    return sampled, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--ops", type=int, default=12000, help="tiny ops per stand-in sampling step")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny maps and steps, to check the script")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs, rows, width, steps, ops = (2, 3, 64, 6, 100) if args.smoke else (RUNS, ROWS, WIDTH, STEPS, args.ops)
    maps = drifting_maps(runs, rows, width, steps)
    x = torch.zeros(16)
    arms = {
        "alone": lambda path: batch_alone(x, ops, steps),
        "with the writer": lambda path: batch_with_writer(x, ops, maps, path, Storage()),
        "with the writer, 10 steps per chunk": lambda path: batch_with_writer(
            x, ops, maps, path, Storage(step_block=10)),
        "with the writer in a child process (reference)": lambda path: batch_with_writer_process(
            x, ops, maps, path, Storage()),
    }
    seconds = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "contention.h5"
        for repeat in range(args.repeats):
            for arm in arms if repeat % 2 == 0 else list(arms)[::-1]:
                seconds[arm].append(arms[arm](path))
    lines = ["# Does the run writer slow a launch-bound sampling thread?", "",
             f"`python benchmarks/writer_contention.py --repeats {args.repeats} --ops {ops}` (method in its docstring) "
             f"on {os.cpu_count()} CPU cores, Python {platform.python_version()}, torch {torch.__version__}: "
             f"{steps} stand-in steps of {ops} tiny torch ops, {runs} runs × {rows} token rows × L = {width} maps "
             "written beside them. Ratios are to alone in the same repeat: *sampling* to the last block's "
             "hand-off (what the writer costs the sampling thread while both run), *whole* until the file is "
             "closed (its creation and drain included).", "",
             "| arm | s per batch, whole (median) | sampling ratio median | sampling ratio mean | whole ratio median "
             "| whole ratio mean |", "|---|---|---|---|---|---|"]
    for arm, measured in seconds.items():
        sampling = [s / alone[0] for (s, _), alone in zip(measured, seconds["alone"])]
        whole = [w / alone[1] for (_, w), alone in zip(measured, seconds["alone"])]
        lines.append(f"| {arm} | {statistics.median(w for _, w in measured):.3f} | {statistics.median(sampling):.3f} "
                     f"| {statistics.fmean(sampling):.3f} | {statistics.median(whole):.3f} | {statistics.fmean(whole):.3f} |")
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
