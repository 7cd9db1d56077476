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
                       help="lossless (Blosc2, default), quantised (8-bit, max abs error 1.96e-3) or raw")
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


def check_inputs(pipe, args: argparse.Namespace, selection) -> None:
    """What only the loaded model can tell: image size, prompt lengths, token selection, captured steps."""
    from attnscope.models.checks import check_image_size, check_prompt_length

    check_image_size(pipe, args.height, args.width)
    check_prompt_length(pipe, args.prompt)
    if args.negative_prompt:
        check_prompt_length(pipe, [args.negative_prompt], "--negative-prompt")
    selection.check_prompts(pipe.tokenizer, args.prompt)
    if args.steps_captured is not None:
        late = [s for s in args.steps_captured if not -args.steps <= s < args.steps]
        if late:
            raise UsageError(f"--steps-captured {late}: outside the {args.steps} sampling steps (0..{args.steps - 1})")


def pipeline_default(pipe, argument: str):
    """The default of ``pipe.__call__``'s ``argument`` (None when it has none)."""
    import inspect

    parameter = inspect.signature(pipe.__call__).parameters.get(argument)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def effective_guidance(pipe, guidance: float | None) -> float | None:
    """The CFG scale a run will record: ``guidance`` or the pipeline's default (None when unknown)."""
    if guidance is not None:
        return guidance
    default = pipeline_default(pipe, "guidance_scale")
    return None if default is None else float(default)


def settings_differ(pipe, args: argparse.Namespace, schema) -> list[str]:
    """What of the file's capture schema differs from this capture's settings: image size, sampler, steps,
    model, edit."""
    import json

    from attnscope.models.checks import size_factor
    from attnscope.models.identity import pipeline_fingerprint
    from attnscope.schedulers import make_scheduler

    sample = pipe.unet.config.sample_size
    sample_h, sample_w = (sample, sample) if isinstance(sample, int) else sample
    size = (args.height or sample_h * size_factor(pipe), args.width or sample_w * size_factor(pipe))
    settings = sampler_from_args(args).for_pipeline(pipe)
    scheduler = make_scheduler(settings.scheduler, pipe.scheduler) if settings.scheduler else pipe.scheduler
    scheduler.set_timesteps(settings.steps or pipeline_default(pipe, "num_inference_steps"))  # as the call does
    edits = [dict(applied.edit.meta) for applied in getattr(pipe, "attnscope_edits", None) or []]
    found = {
        "image size": (schema.height, schema.width) != size,
        "sampler": schema.sampler.get("scheduler") != type(scheduler).__name__,
        "number of steps": schema.timesteps != tuple(float(t) for t in scheduler.timesteps),
        "model": schema.model.get("fingerprint") != pipeline_fingerprint(pipe),
        "edit": (schema.edit or {}).get("edits", []) != json.loads(json.dumps(edits, sort_keys=True, default=str)),
    }
    return [name for name, differs in found.items() if differs]


def completed_jobs(pipe, args: argparse.Namespace, jobs) -> dict[int, int]:
    """``{job index: run}`` of the jobs whose run (same prompt, negative prompt, seed and guidance) is
    complete with its image in ``--out``, whose capture settings must be this capture's."""
    import numpy as np

    from attnscope.store import RunFile

    guidance = effective_guidance(pipe, args.guidance)
    with RunFile(args.out) as runs:
        if differ := settings_differ(pipe, args, runs.schema):
            raise UsageError(f"--resume {args.out}: its runs were captured with another {', '.join(differ)}; "
                             "resume with the same settings, or choose another --out")
        usable = runs.complete & runs.has_image
        keys = {}
        columns = zip(runs.column("prompt"), runs.column("negative_prompt"), runs.column("seed"),
                      runs.column("guidance_scale"))
        for run, (prompt, negative, seed, scale) in enumerate(columns):
            if usable[run]:
                keys.setdefault((str(prompt), str(negative), int(seed)), []).append((run, float(scale)))
    done = {}
    for index, job in enumerate(jobs):
        for run, scale in keys.get((job.prompt, job.negative_prompt, job.seed), []):
            if guidance is None or np.isclose(scale, guidance, rtol=1e-6):
                done[index] = run
    return done


def run(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from attnscope.hooks import capture
    from attnscope.sampling import Job, generate

    from attnscope.hooks.selection import Selection

    started = time.perf_counter()
    selection = Selection(layers=args.layers or "all", steps=args.steps_captured, tokens=_tokens(args.tokens),
                          heads=args.heads, branch=args.branch, dtype=getattr(torch, args.map_dtype))
    check_out(args)
    pipe = load_from_args(args)
    check_inputs(pipe, args, selection)
    seeds = list(dict.fromkeys(args.seed or [0]))
    jobs = [Job(prompt, seed, args.negative_prompt) for prompt in dict.fromkeys(args.prompt) for seed in seeds]
    done = completed_jobs(pipe, args, jobs) if args.resume else {}
    todo = [job for index, job in enumerate(jobs) if index not in done]
    if done:
        print(f"skipping {len(done)} run(s) already complete in {args.out}")
    written = []
    if todo:
        with capture(pipe, layers=selection.layers, steps=selection.steps, tokens=selection.tokens,
                     heads=selection.heads, branch=selection.branch, dtype=selection.dtype, sink=args.out,
                     resume=args.resume, overwrite=args.overwrite, storage=args.storage, block=args.block,
                     concepts=args.concept) as cap:
            images = generate(pipe, todo, sampler_from_args(args), batch_size=args.batch_size, cap=cap,
                              progress=not args.no_progress)
        stem = args.out.with_suffix("")
        for run, image in zip(cap.run_ids, images):  # named by run index: a resumed capture adds new names
            path = stem.parent / f"{stem.name}-{run}.png"
            Image.fromarray(image).save(path)
            written.append(path)
    from attnscope.store import RunFile

    with RunFile(args.out) as runs:
        n_layers, n_steps = len(runs.layers), len(runs.steps)
    size = args.out.stat().st_size
    print(f"wrote {len(todo)} run(s) to {args.out} ({size / 1e6:.1f} MB: {n_layers} layers x {n_steps} steps)")
    if written:
        print(f"images: {', '.join(str(p) for p in written)}")
    print(f"took {time.perf_counter() - started:.1f} s; next: attnscope inspect {args.out} | "
          f"attnscope show {args.out} --word WORD")
    return 0
