"""Side-effect metrics as bars with 95 % intervals, and retain accuracy against distance.

Both take the tables of :mod:`attnscope.analyses.side_effects` (lists of row
dicts with ``method``, ``estimate``, ``low``, ``high``) and return a
matplotlib figure; save it with :func:`attnscope.figures.style.save`.
"""

from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

from attnscope.figures.style import ONE_COLUMN, PALETTE, TWO_COLUMN, paper_style, plt

TITLES = {  # metric -> (panel title, which way is better)
    "target": ("target accuracy", "lower: stronger erasure"),
    "evasion": ("evasion", "lower: stronger erasure"),
    "retain": ("retain accuracy", "higher: fewer side effects"),
    "retain_attributes": ("retained attributes", "higher: fewer side effects"),
    "leakage": ("attribute leakage", "lower: fewer side effects"),
}


STATISTICS = ("n_prompts", "n_answers", "estimate", "low", "high", "delta", "delta_low", "delta_high")


def method_colours(methods: Sequence[str]) -> dict[str, str]:
    """One palette colour per method, in order (``base`` first when present)."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}


def ordered_methods(tables: Mapping[str, Sequence[Mapping]], order: Sequence[str] = ()) -> list[str]:
    """Every method that appears in the tables: those in ``order`` first (in that order), then
    ``base``, then the rest in order of appearance."""
    seen: dict[str, None] = {}
    for rows in tables.values():
        seen.update(dict.fromkeys(r["method"] for r in rows))
    rank = {m: i for i, m in enumerate(order)}
    appearance = list(seen)
    return sorted(seen, key=lambda m: (rank.get(m, len(rank)), m != "base", appearance.index(m)))


def metric_intervals(
    tables: Mapping[str, Sequence[Mapping]], metrics: Sequence[str] | None = None, order: Sequence[str] = ()
):
    """One panel per metric: a bar per method (estimate) with its 95 % interval.

    ``tables``: ``{metric: rows}``; metrics without rows are left out.
    ``metrics`` orders (and selects) the panels; default: those of :data:`TITLES`.
    ``order``: method order (see :func:`ordered_methods`). Tables grouped by
    more columns (evasion's ``relation``) get one bar per group, labelled
    "method group". One erased concept per table is expected.
    """
    metrics = [m for m in (metrics or TITLES) if tables.get(m)]
    methods = ordered_methods({m: tables[m] for m in metrics}, order)
    colours = method_colours(methods)
    with paper_style():
        figure, axes = plt.subplots(1, max(len(metrics), 1), figsize=(TWO_COLUMN, 3.2), squeeze=False)
        for axis, metric in zip(axes[0], metrics):
            rows = tables[metric]
            groups = [c for c in rows[0] if c not in STATISTICS and c not in ("method", "erased")]
            bars = sorted(rows, key=lambda r: (methods.index(r["method"]), *(str(r[g]) for g in groups)))
            estimates = [r["estimate"] for r in bars]
            errors = [[r["estimate"] - r["low"] for r in bars], [r["high"] - r["estimate"] for r in bars]]
            axis.bar(range(len(bars)), estimates, yerr=errors, capsize=3, color=[colours[r["method"]] for r in bars],
                     error_kw={"elinewidth": 0.8})
            labels = [" ".join([r["method"], *(str(r[g]) for g in groups)]) for r in bars]
            axis.set_xticks(range(len(bars)), labels, rotation=90 if groups else 30, ha="center" if groups else "right")
            axis.set_ylim(0, 1.05)
            title, better = TITLES.get(metric, (metric, ""))
            axis.set_title("\n".join([title, *textwrap.wrap(f"({better})", 16)]) if better else title)
            axis.grid(axis="y", linewidth=0.3, alpha=0.5)
        if not metrics:
            axes[0, 0].set_axis_off()
        axes[0, 0].set_ylabel("rate of “yes” [95% CI]")
        figure.tight_layout()
    return figure


def retain_by(rows: Sequence[Mapping], column: str, *, xlabel: str | None = None, order: Sequence[str] = ()):
    """Retain accuracy per bin of ``column`` (x), one line with an interval band per method."""
    methods = ordered_methods({"retain": rows}, order)
    colours = method_colours(methods)
    bins = sorted({r[column] for r in rows}, key=lambda v: (str(type(v)), v))
    with paper_style():
        figure, axis = plt.subplots(figsize=(ONE_COLUMN, 2.3))
        for method in methods:
            points = {r[column]: r for r in rows if r["method"] == method}
            xs = [i for i, b in enumerate(bins) if b in points]
            picked = [points[bins[i]] for i in xs]
            axis.plot(xs, [p["estimate"] for p in picked], marker="o", markersize=3, color=colours[method],
                      label=method)
            axis.fill_between(xs, [p["low"] for p in picked], [p["high"] for p in picked], color=colours[method],
                              alpha=0.15, linewidth=0)
        axis.set_xticks(range(len(bins)), [str(b) for b in bins], rotation=30 if len(bins) > 4 else 0)
        axis.set_ylim(0, 1.05)
        axis.set_xlabel(xlabel or column)
        axis.set_ylabel("retain accuracy [95% CI]")
        axis.grid(axis="y", linewidth=0.3, alpha=0.5)
        axis.legend(frameon=False)
        figure.tight_layout()
    return figure
