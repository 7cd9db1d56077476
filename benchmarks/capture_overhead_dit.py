"""What does capturing every text→image attention map of a diffusion transformer cost?

Full-size transformers with random weights (:mod:`attnscope.models.random_dit`:
Flux.1-dev-shaped and SD3.5-medium-shaped; text encoders and VAE are tiny
random stand-ins, since only the transformer's cost is measured), bf16,
1024×1024, 28 flow-matching steps (SD3.5: CFG 7.0, so the transformer sees
2× the batch; Flux: guidance-distilled, one pass), ``output_type="latent"``
(no VAE decode). Two modes, interleaved within each repeat so clock and
thermal drift hit both alike, after one warm-up each:

* ``plain`` — diffusers as is;
* ``attnscope`` — ``capture(pipe, sink=file)``: every text-attending layer
  (Flux: 19 double + 38 single; SD3.5: 24 joint), heads averaged on the GPU,
  the prompt's tokens, every step, float16, written to an HDF5 run file
  (the time includes waiting for the writer thread at the end).

Per repeat the ratio attnscope / plain is taken (paired), and the table
gives its median and mean, the median seconds per batch, peak GPU memory,
whether the latents were bit-identical (with, in brackets, the control: two
plain calls against each other), and where the softmax normaliser
came from ("kernel": the flash kernel's log-sum-exp; "recomputed").

    python benchmarks/capture_overhead_dit.py --model flux --out benchmarks/results/capture_overhead_dit.md
    python benchmarks/capture_overhead_dit.py --model sd3.5 --out benchmarks/results/capture_overhead_dit.md
    python benchmarks/capture_overhead_dit.py --smoke          # tiny models on the CPU: checks the script

Each ``--model`` run replaces its own section of ``--out`` and keeps the other's.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
from pathlib import Path

import diffusers
import numpy as np
import torch

from attnscope import capture
from attnscope.runner.timing import device_name, timed

# 17 CLIP tokens with start and end (the tiny tokenizers split unknown words into letters)
PROMPT = "a red car and a blue bench and a bird and the cat and a dog"
MODELS = {
    "flux": {"label": "Flux.1-dev-shaped", "call": {"guidance_scale": 3.5, "max_sequence_length": 512}},
    "sd3.5": {"label": "SD3.5-medium-shaped", "call": {"guidance_scale": 7.0, "max_sequence_length": 256}},
}


def build(model: str, device: torch.device, dtype: torch.dtype, smoke: bool, blocks: str | None):
    if smoke:
        from attnscope.models.tiny_dit import tiny_flux_pipeline, tiny_sd3_pipeline

        return (tiny_flux_pipeline if model == "flux" else tiny_sd3_pipeline)().to(device, dtype)
    from attnscope.models.random_dit import random_flux_pipeline, random_sd35_pipeline

    if model == "flux":
        kept = tuple(int(b) for b in blocks.split(",")) if blocks else None
        return random_flux_pipeline(device, dtype, kept)
    return random_sd35_pipeline(device, dtype, int(blocks) if blocks else None)


def pipeline_call(model: str, batch: int, steps: int, size: int, smoke: bool) -> dict:
    call = dict(MODELS[model]["call"])
    if smoke:
        call["max_sequence_length"] = 32
    return dict(prompt=[PROMPT] * batch, num_inference_steps=steps, height=size, width=size,
                generator=[torch.Generator().manual_seed(i) for i in range(batch)], output_type="latent", **call)


def run_plain(pipe, kwargs) -> dict:
    return {"latents": pipe(**kwargs()).images}


def run_capture(pipe, kwargs, path: Path) -> dict:
    """``kwargs()``: fresh arguments (new generators) for one pipeline call."""
    with capture(pipe, sink=path) as cap:
        latents = pipe(**kwargs()).images
    size = path.stat().st_size
    path.unlink()
    timing = cap.writer_timing
    return {"latents": latents, "bytes": size, "lse": sorted(cap.lse_sources), "drain": timing.drain,
            "waited": timing.waited}


def benchmark(pipe, model: str, device, batch: int, steps: int, size: int, repeats: int, folder: Path,
              smoke: bool) -> dict:
    kwargs = lambda: pipeline_call(model, batch, steps, size, smoke)  # noqa: E731
    modes = {
        "plain": lambda i: run_plain(pipe, kwargs),
        "attnscope": lambda i: run_capture(pipe, kwargs, folder / f"capture-{i}.h5"),
    }
    results = {mode: {"times": [], "peak": 0, "bytes": 0, "lse": [], "drain": [], "waited": []} for mode in modes}
    latents = {}
    for mode, fn in modes.items():  # warm-up: kernels, allocator, pinned buffers
        latents[mode] = fn(-1)["latents"]
    identical = same(latents["plain"], latents["attnscope"])
    repeatable = None
    for index in range(repeats):
        for mode, fn in modes.items():
            measured = timed(lambda: fn(index), device)
            info = measured.result
            if mode == "plain" and repeatable is None:  # the control: plain against plain
                repeatable = same(latents["plain"], info["latents"])
            results[mode]["times"].append(measured.seconds)
            results[mode]["peak"] = max(results[mode]["peak"], measured.peak_bytes)
            results[mode]["bytes"] = info.get("bytes", 0)
            results[mode]["lse"] = info.get("lse", [])
            for key in ("drain", "waited"):
                if key in info:
                    results[mode][key].append(info[key])
    ratios = [c / p for c, p in zip(results["attnscope"]["times"], results["plain"]["times"])]
    return {"modes": results, "ratios": ratios, "identical": identical, "repeatable": repeatable}


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical latents (NaN where the other has NaN counts as equal: random weights can overflow)."""
    return np.array_equal(a.float().cpu().numpy(), b.float().cpu().numpy(), equal_nan=True)


