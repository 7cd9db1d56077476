"""Bootstrap intervals: known answers and a small coverage simulation."""

import numpy as np
import pytest

from attnscope.analyses.stats import bootstrap_ci, cluster_bootstrap_ci, paired_cluster_bootstrap


def test_ci_of_a_constant_is_a_point():
    ci = bootstrap_ci(np.full(20, 3.5))
    assert (ci.estimate, ci.low, ci.high) == (3.5, 3.5, 3.5)
    assert ci.n == 20 and ci.level == 0.95


def test_same_seed_same_interval_and_other_statistics():
    x = np.random.default_rng(1).normal(size=50)
    assert bootstrap_ci(x, seed=7) == bootstrap_ci(x, seed=7)
    median = bootstrap_ci(x, np.median)
    assert median.estimate == pytest.approx(np.median(x))
    assert median.low <= median.estimate <= median.high


def test_interval_covers_the_true_mean_at_about_the_nominal_rate():
    # 300 experiments of 40 draws from N(1, 2²); a 95 % interval should cover 1 about 95 % of the time
    # (the percentile bootstrap runs a little short at n = 40).
    rng = np.random.default_rng(0)
    covered = [
        ci.low <= 1.0 <= ci.high
        for ci in (bootstrap_ci(rng.normal(1.0, 2.0, 40), n_resamples=400, seed=i) for i in range(300))
    ]
    assert 0.88 <= np.mean(covered) <= 0.99


def test_cluster_bootstrap_pools_observations_and_resamples_prompts():
    # prompt "a": 3 seeds, all yes; prompt "b": 1 seed, no -> pooled mean 3/4
    ci = cluster_bootstrap_ci([1, 1, 1, 0], ["a", "a", "a", "b"])
    assert ci.estimate == 0.75 and ci.n == 2
    # a replicate draws {a,a}, {a,b} or {b,b}: pooled means 1, 3/4 or 0
    assert ci.low == 0.0 and ci.high == 1.0


def test_cluster_bootstrap_is_wider_than_pretending_seeds_are_independent():
    rng = np.random.default_rng(0)
    prompt_rate = rng.uniform(0, 1, 30)  # prompts differ a lot; 4 seeds nest inside each
    values = (rng.uniform(size=(30, 4)) < prompt_rate[:, None]).astype(float).ravel()
    prompts = np.repeat(np.arange(30), 4)
    clustered = cluster_bootstrap_ci(values, prompts)
    naive = bootstrap_ci(values)
    assert clustered.estimate == pytest.approx(naive.estimate)
    assert clustered.high - clustered.low > naive.high - naive.low


def test_paired_difference_of_a_constant_shift_is_exact():
    rng = np.random.default_rng(0)
    before = rng.uniform(size=40)
    prompts = np.repeat(np.arange(10), 4)
    paired = paired_cluster_bootstrap(before, prompts, before + 0.25, prompts)
    d = paired.difference
    assert d.estimate == pytest.approx(0.25)
    assert d.low == pytest.approx(0.25) and d.high == pytest.approx(0.25)
    assert paired.a.low < paired.a.high  # each condition alone still varies


def test_paired_uses_only_shared_prompts():
    paired = paired_cluster_bootstrap([0, 0, 1], ["p", "q", "r"], [1, 1], ["p", "q"])
    assert paired.a.estimate == 0.0 and paired.b.estimate == 1.0 and paired.difference.n == 2
