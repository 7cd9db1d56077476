"""``attnscope entangle``: which concepts an edit moves, through every cross-attention K/V projection.

    attnscope erase --method uce --concept bench --out bench.edit
    attnscope entangle --edit bench.edit --out entangle/
    attnscope entangle --erase bench --method uce --concepts "bench,chair,wooden bench,bird" --out entangle/

No image is generated: the concepts are encoded, projected through every
layer's ``to_k``/``to_v`` with the base weights and with the edit applied,
and compared (``attnscope.analyses.entanglement``). The default concept set
(toy-world targets) holds the target, its superclass and siblings,
compositional variants, attribute words and unrelated classes; each concept
is labelled with its relation to the target. Writes

* ``entanglement.json`` — settings, one row per concept (relation, closeness,
  displacement and change of similarity to the target, mean over K and over V
  spaces), means per relation, collateral score per space;
* ``entanglement.csv`` (the rows) and ``entanglement_spaces.csv`` (per space);
* figures (PNG, PDF, SVG): ``movement`` (displacement per concept),
  ``similarity`` (cosine matrices before/after/difference in one space, by
  default the one with the largest collateral score) and ``map_pca`` /
  ``map_umap`` (2-D arrow maps of the same space).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attnscope.commands.common import add_model_options, load_from_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``entangle`` on the CLI's sub-parsers."""
    parser = subparsers.add_parser(
        "entangle", help="how an edit moves concepts through every cross-attention K/V projection (no sampling)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)  # its --edit names the edit(s) to analyse; they are NOT applied for "before"
    group = parser.add_argument_group("edit made on the fly (instead of --edit)")
    group.add_argument("--erase", action="append", default=[], metavar="CONCEPT", help="concept to erase; repeatable")
    group.add_argument("--method", choices=("uce", "rece"), default="uce", help="erasure method (default uce)")
    group.add_argument("--preserve", action="append", default=[], help="concept to preserve; repeatable")
    parser.add_argument("--concepts", default=None,
                        help="a file (one concept a line) or a comma-separated list (default: a toy-world set "
                             "around the target)")
    parser.add_argument("--target", default=None, help="the erased concept (default: the edit's first concept)")
    parser.add_argument("--rep", choices=("last", "eos", "mean"), default="last",
                        help="token representation of a concept (default: its last word token)")
    parser.add_argument("--space", default=None,
                        help="space of the matrices and maps, e.g. 'up_blocks.1.attentions.0.transformer_blocks.0"
                             ".attn2.to_v' (default: the largest collateral score)")
    parser.add_argument("--centre", action="store_true",
                        help="centre each state on its concept-set mean in every space first: displacements "
                             "then say how a concept moved relative to the set")
    parser.add_argument("--map", action="append", choices=("pca", "umap"), default=None,
                        help="2-D map method; repeatable (default pca)")
    parser.add_argument("--out", type=Path, default=Path("entangle"), help="output folder (default ./entangle)")
    return parser


def read_concepts(text: str) -> list[str]:
    """Concepts from a file (one a line; blank lines and ``#`` comments skipped) or a comma-separated list."""
    path = Path(text)
    lines = path.read_text().splitlines() if path.is_file() else text.split(",")
    return list(dict.fromkeys(c.strip() for c in lines if c.strip() and not c.strip().startswith("#")))


def make_edit(pipe, args: argparse.Namespace):
    """The edit to analyse: the composed ``--edit`` files, or a fresh ``--erase`` edit."""
    from attnscope.erasure import Edit, erase_rece, erase_uce

    if bool(args.edit) == bool(args.erase):
        raise ValueError("give either --edit FILE (repeatable) or --erase CONCEPT (repeatable)")
    if args.edit:
        edits = [Edit.load(path) for path in args.edit]
        return edits[0] if len(edits) == 1 else Edit.compose(edits)
    erase = erase_uce if args.method == "uce" else erase_rece
    return erase(pipe, args.erase, preserve=args.preserve)


def _target(edit, args: argparse.Namespace) -> str:
    if args.target:
        return args.target
    concepts = edit.meta.get("concepts") or [c for part in edit.meta.get("parts", []) for c in part.get("concepts", [])]
    if not concepts:
        raise ValueError("the edit names no concept: pass --target")
    return concepts[0]


def _concepts(args: argparse.Namespace, target: str) -> list[str]:
    from attnscope.analyses.concepts import toy_concepts
    from attnscope.datasets.toy_vocabulary import CLASSES

    if args.concepts:
        concepts = read_concepts(args.concepts)
    elif target in CLASSES:
        concepts = toy_concepts(target)
    else:
        raise ValueError(f"no default concept set for {target!r}: pass --concepts")
    return concepts if target in concepts else [target, *concepts]


def main(args: argparse.Namespace) -> int:
    from attnscope.analyses.entanglement import edit_entanglement
    from attnscope.report.entanglement import entanglement_text, result_rows, write_entanglement

    pipe = load_from_args(argparse.Namespace(**{**vars(args), "edit": []}))  # the base model
    edit = make_edit(pipe, args)
    target = _target(edit, args)
    result, before, after = edit_entanglement(pipe, edit, _concepts(args, target), target, rep=args.rep,
                                              centre=args.centre)
    written = write_entanglement(result, before, after, args.out, edit_meta=edit.meta, space=args.space,
                                 maps=tuple(args.map or ("pca",)), centre=args.centre)
    print(entanglement_text(result_rows(result)))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
