"""``attnscope capture``: sample images and record their cross-attention maps."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from attnscope.commands.common import (
    STORAGE_MODES,
    add_model_options,
    add_sampler_options,
    load_from_args,
    sampler_from_args,
    writable_parent,
)
from attnscope.errors import FileRefused, UsageError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "capture", help="sample images and record per-token cross-attention maps into a run file",
        description="Sample each --prompt for each --seed and write images and attention maps to --out.",
    )
    parser.add_argument("--prompt", action="append", required=True, help="prompt to sample; repeatable")
    add_model_options(parser)
    # "auto": DPM-Solver++(2M) in 10 steps draws the built-in model nearly as 50 DDIM steps do, at a fifth of the cost
    # (oracle, 800 images: single-object class/colour/material/size within 1.1 points, both present 93.8 vs 96.2 %,
    # binding 83.3 vs 87.2 %; benchmarks/results/toy_model/samplers/). `--scheduler model --steps 50` gives DDIM.
    add_sampler_options(parser, steps=None, scheduler="auto")
    group = parser.add_argument_group("what to capture")
    group.add_argument("--layers", action="append", default=None,
                       help="layer names, globs ('up_blocks.*') or places (down/mid/up); default all")
    group.add_argument("--tokens", default="prompt",
                       help="'prompt' (real tokens, default), 'all', or comma-separated words/positions")
    group.add_argument("--steps-captured", type=_steps, default=None,
                       help="comma-separated step indices to keep (default: every step)")
    group.add_argument("--heads", choices=("mean", "all"), default="mean")
    group.add_argument("--branch", choices=("cond", "both"), default="cond", help="CFG branch(es) to keep")
    group.add_argument("--map-dtype", choices=("float16", "float32"), default="float16")
    group.add_argument("--block", choices=("text-to-image", "image-to-text"), default="text-to-image",
                       help="joint-attention transformers (SD3, Flux): image queries on text keys (default) "
                            "or text queries on image keys")
    group.add_argument("--concept", action="append", default=[],
                       help="phrase whose concept map (ConceptAttention-style) is stored too; repeatable; "
                            "SD3/Flux only")
    group.add_argument("--storage", choices=STORAGE_MODES, default="lossless",
                       help="lossless (Zstandard, default), quantised (8-bit, max abs error 1.96e-3) or raw")
    parser.add_argument("--out", type=Path, default=Path("run.h5"),
                        help="run file to write (default run.h5); images go beside it as OUT-<run>.png")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true",
                          help="append to an existing --out, skipping runs it already holds complete")
    existing.add_argument("--overwrite", action="store_true", help="replace an existing run file at --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _tokens(text: str):
    if text in ("prompt", "all"):
        return text
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError("--tokens is empty: give 'prompt', 'all', or comma-separated words or positions")
    return [int(item) for item in items] if all(item.isdigit() for item in items) else items


def _steps(text: str) -> list[int]:
    try:
        return [int(step) for step in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated step indices, e.g. 0,10,49") from None


def check_out(args: argparse.Namespace) -> None:
    """Refuse an --out that would overwrite something not written by capture, or runs to keep."""
    from attnscope.store.reader import is_run_file

    out = args.out
    writable_parent(out, "--out")
    if not out.exists():
        if args.resume:
            raise FileRefused(f"--resume: {out} does not exist yet; drop --resume to create it")
        return
    if not is_run_file(out):
        raise FileRefused(f"--out {out} exists and is not an attnscope run file: it will not be overwritten; "
                          "choose another --out")
    if not (args.resume or args.overwrite):
        raise FileRefused(f"--out {out} already holds runs: pass --resume to add to it, --overwrite to replace it, "
                          "or choose another --out")


def main(args: argparse.Namespace) -> int:
    import torch

    from attnscope.hooks.selection import Selection
    from attnscope.runner.capture import CaptureRequest, capture_runs

    started = time.perf_counter()
    selection = Selection(layers=args.layers or "all", steps=args.steps_captured, tokens=_tokens(args.tokens),
                          heads=args.heads, branch=args.branch, dtype=getattr(torch, args.map_dtype))
    check_out(args)
    pipe = load_from_args(args)
    request = CaptureRequest(
        args.prompt, args.seed or [0], args.out, args.negative_prompt, sampler_from_args(args), selection,
        storage=args.storage, block=args.block, concepts=args.concept, batch_size=args.batch_size,
        resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    done = capture_runs(pipe, request)
    if done.skipped:
        print(f"skipping {done.skipped} run(s) already complete in {args.out}")
    size = args.out.stat().st_size
    print(f"wrote {done.written} run(s) to {args.out} ({size / 1e6:.1f} MB: {done.layers} layers x {done.steps} steps)")
    if done.images:
        print(f"images: {', '.join(str(p) for p in done.images)}")
    if note := done.writer_note():
        print(note)
    print(f"took {time.perf_counter() - started:.1f} s; next: attnscope inspect {args.out} | "
          f"attnscope show {args.out} --word WORD")
    return 0
