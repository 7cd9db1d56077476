"""Ablation tables and trade-off rows from hand-made judged records with known rates."""

import math

import numpy as np
import pytest

from attnscope.analyses.ablation import ablation_table, leading_parts, part_method, split_method
from attnscope.analyses.tradeoff import predictor_correlation, relabel, spearman, tradeoff_rows
from attnscope.datasets.see import build_pair_prompts, build_see_prompts, toy_recipe


def rec(method, pid, check, subject, role, yes, *, other="", other_role="", value="", obj=None, seed=0):
    return {"method": method, "state": method, "erased": "bench", "prompt_id": pid, "seed": seed, "check": check,
            "subject": subject, "object": obj or subject, "role": role, "other_object": other,
            "other_role": other_role, "value": value, "judged_yes": yes}


def leaks(method, n_yes, n=4):
    """n leakage images of ``method``, the first ``n_yes`` judged leaked."""
    return [rec(method, f"p{i}", "leakage", "bird", "target", i < n_yes, other="bird", other_role="retain",
                value="wooden", obj="bench") for i in range(n)]


def presence(method, n_yes, role="target", n=4):
    subject = "bench" if role == "target" else "bird"
    return [rec(method, f"{role}{i}", "presence", subject, role, i < n_yes) for i in range(n)]


def test_method_names_of_parts():
    assert part_method("uce", "up") == "uce@up"
    assert split_method("uce@up_blocks.0.attn2") == ("uce", "up_blocks.0.attn2")
    assert split_method("uce") == ("uce", "all")


def test_ablation_shares_of_the_full_change():
    # leakage: base 0/12, full edit 6/12, the up part alone 6/12, the down part alone 0/12
    records = leaks("base", 0, 12) + leaks("uce", 6, 12) + leaks("uce@up", 6, 12) + leaks("uce@down", 0, 12)
    records += presence("base", 4) + presence("uce", 1) + presence("uce@up", 3) + presence("uce@down", 2)
    rows = {(r["part"], r["metric"]): r for r in ablation_table(records, n_resamples=200)}
    assert rows[("all", "leakage")]["delta"] == pytest.approx(0.5)
    assert rows[("up", "leakage")]["share"] == pytest.approx(1.0)
    assert rows[("down", "leakage")]["share"] == pytest.approx(0.0)
    assert rows[("up", "target")]["delta"] == pytest.approx(-0.25)
    assert rows[("down", "target")]["share"] == pytest.approx(0.5 / 0.75)  # −0.5 of the full −0.75
    assert ("up", "retain") not in rows  # no retain question in these records
    assert [r["part"] for r in leading_parts(list(rows.values()))] == ["up"]
    assert [r["part"] for r in leading_parts(list(rows.values()), "target")] == ["down"]  # none ≥ ½ but down: 0.67
    assert leading_parts([], "leakage") == []


def test_without_a_clear_full_change_parts_are_ranked_by_their_own_change():
    # the full edit: 1/12 leaked vs 0/12 (interval includes 0); up alone 10/12 (clear), down alone 2/12 (not)
    records = leaks("base", 0, 12) + leaks("uce", 1, 12) + leaks("uce@up", 10, 12) + leaks("uce@down", 2, 12)
    rows = [r for r in ablation_table(records, n_resamples=500) if r["metric"] == "leakage"]
    assert all(math.isnan(r["share"]) for r in rows)  # no ratio to a change indistinguishable from none
    assert [r["part"] for r in leading_parts(rows)] == ["up"]
    down = [r for r in rows if r["part"] == "down"]
    assert [r["part"] for r in leading_parts(down)] == ["down"]  # none clear: the largest change


def small_prompts():
    recipe = toy_recipe()
    singles = [p for p in build_see_prompts(recipe) if p.n_attributes == 0]  # "a car", one per class
    pairs = [build_pair_prompts(recipe, pairs=[pair])[0] for pair in (("bench", "bird"), ("chair", "car"))]
    return singles + pairs


