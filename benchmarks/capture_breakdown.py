"""Where does capture's cost go? A diagnostic for the GPU (SD 1.4 architecture, random weights).

Times one batch size in five modes, interleaved, 2 pipeline calls per measurement:
``plain``; ``full`` (capture into a run file); ``nowrite`` (maps computed, the
writer discards them); ``hooks`` (hooks installed, nothing computed or written);
``timed`` (full, with the CPU seconds spent in the capture hooks and in the step-end map math). Then one
call under torch.profiler, plain and with capture: total GPU kernel time.

The modes other than plain/full swap methods of the capture and writer
classes for the duration of a measurement: a diagnostic, not an API.

    python benchmarks/capture_breakdown.py --batch 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import attnscope.hooks.capture  # noqa: F401  (the module, not the function the package exports)
from attnscope import capture
from attnscope.models.sd14 import random_sd14_pipeline
from attnscope.store.writer import RunWriter

sys.path.insert(0, str(Path(__file__).parent))
from capture_overhead import pipeline_call  # noqa: E402

Capture = sys.modules["attnscope.hooks.capture"].Capture
ORIGINAL = {"record": Capture.record, "compute": Capture._store_pending, "steps": RunWriter.submit_steps,
            "runs": RunWriter.submit_runs}
MODES = ("plain", "full", "nowrite", "hooks", "timed")


def patched(mode: str, cpu: dict[str, float]) -> None:
    """Put the capture/writer methods of ``mode`` in place (the originals first)."""
    Capture.record, Capture._store_pending = ORIGINAL["record"], ORIGINAL["compute"]
    RunWriter.submit_steps, RunWriter.submit_runs = ORIGINAL["steps"], ORIGINAL["runs"]

    def discard_steps(self, rows, first, maps, ready=None, release=lambda: None):
        release()

    def discard_runs(self, rows, records, run_ids):
        """The runs are not written."""

    def skip(self, batch):
        """The step's maps are not computed (the layers' q/k are let go)."""
        batch.let_go()

    def timed(name):
        def method(self, *args):
            started = time.perf_counter()
            ORIGINAL[name](self, *args)
            cpu[name] += time.perf_counter() - started
        return method

    if mode in ("nowrite", "hooks"):
        RunWriter.submit_steps, RunWriter.submit_runs = discard_steps, discard_runs
    if mode == "hooks":
        Capture._store_pending = skip
    if mode == "timed":
        Capture.record, Capture._store_pending = timed("record"), timed("compute")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    pipe = random_sd14_pipeline(torch.device("cuda"), torch.float16)
    kwargs = pipeline_call(args.batch)
    folder = Path(tempfile.mkdtemp())
    cpu = {"record": 0.0, "compute": 0.0}

    def run(mode: str) -> None:
        patched(mode, cpu)
        if mode == "plain":
            pipe(**kwargs), pipe(**kwargs)
            return
        with capture(pipe, sink=folder / f"{mode}.h5"):
            pipe(**kwargs), pipe(**kwargs)
        (folder / f"{mode}.h5").unlink()

    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for mode in MODES:  # warm-up
        run(mode)
    for _ in range(args.repeats):
        for mode in MODES:
            cpu.update(record=0.0, compute=0.0)
            torch.cuda.synchronize()
            started = time.perf_counter()
            run(mode)
            torch.cuda.synchronize()
            times[mode].append((time.perf_counter() - started) / 2)
    plain = statistics.median(times["plain"])
    for mode in MODES:
        median = statistics.median(times[mode])
        print(f"batch {args.batch} {mode:8s} {median:.3f} s  ratio {median / plain:.3f}  "
              f"raw {[round(t, 3) for t in times[mode]]}")
    print(f"timed: CPU seconds per call in record {cpu['record'] / 2:.3f}, in the probability math {cpu['compute'] / 2:.3f}")

    patched("nowrite", cpu)
    for label in ("plain", "capture"):
        with profile(activities=[ProfilerActivity.CUDA]) as trace:
            if label == "plain":
                pipe(**kwargs)
            else:
                with capture(pipe, sink=folder / "profiled.h5"):
                    pipe(**kwargs)
            torch.cuda.synchronize()
        total = sum(event.self_device_time_total for event in trace.key_averages())
        print(f"{label}: total GPU kernel time {total / 1e6:.3f} s per call")
    patched("plain", cpu)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
