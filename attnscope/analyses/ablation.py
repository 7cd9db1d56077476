"""Which part of an edit causes which side effect: side-effect metrics per part of the edit.

An ablation samples the base model, the full edit, and each part of the edit
alone (:func:`attnscope.erasure.subsets.edit_subsets`); the records' ``method``
column names a part as ``"{method}@{label}"`` (``"uce@up"``,
``"uce@up_blocks.1.attentions.0.transformer_blocks.0.attn2"``, ``"uce@k"``).
:func:`ablation_table` gives, per part and metric (target, retain, leakage),
the rate with its prompt-clustered interval, its change from the base model
(paired interval) and the *share* of the full edit's change that the part
alone produces (parts need not add up: the edit is not additive). A share is
only defined when the full edit's change is clear (its interval excludes 0):
a ratio to a change indistinguishable from none would be noise.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from attnscope.analyses.side_effects import attribute_leakage, retain_accuracy, target_accuracy

SEPARATOR = "@"
METRICS = {"target": target_accuracy, "retain": retain_accuracy, "leakage": attribute_leakage}
FULL = "all"

Row = dict[str, Any]


def part_method(method: str, label: str) -> str:
    """The records' ``method`` of one part of ``method``'s edit: ``"uce@up"``."""
    return f"{method}{SEPARATOR}{label}"


def split_method(method: str) -> tuple[str, str]:
    """``"uce@up"`` → ``("uce", "up")``; a full edit's method → ``(method, "all")``."""
    edit, _, label = method.partition(SEPARATOR)
    return edit, label or FULL


def ablation_table(records: Sequence[Mapping[str, Any]], *, base: str = "base", **options: Any) -> list[Row]:
    """One row per (edit, part, metric): ``edit``, ``part``, ``metric``, ``estimate``/``low``/``high``,
    ``delta``/``delta_low``/``delta_high`` (vs ``base``, paired by prompt) and ``share`` = Δ part / Δ full
    (NaN when the full edit is not in the records or its change's interval includes 0)."""
    rows: list[Row] = []
    for metric, table in METRICS.items():
        measured = [r for r in table(records, base=base, **options) if r["method"] != base]
        full = {r["method"]: r for r in measured if SEPARATOR not in r["method"]}
        for r in measured:
            edit, part = split_method(r["method"])
            whole = full.get(edit)
            delta = r.get("delta", math.nan)
            share = delta / whole["delta"] if whole is not None and clear_change(whole) else math.nan
            rows.append({"edit": edit, "part": part, "metric": metric, "erased": r["erased"],
                         "n_prompts": r["n_prompts"], "n_answers": r["n_answers"], "estimate": r["estimate"],
                         "low": r["low"], "high": r["high"], "delta": delta,
                         "delta_low": r.get("delta_low", math.nan), "delta_high": r.get("delta_high", math.nan),
                         "share": share})
    return rows


def clear_change(row: Row) -> bool:
    """Whether a row's paired interval of the change from the base model excludes 0."""
    return row.get("delta_low", math.nan) > 0 or row.get("delta_high", math.nan) < 0


def leading_parts(rows: Sequence[Row], metric: str = "leakage", *, edit: str | None = None,
                  threshold: float = 0.5) -> list[Row]:
    """The parts that carry the change of ``metric``, largest first.

    When the full edit's change is clear (shares defined): the parts whose
    change alone is at least ``threshold`` of it, or else the one with the
    largest share. When it is not (shares NaN): the parts whose own change is
    clear, by size, or else the one with the largest change. Empty without parts.
    """
    parts = [r for r in rows if r["metric"] == metric and r["part"] != FULL and (edit is None or r["edit"] == edit)
             and not math.isnan(r["delta"])]
    if any(not math.isnan(r["share"]) for r in parts):
        ranked = sorted((r for r in parts if not math.isnan(r["share"])), key=lambda r: -r["share"])
        return [r for r in ranked if r["share"] >= threshold] or ranked[:1]
    ranked = sorted(parts, key=lambda r: -abs(r["delta"]))
    return [r for r in ranked if clear_change(r)] or ranked[:1]
