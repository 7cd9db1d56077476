"""What does capturing every cross-attention map cost? Issue 12's acceptance, in one bounded process.

An SD 1.4-architecture pipeline with random weights (fp16, 512×512, 50 PNDM
steps, CFG 7.5) samples the same batch with and without capture — all 16
cross-attention layers, every step, heads averaged, the prompt's 17 tokens,
float16, written to a run file on disk (lossless, the default). Sections,
each printed and written to ``--out`` as soon as it is done:

1. batch 8, eager UNet: ``plain`` vs ``capture`` (and ``daam-style``: an
   explicit attention processor that copies each layer's head-mean maps to
   the host synchronously, kept in RAM — the usual way; and, with
   ``--step-block N``, capture into chunks of ``N`` stored steps);
2. batch 1, the same;
3. bytes per image on disk in each storage mode (lossless, quantised, raw);
4. batch 8 on a ``torch.compile``d UNet: compiled plain vs compiled capture
   (the compile warm-ups are timed and reported, not counted).

A measurement is ``--calls`` consecutive pipeline calls; a capture
measurement opens one capture context and ends when its run file is closed
(the writer's *drain* after the last call returns is counted, and reported).
Arms are interleaved, their order alternating from repeat to repeat, after one
warm-up measurement each (two on the compiled UNet). Reported per arm: seconds per call (median, mean),
the paired ratios to plain of the same repeat (median, mean, min–max), the
peak GPU memory (``torch.cuda.max_memory_allocated``, reset before every
measurement) and its ratio to plain. A section that would end past
``--budget`` seconds from the start is skipped, and the sheet says so.

    python benchmarks/capture_overhead.py --out benchmarks/results/capture_overhead.md   # H200: ~8 min
    python benchmarks/capture_overhead.py --smoke --out /tmp/overhead.md                 # CPU: checks the script
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import diffusers
import h5py
import torch

from attnscope import capture
from attnscope.models.layers import cross_attention_layers
from attnscope.models.sd14 import random_sd14_pipeline
from attnscope.runner.timing import device_name, timed
from attnscope.store import RunFile, compression
from attnscope.store.compression import Storage

# The random model's tokenizer knows only a few whole words (others split into bytes); this prompt
# has 17 tokens with start and end, about what SD's CLIP tokenizer makes of a typical prompt.
PROMPT = "a red car and a blue bench and a bird and the cat and a dog"
COMPILE_RESERVE = 240  # seconds kept for the compiled section (two compiles and its repeats) on an H200


class DaamStyleProcessor:
    """Explicit attention with a synchronous host copy of the probabilities per call."""

    def __init__(self, store: list):
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        batch = hidden_states.shape[0]
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, None)
        self.store.append(probs.reshape(batch, attn.heads, *probs.shape[1:])[batch // 2 :].mean(1).cpu())
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        return attn.to_out[1](attn.to_out[0](out))


def pipeline_call(batch: int, steps: int = 50, size: int = 512) -> dict:
    """The benchmark's pipeline arguments: ``batch`` copies of :data:`PROMPT`, CFG 7.5, seeds 0..batch-1."""
    return dict(
        prompt=[PROMPT] * batch, num_inference_steps=steps, guidance_scale=7.5, height=size, width=size,
        generator=[torch.Generator().manual_seed(i) for i in range(batch)], output_type="np",
    )


def run_plain(pipe, kwargs: dict, calls: int) -> dict:
    for _ in range(calls):
        pipe(**kwargs)
    return {}


def run_capture(pipe, kwargs: dict, calls: int, path: Path, storage: Storage = Storage()) -> dict:
    """``calls`` pipeline calls in one capture context writing ``path`` (deleted after): the drain and the
    seconds the sampling waited for the writer."""
    with capture(pipe, sink=path, storage=storage) as cap:
        for _ in range(calls):
            pipe(**kwargs)
        returned = time.perf_counter()
    drain = time.perf_counter() - returned
    path.unlink()
    return {"drain": drain, "waited": cap.writer_timing.waited, "writing": cap.writer_timing.writing}


def run_daam(pipe, kwargs: dict, calls: int) -> dict:
    layers = cross_attention_layers(pipe.unet)
    originals = {layer.name: layer.module.processor for layer in layers}
    store: list = []
    for layer in layers:
        layer.module.set_processor(DaamStyleProcessor(store))
    try:
        for _ in range(calls):
            pipe(**kwargs)
    finally:
        for layer in layers:
            layer.module.set_processor(originals[layer.name])
    return {}


