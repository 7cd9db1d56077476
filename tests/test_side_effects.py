"""SEE-style metric tables on hand-made judgements."""

import pytest

from attnscope.analyses.side_effects import (
    attribute_leakage,
    bin_by,
    evasion,
    retain_accuracy,
    side_effect_tables,
    subject_role,
    target_accuracy,
    to_markdown,
)
from attnscope.store.tables import read_records, write_table


def judged(method, prompt_id, check, subject, answers, *, obj, role, erased="bench", **split):
    """One record per seed (answers[i] is the judge's answer for seed i), SEE columns by hand."""
    return [
        dict(method=method, erased=erased, prompt_id=prompt_id, seed=seed, judged_yes=yes, check=check,
             subject=subject, object=obj, role=role, **split)
        for seed, yes in enumerate(answers)
    ]


BENCH = dict(obj="bench", role="target", relation="concept", evasion=False, attr_distance=0)
RED_WOODEN_BENCH = dict(obj="bench", role="target", relation="variant", evasion=False, attr_distance=2)
BIRD = dict(obj="bird", role="retain", relation="", evasion=False, attr_distance=0)
RED_CAR = dict(obj="car", role="retain", relation="", evasion=False, attr_distance=1)
WOODEN_BENCH_AND_BIRD = dict(obj="bench", role="target", other_object="bird", other_role="retain", attr_distance=1)

# Erasing "bench". Base model: the bench is found in 4/4 images; UCE: 1/4.
RECORDS = (
    judged("base", "a bench", "presence", "bench", [True, True], **BENCH)
    + judged("base", "a red wooden bench", "presence", "bench", [True, True], **RED_WOODEN_BENCH)
    + judged("uce", "a bench", "presence", "bench", [True, False], **BENCH)
    + judged("uce", "a red wooden bench", "presence", "bench", [False, False], **RED_WOODEN_BENCH)
    # retain: a bird (attr_distance 0 to "bench"), a red car (distance 1)
    + judged("base", "a bird", "presence", "bird", [True, True], **BIRD)
    + judged("base", "a red car", "presence", "car", [True, True], **RED_CAR)
    + judged("uce", "a bird", "presence", "bird", [False, True], **BIRD)
    + judged("uce", "a red car", "presence", "car", [True, True], **RED_CAR)
    # "a wooden bench and a bird": is there a bird (retain, the pair's other object)? is the bird wooden (leakage)?
    + judged("uce", "pair", "presence", "bird", [True, True], **WOODEN_BENCH_AND_BIRD)
    + judged("base", "pair", "leakage", "bird", [False, False, False, True], **WOODEN_BENCH_AND_BIRD)
    + judged("uce", "pair", "leakage", "bird", [True, True, False, True], **WOODEN_BENCH_AND_BIRD)
)


def by_method(rows):
    return {r["method"]: r for r in rows}


def test_subject_role_follows_the_object_asked_about():
    pair = RECORDS[-1]
    assert subject_role(pair) == "retain"  # asks about the bird, the pair's retained object
    assert subject_role({**pair, "subject": "bench"}) == "target"


def test_target_accuracy_of_hand_made_judgements():
    rows = by_method(target_accuracy(RECORDS))
    assert rows["base"]["estimate"] == 1.0 and rows["uce"]["estimate"] == 0.25
    assert rows["uce"]["n_prompts"] == 2 and rows["uce"]["n_answers"] == 4
    assert rows["uce"]["delta"] == pytest.approx(-0.75)
    assert "delta" not in rows["base"]
    # two prompts: resampling them gives 1/2, 1/4 or 0 -> interval [0, 0.5]
    assert (rows["uce"]["low"], rows["uce"]["high"]) == (0.0, 0.5)
    assert rows["base"]["low"] == rows["base"]["high"] == 1.0  # a constant


def test_retain_accuracy_overall_and_by_distance():
    # overall: single bird 1/2, red car 2/2, the pair's bird 2/2 -> 5/6
    assert by_method(retain_accuracy(RECORDS))["uce"]["estimate"] == pytest.approx(5 / 6)
    # by distance: only questions about the prompt's own object, whose distance is known
    binned = {(r["method"], r["attr_distance"]): r for r in retain_accuracy(RECORDS, by="attr_distance")}
    assert binned[("uce", 0)]["estimate"] == 0.5 and binned[("uce", 1)]["estimate"] == 1.0
    assert binned[("uce", 0)]["delta"] == -0.5 and binned[("uce", 1)]["delta"] == 0.0


def test_attribute_leakage_counts_yes_answers():
    rows = by_method(attribute_leakage(RECORDS))
    assert rows["base"]["estimate"] == 0.25 and rows["uce"]["estimate"] == 0.75
    assert rows["uce"]["n_answers"] == 4 and rows["uce"]["n_prompts"] == 1
    assert rows["uce"]["delta"] == 0.5


def test_evasion_after_erasing_a_superclass_reports_subclasses_and_variants():
    furniture = dict(erased="furniture", role="target", evasion=True)
    records = (
        judged("uce", "a furniture", "presence", "furniture", [False, False], obj="furniture", relation="concept",
               **{**furniture, "evasion": False})
        + judged("uce", "a bench", "presence", "bench", [True, False], obj="bench", relation="subclass", **furniture)
        + judged("uce", "a red chair", "presence", "chair", [True, True], obj="chair", relation="variant", **furniture)
    )
    rows = {r["relation"]: r["estimate"] for r in evasion(records)}
    assert rows == {"subclass": 0.5, "variant": 1.0}
    assert by_method(target_accuracy(records))["uce"]["estimate"] == pytest.approx(3 / 6)


def test_groups_are_per_method_and_per_erased_concept():
    other = judged("uce", "a car", "presence", "car", [True, True, True], obj="car", role="target", erased="car")
    rows = {(r["method"], r["erased"]): r["estimate"] for r in target_accuracy(RECORDS + other)}
    assert rows == {("base", "bench"): 1.0, ("uce", "bench"): 0.25, ("uce", "car"): 1.0}


def test_all_tables_at_once_and_bad_records_are_rejected():
    tables = side_effect_tables(RECORDS, by="attr_distance", n_resamples=200)
    assert set(tables) == {"target", "evasion", "retain", "retain_by_distance", "leakage"}
    with pytest.raises(ValueError, match="role"):
        target_accuracy([{**RECORDS[0], "role": "erased"}])
    with pytest.raises(ValueError, match="lacks"):
        target_accuracy([{k: v for k, v in RECORDS[0].items() if k != "subject"}])


def test_bin_by_labels_similarities():
    rows = bin_by([{"text_similarity": x} for x in (0.1, 0.5, 1.0, 2.0, float("nan"))], [0.0, 0.5, 1.0])
    assert [r["similarity_bin"] for r in rows] == ["0.00-0.50", "0.50-1.00", "0.50-1.00", None, None]


def test_csv_round_trip_and_markdown(tmp_path):
    path = tmp_path / "records.csv"
    write_table(RECORDS, path)
    records = read_records(path)
    assert by_method(target_accuracy(records))["uce"]["estimate"] == 0.25
    assert {r["attr_distance"] for r in retain_accuracy(records, by="attr_distance")} == {0, 1}
    table = to_markdown(target_accuracy(RECORDS))
    assert "| uce | bench | 2 | 4 | 0.250 [0.000, 0.500] | -0.750" in table
