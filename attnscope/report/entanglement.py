"""Files of ``attnscope entangle``: which concepts an edit moves, through every K/V projection.

:func:`write_entanglement` writes ``entanglement.json`` (settings, one row per
concept, means per relation, collateral score per space),
``entanglement.csv`` (the rows), ``entanglement_spaces.csv`` (per space) and,
through :func:`entanglement_figures`, the figures ``movement``,
``similarity`` and ``map_pca`` / ``map_umap`` (PNG, PDF, SVG).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from attnscope.analyses.concepts import RELATIONS, relation
from attnscope.analyses.entanglement import EntanglementResult, KVImages, map_2d
from attnscope.figures.binding import short_layer_name
from attnscope.figures.entanglement import arrow_map, movement_bars, similarity_matrices
from attnscope.figures.style import save_all
from attnscope.store.tables import write_table


def result_rows(result: EntanglementResult) -> list[dict]:
    """:meth:`EntanglementResult.rows` (most displaced first) with each concept's relation to the target."""
    return [{"concept": r["concept"], "relation": relation(r["concept"], result.target),
             **{k: v for k, v in r.items() if k != "concept"}} for r in result.rows()]


def by_relation(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean of every numeric column per relation, with the number of concepts ``n``."""
    columns = ("closeness", "displacement_k", "displacement_v", "delta_sim_k", "delta_sim_v")
    groups = {}
    for name in RELATIONS:
        members = [r for r in rows if r["relation"] == name]
        if members:
            groups[name] = {"n": len(members), **{c: float(np.mean([r[c] for r in members])) for c in columns}}
    return groups


def largest_collateral_space(result: EntanglementResult) -> str:
    """The K/V space with the largest collateral score (NaN scores ignored)."""
    scores = np.where(np.isfinite(result.collateral), result.collateral, -np.inf)
    kv = [i for i, s in enumerate(result.spaces) if s != "text"]
    return result.spaces[max(kv, key=lambda i: scores[i])]


def write_entanglement(result: EntanglementResult, before: KVImages, after: KVImages, out: Path, *,
                       edit_meta: dict | None = None, space: str | None = None, maps: tuple[str, ...] = ("pca",),
                       centre: bool = False, figures: bool = True) -> list[Path]:
    """Write the JSON, CSVs and (with ``figures``) figures of ``result`` into ``out``; returns the paths.

    ``space``: the space of the matrices and maps (default :func:`largest_collateral_space`);
    ``centre`` only labels the output: pass centred ``before``/``after``
    (:func:`~attnscope.analyses.entanglement.centred`).
    """
    out.mkdir(parents=True, exist_ok=True)
    rows = result_rows(result)
    space = space or largest_collateral_space(result)
    if space not in result.spaces:
        raise KeyError(f"unknown space {space!r}; spaces: {', '.join(result.spaces)}")
    target = result.concepts.index(result.target)
    spaces = [dict(space=s, collateral=float(c), target_displacement=float(result.displacement[i, target]))
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
    written = [out / "entanglement.json", write_table(rows, out / "entanglement.csv"),
               write_table(spaces, out / "entanglement_spaces.csv")]
    if figures:
        written += entanglement_figures(result, before, after, out, rows=rows, space=space, maps=maps)
    return written


def entanglement_figures(result: EntanglementResult, before: KVImages, after: KVImages, out: Path, *,
                         rows: list[dict], space: str, maps: tuple[str, ...] = ("pca",),
                         formats: tuple[str, ...] = ("png", "pdf", "svg")) -> list[Path]:
    """Movement bars, similarity matrices and arrow maps of ``space``."""
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


def entanglement_text(rows: list[dict], limit: int | None = None) -> str:
    """Plain-text table of the rows (most displaced first)."""
    lines = [f"{'concept':<18} {'relation':<16} {'closeness':>9} {'disp K':>8} {'disp V':>8} "
             f"{'Δsim K':>8} {'Δsim V':>8}"]
    for r in rows[:limit]:
        lines.append(f"{r['concept']:<18} {r['relation']:<16} {r['closeness']:>9.3f} {r['displacement_k']:>8.4f} "
                     f"{r['displacement_v']:>8.4f} {r['delta_sim_k']:>+8.4f} {r['delta_sim_v']:>+8.4f}")
    return "\n".join(lines)
