"""Concentration and dispersal of attention maps: known answers on hand-made maps and run files."""

import math

import numpy as np
import pytest

from attnscope.analyses.dispersal import dispersal, dispersal_study, entropy, in_object_share, spread, top_share
from attnscope.store import RunFile
from test_drift_cli import half, write_runs


def one_hot(h=4, w=4, at=(0, 0)):
    grid = np.zeros((h, w))
    grid[at] = 1.0
    return grid


def test_entropy_of_one_cell_uniform_and_two_cells():
    assert entropy(one_hot()) == pytest.approx(0.0)
    assert entropy(np.ones((4, 4))) == pytest.approx(1.0)
    assert entropy(np.ones((4, 4)), normalise=False) == pytest.approx(math.log(16))
    two = np.zeros((4, 4))
    two[0, 0] = two[3, 3] = 5.0  # scale does not matter: maps are normalised first
    assert entropy(two) == pytest.approx(math.log(2) / math.log(16))
    assert np.isnan(entropy(np.zeros((4, 4))))


def test_top_share_counts_the_largest_cells():
    grid = np.arange(16, dtype=float).reshape(4, 4)  # 0..15, total 120
    assert top_share(grid, k=1) == pytest.approx(15 / 120)
    assert top_share(grid, fraction=0.25) == pytest.approx((15 + 14 + 13 + 12) / 120)  # ceil(0.25 * 16) = 4
    assert top_share(np.ones((10, 10)), fraction=0.1) == pytest.approx(0.1)
    assert top_share(one_hot(), fraction=0.1) == pytest.approx(1.0)


def test_spread_is_the_root_second_moment_in_image_sides():
    assert spread(one_hot(at=(2, 1))) == pytest.approx(0.0)
    two = np.zeros((4, 4))
    two[0, 0] = two[0, 2] = 1.0  # centres half a side apart, centroid between: each 1/4 away
    assert spread(two) == pytest.approx(0.25)
    n = 8  # uniform n×n: per axis variance (1 − 1/n²)/12
    assert spread(np.ones((n, n))) == pytest.approx(math.sqrt(2 * (1 - 1 / n ** 2) / 12))


def test_in_object_share_and_vectorised_dispersal():
    region = np.zeros((4, 4), bool)
    region[:, :2] = True
    maps = np.stack([half("left")[0], half("right")[0], np.ones((4, 4))])  # (3, 4, 4)
    assert in_object_share(maps, region) == pytest.approx([1.0, 0.0, 0.5])
    measured = dispersal(maps, region, fraction=0.5)
    assert set(measured) == {"entropy", "top_share", "spread", "in_object"}
    assert measured["entropy"] == pytest.approx([math.log(8) / math.log(16)] * 2 + [1.0])
    assert measured["top_share"] == pytest.approx([1.0, 1.0, 0.5])
    assert all(v.shape == (3,) for v in measured.values())


def concentrated(side):
    """(3 steps, 4, 4): all mass in one cell of that half."""
    grid = one_hot(at=(1, 0 if side == "left" else 3))
    return np.repeat(grid[None], 3, axis=0).astype(np.float32)


def test_dispersal_study_pairs_runs_and_gives_the_known_change(tmp_path):
    objects = {"bench": half("left"), "bird": half("right")}
    write_runs(tmp_path / "before.h5", {s: {**objects, "wooden": concentrated("left")} for s in (0, 1)})
    write_runs(tmp_path / "after.h5", {s: {**objects, "wooden": half("right")} for s in (1, 0)})
    with RunFile(tmp_path / "before.h5") as before, RunFile(tmp_path / "after.h5") as after:
        study = dispersal_study(before, after, ["wooden", "bird"], regions={"wooden": "bench"})
    assert study.before["wooden"]["entropy"].shape == (2, 3, 1)  # pairs, steps, layers
    rows = {(r["word"], r["quantity"]): r for r in study.rows(n_resamples=200)}
    wooden = rows[("wooden", "entropy")]
    assert wooden["before"] == pytest.approx(0.0) and wooden["after"] == pytest.approx(0.75)  # log 8 / log 16
    assert wooden["change"] == pytest.approx(0.75)
    assert np.isnan(wooden["change_low"])  # both pairs share one prompt: no interval from one cluster
    assert rows[("wooden", "in_object")]["before"] == pytest.approx(1.0)
    assert rows[("wooden", "in_object")]["after"] == pytest.approx(0.0, abs=1e-6)
    assert rows[("bird", "spread")]["change"] == pytest.approx(0.0, abs=1e-6)
    assert ("bird", "in_object") not in rows
    assert len(study.layer_step_rows()) == (4 + 3) * 3  # (wooden: 4 quantities, bird: 3) × 3 steps × 1 layer


def test_a_word_missing_from_the_prompt_gets_nan(tmp_path):
    write_runs(tmp_path / "before.h5", {0: {"wooden": half("left")}})
    write_runs(tmp_path / "after.h5", {0: {"wooden": half("right")}})
    with RunFile(tmp_path / "before.h5") as before, RunFile(tmp_path / "after.h5") as after:
        study = dispersal_study(before, after, ["wooden", "metal"], regions={"metal": "bench"})
    assert set(study.quantities("metal")) == {"entropy", "top_share", "spread", "in_object"}
    assert np.isnan(study.before["metal"]["spread"]).all() and np.isfinite(study.before["wooden"]["spread"]).all()
    rows = {(r["word"], r["quantity"]): r for r in study.rows(n_resamples=20)}
    assert rows[("metal", "entropy")]["pairs"] == 0 and rows[("wooden", "entropy")]["pairs"] == 1
