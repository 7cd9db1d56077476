"""Entanglement figures: similarity matrices before/after/difference, 2-D arrow maps, movement bars."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from attnscope.figures.style import DIVERGING, ONE_COLUMN, PALETTE, SEQUENTIAL, TWO_COLUMN, paper_style, plt

# One colour per relation to the erased concept (see attnscope.analyses.concepts.RELATIONS).
RELATION_COLOURS = {
    "target": PALETTE[3],
    "variant": PALETTE[1],
    "superclass": PALETTE[4],
    "sibling": PALETTE[0],
    "sibling variant": PALETTE[5],
    "attribute": PALETTE[2],
    "unrelated": "#999999",
    "other": PALETTE[7],
}

KV_DISPLACEMENT = {"displacement_k": "keys", "displacement_v": "values"}


def _colour(relation: str | None) -> str:
    return RELATION_COLOURS.get(relation or "other", PALETTE[7])


def _relation_handles(relations: Mapping[str, str], concepts: Sequence[str], marker: str = "o") -> list:
    present = {relations.get(c, "other") for c in concepts}
    return [plt.Line2D([], [], marker=marker, ls="", color=_colour(r), label=r, markersize=4)
            for r in RELATION_COLOURS if r in present]


def similarity_matrices(
    concepts: Sequence[str],
    before: np.ndarray,
    after: np.ndarray,
    *,
    relations: Mapping[str, str] | None = None,
    title: str | None = None,
):
    """Cosine-similarity matrices (C, C) before and after, and after − before.

    Before and after share one sequential scale over their joint range (the
    colour bar says which; text embeddings are often all alike, so a fixed
    [−1, 1] scale would hide the structure); the difference is diverging and
    symmetric about 0. Tick labels are coloured by ``relations``. Returns the figure.
    """
    before, after = np.asarray(before, float), np.asarray(after, float)
    relations = relations or {}
    delta = after - before
    span = max(float(np.abs(delta).max()), 1e-6)
    low = float(min(before.min(), after.min()))
    n = len(concepts)
    fontsize = 6 if n <= 20 else max(3.5, 6 * 20 / n)
    with paper_style():
        figure, axes = plt.subplots(1, 3, figsize=(TWO_COLUMN, 3.0), constrained_layout=True)
        panels = [(before, "before", SEQUENTIAL, low, 1.0), (after, "after", SEQUENTIAL, low, 1.0),
                  (delta, "after − before", DIVERGING, -span, span)]
        for c, (values, name, cmap, vmin, vmax) in enumerate(panels):
            axis = axes[c]
            image = axis.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            axis.set_title(name)
            axis.set_xticks(range(n), concepts, rotation=90, fontsize=fontsize)
            axis.set_yticks(range(n), concepts if c == 0 else [""] * n, fontsize=fontsize)
            for ticks in (axis.get_xticklabels(), axis.get_yticklabels() if c == 0 else []):
                for tick, concept in zip(ticks, concepts):
                    tick.set_color(_colour(relations.get(concept)))
            if c >= 1:
                figure.colorbar(image, ax=axis, fraction=0.046, pad=0.02, shrink=0.8,
                                label="cosine similarity" if c == 1 else "change")
        if relations:
            figure.legend(handles=_relation_handles(relations, concepts, marker="s"), loc="outside lower center",
                          ncol=8, frameon=False, fontsize=6)
        if title:
            figure.suptitle(title)
    return figure


def arrow_map(
    concepts: Sequence[str],
    before: np.ndarray,
    after: np.ndarray,
    *,
    relations: Mapping[str, str] | None = None,
    title: str | None = None,
):
    """2-D positions (C, 2) before (hollow, labelled) and after (filled), an arrow from each to the other.

    Colours follow ``relations``; the legend sits below the axes. Labels go
    at the before positions, which are usually the more spread out (an
    erasure pulls concepts together). Returns the figure.
    """
    before, after = np.asarray(before, float), np.asarray(after, float)
    relations = relations or {}
    with paper_style():
        figure, axis = plt.subplots(figsize=(ONE_COLUMN, ONE_COLUMN * 1.05), constrained_layout=True)
        for j, concept in enumerate(concepts):
            colour = _colour(relations.get(concept))
            axis.scatter(*before[j], s=14, facecolors="white", edgecolors=colour, linewidths=0.9, zorder=3)
            axis.scatter(*after[j], s=14, color=colour, zorder=3)
            if np.linalg.norm(after[j] - before[j]) > 0:
                axis.annotate("", xy=after[j], xytext=before[j], zorder=2,
                              arrowprops=dict(arrowstyle="->", color=colour, lw=0.6, alpha=0.8,
                                              shrinkA=2.5, shrinkB=2.5))
            axis.annotate(concept, before[j], xytext=(0, 3.5), textcoords="offset points", fontsize=5,
                          color=colour, ha="center", va="bottom")
        handles = _relation_handles(relations, concepts)
        handles += [plt.Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor="k",
                               label="before", markersize=4),
                    plt.Line2D([], [], marker="o", ls="", color="k", label="after", markersize=4)]
        figure.legend(handles=handles, fontsize=5.5, frameon=False, loc="outside lower center", ncol=5)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.margins(0.08)
        if title:
            axis.set_title(title)
    return figure


def movement_bars(
    rows: Sequence[Mapping],
    *,
    values: Mapping[str, str] = KV_DISPLACEMENT,
    xlabel: str = "‖x′ − x‖ / ‖x‖",
    title: str | None = None,
):
    """Horizontal bars per concept, one panel per column of ``values`` (``{column: panel title}``),
    rows in the given order (top first), coloured by ``row["relation"]``.

    ``rows``: dicts with ``concept``, ``relation`` and the columns (e.g.
    :meth:`~attnscope.analyses.entanglement.EntanglementResult.rows` plus a
    relation). Returns the figure.
    """
    n = len(rows)
    y = np.arange(n)
    colours = [_colour(r.get("relation")) for r in rows]
    with paper_style():
        figure, axes = plt.subplots(1, len(values), figsize=(ONE_COLUMN, 0.9 + 0.12 * n), sharey=True,
                                    squeeze=False, constrained_layout=True)
        for axis, (column, name) in zip(axes[0], values.items()):
            axis.barh(y, [r[column] for r in rows], color=colours, height=0.75)
            axis.set_title(name)
            axis.set_xlabel(xlabel)
            axis.spines[["top", "right"]].set_visible(False)
        axes[0, 0].set_yticks(y, [r["concept"] for r in rows], fontsize=6)
        axes[0, 0].invert_yaxis()
        figure.legend(handles=_relation_handles({r["concept"]: r.get("relation", "other") for r in rows},
                                                [r["concept"] for r in rows], marker="s"),
                      loc="outside lower center", ncol=3, frameon=False, fontsize=6)
        if title:
            figure.suptitle(title)
    return figure
