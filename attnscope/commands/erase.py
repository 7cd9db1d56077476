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


def request_from(args: argparse.Namespace):
    """The :class:`~attnscope.erasure.request.EditRequest` the flags ask for."""
    from attnscope.erasure.request import HYPER_PARAMETERS, EditRequest

    return EditRequest(
        method=args.method, concepts=args.concept, guides=args.guide, preserve=args.preserve, preset=args.preset,
        hyper={k: getattr(args, k) for k in HYPER_PARAMETERS if getattr(args, k) is not None},
        layers=args.layers, progressive=args.progressive, weights=args.weights, lora_scale=args.lora_scale,
    )


def _is_edit_file(path: Path) -> bool:
    from attnscope.erasure.edit import is_edit_file

    return is_edit_file(path)


def main(args: argparse.Namespace) -> int:
    """Load the model, compute the edit, save it to ``--out`` and print a summary."""
    from attnscope.erasure import edit_changes
    from attnscope.erasure.request import compute_edit
    from attnscope.report.edit import edit_summary

    refuse_overwrite(args.out, "--out", overwrite=args.overwrite, kind="an attnscope edit file", is_kind=_is_edit_file)
    if args.weights and not Path(args.weights).is_file():
        raise UnreadableFile(f"--weights {args.weights}: no such file")
    pipe = load_from_args(args)
    started = time.perf_counter()
    edit = compute_edit(pipe, request_from(args))
    if pipe.device.type == "cuda":
        import torch

        torch.cuda.synchronize(pipe.device)
    seconds = time.perf_counter() - started
    path = edit.save(args.out)
    print(edit_summary(edit, edit_changes(pipe, edit), seconds))
    print(f"wrote {path}")
    return 0
