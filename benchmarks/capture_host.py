"""What does capture cost the host? A CPU stand-in for the launch-bound GPU regime.

On the device machines, SD 1.4 at batch 1 (and nearly at batch 8) is bound
by the host issuing kernels, not by the GPU: every torch call capture adds
costs wall time. Here the SD 1.4 topology at toy widths (``smoke=True``),
64×64, 30 steps, CFG 7.5, one CPU thread, makes the model's own compute
small, so the per-call overhead dominates as it does there. Three arms,
interleaved, in one process:

* ``plain``;
* ``capture``: every layer, every step, head mean, the prompt's tokens, into an in-memory raw run file;
* ``hooks-only``: the same, but the step's maps are not computed (the hooks, buffers and writer remain).

``capture − hooks-only`` is the map math's host cost; ``hooks-only − plain``
the rest. A proxy: GPU numbers come from ``capture_overhead.py``.

    python benchmarks/capture_host.py --repeats 5
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

import torch

from attnscope import capture
from attnscope.models.sd14 import random_sd14_pipeline

PROMPT = "a red car and a blue bench and a bird and the cat and a dog"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pipe = random_sd14_pipeline("cpu", torch.float32, smoke=True)
    pipe.set_progress_bar_config(disable=True)
    call = dict(prompt=[PROMPT], num_inference_steps=30, guidance_scale=7.5, height=64, width=64,
                output_type="latent")
    hooks = importlib.import_module("attnscope.hooks.capture").Capture

    def plain() -> None:
        pipe(**call)

    def captured() -> None:
        with capture(pipe, sink=None, storage="raw"):
            pipe(**call)

    def hooks_only() -> None:
        store = hooks._store_pending
        hooks._store_pending = lambda self, batch: batch.let_go()
        try:
            captured()
        finally:
            hooks._store_pending = store

    arms = {"plain": plain, "capture": captured, "hooks-only": hooks_only}
    for arm in arms.values():  # warm-up
        arm()
    seconds = {name: [] for name in arms}
    for _ in range(args.repeats):
        for name, arm in arms.items():
            started = time.perf_counter()
            arm()
            seconds[name].append(time.perf_counter() - started)
    base = statistics.median(seconds["plain"])
    print("| arm | s / call (median) | ÷ plain |\n|---|---:|---:|")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values):.3f} | {statistics.median(values) / base:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
