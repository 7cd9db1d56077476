"""What does capturing every cross-attention map cost? Side by side, one process.

An SD 1.4-architecture pipeline with random weights (fp16, 512×512, 50 PNDM
steps, CFG 7.5) samples the same batch three ways, interleaved so clock and
thermal drift hit all alike:

* ``plain``     — diffusers as is;
* ``attnscope`` — ``capture(pipe, sink=file)``: all 16 cross-attention layers,
  mean over heads, the prompt's tokens, every step, written to disk (the time
  includes waiting for the writer thread to finish);
* ``attnscope-memory`` — the same capture into an in-memory run file
  (``sink=None``): what writing to disk adds;
* ``daam-style`` — the usual way: an explicit attention processor that
  materialises the probabilities and copies each layer's maps to the host
  synchronously, every step (kept in host memory, not written);
* with ``--baseline FILE``, ``baseline``: the ``capture`` of another version of
  ``attnscope/hooks/capture.py`` (e.g. ``git show HEAD~1:attnscope/hooks/capture.py``),
  so an optimisation is measured before vs after in one process.

The capture modes also report the *drain*: seconds from the last pipeline
call's return until the run file is closed (the writer finishing its queue).

    python benchmarks/capture_overhead.py --out benchmarks/results/capture_overhead.md
    python benchmarks/capture_overhead.py --smoke     # tiny model on the CPU: checks the script
    python benchmarks/capture_overhead.py --baseline /tmp/capture_before.py --out /tmp/overhead.md
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import diffusers
import torch

from attnscope import capture
from attnscope.models.layers import cross_attention_layers
from attnscope.models.sd14 import random_sd14_pipeline

# The random model's tokenizer knows only a few whole words (others split into bytes); this prompt
# has 17 tokens with start and end, about what SD's CLIP tokenizer makes of a typical prompt.
PROMPT = "a red car and a blue bench and a bird and the cat and a dog"


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


def run_plain(pipe, kwargs, calls: int) -> dict:
    for _ in range(calls):
        pipe(**kwargs)
    return {}


def run_capture(capture_fn, pipe, kwargs, calls: int, path: Path | None) -> dict:
    """``calls`` pipeline calls in one capture context writing to ``path`` (None: in memory)."""
    with capture_fn(pipe, sink=path) as cap:
        for _ in range(calls):
            pipe(**kwargs)
        returned = time.perf_counter()
    drain = time.perf_counter() - returned
    if path is None:
        return {"bytes": cap.file.file["maps"].id.get_storage_size(), "drain": drain}
    size = path.stat().st_size
    path.unlink()
    return {"bytes": size, "drain": drain}


def load_capture(path: Path):
    """The ``capture`` function of a capture module kept outside the package (another version of it)."""
    spec = importlib.util.spec_from_file_location("attnscope_capture_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.capture


def run_daam(pipe, kwargs, calls: int) -> dict:
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
    return {"bytes": sum(t.numel() * t.element_size() for t in store)}


def timed(fn, device: torch.device) -> tuple[float, dict, int]:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    info = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    return time.perf_counter() - start, info, peak


def benchmark(pipe, device, batch: int, calls: int, steps: int, size: int, repeats: int, folder: Path,
              baseline=None, only: list[str] | None = None) -> dict:
    """Median seconds per batch of each mode; one measurement = ``calls`` consecutive pipeline calls."""
    kwargs = pipeline_call(batch, steps, size)
    modes = {
        "plain": lambda i: run_plain(pipe, kwargs, calls),
        "attnscope": lambda i: run_capture(capture, pipe, kwargs, calls, folder / f"capture-{i}.h5"),
        "attnscope-memory": lambda i: run_capture(capture, pipe, kwargs, calls, None),
        "daam-style": lambda i: run_daam(pipe, kwargs, calls),
    }
    if baseline is not None:
        modes["baseline"] = lambda i: run_capture(baseline, pipe, kwargs, calls, folder / f"baseline-{i}.h5")
    modes = {mode: fn for mode, fn in modes.items() if mode == "plain" or not only or mode in only}
    results = {mode: {"times": [], "drains": [], "peak": 0, "bytes": 0} for mode in modes}
    for mode, fn in modes.items():  # warm-up: kernels, allocator, pinned buffers
        fn(-1)
    for index in range(repeats):
        for mode, fn in modes.items():
            seconds, info, peak = timed(lambda: fn(index), device)
            results[mode]["times"].append(seconds / calls)
            results[mode]["peak"] = max(results[mode]["peak"], peak)
            results[mode]["bytes"] = info.get("bytes", 0) / calls
            if "drain" in info:
                results[mode]["drains"].append(info["drain"])
    return {mode: {**r, "median": statistics.median(r["times"]),
                   "drain": statistics.median(r["drains"]) if r["drains"] else None}
            for mode, r in results.items()}


def report(all_results: dict, device: torch.device, dtype: torch.dtype, steps: int, size: int, repeats: int,
           calls: int) -> str:
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "CPU"
    lines = [
        "# Capture overhead",
        "",
        f"SD 1.4 architecture, random weights, {str(dtype).removeprefix('torch.')}, "
        f"{size}×{size}, {steps} PNDM steps, CFG 7.5; device: {name}; torch {torch.__version__}, "
        f"diffusers {diffusers.__version__}. Each measurement is {calls} consecutive pipeline calls (one capture "
        f"context, its file closed at the end) divided by {calls}; median of {repeats} interleaved repeats after "
        f"one warm-up each; all modes in one process. Prompt: “{PROMPT}” (17 tokens).",
        "",
        "| batch | mode | s / batch | ratio vs plain | drain s (per measurement) | MB per image "
        "| peak GPU memory (GB) | peak vs plain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for batch, results in all_results.items():
        plain = results["plain"]
        for mode, r in results.items():
            mb = r["bytes"] / batch / 1e6
            drain = "–" if r["drain"] is None else f"{r['drain']:.3f}"
            lines.append(
                f"| {batch} | {mode} | {r['median']:.3f} | {r['median'] / plain['median']:.3f} | {drain} | "
                f"{mb:.1f} | {r['peak'] / 1e9:.2f} | {r['peak'] / max(plain['peak'], 1):.3f} |"
            )
    lines += [
        "",
        "`attnscope`: all 16 cross-attention layers, heads averaged on the GPU, the prompt's tokens, every step, "
        "float16, written to an HDF5 run file by the writer thread (time includes the final flush, the drain "
        "column says how much of it came after the last pipeline call returned); `attnscope-memory`: the same "
        "into an in-memory run file. "
        "`daam-style`: explicit per-head probabilities, synchronous `.cpu()` of each layer's head-mean every "
        "step, kept in RAM (MB column = bytes copied to the host, not written).",
        "",
        "Raw times (s): " + "; ".join(
            f"batch {b} {m}: " + ", ".join(f"{t:.3f}" for t in r["times"])
            for b, res in all_results.items() for m, r in res.items()
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, action="append", default=None, help="batch sizes (default 1 and 8)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3, help="consecutive pipeline calls per measurement")
    parser.add_argument("--smoke", action="store_true", help="tiny widths on the CPU, to check the script")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--mode", action="append", default=None,
                        choices=["attnscope", "attnscope-memory", "daam-style", "baseline"],
                        help="modes to time beside plain (default: all)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another version of attnscope/hooks/capture.py to time side by side")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    size = 64 if args.smoke else 512
    steps = 3 if args.smoke else args.steps
    pipe = random_sd14_pipeline(device, dtype, smoke=args.smoke)
    baseline = load_capture(args.baseline) if args.baseline else None
    all_results = {}
    with tempfile.TemporaryDirectory() as folder:
        for batch in args.batch or [1, 8]:
            all_results[batch] = benchmark(pipe, device, batch, args.calls, steps, size, args.repeats, Path(folder),
                                           baseline, args.mode)
    text = report(all_results, device, dtype, steps, size, args.repeats, args.calls)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
