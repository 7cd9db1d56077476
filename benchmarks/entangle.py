"""Entanglement on the toy model: which concepts does erasing a class move?

Erases ``--target`` (default "bench") with UCE (default hyper-parameters, as
`benchmarks/drift.py`) and compares the toy concept set around it — its
superclass, siblings, compositional variants, sibling variants, attribute
words and the unrelated classes (``attnscope.analyses.concepts.toy_concepts``)
— through every cross-attention layer's K and V projections, twice: as is,
and centred (each state minus its own mean over the concept set, which
removes the shift common to every concept). This is exactly
``attnscope entangle`` (see the commands in the report); no image is generated.

    python benchmarks/entangle.py                  # seconds on a CPU
    python benchmarks/entangle.py --target bird --out /tmp/entanglement.md
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from attnscope.analyses.concepts import toy_concepts
from attnscope.analyses.entanglement import edit_entanglement
from attnscope.erasure import erase_uce
from attnscope.figures.binding import short_layer_name
from attnscope.models import load_pipeline
from attnscope.report.entanglement import (
    by_relation,
    entanglement_figures,
    largest_collateral_space,
    result_rows,
    write_entanglement,
)

COLUMNS = ("displacement_k", "displacement_v", "delta_sim_k", "delta_sim_v")


def concept_table(rows: list[dict]) -> list[str]:
    lines = ["| concept | relation | closeness | displacement K | displacement V | Δ cos to target K | Δ cos to target V |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['concept']} | {r['relation']} | {r['closeness']:.3f} | {r['displacement_k']:.4f} | "
                     f"{r['displacement_v']:.4f} | {r['delta_sim_k']:+.4f} | {r['delta_sim_v']:+.4f} |")
    return lines


def relation_table(groups: dict[str, dict]) -> list[str]:
    lines = ["| relation | concepts | displacement K | displacement V | Δ cos to target K | Δ cos to target V |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    order = sorted(groups, key=lambda g: -(groups[g]["displacement_k"] + groups[g]["displacement_v"]))
    for name in order:
        g = groups[name]
        lines.append(f"| {name} | {g['n']} | {g['displacement_k']:.4f} | {g['displacement_v']:.4f} | "
                     f"{g['delta_sim_k']:+.4f} | {g['delta_sim_v']:+.4f} |")
    return lines


def layer_table(result) -> list[str]:
    """Collateral score per layer, K and V side by side."""
    target = result.concepts.index(result.target)
    lines = ["| layer | collateral K | collateral V | target displacement K | target displacement V |",
             "| --- | ---: | ---: | ---: | ---: |"]
    layers = dict.fromkeys(s.rpartition(".")[0] for s in result.spaces if s != "text")
    for layer in layers:
        k, v = result.spaces.index(f"{layer}.to_k"), result.spaces.index(f"{layer}.to_v")
        lines.append(f"| {short_layer_name(layer)} | {result.collateral[k]:.4f} | {result.collateral[v]:.4f} | "
                     f"{result.displacement[k, target]:.4f} | {result.displacement[v, target]:.4f} |")
    return lines


def summary_lines(raw_rows: list[dict], centred_rows: list[dict]) -> list[str]:
    """Headline numbers (generated, so they stay true when the numbers change)."""
    others = [r for r in raw_rows if r["relation"] != "target"]
    closeness = [r["closeness"] for r in others]
    lines = [
        f"- As is, every concept moves: relative displacement {min(r['displacement_k'] for r in raw_rows):.2f}–"
        f"{max(r['displacement_k'] for r in raw_rows):.2f} in the keys and "
        f"{min(r['displacement_v'] for r in raw_rows):.2f}–{max(r['displacement_v'] for r in raw_rows):.2f} in "
        f"the values; the concepts' text vectors all have cosine {min(closeness):.2f}–{max(closeness):.2f} with "
        "the target's, so UCE's update, which moves each key in proportion to its projection on the target, "
        "reaches all of them.",
    ]
    for name, rows in (("As is", raw_rows), ("Centred", centred_rows)):
        groups = by_relation(rows)
        ranked = sorted((g for g in groups if g != "target"),
                        key=lambda g: -(groups[g]["displacement_k"] + groups[g]["displacement_v"]))
        lines.append(f"- {name}, relations by mean displacement (K + V), most first: "
                     + ", ".join(f"{g} ({groups[g]['displacement_k']:.3f} / {groups[g]['displacement_v']:.3f})"
                                 for g in ranked) + ".")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/entanglement.md"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/entanglement"),
                        help="folder for the JSON/CSV of both variants")
    parser.add_argument("--figures", type=Path, default=Path("docs/figures/entangle"), help="folder for PNG figures")
    parser.add_argument("--target", default="bench")
    parser.add_argument("--model", default="toy")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    command = " ".join(["python benchmarks/entangle.py", shlex.join(argv if argv is not None else sys.argv[1:])]).strip()

    started = time.perf_counter()
    pipe = load_pipeline(args.model, device=args.device)
    edit = erase_uce(pipe, [args.target], token_choice="eos-aligned")
    concepts = toy_concepts(args.target)
    variants = {}
    for name, centre in (("raw", False), ("centred", True)):
        result, before, after = edit_entanglement(pipe, edit, concepts, args.target, centre=centre)
        rows = result_rows(result)
        space = largest_collateral_space(result)
        write_entanglement(result, before, after, args.results / name, edit_meta=edit.meta, space=space, centre=centre,
                      figures=False)
        figures = entanglement_figures(result, before, after, args.figures / name, rows=rows, space=space,
                                       maps=("pca", "umap"), formats=("png",))
        variants[name] = (result, rows, space, figures)
    seconds = time.perf_counter() - started

    raw, centred = variants["raw"], variants["centred"]
    link = lambda f: f"![{Path(f).parent.name} {Path(f).stem}]({os.path.relpath(f, args.out.parent)})"  # noqa: E731
    lines = [
        f"# Entanglement on the toy model: erasing “{args.target}”",
        "",
        f"UCE erases “{args.target}” (default `erase_uce`: λ = 0.5, eos-aligned tokens, guide \"\"). {len(concepts)} concepts "
        "are encoded by the toy text encoder and projected through the 7 cross-attention layers' `to_k` and "
        "`to_v`, with the base weights and with the edit; token representation: each concept's last word "
        f"token. Wall time {seconds:.0f} s on {pipe.device} (loading, edit, both variants, figures, UMAP).",
        "",
        "Produced by",
        "",
        "```",
        command,
        "```",
        "",
        "which is the same as",
        "",
        "```",
        f"attnscope erase --method uce --concept {args.target} --out {args.target}.edit",
        f"attnscope entangle --edit {args.target}.edit --map pca --map umap --out entangle-raw",
        f"attnscope entangle --edit {args.target}.edit --map pca --map umap --centre --out entangle-centred",
        "```",
        "",
        "Columns (per concept; K/V: mean over the 7 layers' key/value spaces): *closeness* — cos of the "
        "concept's text vector to the target's before the edit, clipped at 0 (the collateral score's weight); "
        "*displacement* — ‖x′ − x‖ / ‖x‖; *Δ cos to target* — change of its cosine similarity to the target.",
        "",
        "## Summary",
        "",
        *summary_lines(raw[1], centred[1]),
        "",
        "## As is",
        "",
        *relation_table(by_relation(raw[1])),
        "",
        "Every concept, most displaced first:",
        "",
        *concept_table(raw[1]),
        "",
        "Collateral score per layer (displacement of the non-target concepts weighted by closeness):",
        "",
        *layer_table(raw[0]),
        "",
        "## Centred on the concept set",
        "",
        "Each state minus its own mean over the concepts: the common shift is removed, so a displacement says "
        "how far a concept moved *relative to the set*, and cosines are correlations over the set. Why this "
        "matters for UCE: with no preserved concepts its closed form moves every text vector x, in every layer, "
        "by W₀(g − c)·cᵀx / (λ + ‖c‖²) (c: the target's row, g: the guide's) — one direction per layer, scaled "
        "by x's projection on the target. Centred, what remains is proportional to how far a concept's "
        "projection on the target lies from the set's average, in either direction.",
        "",
        *relation_table(by_relation(centred[1])),
        "",
        *concept_table(centred[1]),
        "",
        "## Figures",
        "",
        f"Matrices and maps show the space with the largest collateral score: {short_layer_name(raw[2].rpartition('.')[0])} "
        f"{raw[2].rpartition('.')[2]} (as is), {short_layer_name(centred[2].rpartition('.')[0])} "
        f"{centred[2].rpartition('.')[2]} (centred).",
        "",
        *[link(f) for f in raw[3]],
        "",
        *[link(f) for f in centred[3]],
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
