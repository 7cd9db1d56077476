"""Which part of an edit causes which side effect: side-effect metrics per part of the edit.

An ablation samples the base model, the full edit, and each part of the edit
alone (:func:`attnscope.erasure.subsets.edit_subsets`); the records' ``method``
column names a part as ``"{method}@{label}"`` (``"uce@up"``,
``"uce@up_blocks.1.attentions.0.transformer_blocks.0.attn2"``, ``"uce@k"``).
:func:`ablation_table` gives, per part and metric (target, retain, leakage),
the rate with its prompt-clustered interval, its change from the base model
(paired interval) and the *share* of the full edit's change that the part
alone produces (parts need not add up: the edit is not additive).
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
    (NaN when the full edit is not in the records or did not change the metric)."""
    rows: list[Row] = []
    for metric, table in METRICS.items():
        measured = [r for r in table(records, base=base, **options) if r["method"] != base]
        full = {r["method"]: r.get("delta") for r in measured if SEPARATOR not in r["method"]}
        for r in measured:
            edit, part = split_method(r["method"])
            whole = full.get(edit)
            delta = r.get("delta", math.nan)
            share = delta / whole if whole not in (None, 0) and not math.isnan(whole) else math.nan
            rows.append({"edit": edit, "part": part, "metric": metric, "erased": r["erased"],
                         "n_prompts": r["n_prompts"], "n_answers": r["n_answers"], "estimate": r["estimate"],
                         "low": r["low"], "high": r["high"], "delta": delta,
                         "delta_low": r.get("delta_low", math.nan), "delta_high": r.get("delta_high", math.nan),
                         "share": share})
    return rows


def leading_parts(rows: Sequence[Row], metric: str = "leakage", *, edit: str | None = None,
                  threshold: float = 0.5) -> list[Row]:
    """The parts whose change of ``metric`` alone is at least ``threshold`` of the full edit's, largest first;
    when none reaches it, the one part with the largest share (empty without shares)."""
    parts = [r for r in rows if r["metric"] == metric and r["part"] != FULL and (edit is None or r["edit"] == edit)
             and not math.isnan(r["share"])]
    ranked = sorted(parts, key=lambda r: -r["share"])
    leading = [r for r in ranked if r["share"] >= threshold]
    return leading or ranked[:1]
