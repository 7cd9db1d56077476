"""Does attention explain the leak? Attention features of each image against the judge's answer.

For every two-object image whose first object was erased ("a wooden bench
and a bird", bench erased), attention features measured on the run before
and after the edit (same prompt and seed) are joined with the judge's
leakage answer on the edited image ("is the bird wooden?"):

* ``binding_shift`` — relative binding of the attribute word on the retained
  object, after − before (share of the word's in-object mass that lands on
  it; regions from the before run, as in ``drift``);
* ``entropy_change`` — normalised entropy of the attribute word's map,
  after − before (:mod:`~attnscope.analyses.dispersal`);
* ``erased_mass`` — the attention mass on the erased noun's token(s) after
  the edit (mean over cells, layers and steps: the share of the text
  attention that still goes to the erased word).

:func:`fit_outcome` fits a logistic regression (scikit-learn, standardised
features) and scores it by the AUC of out-of-fold predictions (folds by
prompt, so one prompt's seeds never sit on both sides), with a
prompt-clustered bootstrap interval; per feature it gives the univariate
AUC and Cohen's d with intervals and the standardised coefficient; and it
lists the images where attention and judge disagree most.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from attnscope.analyses.stats import Interval, cluster_bootstrap

FEATURES = ("binding_shift", "entropy_change", "erased_mass")


# --------------------------------------------------------------------------- statistics


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels``; NaN with only one class.

    The Mann–Whitney form (ties count ½): equal to scikit-learn's
    ``roc_auc_score``, without its per-call checks (it runs once per bootstrap resample).
    """
    from scipy.stats import rankdata

    y = np.asarray(labels, dtype=bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if not positives or not negatives:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=float))
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def cohens_d(values: Sequence[float], labels: Sequence[bool]) -> float:
    """(mean of the positives − mean of the negatives) / pooled sample SD; NaN if a group has < 2 values."""
    x, y = np.asarray(values, dtype=float), np.asarray(labels, dtype=bool)
    a, b = x[y], x[~y]
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")


def _pipeline(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(random_state=seed))


def out_of_fold(x: np.ndarray, y: np.ndarray, groups: Sequence[str], folds: int = 5, seed: int = 0) -> np.ndarray:
    """P(yes) of each row (n,) from a logistic regression fitted on the other folds (grouped by ``groups``).

    With fewer groups than ``folds`` every group is its own fold; a training
    set with one class predicts that class's rate.
    """
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups, dtype=object).astype(str)
    n_folds = min(folds, len(set(groups)))
    p = np.full(len(y), np.nan)
    if n_folds < 2:
        return p
    for train, test in GroupKFold(n_splits=n_folds).split(x, y, groups):
        if len(set(y[train])) < 2:
            p[test] = float(y[train].mean())
        else:
            p[test] = _pipeline(seed).fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    return p


# --------------------------------------------------------------------------- fit


@dataclass(frozen=True)
class FeatureEffect:
    """One feature's association with the judged outcome: univariate AUC, Cohen's d, standardised coefficient."""

    feature: str
    auc: Interval
    cohens_d: Interval
    coefficient: float  # of the joint model, per standard deviation of the feature (log-odds)

    @property
    def odds_ratio(self) -> float:
        return float(np.exp(self.coefficient))


