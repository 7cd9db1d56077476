"""Trade-off points: the concept ladder, hyper-parameter sweeps, saved edits with their predictor."""

import json

import pytest

from attnscope.models.toy import ToyModelConfig, build_toy_pipeline
from attnscope.runner.tradeoff import (
    concept_ladder,
    hyper_sweeps,
    kv_movement,
    point_states,
    read_points,
    tradeoff_prompts,
)

pytestmark = pytest.mark.usefixtures("one_thread")
LADDER = ["bench", "chair", "couch", "car", "bird", "pizza", "bus", "cat"]


def test_ladder_and_sweeps_describe_every_edit():
    ladder = concept_ladder(LADDER, (1, 2, 3, 4, 8))
    assert len(ladder) == 10 and ladder[4].erased == tuple(LADDER) and ladder[4].mode == "one-shot"
    assert ladder[5].options == {"progressive": True} and ladder[5].name == "uce-prog-n1"
    sweeps = hyper_sweeps("bench", preserve=["chair"])
    assert {p.sweep for p in sweeps} == {"lam", "erase_scale", "preserve_scale", "epochs", "lam_r"}
    assert next(p for p in sweeps if p.sweep == "preserve_scale").options["preserve"] == ["chair"]
    assert len({p.name for p in ladder + sweeps}) == len(ladder + sweeps)  # names are file stems
    with pytest.raises(ValueError, match="only 8 concepts"):
        concept_ladder(LADDER, (1, 16))


def test_prompt_set_covers_every_class_and_the_ladders_pairs():
    prompts = tradeoff_prompts(LADDER[:3], singles=3, pairs=2)
    singles = [p for p in prompts if p.kind == "single"]
    assert len(singles) == 12 * 3 and {p.object for p in singles} == {
        "car", "bus", "bicycle", "bird", "cat", "dog", "bench", "chair", "couch", "pizza", "donut", "cake"}
    assert all(p.n_attributes == 0 for p in singles[::3])  # the bare class first
    assert sorted(p.object for p in prompts if p.kind == "pair") == ["bench"] * 2 + ["chair"] * 2 + ["couch"] * 2
    assert len({p.prompt_id for p in prompts}) == len(prompts)
    assert [p.prompt_id for p in tradeoff_prompts(LADDER[:3], singles=3, pairs=2)] == [p.prompt_id for p in prompts]


def test_point_states_save_edits_and_a_predictor_that_grows_with_the_erased_set(tmp_path):
    pipe = build_toy_pipeline(ToyModelConfig.tiny())
    points = concept_ladder(LADDER, (1, 4), modes=("one-shot",))
    concepts = ["bench", "chair", "couch", "car", "bird", "cat"]
    states = point_states(pipe, points, tmp_path, concepts=concepts)
    assert [s.name for s in states] == ["uce-once-n1", "uce-once-n4"]
    found = read_points(tmp_path, [s.name for s in states])
    assert found[0]["erased"] == ["bench"] and found[1]["n_concepts"] == 4
    assert 0 < found[0]["predictor"] < found[1]["predictor"]  # erasing more moves the rest more
    again = point_states(pipe, points, tmp_path, concepts=concepts)  # resumed: loaded, not recomputed
    assert all(a.edit.tensors.keys() == b.edit.tensors.keys() for a, b in zip(states, again))
    assert json.loads((tmp_path / "uce-once-n1.point.json").read_text())["predictor"] == found[0]["predictor"]


def test_kv_movement_is_zero_without_an_edit():
    from attnscope.analyses.entanglement import kv_images

    pipe = build_toy_pipeline(ToyModelConfig.tiny())
    images = kv_images(pipe, ["bench", "car"])
    assert kv_movement(images, images, ["car"]) == 0.0
    assert kv_movement(images, images, []) != kv_movement(images, images, [])  # NaN: nothing retained


def test_tradeoff_command_end_to_end(tmp_path):
    """Two concepts, counts 1 and 2, one-shot and progressive, on a tiny random toy model (2 steps)."""
    from attnscope import cli

    model = tmp_path / "tiny-toy"
    build_toy_pipeline(ToyModelConfig.tiny()).save_pretrained(model)
    out = tmp_path / "tradeoff"
    argv = ["tradeoff", "--concept", "bench", "--concept", "chair", "--counts", "1", "2", "--seeds", "1",
            "--steps", "2", "--singles", "1", "--pairs", "1", "--model", str(model), "--device", "cpu",
            "--resamples", "50", "--no-progress", "--out", str(out)]
    assert cli.main(argv) == 0
    rows = list(__import__("csv").DictReader((out / "tables" / "tradeoff.csv").open()))
    assert [(r["mode"], r["n_concepts"]) for r in rows] == [
        ("one-shot", "1"), ("one-shot", "2"), ("progressive", "1"), ("progressive", "2")]
    assert all(r["target"] != "" and r["predictor"] != "" for r in rows)
    for stem in ("tradeoff_concepts", "tradeoff_predictor"):
        assert (out / "figures" / f"{stem}.png").exists() and (out / "figures" / f"{stem}.pdf").exists()
    assert "What erasing more costs" in (out / "tradeoff.html").read_text()
    answers = (out / "uce-once-n2.answers.csv").read_text()
    assert cli.main(argv) == 0 and (out / "uce-once-n2.answers.csv").read_text() == answers  # resumed, not redone
