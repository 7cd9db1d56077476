"""``attnscope erase``: compute an erasure edit (UCE, RECE) or import released weights, save it as ``.edit``.

    attnscope erase --method uce --concept bird --out bird.edit
    attnscope erase --method rece --concept bird --concept cat --progressive --epochs 3 --out pets.edit
    attnscope erase --preset rece-nudity --concept nudity --model CompVis/stable-diffusion-v1-4 --out nudity.edit
    attnscope erase --method checkpoint --weights esd-x.safetensors --model ... --out esd.edit

"Before" is any sampling command without ``--edit``; "after" is the same with
``--edit bird.edit``.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import TYPE_CHECKING

from pathlib import Path

from attnscope.commands.common import (
    add_model_options,
    load_from_args,
    non_negative_float,
    non_negative_int,
    positive_float,
    refuse_overwrite,
)
from attnscope.errors import UnreadableFile

if TYPE_CHECKING:
    from attnscope.erasure.edit import Edit, TensorChange

# Hyper-parameter flags: argparse dest → keyword of erase_uce/erase_rece.
_HYPER = ("lam", "uce_lam", "erase_scale", "preserve_scale", "lam_r", "epochs", "token_choice")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``erase`` on the CLI's sub-parsers."""
    from attnscope.erasure.methods import TOKEN_CHOICES
    from attnscope.erasure.presets import PRESETS

    parser = subparsers.add_parser(
        "erase",
        help="erase concepts (UCE/RECE) or import released erased weights; writes an .edit file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--method", choices=("uce", "rece", "checkpoint", "lora"), help="default: the preset's, else uce")
    parser.add_argument("--concept", action="append", default=[], help="concept to erase (repeat for several)")
    parser.add_argument("--guide", action="append", help='guide concept: one for all or one per --concept (default "")')
    parser.add_argument("--preserve", action="append", default=[], help="concept to preserve (repeatable)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="published hyper-parameters (flags override)")
    parser.add_argument("--epochs", type=non_negative_int, help="RECE epochs (default 3)")
    parser.add_argument("--lambda", dest="lam", type=positive_float, help="λ, the weight-change penalty")
    parser.add_argument("--uce-lambda", dest="uce_lam", type=positive_float,
                        help="RECE: λ of the initial UCE (default --lambda)")
    parser.add_argument("--lambda-r", dest="lam_r", type=positive_float,
                        help="RECE: regulariser of the adversarial embedding")
    parser.add_argument("--erase-scale", type=non_negative_float, help="η_e, weight of the erased concepts")
    parser.add_argument("--preserve-scale", type=non_negative_float,
                        help="η_p, weight of the preserved concepts (UCE default, as in its reference script: "
                             "max(0.1, 1/(1 + number of --preserve)), the empty prompt counted)")
    parser.add_argument("--token-choice", choices=TOKEN_CHOICES, help="which token rows to edit (default last)")
    parser.add_argument("--progressive", action="store_true", help="erase concepts one after another")
    parser.add_argument("--layers", action="append", help="cross-attention layer names/globs (default all)")
    parser.add_argument("--weights", help="checkpoint/lora: the released UNet state dict or adapter")
    parser.add_argument("--lora-scale", type=float, default=1.0, help="lora: merge strength")
    parser.add_argument("--out", type=Path, required=True, help="where to write the .edit file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing edit file at --out")
    add_model_options(parser)  # --edit applies earlier edits first: the new one is computed on top of them
    return parser


def _compute(pipe, args: argparse.Namespace):
    from attnscope.erasure import PRESETS, edit_from_lora, edit_from_unet_state_dict, erase_rece, erase_uce

    preset = PRESETS[args.preset] if args.preset else None
    method = args.method or (preset.method if preset else "uce")
    if preset and preset.method != method:
        raise ValueError(f"preset {preset.name} is for --method {preset.method}, not {method}")
    if method in ("checkpoint", "lora"):
        if not args.weights:
            raise ValueError(f"--method {method} needs --weights PATH")
        if method == "checkpoint":
            return edit_from_unet_state_dict(pipe, args.weights)
        return edit_from_lora(pipe, args.weights, scale=args.lora_scale)
    if not args.concept:
        raise ValueError(f"--method {method} needs at least one --concept")
    check_texts(pipe, args)
    kwargs = dict(preset.kwargs) if preset else {}
    kwargs.update({k: getattr(args, k) for k in _HYPER if getattr(args, k) is not None})
    rece_only = [k for k in ("uce_lam", "lam_r", "epochs") if k in kwargs]
    if method == "uce" and rece_only:
        raise ValueError(f"{', '.join(rece_only)}: RECE options, not UCE ones")
    guides = args.guide if args.guide is not None else ([preset.guide] if preset else None)
    erase = erase_uce if method == "uce" else erase_rece
    return erase(
        pipe, args.concept, guides, args.preserve,
        layers=args.layers or "all", progressive=args.progressive, **kwargs,
    )


def summary(edit: "Edit", pipe_changes: "list[TensorChange]", seconds: float) -> str:
    """A short report: method, concepts, time, and per-layer relative change of K and V."""
    meta = edit.meta
    lines = [
        f"{meta['method']} edit of {meta.get('base_model')} in {seconds:.3f} s: "
        f"{len(edit.tensors)} tensors changed"
        + (f", concepts {meta['concepts']}" if "concepts" in meta else "")
        + (f", stages {len(meta['stages'])}" if meta.get("stages") else ""),
    ]
    if all(r.name.endswith((".to_k.weight", ".to_v.weight")) for r in pipe_changes):
        by_layer: dict[str, dict[str, float]] = defaultdict(dict)
        for row in pipe_changes:
            layer, projection = row.name.partition(".")[2].removesuffix(".weight").rsplit(".", 1)
            by_layer[layer][projection] = row.relative
        lines.append(f"{'layer':<64} {'‖ΔK‖/‖K‖':>10} {'‖ΔV‖/‖V‖':>10}")
        for layer, rel in by_layer.items():
            lines.append(f"{layer:<64} {rel.get('to_k', 0.0):>10.4f} {rel.get('to_v', 0.0):>10.4f}")
    else:
        top = sorted(pipe_changes, key=lambda r: -r.relative)[:20]
        lines.append(f"largest relative changes ({len(top)} of {len(pipe_changes)}):")
        lines += [f"  {r.name:<80} {r.relative:>10.4g}" for r in top]
    return "\n".join(lines)


def check_texts(pipe, args: argparse.Namespace) -> None:
    """Refuse empty concepts and words outside the model's vocabulary (they would edit ``<unk>``)."""
    from attnscope.models.checks import check_prompt_length, check_vocabulary

    check_vocabulary(pipe, args.concept, "--concept")
    check_vocabulary(pipe, args.guide or [], "--guide", allow_empty=True)
    check_vocabulary(pipe, args.preserve, "--preserve")
    for option, texts in (("--concept", args.concept), ("--guide", args.guide or []), ("--preserve", args.preserve)):
        check_prompt_length(pipe, texts, option)


def _is_edit_file(path: Path) -> bool:
    from attnscope.erasure.edit import is_edit_file

    return is_edit_file(path)


def main(args: argparse.Namespace) -> int:
    """Load the model, compute the edit, save it to ``--out`` and print a summary."""
    from attnscope.erasure import edit_changes

    refuse_overwrite(args.out, "--out", overwrite=args.overwrite, kind="an attnscope edit file", is_kind=_is_edit_file)
    if args.weights and not Path(args.weights).is_file():
        raise UnreadableFile(f"--weights {args.weights}: no such file")
    pipe = load_from_args(args)
    started = time.perf_counter()
    edit = _compute(pipe, args)
    if pipe.device.type == "cuda":
        import torch

        torch.cuda.synchronize(pipe.device)
    seconds = time.perf_counter() - started
    path = edit.save(args.out)
    print(summary(edit, edit_changes(pipe, edit), seconds))
    print(f"wrote {path}")
    return 0
