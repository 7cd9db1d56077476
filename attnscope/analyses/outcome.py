"""Does attention explain the leak? Attention features of each image against the judge's answer.

For every two-object image whose first object was erased ("a wooden bench
and a bird", bench erased), attention features measured on the run before
and after the edit (same prompt and seed) are joined with the judge's
leakage answer on the edited image ("is the bird wooden?"):

* ``binding_shift`` — relative binding of the attribute word on the retained
  object, after − before (share of the word's in-object mass that lands on
  it; Otsu regions of the object words' maps in the before run, as in
  ``drift``);
* ``entropy_change`` — normalised entropy of the attribute word's map,
  after − before (:mod:`~attnscope.analyses.dispersal`);
* ``erased_mass`` — the attention mass on the erased noun's token(s) after
  the edit (mean over cells, layers and steps: the share of the text
  attention that still goes to the erased word).

:func:`fit_outcome` fits a logistic regression (scikit-learn, standardised
features) and scores it by the AUC of out-of-fold predictions (folds by
prompt, so one prompt's seeds never sit on both sides) with a
prompt-clustered bootstrap interval, beside the same procedure's AUC on data
where the prompts' answers were shuffled among prompts (the null: features and
answers keep their clustering, their association is gone). Out-of-fold AUCs
are biased *below* 0.5 when features carry little signal and answers cluster
by prompt (each fold's model is fitted on the other prompts, whose relation
runs opposite to the held-out ones'), so the number to read is the
difference from the null and its permutation p-value. Per feature it gives
the univariate AUC and Cohen's d with intervals (no fitting, no such bias)
and the standardised coefficient; and it lists the images where attention
and judge disagree most.
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


def shuffled_answers(y: np.ndarray, groups: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """``y`` (n,) with whole clusters' answers moved to other clusters of the same size, rows in order."""
    ids, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(len(ids))]
    shuffled = y.copy()
    for size in {len(m) for m in members}:
        same = [m for m in members if len(m) == size]
        for target, source in zip(same, rng.permutation(len(same))):
            shuffled[target] = y[same[source]]
    return shuffled