def answers(state, present):
    """One presence answer per class prompt: yes for the classes in ``present``."""
    prompts = small_prompts()
    return [{"method": state, "state": state, "erased": "", "prompt_id": p.prompt_id, "seed": 0, "check": "presence",
             "subject": p.object, "object": p.object, "role": "retain", "other_object": "", "other_role": "",
             "judged_yes": p.object in present} for p in prompts if p.kind == "single"]


def test_relabel_gives_each_edit_its_own_split():
    prompts = small_prompts()
    records = answers("base", {"bench", "car"})
    bench = {r["prompt_id"]: r for r in relabel(records, prompts, ["bench"])}
    both = {r["prompt_id"]: r for r in relabel(records, prompts, ["bench", "chair"])}
    assert bench["bench:-:-:-"]["role"] == "target" and bench["chair:-:-:-"]["role"] == "retain"
    assert both["chair:-:-:-"]["role"] == "target" and both["chair:-:-:-"]["erased"] == "bench+chair"


def test_tradeoff_rows_measure_each_point_against_the_relabelled_base():
    prompts = small_prompts()
    classes = [p.object for p in prompts if p.kind == "single"]  # 12 classes
    records = {"base": answers("base", set(classes)),
               "one": answers("one", set(classes) - {"bench"}),
               "two": answers("two", set(classes) - {"bench", "chair", "car"})}  # car lost as a side effect
    points = [{"state": "one", "erased": ["bench"], "n_concepts": 1, "predictor": 0.1},
              {"state": "two", "erased": ["bench", "chair"], "n_concepts": 2, "predictor": 0.3}]
    rows = tradeoff_rows(points, records, prompts, n_resamples=100)
    assert [r["target"] for r in rows] == [0.0, 0.0]
    assert rows[0]["retain"] == 1.0 and rows[0]["retain_drop"] == pytest.approx(0.0)
    assert rows[1]["retain"] == pytest.approx(9 / 10) and rows[1]["retain_drop"] == pytest.approx(0.1)
    assert rows[1]["n_concepts"] == 2


def test_spearman_known_answers_and_interval():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert math.isnan(spearman([1, 2], [1, 2]))
    rows = [{"predictor": x, "retain_drop": x ** 3} for x in np.linspace(0, 1, 12)]
    rows.append({"predictor": float("nan"), "retain_drop": 1.0})
    rho = predictor_correlation(rows, n_resamples=200)
    assert rho.estimate == pytest.approx(1.0) and rho.n == 12 and rho.low == pytest.approx(1.0)


def test_figures_show_every_part_and_point():
    from attnscope.figures.inside import ablation_figure, front_figure, tradeoff_figure

    records = leaks("base", 0) + leaks("uce", 2) + leaks("uce@up", 2) + leaks("uce@down", 0)
    rows = ablation_table(records, n_resamples=50)
    (leakage,) = ablation_figure(rows, order=["uce", "uce@down", "uce@up"]).axes
    assert [t.get_text() for t in leakage.get_yticklabels()] == ["uce (full edit)", "uce down", "uce up"]
    assert [round(p.get_width(), 3) for p in leakage.patches] == [0.5, 0.0, 0.5]

    point = {"target": 0.1, "retain": 0.9, "leakage": 0.2, **{f"{m}_{e}": v for m in ("target", "retain", "leakage")
                                                                for e, v in (("low", 0.0), ("high", 1.0))}}
    points = [{**point, "mode": mode, "n_concepts": n, "sweep": "concepts", "value": n}
              for mode in ("one-shot", "progressive") for n in (1, 2, 4)]
    curves = tradeoff_figure(points)
    assert len(curves.axes) == 3
    assert [t.get_text() for t in curves.axes[0].get_legend().get_texts()] == ["one-shot", "progressive"]
    fronts = front_figure([{**p, "sweep": "lam"} for p in points])
    assert [t.get_text() for t in fronts.axes[0].get_legend().get_texts()] == ["lam"]
