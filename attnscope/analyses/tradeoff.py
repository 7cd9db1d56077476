"""What erasing more costs: target, retain and leakage over edits of growing strength.

A trade-off study samples one fixed prompt set for the base model and for
many edits — erasing the first 1, 2, 4, 8... concepts of a list, one-shot or
progressively, and sweeps of the methods' hyper-parameters. The images and
the judge's answers do not depend on which concepts count as erased, so the
base model is sampled once and every record is :func:`relabel` ed with the
target/retain split of each edit's own erased concepts before the metrics
are computed (:func:`tradeoff_rows`).

:func:`predictor_correlation` asks whether something measured *before*
sampling (the entanglement module's K/V movement of the retained concepts)
ranks the edits by the retain loss that sampling then measures: Spearman's ρ
with a bootstrap interval over the edits.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from attnscope.analyses.side_effects import attribute_leakage, retain_accuracy, target_accuracy
from attnscope.analyses.stats import Interval, cluster_bootstrap
from attnscope.datasets.see import SPLIT_COLUMNS, SeePrompt, split

METRICS = {"target": target_accuracy, "retain": retain_accuracy, "leakage": attribute_leakage}
Row = dict[str, Any]


def relabel(records: Sequence[Mapping[str, Any]], prompts: Sequence[SeePrompt], erased: Sequence[str]) -> list[Row]:
    """Copies of ``records`` whose split columns (role, other_role, relation, ...) and ``erased`` label are
    those of erasing ``erased``; records of prompts not in ``prompts`` are dropped."""
    rows = {r.prompt.prompt_id: r.to_row() for r in split(prompts, list(erased))}
    label = "+".join(erased)
    return [{**r, **{c: rows[r["prompt_id"]][c] for c in SPLIT_COLUMNS}, "erased": label}
            for r in records if r["prompt_id"] in rows]


def tradeoff_rows(
    points: Sequence[Mapping[str, Any]],
    records: Mapping[str, Sequence[Mapping[str, Any]]],
    prompts: Sequence[SeePrompt],
    *,
    base: str = "base",
    **options: Any,
) -> list[Row]:
    """One row per point: its description plus each metric's rate, interval and paired change from ``base``.

    ``points[i]``: a dict with at least ``state`` (a key of ``records``) and
    ``erased`` (list of concepts); other keys (``sweep``, ``mode``, ``value``,
    ``predictor``, ...) are copied. ``records[state]``: the judged records of
    that state; ``records[base]`` those of the base model. Columns per metric
    m: ``m``, ``m_low``, ``m_high``, ``m_delta``, ``m_delta_low``, ``m_delta_high``;
    plus ``retain_drop`` = −``retain_delta``.
    """
    out = []
    for point in points:
        state = point["state"]
        joined = [{**r, "method": "base"} for r in relabel(records[base], prompts, point["erased"])]
        joined += [{**r, "method": state} for r in relabel(records[state], prompts, point["erased"])]
        row: Row = {k: v for k, v in point.items()}
        for metric, table in METRICS.items():
            found = next((r for r in table(joined, base="base", **options) if r["method"] == state), None)
            for suffix, key in (("", "estimate"), ("_low", "low"), ("_high", "high"), ("_delta", "delta"),
                                ("_delta_low", "delta_low"), ("_delta_high", "delta_high")):
                row[metric + suffix] = found.get(key, math.nan) if found else math.nan
        row["retain_drop"] = -row["retain_delta"]
        out.append(row)
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN with fewer than 3 points or a constant input."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3:
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def predictor_correlation(rows: Sequence[Mapping[str, Any]], x: str = "predictor", y: str = "retain_drop", *,
                          level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> Interval:
    """Spearman's ρ between columns ``x`` and ``y`` over the rows with both finite, with a percentile
    bootstrap interval that resamples rows (edits)."""
    kept = [(float(r[x]), float(r[y])) for r in rows if math.isfinite(float(r[x])) and math.isfinite(float(r[y]))]
    xs, ys = np.array([k[0] for k in kept]), np.array([k[1] for k in kept])
    return cluster_bootstrap(lambda i: spearman(xs[i], ys[i]), range(len(kept)), level=level,
                             n_resamples=n_resamples, seed=seed)
