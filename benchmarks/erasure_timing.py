"""Time UCE and RECE on a Stable Diffusion 1.4-architecture pipeline, against one sampled image.

The pipeline has SD 1.4's UNet, CLIP ViT-L/14's text encoder and SD's VAE,
with random weights (nothing is downloaded); erasure cost depends on shapes,
not values. Each operation is CUDA-synchronised, warmed up once, and
reported as the median of ``--repeats`` runs, next to one 50-step 512×512
image sampled with plain diffusers (guidance 7.5) as the yardstick.

    python benchmarks/erasure_timing.py --out benchmarks/results/erasure_timing.md
    python benchmarks/erasure_timing.py --smoke --out /tmp/timing.md     # tiny sizes, CPU, seconds

RECE's paper reports ~3.4 s for 5 epochs; attnscope aims far under a second for 3.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Callable

import diffusers
import torch

from attnscope.erasure import erase_rece, erase_uce
from attnscope.models.sd14 import random_sd14_pipeline
from attnscope.runner.timing import device_name, timed

SMOKE_IMAGE, SMOKE_STEPS = 64, 5  # --smoke: tiny widths (attnscope.models.sd14.SMOKE), few steps


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """(median, min) wall time of ``fn`` over ``repeats`` runs after one warm-up, device-synchronised."""
    fn()
    times = [timed(fn, device).seconds for _ in range(repeats)]
    return statistics.median(times), min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--device", default=None, help="default: cuda if available (cpu with --smoke)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU: checks the script, not the speed")
    parser.add_argument("--concept", default="nudity")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda"))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    size, steps = (SMOKE_IMAGE, SMOKE_STEPS) if args.smoke else (512, 50)
    pipe = random_sd14_pipeline(device, dtype, smoke=args.smoke)
    concepts = [args.concept]

    def sample():
        generator = torch.Generator(device).manual_seed(0)
        pipe("a photo", height=size, width=size, num_inference_steps=steps, guidance_scale=7.5,
             generator=generator, output_type="np")

    uce = erase_uce(pipe, concepts)
    operations: list[tuple[str, Callable[[], object]]] = [
        ("UCE, 1 concept, last token", lambda: erase_uce(pipe, concepts)),
        ("UCE, 1 concept, eos-aligned", lambda: erase_uce(pipe, concepts, token_choice="eos-aligned")),
        ("RECE, 3 epochs, last token", lambda: erase_rece(pipe, concepts, epochs=3)),
        ("RECE, 3 epochs, eos-aligned", lambda: erase_rece(pipe, concepts, epochs=3, token_choice="eos-aligned")),
        ("RECE, 5 epochs, eos-aligned", lambda: erase_rece(pipe, concepts, epochs=5, token_choice="eos-aligned")),
        ("apply + revert an edit", lambda: (uce.apply(pipe), uce.revert(pipe))),
    ]
    yardstick, yardstick_min = median_seconds(sample, device, max(1, args.repeats // 2))
    rows = [(name, *median_seconds(fn, device, args.repeats)) for name, fn in operations]

    finite = all(torch.isfinite(t).all() for t in erase_rece(pipe, concepts, epochs=3).tensors.values())
    matrices = len(uce.tensors)
    gpu = device_name(device)
    lines = [
        f"# Erasure timing{' (smoke: tiny sizes)' if args.smoke else ''}",
        "",
        f"- device: {gpu}; torch {torch.__version__}, diffusers {diffusers.__version__}; dtype {dtype}",
        f"- model: SD 1.4 architecture, random weights; {matrices} K/V matrices edited "
        f"(width {pipe.unet.config.cross_attention_dim}); edits finite: {finite}",
        f"- yardstick: one {size}×{size} image, {steps} PNDM steps, CFG 7.5, plain diffusers (VAE decode included): "
        f"median {yardstick:.3f} s (min {yardstick_min:.3f} s)",
        f"- median of {args.repeats} runs after one warm-up, synchronised; the edit times include text encoding "
        "and building the Edit (not applying it)",
        "",
        f"| operation | median (s) | min (s) | × one {steps}-step image |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {name} | {med:.4f} | {low:.4f} | {med / yardstick:.4f} |" for name, med, low in rows],
        "",
    ]
    table = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