def interleaved(arms: dict[str, Callable[[int], dict]], repeats: int, calls: int, device: torch.device,
                deadline: float = float("inf"), warm_ups: int = 1) -> dict:
    """Per arm: seconds per call of each repeat, peak memory, drains; ``warm_ups`` rounds first (the first
    one's time is reported), then the repeats in alternating order.

    Repeats stop early when the next one would end after ``deadline`` (a ``time.perf_counter()`` value).
    """
    results = {arm: {"times": [], "peaks": [], "drains": [], "waits": [], "writing": []} for arm in arms}
    for _ in range(warm_ups):
        for arm, fn in arms.items():
            seconds = timed(lambda: fn(-1), device).seconds / calls
            results[arm].setdefault("warm_up", seconds)
    names = list(arms)
    for index in range(repeats):
        began = time.perf_counter()
        for arm in names if index % 2 == 0 else names[::-1]:
            measured = timed(lambda: arms[arm](index), device)
            results[arm]["times"].append(measured.seconds / calls)
            results[arm]["peaks"].append(measured.peak_bytes)
            if "drain" in measured.result:
                results[arm]["drains"].append(measured.result["drain"])
                results[arm]["waits"].append(measured.result["waited"])
                results[arm]["writing"].append(measured.result["writing"])
        if time.perf_counter() + (time.perf_counter() - began) > deadline:
            break
    return results