def null_aucs(x: np.ndarray, y: np.ndarray, groups: Sequence[str], *, folds: int = 5, n_permutations: int = 200,
              seed: int = 0) -> np.ndarray:
    """Out-of-fold AUCs (n_permutations,) of the same procedure on :func:`shuffled_answers` (NaN: one class)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_permutations):
        shuffled = shuffled_answers(y, groups, rng)
        values.append(auc(out_of_fold(x, shuffled, groups, folds, seed), shuffled))
    return np.array(values, dtype=float)


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
    """The joint model's out-of-fold AUC (prompt-clustered interval) and its null, per-feature effects,
    disagreements."""

    features: tuple[str, ...]
    label: str
    n_images: int
    n_prompts: int
    positives: int
    auc: Interval  # out of fold
    null: Interval  # the same with answers shuffled among prompts: mean and central 95 % of the permutations
    p_value: float  # share of permutations (with the observed one) scoring at least the observed AUC
    effects: tuple[FeatureEffect, ...]
    predicted: np.ndarray = field(repr=False)  # (n,) out-of-fold P(yes) of the rows kept
    labels: np.ndarray = field(repr=False)  # (n,) their judged outcome
    disagreements: tuple[dict, ...] = ()

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers."""
        def interval(i: Interval) -> dict[str, float]:
            return {"estimate": i.estimate, "low": i.low, "high": i.high, "n": i.n}

        return {
            "label": self.label, "features": list(self.features), "images": self.n_images,
            "prompts": self.n_prompts, "positives": self.positives, "auc": interval(self.auc),
            "null_auc": interval(self.null), "p_value": self.p_value,
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
    n_permutations: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> OutcomeFit:
    """How well ``features`` of each row (one image) predict its boolean ``label``.

    Rows with a non-finite feature are left out. The AUC is that of the
    out-of-fold predictions (:func:`out_of_fold`), its interval resamples
    whole ``cluster`` values (prompts); ``null``: :func:`null_aucs` with
    ``n_permutations``, and the one-sided permutation p-value. ``disagreements``: the
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
    null = null_aucs(x, y, groups, folds=folds, n_permutations=n_permutations, seed=seed)
    finite = null[np.isfinite(null)]
    alpha = (1 - level) / 2
    null_interval = (Interval(float(finite.mean()), *map(float, np.quantile(finite, [alpha, 1 - alpha])), level,
                              len(finite)) if finite.size else Interval(np.nan, np.nan, np.nan, level, 0))
    p_value = (float((1 + (finite >= joint.estimate).sum()) / (1 + finite.size))
               if finite.size and np.isfinite(joint.estimate) else float("nan"))
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
    return OutcomeFit(features, label, len(kept), len(set(groups)), int(y.sum()), joint, null_interval, p_value,
                      effects, predicted, y, disagreements)


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


ROLES = ("attribute", "object", "other_object")  # the word, the erased noun, the retained noun


def attention_features(before, after, images: Sequence[Mapping[str, Any]], *,
                       layers: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """``images`` (from :func:`leakage_images`) with :data:`FEATURES` and dispersal measured in two run files.

    Runs are found by prompt id and seed (:func:`~attnscope.runner.run.index_runs`);
    images without both runs are left out. Besides the features, each row gets
    ``{role}_{quantity}_{before|after}`` for every role of :data:`ROLES` and
    quantity of :func:`~attnscope.analyses.dispersal.dispersal` (``in_object``:
    the attribute's share in its own object's region), means over layers and steps.
    """
    from attnscope.analyses.binding import binding_score, relative_binding
    from attnscope.analyses.dispersal import layers_dispersal
    from attnscope.analyses.regions import regions_from_attention, regions_from_masks
    from attnscope.runner.run import index_runs

    names = list(layers or [spec.name for spec in before.layers])
    index_before, index_after = index_runs(before), index_runs(after)
    out = []
    for image in images:
        key = (image["prompt_id"], int(image["seed"]))
        if key not in index_before or key not in index_after:
            continue
        runs = {"before": (before, index_before[key]), "after": (after, index_after[key])}
        read = {side: words_maps(found, run, [image[role] for role in ROLES], names)
                for side, (found, run) in runs.items()}
        objects = [image["object"], image["other_object"]]
        regions = regions_from_attention({o: list(read["before"][o].values()) for o in objects})
        row = dict(image)
        for side in runs:
            maps = {role: read[side][image[role]] for role in ROLES}
            for role in ROLES:
                region = regions[image["object"]] if role == "attribute" else None
                for quantity, values in layers_dispersal(maps[role], region).items():
                    row[f"{role}_{quantity}_{side}"] = _mean(values)
            relative = [relative_binding(binding_score(m, regions_from_masks(regions, m.shape[-2:],
                                                                             min_coverage=None)))[..., 1]
                        for m in maps["attribute"].values()]
            row[f"attribute_on_other_{side}"] = _mean(np.stack(relative))
            if side == "after":
                row["erased_mass"] = _mean(np.array([m.mean() for m in maps["object"].values()]))
        row["binding_shift"] = row["attribute_on_other_after"] - row["attribute_on_other_before"]
        row["entropy_change"] = row["attribute_entropy_after"] - row["attribute_entropy_before"]
        out.append(row)
    return out


def words_maps(runs, run: int, words: Sequence[str], layers: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """``{word: {layer: (steps, h, w)}}`` (sub-word tokens summed, heads averaged), one read per layer.

    Equal to :func:`~attnscope.analyses.run_binding.word_maps` word by word,
    which reads the file once per word and layer.
    """
    rows = {word: runs.token_rows(run, word=word) for word in words}
    out: dict[str, dict[str, np.ndarray]] = {word: {} for word in words}
    for layer in layers:
        every = runs.maps(run, layer).astype(np.float32)  # (steps, tokens, heads, h, w)
        for word, picked in rows.items():
            out[word][layer] = every[:, picked].sum(axis=1).mean(axis=1)
    return out


def _mean(values: np.ndarray) -> float:
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else float("nan")


def dispersal_rows(images: Sequence[Mapping[str, Any]], *, cluster: str = "prompt_id",
                   **bootstrap: Any) -> list[dict[str, Any]]:
    """Per role and quantity: mean before, after and the change, with paired prompt-clustered intervals.

    ``images``: rows of :func:`attention_features`. Same columns as
    :meth:`attnscope.analyses.dispersal.DispersalStudy.rows` (``word`` = the role).
    """
    from attnscope.analyses.stats import paired_cluster_bootstrap

    rows = []
    columns = [c[: -len("_before")] for c in (images[0] if images else {}) if c.endswith("_before")]
    for column in columns:
        role = next((r for r in ROLES if column.startswith(r + "_")), None)
        if role is None:
            continue
        before = np.array([float(i[f"{column}_before"]) for i in images])
        after = np.array([float(i[f"{column}_after"]) for i in images])
        ok = np.isfinite(before) & np.isfinite(after)
        clusters = np.array([str(i[cluster]) for i in images], dtype=object)[ok]
        pi = paired_cluster_bootstrap(before[ok], clusters, after[ok], clusters, **bootstrap)
        rows.append({"word": role, "quantity": column[len(role) + 1:], "pairs": int(ok.sum()), "prompts": pi.a.n,
                     **{f"{part}{suffix}": getattr(getattr(pi, name), fld)
                        for part, name in (("before", "a"), ("after", "b"), ("change", "difference"))
                        for suffix, fld in (("", "estimate"), ("_low", "low"), ("_high", "high"))}})
    return rows
