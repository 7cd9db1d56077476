"""``attnscope capture``: sample images and record their cross-attention maps."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from attnscope.commands.common import add_model_options, add_sampler_options, load_from_args, sampler_from_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "capture", help="sample images and record per-token cross-attention maps into a run file",
        description="Sample each --prompt for each --seed and write images and attention maps to --out.",
    )
    parser.add_argument("--prompt", action="append", required=True, help="prompt to sample; repeatable")
    add_model_options(parser)
    add_sampler_options(parser)
    group = parser.add_argument_group("what to capture")
    group.add_argument("--layers", action="append", default=None,
                       help="layer names, globs ('up_blocks.*') or places (down/mid/up); default all")
    group.add_argument("--tokens", default="prompt",
                       help="'prompt' (real tokens, default), 'all', or comma-separated words/positions")
    group.add_argument("--steps-captured", default=None,
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
    parser.add_argument("--out", type=Path, default=Path("run.h5"), help="run file to write (default run.h5)")
    parser.add_argument("--resume", action="store_true", help="append to --out instead of overwriting it")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _tokens(text: str):
    if text in ("prompt", "all"):
        return text
    items = [item.strip() for item in text.split(",") if item.strip()]
    return [int(item) for item in items] if all(item.isdigit() for item in items) else items


def run(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from attnscope.hooks import capture
    from attnscope.sampling import Job, generate

    started = time.perf_counter()
    pipe = load_from_args(args)
    seeds = args.seed or [0]
    jobs = [Job(prompt, seed, args.negative_prompt) for prompt in args.prompt for seed in seeds]
    steps = None if args.steps_captured is None else [int(s) for s in args.steps_captured.split(",")]
    with capture(
        pipe, layers=args.layers or "all", steps=steps, tokens=_tokens(args.tokens), heads=args.heads,
        branch=args.branch, dtype=getattr(torch, args.map_dtype), sink=args.out, resume=args.resume,
        block=args.block, concepts=args.concept,
    ) as cap:
        images = generate(pipe, jobs, sampler_from_args(args), batch_size=args.batch_size, cap=cap,
                          progress=not args.no_progress)
    stem = args.out.with_suffix("")
    written = []
    for index, image in enumerate(images):
        path = stem.parent / f"{stem.name}-{index}.png"
        Image.fromarray(image).save(path)
        written.append(path)
    with cap.file as runs:
        n_layers, n_steps = len(runs.layers), len(runs.steps)
        size = args.out.stat().st_size
    print(f"wrote {len(jobs)} run(s) to {args.out} ({size / 1e6:.1f} MB: {n_layers} layers x {n_steps} steps)")
    print(f"images: {', '.join(str(p) for p in written)}")
    print(f"took {time.perf_counter() - started:.1f} s; next: attnscope inspect {args.out} | "
          f"attnscope show {args.out} --word WORD")
    return 0