def table(title: str, results: dict, calls: int) -> list[str]:
    """A Markdown section: per arm seconds, paired ratios to ``plain``, peak memory, drain, waits on the writer."""
    plain = results["plain"]
    lines = [f"## {title}", "",
             f"{len(plain['times'])} interleaved repeats × {calls} calls; ratio = this arm / plain of the same repeat; "
             "drain = seconds from the last call's return to the closed file; waited = seconds the sampling "
             "waited for the writer (its queue or host buffers full), per measurement.", "",
             "| arm | s / call median | s / call mean | ratio median | ratio mean | ratio min – max "
             "| drain s | waited s | peak GPU GB | peak vs plain |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, r in results.items():
        ratios = [t / p for t, p in zip(r["times"], plain["times"])]
        drain = f"{statistics.median(r['drains']):.3f}" if r["drains"] else "–"
        waited = f"{statistics.median(r['waits']):.3f}" if r["waits"] else "–"
        peak, plain_peak = max(r["peaks"]), max(plain["peaks"])
        lines.append(
            f"| {arm} | {statistics.median(r['times']):.3f} | {statistics.fmean(r['times']):.3f} | "
            f"{statistics.median(ratios):.3f} | {statistics.fmean(ratios):.3f} | {min(ratios):.3f} – {max(ratios):.3f} "
            f"| {drain} | {waited} | {peak / 1e9:.2f} | {peak / max(plain_peak, 1):.3f} |")
    lines += ["", "Seconds per call, per repeat: " + "; ".join(
        f"{arm} " + ", ".join(f"{t:.3f}" for t in r["times"]) for arm, r in results.items()),
        "Seconds the sampling waited for the writer, per repeat: " + "; ".join(
        f"{arm} " + ", ".join(f"{w:.3f}" for w in r["waits"]) for arm, r in results.items() if r["waits"]),
        "Seconds the writer thread worked (beside the sampling), per repeat: " + "; ".join(
        f"{arm} " + ", ".join(f"{w:.2f}" for w in r["writing"]) for arm, r in results.items() if r["writing"]),
        "First warm-up measurement (compiles, if compiled), seconds per call: " + ", ".join(
        f"{arm} {r['warm_up']:.2f}" for arm, r in results.items()), ""]
    return lines


def storage_table(pipe, kwargs: dict, batch: int, folder: Path) -> list[str]:
    """Bytes per image of one capture call in each storage mode, and the writer's drain."""
    lines = ["## Bytes per image on disk", "",
             f"One capture call of batch {batch} per mode; `maps` = the `/maps` dataset, `file` = the whole run "
             "file (images, labels, metadata included); drain = seconds from the call's return until the file is "
             "closed. Random weights make near-uniform maps: real SD maps compress differently (docs/format.md).", "",
             "| storage | codec | maps MB / image | file MB / image | vs raw | drain s |", "|---|---|---|---|---|---|"]
    sizes = {}
    for mode in compression.MODES:
        path = folder / f"storage-{mode}.h5"
        with capture(pipe, sink=path, storage=mode):
            pipe(**kwargs)
            returned = time.perf_counter()
        drain = time.perf_counter() - returned
        with RunFile(path) as runs:
            stored = runs.storage()
        sizes[mode] = (stored.maps_bytes / batch, stored.file_bytes / batch, stored.codec, drain)
        path.unlink()
    for mode, (maps, file, codec, drain) in sizes.items():
        lines.append(f"| {mode} | {codec} | {maps / 1e6:.2f} | {file / 1e6:.2f} | {maps / sizes['raw'][0]:.3f} "
                     f"| {drain:.3f} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="Markdown sheet, rewritten after every section")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--calls", type=int, default=2, help="consecutive pipeline calls per measurement")
    parser.add_argument("--budget", type=float, default=510, help="seconds from the start; later sections are skipped")
    parser.add_argument("--no-daam", action="store_true", help="leave out the DAAM-style arm")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile section")
    parser.add_argument("--batch", type=int, action="append", default=None,
                        help="eager batch sizes to time (repeatable; default 8 then 1)")
    parser.add_argument("--no-eager", action="store_true", help="leave out the eager sections and the bytes table")
    parser.add_argument("--step-block", type=int, action="append", default=None,
                        help="also time capture with this many stored steps per chunk (repeatable; eager sections)")
    parser.add_argument("--smoke", action="store_true", help="tiny widths on the CPU, to check the script")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    size, steps, big = (64, 3, 2) if args.smoke else (512, 50, 8)
    backend = "eager" if args.smoke else "inductor"  # the CPU smoke run checks the code path, not the compiler
    pipe = random_sd14_pipeline(device, dtype, smoke=args.smoke)
    name = device_name(device)
    sheet = [
        "# Capture overhead", "",
        f"SD 1.4 architecture, random weights, {str(dtype).removeprefix('torch.')}, {size}×{size}, {steps} PNDM "
        f"steps, CFG 7.5; capture: all 16 cross-attention layers, every step, head mean, the prompt's 17 tokens, "
        f"float16, to a run file on disk (lossless unless said). Device: {name}; torch {torch.__version__}, "
        f"diffusers {diffusers.__version__}, h5py {h5py.__version__}. Made by `benchmarks/capture_overhead.py` "
        "(method in its docstring).", "",
    ]

    def publish(lines: list[str]) -> None:
        sheet.extend(lines)
        text = "\n".join(sheet) + "\n"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print("\n".join(lines), flush=True)

    def left() -> float:
        return args.budget - (time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        reserve = 0 if args.no_compile or args.smoke else COMPILE_RESERVE
        for batch in [] if args.no_eager else args.batch or (big, 1):
            kwargs = pipeline_call(batch, steps, size)
            arms = {
                "plain": lambda i, k=kwargs: run_plain(pipe, k, args.calls),
                "capture": lambda i, k=kwargs, b=batch: run_capture(pipe, k, args.calls, folder / f"b{b}-{i}.h5"),
            }
            for block in args.step_block or ():
                arms[f"capture, {block} steps per chunk"] = lambda i, k=kwargs, b=batch, s=block: run_capture(
                    pipe, k, args.calls, folder / f"b{b}-s{s}-{i}.h5", Storage("lossless", step_block=s))
            per_arm = (args.repeats + 1) * args.calls * timed(lambda: run_plain(pipe, kwargs, 1), device).seconds * 1.15
            if not args.no_daam and left() - reserve > 4 * per_arm:
                arms["daam-style"] = lambda i, k=kwargs: run_daam(pipe, k, args.calls)
            title = f"Batch {batch}, eager UNet"
            if left() - reserve < len(arms) * per_arm:
                publish([f"## {title}", "", f"Skipped: about {len(arms) * per_arm:.0f} s needed, {left():.0f} s "
                         "of the budget left.", ""])
                continue
            publish(table(title, interleaved(arms, args.repeats, args.calls, device), args.calls))
        if not args.no_eager:
            publish(storage_table(pipe, pipeline_call(big, steps, size), big, folder))
        if args.no_compile:
            return 0
        title = f"Batch {big}, torch.compile'd UNet (backend {backend})"
        if left() < reserve:
            publish([f"## {title}", "", f"Skipped: {left():.0f} s of the budget left.", ""])
            return 0
        kwargs = pipeline_call(big, steps, size)
        eager_unet = pipe.unet
        pipe.unet = torch.compile(eager_unet, backend=backend)
        try:  # the first warm-up round compiles; the second meets each arm's graphs after the other's
            results = interleaved({
                "plain": lambda i: run_plain(pipe, kwargs, args.calls),
                "capture": lambda i: run_capture(pipe, kwargs, args.calls, folder / f"compiled-{i}.h5"),
            }, args.repeats, args.calls, device, deadline=started + args.budget, warm_ups=2)
        finally:
            pipe.unet = eager_unet
        publish(table(title, results, args.calls))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
