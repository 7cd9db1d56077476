"""Options shared by the sub-commands that load a model and sample."""

from __future__ import annotations

import argparse

DTYPES = ("bfloat16", "float16", "float32")  # names of torch dtypes: torch is imported when a model loads


def torch_dtype(name: str | None):
    """``torch.float16`` for ``"float16"``; ``None`` stays ``None``."""
    import torch

    return None if name is None else getattr(torch, name)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="toy",
                       help="'toy' (built-in, default), 'tiny-sd'/'tiny-sd2'/'tiny-sdxl'/'tiny-sd3'/'tiny-flux'/'tiny-pixart'/'tiny-sana' "
                            "(random), "
                            "a diffusers folder, or a hub id already in the local cache")
    group.add_argument("--device", default="auto", help="'auto' (CUDA if present), 'cpu', 'cuda', 'cuda:1' ...")
    group.add_argument("--dtype", choices=DTYPES, default=None,
                       help="model dtype (default: float16 on CUDA, float32 on CPU)")
    group.add_argument("--edit", action="append", default=[], metavar="PATH",
                       help="apply a saved edit (from `attnscope erase`) before sampling; repeatable")


def add_sampler_options(parser: argparse.ArgumentParser, steps: int = 50) -> None:
    group = parser.add_argument_group("sampler")
    group.add_argument("--seed", type=int, action="append", default=None,
                       help="seed of the initial noise; repeat for several images (default 0)")
    group.add_argument("--steps", type=int, default=steps, help=f"sampling steps (default {steps})")
    group.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    group.add_argument("--height", type=int, default=None, help="image height in pixels (default: the model's)")
    group.add_argument("--width", type=int, default=None, help="image width in pixels (default: the model's)")
    group.add_argument("--negative-prompt", default="", help="negative prompt (default empty)")
    group.add_argument("--batch-size", type=int, default=8, help="images per pipeline call")


def load_from_args(args: argparse.Namespace):
    """The pipeline named by ``--model/--device/--dtype`` with every ``--edit`` applied."""
    from attnscope.models import load_pipeline, resolve_device

    device = resolve_device(args.device)
    dtype = torch_dtype(args.dtype or ("float16" if device.type == "cuda" else "float32"))
    pipe = load_pipeline(args.model, device=device, dtype=dtype)
    for path in args.edit:
        from attnscope.erasure import Edit

        Edit.load(path).apply(pipe)
    return pipe


def sampler_from_args(args: argparse.Namespace):
    from attnscope.sampling import SamplerSettings

    return SamplerSettings(steps=args.steps, guidance_scale=args.guidance, height=args.height, width=args.width)
