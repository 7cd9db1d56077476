"""Attention ↔ outcome: AUC, Cohen's d, the clustered bootstrap and the joint fit on hand-made rows."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from attnscope.analyses.outcome import FEATURES, auc, cohens_d, fit_outcome, leakage_images
from attnscope.analyses.stats import cluster_bootstrap


def test_auc_known_answers_and_agreement_with_sklearn():
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert auc([1, 2, 3, 4], [1, 1, 0, 0]) == 0.0
    assert auc([5, 5, 5, 5], [0, 1, 0, 1]) == 0.5  # ties count half
    assert np.isnan(auc([1, 2], [1, 1]))
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=50).round(1), rng.random(50) < 0.4
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))


def test_cohens_d_known_answer():
    # positives 2, 4 (mean 3), negatives 0, 2 (mean 1); both sample variances 2
    assert cohens_d([2, 4, 0, 2], [1, 1, 0, 0]) == pytest.approx(2 / np.sqrt(2))
    assert np.isnan(cohens_d([1, 2, 3], [1, 0, 0]))


def test_cluster_bootstrap_resamples_whole_clusters():
    values = np.array([0.0, 0.0, 1.0, 1.0, 5.0])
    clusters = ["a", "a", "b", "b", "c"]
    interval = cluster_bootstrap(lambda i: values[i].mean(), clusters, n_resamples=500)
    assert interval.estimate == pytest.approx(1.4) and interval.n == 3
    # a draw of clusters {a, a, a} gives 0, {c, c, c} gives 5: the extremes the interval can reach
    assert 0.0 <= interval.low < 1.4 < interval.high <= 5.0
    constant = cluster_bootstrap(lambda i: 1.0, clusters, n_resamples=50)
    assert (constant.low, constant.high) == (1.0, 1.0)


def rows_with_signal(n_prompts=20, seeds=3, flip=0):
    """The judge says leak exactly when binding_shift > 0 (a perfect attention signal), noise elsewhere."""
    rng = np.random.default_rng(1)
    rows = []
    for p in range(n_prompts):
        for s in range(seeds):
            shift = rng.normal()
            rows.append({"prompt_id": f"p{p}", "seed": s, "binding_shift": shift,
                         "entropy_change": rng.normal(), "erased_mass": rng.random(), "leaked": shift > 0})
    for r in rows[:flip]:
        r["leaked"] = not r["leaked"]
    return rows


def test_fit_finds_a_perfect_signal_and_lists_disagreements():
    fit = fit_outcome(rows_with_signal(), n_resamples=300, n_permutations=40)
    assert fit.n_images == 60 and fit.n_prompts == 20
    assert fit.auc.estimate > 0.95 and fit.auc.low > 0.85
    assert fit.p_value < 0.05 and fit.null.high < 0.8
    effects = {e.feature: e for e in fit.effects}
    assert effects["binding_shift"].auc.estimate == 1.0  # univariate, no fitting: exact
    assert effects["binding_shift"].coefficient > 0 and effects["binding_shift"].cohens_d.estimate > 1
    assert abs(effects["erased_mass"].auc.estimate - 0.5) < 0.25
    flipped = fit_outcome(rows_with_signal(flip=2), n_resamples=100, n_permutations=10, n_disagreements=2)
    kinds = [d["kind"] for d in flipped.disagreements]
    assert len(kinds) == 4 and kinds[0].startswith("attention says leak")
    assert flipped.summary()["auc"]["n"] == 20


def test_a_non_finite_feature_drops_the_row_and_one_class_gives_nan():
    rows = rows_with_signal(n_prompts=6, seeds=2)
    rows[0]["entropy_change"] = float("nan")
    assert fit_outcome(rows, n_resamples=20, n_permutations=10).n_images == 11
    for r in rows:
        r["leaked"] = False
    assert np.isnan(fit_outcome(rows, n_resamples=20, n_permutations=10).auc.estimate)


def test_leakage_images_joins_the_questions_of_one_image():
    base = {"method": "uce", "state": "uce-bench", "prompt_id": "bench:-:-:wooden+bird", "prompt": "a wooden bench and a bird",
            "seed": 0, "check": "leakage", "role": "target", "other_role": "retain", "object": "bench",
            "subject": "bird", "value": "wooden"}
    records = [{**base, "judged_yes": True, "score": 0.9}, {**base, "seed": 1, "judged_yes": "False", "score": 0.2},
               {**base, "state": "base", "judged_yes": True}, {**base, "check": "presence", "judged_yes": True}]
    images = sorted(leakage_images(records, "uce-bench"), key=lambda r: r["seed"])
    assert [(i["seed"], i["leaked"], i["attribute"], i["other_object"]) for i in images] == [
        (0, True, "wooden", "bird"), (1, False, "wooden", "bird")]


def test_words_maps_reads_what_word_maps_reads(tmp_path):
    from attnscope.analyses.outcome import words_maps
    from attnscope.analyses.run_binding import word_maps
    from attnscope.store import RunFile
    from test_drift_cli import half, write_runs

    write_runs(tmp_path / "runs.h5", {0: {"wooden": half("left"), "bird": half("right")}})
    with RunFile(tmp_path / "runs.h5") as runs:
        layers = [spec.name for spec in runs.layers]
        together = words_maps(runs, 0, ["wooden", "bird", "bench"], layers)
        for word in ("wooden", "bird", "bench"):
            one = word_maps(runs, 0, word, layers)
            assert all(np.array_equal(together[word][layer], one[layer]) for layer in layers)


def test_outcome_figure_draws_the_roc_and_one_bar_per_feature_and_the_joint_model():
    from attnscope.figures.inside import outcome_figure

    fit = fit_outcome(rows_with_signal(), n_resamples=50, n_permutations=10)
    roc, bars = outcome_figure(fit).axes
    assert roc.get_lines()[0].get_label().startswith("AUC")
    assert [t.get_text() for t in bars.get_yticklabels()] == [
        "joint model", "binding shift", "entropy change", "erased mass"]
    assert len(fit.labels) == len(fit.predicted) == fit.n_images


def test_features_without_signal_do_not_beat_their_null_even_when_prompts_differ_in_rate():
    # 60 prompts × 4 images: most prompts leak almost always, a few almost never; the features are noise.
    # Out-of-fold AUCs of such data sit below 0.5; the null (answers shuffled among prompts) sits there too.
    rng = np.random.default_rng(1)
    rates = np.where(rng.random(60) < 0.8, 0.95, 0.1)
    rows = [{"prompt_id": f"p{p}", "leaked": bool(rng.random() < rate), **dict(zip(FEATURES, rng.normal(size=3)))}
            for p, rate in enumerate(rates) for _ in range(4)]
    fit = fit_outcome(rows, n_resamples=200, n_permutations=100)
    assert fit.null.estimate < 0.5 and fit.null.low < fit.auc.estimate < fit.null.high
    assert fit.p_value > 0.05


def test_answers_are_shuffled_between_whole_prompts_of_the_same_size():
    from attnscope.analyses.outcome import shuffled_answers

    y = np.array([1, 1, 0, 0, 1, 0, 1], dtype=bool)
    groups = ["a", "a", "b", "b", "c", "c", "d"]  # three prompts of two images, one of one
    rows = {"a": [0, 1], "b": [2, 3], "c": [4, 5]}
    seen = set()
    for seed in range(20):
        shuffled = shuffled_answers(y, groups, np.random.default_rng(seed))
        blocks = {tuple(shuffled[i]) for i in rows.values()}
        assert blocks <= {(True, True), (False, False), (True, False)} and shuffled[6]  # blocks move whole
        seen.add(tuple(shuffled[:6]))
    assert len(seen) > 1