def section(model: str, results: dict, pipe, device, dtype, steps: int, size: int, repeats: int, note: str) -> str:
    name = device_name(device)
    config = pipe.transformer.config
    if model == "flux":
        shape = f"{config.num_layers} double + {config.num_single_layers} single blocks"
    else:
        shape = f"{config.num_layers} joint blocks ({len(config.dual_attention_layers)} with dual attention)"
    lines = [
        f"## {MODELS[model]['label']}",
        "",
        f"{shape}, {config.num_attention_heads} heads × {config.attention_head_dim}, random weights, "
        f"{str(dtype).removeprefix('torch.')}, {size}×{size}, {steps} steps, guidance "
        f"{MODELS[model]['call']['guidance_scale']}; device: {name}; torch {torch.__version__}, diffusers "
        f"{diffusers.__version__}. {repeats} interleaved repeats after one warm-up each. Text encoders and VAE "
        f"are tiny random stand-ins (only the transformer's cost counts); latents out, no VAE decode. {note}",
        "",
        "Drain: seconds the run file took to close after the call (the last blocks still to write); waited: "
        "seconds the sampling waited for the writer (its queue or host buffers full); medians.",
        "",
        "| batch | s / batch plain | s / batch attnscope | ratio median | ratio mean | MB per image "
        "| peak GB plain | peak GB attnscope | drain s | waited s | latents identical (plain vs plain) | normaliser |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for batch, r in results.items():
        plain, cap = r["modes"]["plain"], r["modes"]["attnscope"]
        lines.append(
            f"| {batch} | {statistics.median(plain['times']):.3f} | {statistics.median(cap['times']):.3f} | "
            f"{statistics.median(r['ratios']):.3f} | {statistics.mean(r['ratios']):.3f} | "
            f"{cap['bytes'] / batch / 1e6:.1f} | {plain['peak'] / 1e9:.2f} | {cap['peak'] / 1e9:.2f} | "
            f"{statistics.median(cap['drain']):.3f} | {statistics.median(cap['waited']):.3f} | "
            f"{r['identical']} ({r['repeatable']}) | {', '.join(cap['lse'])} |"
        )
    lines += ["", "Paired ratios per repeat: " + "; ".join(
        f"batch {b}: " + ", ".join(f"{x:.3f}" for x in r["ratios"]) for b, r in results.items())]
    return "\n".join(lines) + "\n"


def merge(path: Path, model: str, text: str) -> str:
    """The results file with ``model``'s section replaced by ``text`` (other sections kept)."""
    header = ("# Capture overhead on diffusion transformers\n\n"
              "Made by `benchmarks/capture_overhead_dit.py` (method in its docstring).\n\n")
    old = path.read_text() if path.exists() else header
    heading = f"## {MODELS[model]['label']}"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    return pattern.sub(text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), action="append", default=None,
                        help="transformer shape(s) to measure (default: both)")
    parser.add_argument("--batch", type=int, action="append", default=None, help="batch sizes (default 1 and 4)")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--blocks", default=None,
                        help="keep only the first blocks: 'D,S' for flux, 'N' for sd3.5 (default: full depth)")
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU, to check the script")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size, steps = (64, 3) if args.smoke else (args.size, args.steps)
    note = f"Blocks kept: {args.blocks}." if args.blocks else "Full depth."
    for model in args.model or list(MODELS):
        pipe = build(model, device, dtype, args.smoke, args.blocks)
        pipe.set_progress_bar_config(disable=True)
        with tempfile.TemporaryDirectory() as folder:
            results = {batch: benchmark(pipe, model, device, batch, steps, size, args.repeats, Path(folder), args.smoke)
                       for batch in args.batch or [1, 4]}
        text = section(model, results, pipe, device, dtype, steps, size, args.repeats, note)
        print(text)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(merge(args.out, model, text))
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
