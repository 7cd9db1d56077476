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
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

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
    from attnscope.datasets.toyworld import CLASSES

    if args.concepts:
        concepts = read_concepts(args.concepts)
    elif target in CLASSES:
        concepts = toy_concepts(target)
    else:
        raise ValueError(f"no default concept set for {target!r}: pass --concepts")
    return concepts if target in concepts else [target, *concepts]


def run(args: argparse.Namespace) -> int:
    pipe = load_from_args(argparse.Namespace(**{**vars(args), "edit": []}))  # the base model
    edit = make_edit(pipe, args)
    target = _target(edit, args)
    result, before, after = analyse(pipe, edit, _concepts(args, target), target, rep=args.rep, centre=args.centre)
    written = write_outputs(result, before, after, args.out, edit_meta=edit.meta, space=args.space,
                            maps=tuple(args.map or ("pca",)), centre=args.centre)
    print(table(result_rows(result)))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def analyse(pipe, edit, concepts: list[str], target: str, *, rep: str = "last", centre: bool = False):
    """``(result, before, after)``: the concepts' K/V images with the base weights and with ``edit``
    applied (centred with ``centre``, see :func:`centred`) and their :class:`EntanglementResult`."""
    from attnscope.analyses.entanglement import compare, kv_images

    before = kv_images(pipe, concepts)
    with edit.applied(pipe):
        after = kv_images(pipe, concepts)
    if centre:
        before, after = centred(before), centred(after)
    return compare(before, after, target, rep=rep), before, after


def centred(kv):
    """:class:`KVImages` minus its own mean over the concept set, per representation and space.

    Text embeddings share a large common component (every toy-world concept
    has cosine > 0.9 with every other), and an erasure shifts every concept
    along much the same direction. Centring each state on its own mean
    removes both: cosines become correlations over the concept set, and a
    displacement says how a concept moved *relative to the set*. The
    numbers depend on the concept set.
    """
    vectors = {rep: {space: v - v.mean(axis=0) for space, v in spaces.items()} for rep, spaces in kv.vectors.items()}
    return replace(kv, vectors=vectors)


def result_rows(result) -> list[dict]:
    """:meth:`EntanglementResult.rows` (most displaced first) with each concept's relation to the target."""
    from attnscope.analyses.concepts import relation

    return [{"concept": r["concept"], "relation": relation(r["concept"], result.target),
             **{k: v for k, v in r.items() if k != "concept"}} for r in result.rows()]


def by_relation(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean of every numeric column per relation, with the number of concepts ``n``."""
    from attnscope.analyses.concepts import RELATIONS

    columns = ("closeness", "displacement_k", "displacement_v", "delta_sim_k", "delta_sim_v")
    groups = {}
    for name in RELATIONS:
        members = [r for r in rows if r["relation"] == name]
        if members:
            groups[name] = {"n": len(members), **{c: float(np.mean([r[c] for r in members])) for c in columns}}
    return groups


def largest_collateral_space(result) -> str:
    """The K/V space with the largest collateral score (NaN scores ignored)."""
    scores = np.where(np.isfinite(result.collateral), result.collateral, -np.inf)
    kv = [i for i, s in enumerate(result.spaces) if s != "text"]
    return result.spaces[max(kv, key=lambda i: scores[i])]


def write_outputs(result, before, after, out: Path, *, edit_meta: dict | None = None, space: str | None = None,
                  maps: tuple[str, ...] = ("pca",), centre: bool = False, figures: bool = True) -> list[Path]:
    """Write the JSON, CSVs and (with ``figures``) figures for an :class:`EntanglementResult` into ``out``
    (``centre`` only labels the output: pass centred ``before``/``after``, see :func:`centred`)."""
    from attnscope.datasets.see import write_table

    out.mkdir(parents=True, exist_ok=True)
    rows = result_rows(result)
    space = space or largest_collateral_space(result)
    if space not in result.spaces:
        raise KeyError(f"unknown space {space!r}; spaces: {', '.join(result.spaces)}")
    spaces = [dict(space=s, collateral=float(c), target_displacement=float(result.displacement[i, result.concepts.index(result.target)]))
              for i, (s, c) in enumerate(zip(result.spaces, result.collateral))]
    summary = {
        "target": result.target,
        "rep": result.rep,
        "centred": centre,
        "edit": edit_meta or {},
        "concepts": list(result.concepts),
        "figure_space": space,
        "rows": rows,
        "by_relation": by_relation(rows),
        "spaces": spaces,
    }
    (out / "entanglement.json").write_text(json.dumps(summary, indent=1, default=str))
    written = [out / "entanglement.json",
               write_table(rows, list(rows[0]), out / "entanglement.csv"),
               write_table(spaces, list(spaces[0]), out / "entanglement_spaces.csv")]
    if figures:
        written += entanglement_figures(result, before, after, out, rows=rows, space=space, maps=maps)
    return written


def entanglement_figures(result, before, after, out: Path, *, rows: list[dict], space: str,
                         maps: tuple[str, ...] = ("pca",), formats: tuple[str, ...] = ("png", "pdf", "svg"),
                         ) -> list[Path]:
    """Movement bars, similarity matrices and arrow maps of ``space``."""
    from attnscope.analyses.entanglement import map_2d
    from attnscope.figures.binding import short_layer_name
    from attnscope.figures.entanglement import arrow_map, movement_bars, similarity_matrices
    from attnscope.figures.style import save_all

    relations = {r["concept"]: r["relation"] for r in rows}
    layer, _, projection = space.rpartition(".")
    space_label = f"{short_layer_name(layer)} {projection}" if layer else space
    written = save_all(movement_bars(rows, title=f"erasing “{result.target}”: how far each concept moved"),
                       out / "movement", formats)
    i = result.spaces.index(space)
    figure = similarity_matrices(result.concepts, result.similarity_before[i], result.similarity_after[i],
                                 relations=relations, title=f"cosine similarity, {space_label} ({result.rep} token)")
    written += save_all(figure, out / "similarity", formats)
    for method in maps:
        xy = map_2d(before, after, space, rep=result.rep, method=method)
        figure = arrow_map(result.concepts, xy.before, xy.after, relations=relations,
                           title=f"{method.upper()} of {space_label}: before → after")
        written += save_all(figure, out / f"map_{method}", formats)
    return written


def table(rows: list[dict], limit: int | None = None) -> str:
    """Plain-text table of the rows (most displaced first)."""
    lines = [f"{'concept':<18} {'relation':<16} {'closeness':>9} {'disp K':>8} {'disp V':>8} {'Δsim K':>8} {'Δsim V':>8}"]
    for r in rows[:limit]:
        lines.append(f"{r['concept']:<18} {r['relation']:<16} {r['closeness']:>9.3f} {r['displacement_k']:>8.4f} "
                     f"{r['displacement_v']:>8.4f} {r['delta_sim_k']:>+8.4f} {r['delta_sim_v']:>+8.4f}")
    return "\n".join(lines)
