"""Figures of "inside the leak": edit ablation, dispersal, attention ↔ outcome, trade-off curves.

Each builder takes the rows of an analysis (:mod:`attnscope.analyses.ablation`,
:mod:`~attnscope.analyses.dispersal`, :mod:`~attnscope.analyses.outcome`,
:mod:`~attnscope.analyses.tradeoff`) and returns a matplotlib figure; save it
with :func:`attnscope.figures.style.save_all` (PNG + PDF).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from attnscope.figures.style import ONE_COLUMN, PALETTE, TWO_COLUMN, paper_style, plt

Row = Mapping[str, Any]
ROLE_LABELS = {"attribute": "attribute word", "object": "erased noun", "other_object": "retained noun"}
QUANTITY_TITLES = {"entropy": "entropy (normalised)", "top_share": "top-10% share", "spread": "spread",
                   "in_object": "in own object", "on_other": "on retained object\n(relative binding)"}
METRIC_TITLES = {"target": "target accuracy", "retain": "retain accuracy", "leakage": "attribute leakage"}


def _errors(rows: Sequence[Row], value: str, low: str, high: str) -> np.ndarray:
    """(2, n) distances from ``value`` to its interval ends, 0 where unknown."""
    v = np.array([r[value] for r in rows], dtype=float)
    lo = np.array([r[low] for r in rows], dtype=float)
    hi = np.array([r[high] for r in rows], dtype=float)
    return np.nan_to_num(np.stack([v - lo, hi - v]), nan=0.0).clip(min=0.0)


def _short(label: str) -> str:
    """``up_blocks.1.attentions.0.transformer_blocks.0.attn2`` → ``up1.a0``; other labels unchanged."""
    parts = label.split(".")
    if len(parts) >= 4 and parts[0] in ("down_blocks", "up_blocks", "mid_block"):
        head = {"down_blocks": "down", "up_blocks": "up", "mid_block": "mid"}[parts[0]]
        if parts[0] == "mid_block":
            return f"mid.a{parts[2]}"
        return f"{head}{parts[1]}.a{parts[3]}"
    return label


def ablation_figure(rows: Sequence[Row], metrics: Sequence[str] = ("target", "retain", "leakage"),
                    title: str = "which part of the edit causes which side effect", order: Sequence[str] = ()):
    """One panel per metric: each part's change from the base model (Δ, 95 % CI), the full edit on top.

    ``rows``: :func:`~attnscope.analyses.ablation.ablation_table`; one bar per
    (edit, part); ``order``: records' methods (``"uce"``, ``"uce@up"``) in
    the order to show them (e.g. the states' order: layers in forward order),
    the others after them in order of appearance.
    """
    rank = {method: i for i, method in enumerate(order)}
    keys = list(dict.fromkeys((r["edit"], r["part"]) for r in rows))
    method = {k: k[0] if k[1] == "all" else f"{k[0]}@{k[1]}" for k in keys}
    keys.sort(key=lambda k: (k[1] != "all", rank.get(method[k], len(rank))))  # full edits first
    labels = [f"{edit} {_short(part)}" if part != "all" else f"{edit} (full edit)" for edit, part in keys]
    metrics = [m for m in metrics if any(r["metric"] == m for r in rows)]
    with paper_style():
        figure, axes = plt.subplots(1, max(len(metrics), 1), figsize=(TWO_COLUMN, 0.8 + 0.22 * len(keys)),
                                    sharey=True, squeeze=False)
        for axis, metric in zip(axes[0], metrics):
            by_key = {(r["edit"], r["part"]): r for r in rows if r["metric"] == metric}
            shown = [by_key.get(k, {"delta": math.nan, "delta_low": math.nan, "delta_high": math.nan}) for k in keys]
            colours = [PALETTE[1] if k[1] == "all" else PALETTE[0] for k in keys]
            axis.barh(range(len(keys)), np.nan_to_num([r["delta"] for r in shown]),
                      xerr=_errors(shown, "delta", "delta_low", "delta_high"), color=colours, capsize=2,
                      error_kw={"elinewidth": 0.8})
            axis.axvline(0, color="black", linewidth=0.5)
            axis.set_title(f"Δ {METRIC_TITLES.get(metric, metric)}")
            axis.set_xlabel("change from base [95% CI]")
            axis.grid(axis="x", linewidth=0.3, alpha=0.5)
        axes[0, 0].set_yticks(range(len(keys)), labels)
        axes[0, 0].invert_yaxis()
        figure.suptitle(title)
        figure.tight_layout()
    return figure


def dispersal_figure(rows: Sequence[Row]):
    """One panel per quantity: before and after bars per word with 95 % intervals (``DispersalStudy.rows()``)."""
    quantities = list(dict.fromkeys(r["quantity"] for r in rows))
    words = list(dict.fromkeys(r["word"] for r in rows))
    with paper_style():
        figure, axes = plt.subplots(1, max(len(quantities), 1), figsize=(TWO_COLUMN, 2.4), squeeze=False)
        for axis, quantity in zip(axes[0], quantities):
            by_word = {r["word"]: r for r in rows if r["quantity"] == quantity}
            shown = [w for w in words if w in by_word]
            x = np.arange(len(shown))
            for offset, side, colour in ((-0.2, "before", PALETTE[0]), (0.2, "after", PALETTE[3])):
                picked = [by_word[w] for w in shown]
                axis.bar(x + offset, [r[side] for r in picked], width=0.4, color=colour, label=side,
                         yerr=_errors(picked, side, f"{side}_low", f"{side}_high"), capsize=2,
                         error_kw={"elinewidth": 0.8})
            axis.set_xticks(x, [ROLE_LABELS.get(w, w) for w in shown], rotation=30, ha="right")
            axis.set_title(QUANTITY_TITLES.get(quantity, quantity.replace("_", " ")))
            axis.grid(axis="y", linewidth=0.3, alpha=0.5)
        figure.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper right", frameon=False, ncols=2)
        figure.suptitle("concentration and dispersal before vs after the edit (mean over pairs, 95% CI)", x=0.4)
        figure.tight_layout()
    return figure


def outcome_figure(fit):
    """ROC curve of the out-of-fold predictions (the null's AUC in the legend), and each feature's AUC beside
    the joint model's (95 % CI; the grey tick on the joint bar: the null's mean).

    ``fit``: :class:`~attnscope.analyses.outcome.OutcomeFit`.
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(fit.labels, dtype=bool)
    with paper_style():
        figure, (roc, bars) = plt.subplots(1, 2, figsize=(TWO_COLUMN, 2.6))
        ok = np.isfinite(fit.predicted)
        both_classes = bool(ok.any()) and 0 < y[ok].sum() < ok.sum()
        if both_classes:
            fpr, tpr, _ = roc_curve(y[ok], fit.predicted[ok])
            roc.plot(fpr, tpr, color=PALETTE[0],
                     label=f"AUC {fit.auc.estimate:.2f} (answers shuffled: {fit.null.estimate:.2f})")
        roc.plot([0, 1], [0, 1], color="grey", linewidth=0.5, linestyle="--")
        roc.set_xlabel("false positive rate")
        roc.set_ylabel("true positive rate")
        roc.set_title("judged leakage from attention (out-of-fold)")
        if both_classes:
            roc.legend(frameon=False, loc="lower right")
        names = ["joint model", *(e.feature.replace("_", " ") for e in fit.effects)]
        intervals = [fit.auc, *(e.auc for e in fit.effects)]
        shown = [{"v": i.estimate, "lo": i.low, "hi": i.high} for i in intervals]
        bars.barh(range(len(names)), np.nan_to_num([s["v"] for s in shown]), xerr=_errors(shown, "v", "lo", "hi"),
                  color=[PALETTE[1]] + [PALETTE[0]] * len(fit.effects), capsize=2, error_kw={"elinewidth": 0.8})
        bars.axvline(0.5, color="grey", linewidth=0.5, linestyle="--")
        bars.plot([fit.null.estimate], [0], marker="|", markersize=12, color="grey")
        bars.set_yticks(range(len(names)), names)
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.set_xlabel("AUC [95% CI, prompts resampled]")
        figure.tight_layout()
    return figure


def tradeoff_figure(rows: Sequence[Row], x: str = "n_concepts", group: str = "mode",
                    metrics: Sequence[str] = ("target", "retain", "leakage")):
    """One panel per metric against ``x`` (e.g. the number of erased concepts), one line per ``group``."""
    groups = list(dict.fromkeys(r[group] for r in rows))
    with paper_style():
        figure, axes = plt.subplots(1, len(metrics), figsize=(TWO_COLUMN, 2.3), squeeze=False)
        for axis, metric in zip(axes[0], metrics):
            for i, name in enumerate(groups):
                picked = sorted((r for r in rows if r[group] == name), key=lambda r: r[x])
                xs = [r[x] for r in picked]
                axis.errorbar(xs, [r[metric] for r in picked], yerr=_errors(picked, metric, f"{metric}_low",
                                                                             f"{metric}_high"),
                              marker="o", markersize=3, capsize=2, color=PALETTE[i % len(PALETTE)], label=str(name),
                              linewidth=1)
            axis.set_xscale("log", base=2)
            axis.set_xticks(sorted({r[x] for r in rows}), [str(v) for v in sorted({r[x] for r in rows})])
            axis.set_xlabel(x.replace("_", " "))
            axis.set_ylim(-0.02, 1.02)
            axis.set_title(METRIC_TITLES.get(metric, metric))
            axis.grid(linewidth=0.3, alpha=0.5)
        axes[0, 0].set_ylabel("rate [95% CI]")
        axes[0, 0].legend(frameon=False)
        figure.tight_layout()
    return figure


def front_figure(rows: Sequence[Row], group: str = "sweep", label: str = "value"):
    """Retain (left) and leakage (right) against target accuracy, one colour per ``group``, both intervals.

    Lower target and higher retain is better: the front runs to the upper left.
    """
    groups = list(dict.fromkeys(r[group] for r in rows))
    with paper_style():
        figure, axes = plt.subplots(1, 2, figsize=(TWO_COLUMN, 2.8))
        for axis, metric in zip(axes, ("retain", "leakage")):
            for i, name in enumerate(groups):
                picked = [r for r in rows if r[group] == name]
                axis.errorbar([r["target"] for r in picked], [r[metric] for r in picked],
                              xerr=_errors(picked, "target", "target_low", "target_high"),
                              yerr=_errors(picked, metric, f"{metric}_low", f"{metric}_high"),
                              fmt="o", markersize=3, capsize=1.5, elinewidth=0.6, color=PALETTE[i % len(PALETTE)],
                              label=str(name))
                for r in picked:
                    axis.annotate(str(r.get(label, "")), (r["target"], r[metric]), fontsize=5,
                                  xytext=(2, 2), textcoords="offset points")
            axis.set_xlabel("target accuracy (lower: stronger erasure)")
            axis.set_ylabel(f"{METRIC_TITLES[metric]} [95% CI]")
            axis.grid(linewidth=0.3, alpha=0.5)
        axes[0].legend(frameon=False, fontsize=6)
        figure.tight_layout()
    return figure


def predictor_figure(rows: Sequence[Row], rho, x: str = "predictor", y: str = "retain_drop", group: str = "sweep"):
    """The pre-sampling predictor against the measured retain drop, one point per edit; ρ in the title."""
    groups = list(dict.fromkeys(r[group] for r in rows))
    with paper_style():
        figure, axis = plt.subplots(figsize=(ONE_COLUMN, 2.6))
        for i, name in enumerate(groups):
            picked = [r for r in rows if r[group] == name]
            axis.errorbar([r[x] for r in picked], [r[y] for r in picked],
                          yerr=_errors([{**r, "lo": -r["retain_delta_high"], "hi": -r["retain_delta_low"]}
                                        for r in picked], y, "lo", "hi"),
                          fmt="o", markersize=3, capsize=1.5, elinewidth=0.6, color=PALETTE[i % len(PALETTE)],
                          label=str(name))
        axis.set_xlabel("K/V movement of retained concepts (before sampling)")
        axis.set_ylabel("retain drop [95% CI]")
        axis.set_title(f"Spearman ρ = {rho.estimate:.2f} [{rho.low:.2f}, {rho.high:.2f}], {rho.n} edits")
        axis.grid(linewidth=0.3, alpha=0.5)
        axis.legend(frameon=False, fontsize=6)
        figure.tight_layout()
    return figure
