"""Options shared by the sub-commands: model loading, sampling, checked argument types, output paths.

The argument types (:func:`positive_int`, :func:`finite_float`, :func:`seed`,
...) reject a bad value while the command line is parsed, so a typo fails in
a second with one line naming the option, not after the model has loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from pathlib import Path
from typing import TypeVar

from attnscope.errors import FileRefused

T = TypeVar("T")

DTYPES = ("bfloat16", "float16", "float32")  # names of torch dtypes: torch is imported when a model loads
MAX_SEED = 2**63 - 1  # seeds are stored as int64; -1 there means "unknown"


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    """An int ≥ 1 (steps, seeds, batch sizes)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: give a whole number of at least 1")
    return value


def non_negative_int(text: str) -> int:
    """An int ≥ 0 (indices, counts that may be zero)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: give 0 or more")
    return value


def seed(text: str) -> int:
    """A seed in ``[0, 2**63)``: the run file stores seeds as int64 and keeps -1 for "unknown"."""
    value = _integer(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range: seeds are 0 to 2**63-1 (the run file keeps -1 for an unknown seed)"
        )
    return value


def finite_float(text: str) -> float:
    """A finite float (no nan/inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def non_negative_float(text: str) -> float:
    """A finite float ≥ 0 (scales, regularisers)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: give 0 or more")
    return value


def positive_float(text: str) -> float:
    """A finite float > 0 (λ, which must keep the solve invertible)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: give a number above 0")
    return value


def writable_parent(path: Path, option: str) -> None:
    """Refuse ``path`` when its folder is missing-and-uncreatable or not writable, or when it is a folder."""
    if path.is_dir():
        raise FileRefused(f"{option} {path} is a folder: give a file path, e.g. {path / 'run.h5'}")
    parent = path.parent if str(path.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise FileRefused(
            f"{option} {path}: cannot write in {existing} (not a writable folder); choose another {option}"
        )


def refuse_overwrite(path: Path, option: str, *, overwrite: bool, kind: str, is_kind) -> None:
    """Guard an output file: never replace a file that is not a ``kind`` (``is_kind(path)`` false);
    replace a ``kind`` file only with ``--overwrite``."""
    writable_parent(path, option)
    if not path.exists():
        return
    if not is_kind(path):
        raise FileRefused(
            f"{option} {path} exists and is not {kind}: attnscope will not overwrite it; choose another {option}"
        )
    if not overwrite:
        raise FileRefused(f"{option} {path} exists: pass --overwrite to replace it, or choose another {option}")
STORAGE_MODES = ("lossless", "quantised", "raw")  # attnscope.store.compression.MODES, without importing h5py


def options_from(args: argparse.Namespace, kind: type[T]) -> T:
    """The dataclass ``kind`` (a library function's options) filled from the same-named arguments."""
    return kind(**{f.name: getattr(args, f.name) for f in dataclasses.fields(kind)})


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


def add_sampler_options(parser: argparse.ArgumentParser, steps: int | None = 50, scheduler: str = "model") -> None:
    """``--seed``, ``--steps``, ``--scheduler``, ... with this command's defaults (see :mod:`attnscope.schedulers`)."""
    from attnscope.schedulers import FAST_STEPS, SCHEDULERS

    group = parser.add_argument_group("sampler")
    group.add_argument("--seed", type=seed, action="append", default=None,
                       help="seed of the initial noise, 0 to 2**63-1; repeat for several images (default 0)")
    steps_default = steps if steps is not None else f"{FAST_STEPS} with the fast sampler, else the model's"
    group.add_argument("--steps", type=positive_int, default=steps, help=f"sampling steps (default {steps_default})")
    group.add_argument("--scheduler", choices=("auto", "model") + SCHEDULERS, default=scheduler,
                       help="'auto' (DPM-Solver++ where the model's scheduler admits it, else the model's own), "
                            f"'model' (its own), 'ddim' or 'dpm++' (default {scheduler})")
    group.add_argument("--guidance", type=finite_float, default=None, help="CFG scale (default: the model's)")
    group.add_argument("--height", type=positive_int, default=None,
                       help="image height in pixels, a multiple of the model's factor (default: the model's)")
    group.add_argument("--width", type=positive_int, default=None,
                       help="image width in pixels, a multiple of the model's factor (default: the model's)")
    group.add_argument("--negative-prompt", default="", help="negative prompt (default empty)")
    group.add_argument("--batch-size", type=positive_int, default=8, help="images per pipeline call")


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

    return SamplerSettings(steps=args.steps, guidance_scale=args.guidance, height=args.height, width=args.width,
                           scheduler=None if args.scheduler == "model" else args.scheduler)