@dataclass(frozen=True)
class OutcomeFit:
    """The joint model's out-of-fold AUC (prompt-clustered interval), per-feature effects, disagreements."""

    features: tuple[str, ...]
    label: str
    n_images: int
    n_prompts: int
    positives: int
    auc: Interval
    effects: tuple[FeatureEffect, ...]
    predicted: np.ndarray = field(repr=False)  # (n,) out-of-fold P(yes)
    disagreements: tuple[dict, ...] = ()

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers."""
        def interval(i: Interval) -> dict[str, float]:
            return {"estimate": i.estimate, "low": i.low, "high": i.high, "n": i.n}

        return {
            "label": self.label, "features": list(self.features), "images": self.n_images,
            "prompts": self.n_prompts, "positives": self.positives, "auc": interval(self.auc),
            "effects": [{"feature": e.feature, "auc": interval(e.auc), "cohens_d": interval(e.cohens_d),
                         "coefficient_per_sd": e.coefficient, "odds_ratio_per_sd": e.odds_ratio}
                        for e in self.effects],
            "disagreements": list(self.disagreements),
        }


def fit_outcome(
    rows: Sequence[Mapping[str, Any]],
    features: Sequence[str] = FEATURES,
    *,
    label: str = "leaked",
    cluster: str = "prompt_id",
    folds: int = 5,
    n_disagreements: int = 5,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> OutcomeFit:
    """How well ``features`` of each row (one image) predict its boolean ``label``.

    Rows with a non-finite feature are left out. The AUC is that of the
    out-of-fold predictions (:func:`out_of_fold`), its interval resamples
    whole ``cluster`` values (prompts). ``disagreements``: the
    ``n_disagreements`` rows with the highest P(yes) that the judge answered
    no, then those with the lowest P(yes) it answered yes.
    """
    features = tuple(features)
    kept = [r for r in rows if all(np.isfinite(float(r[f])) for f in features)]
    x = np.array([[float(r[f]) for f in features] for r in kept]).reshape(len(kept), len(features))
    y = np.array([bool(r[label]) for r in kept])
    groups = [str(r[cluster]) for r in kept]
    boot = {"level": level, "n_resamples": n_resamples, "seed": seed}
    predicted = out_of_fold(x, y, groups, folds, seed)
    joint = cluster_bootstrap(lambda i: auc(predicted[i], y[i]), groups, **boot)
    coefficients = np.full(len(features), np.nan)
    if len(set(y)) == 2:
        coefficients = _pipeline(seed).fit(x, y)[-1].coef_[0]
    effects = tuple(
        FeatureEffect(name, cluster_bootstrap(lambda i, j=j: auc(x[i, j], y[i]), groups, **boot),
                      cluster_bootstrap(lambda i, j=j: cohens_d(x[i, j], y[i]), groups, **boot),
                      float(coefficients[j]))
        for j, name in enumerate(features)
    )
    order = np.argsort(predicted, kind="stable")
    false_alarms = [i for i in order[::-1] if not y[i]][:n_disagreements]
    misses = [i for i in order if y[i]][:n_disagreements]
    disagreements = tuple(
        {**{k: v for k, v in kept[i].items()}, "predicted": float(predicted[i]),
         "kind": "attention says leak, judge says no" if not y[i] else "judge says leak, attention does not"}
        for i in [*false_alarms, *misses] if np.isfinite(predicted[i])
    )
    return OutcomeFit(features, label, len(kept), len(set(groups)), int(y.sum()), joint, effects, predicted,
                      disagreements)


# --------------------------------------------------------------------------- features from run files


def leakage_images(records: Sequence[Mapping[str, Any]], state: str) -> list[dict[str, Any]]:
    """One row per image of ``state`` with a leakage question (erased first object, retained second).

    Keys: ``prompt_id``, ``prompt``, ``seed``, ``attribute`` (the value word),
    ``object`` (erased), ``other_object`` (retained), ``leaked`` (the judge
    said the retained object has the attribute), ``score``.
    """
    from attnscope.analyses.side_effects import _truthy

    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        if (r.get("state", r["method"]) == state and r["check"] == "leakage" and r["role"] == "target"
                and r.get("other_role") == "retain"):
            key = (str(r["prompt_id"]), int(r["seed"]))
            row = rows.setdefault(key, {"prompt_id": key[0], "prompt": r.get("prompt", ""), "seed": key[1],
                                        "attribute": r["value"], "object": r["object"],
                                        "other_object": r["subject"], "leaked": False, "score": 0.0})
            row["leaked"] = row["leaked"] or _truthy(r["judged_yes"])
            row["score"] = max(row["score"], float(r.get("score") or 0.0))
    return list(rows.values())


def attention_features(before, after, images: Sequence[Mapping[str, Any]], *,
                       layers: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """``images`` (from :func:`leakage_images`) with :data:`FEATURES` measured in two run files.

    Runs are found by prompt id and seed (:func:`~attnscope.runner.run.index_runs`);
    images without both runs are left out.
    """
    from attnscope.analyses.dispersal import entropy
    from attnscope.analyses.run_binding import attention_regions, run_binding, word_maps
    from attnscope.runner.run import index_runs

    names = list(layers or [spec.name for spec in before.layers])
    index_before, index_after = index_runs(before), index_runs(after)
    out = []
    for image in images:
        key = (image["prompt_id"], int(image["seed"]))
        if key not in index_before or key not in index_after:
            continue
        run_b, run_a = index_before[key], index_after[key]
        objects = [image["object"], image["other_object"]]
        regions = attention_regions(before, run_b, objects)
        other = 1
        relative = [np.nanmean(run_binding(runs, run, image["attribute"], regions, names).relative[..., other])
                    for runs, run in ((before, run_b), (after, run_a))]
        spread = [np.mean([np.nanmean(entropy(m)) for m in word_maps(runs, run, image["attribute"], names).values()])
                  for runs, run in ((before, run_b), (after, run_a))]
        erased = np.mean([m.mean() for m in word_maps(after, run_a, image["object"], names).values()])
        out.append({**image, "binding_shift": float(relative[1] - relative[0]),
                    "entropy_change": float(spread[1] - spread[0]), "erased_mass": float(erased)})
    return out
