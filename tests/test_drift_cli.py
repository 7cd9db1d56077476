"""drift / entangle / attribute: a hand-made drift with a known answer, then each command end to end."""

import csv
import json

import numpy as np
import pytest
import torch

from attnscope.analyses.concepts import relation, toy_concepts
from attnscope.analyses.run_binding import drift_study, pair_runs
from attnscope.cli import main
from attnscope.store import RunFile, RunRecord, RunWriter
from attnscope.store.schema import CaptureSchema, layout
from conftest import benchmark

PROMPT = "a wooden bench and a bird"
TOKENS = [(0, "<|startoftext|>", -1), (1, "a", 0), (2, "wooden", 1), (3, "bench", 2), (4, "and", 3), (5, "a", 4),
          (6, "bird", 5), (7, "<|endoftext|>", -1)]
FIGURES = ("png", "pdf", "svg")


def write_runs(path, maps_per_seed: dict[int, dict[str, np.ndarray]]) -> None:
    """A run file with one 4×4 layer and 3 steps; ``maps[word]`` (steps, 4, 4), other tokens uniform."""
    layer = "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
    schema = CaptureSchema(height=8, width=8, latent_height=4, latent_width=4, layers=tuple(layout([(layer, "up", 4, 4, 1)])),
                           steps=(0, 1, 2), timesteps=(900.0, 500.0, 100.0), heads="mean", branch="cond",
                           dtype="float32")
    with RunWriter(path) as writer:
        writer.open(schema)
        for seed, maps in maps_per_seed.items():
            block = np.full((len(TOKENS), 3, 16), 1 / 16, dtype=np.float32)
            for row, (_, text, _) in enumerate(TOKENS):
                if text in maps:
                    block[row] = maps[text].reshape(3, 16)
            ids = writer.reserve(1)
            record = RunRecord(prompt=PROMPT, negative_prompt="", seed=seed, guidance_scale=1.0, tokens=TOKENS)
            writer.submit(torch.from_numpy(block[None]), None, [record], ids)
            writer.submit_images(np.full((1, 8, 8, 3), 200 + seed, np.uint8), ids)


def half(side: str) -> np.ndarray:
    """(3 steps, 4, 4) maps with all mass spread over the left or the right half of the grid."""
    grid = np.zeros((4, 4), np.float32)
    grid[:, slice(0, 2) if side == "left" else slice(2, 4)] = 1 / 8
    return np.repeat(grid[None], 3, axis=0)


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory):
    """Bench left, bird right; "wooden" on the bench before the edit and on the bird after it."""
    folder = tmp_path_factory.mktemp("runs")
    objects = {"bench": half("left"), "bird": half("right")}
    write_runs(folder / "before.h5", {s: {**objects, "wooden": half("left")} for s in (0, 1)})
    write_runs(folder / "after.h5", {s: {**objects, "wooden": half("right")} for s in (1, 0, 7)})  # other order, extra
    return folder


def test_drift_study_has_the_known_answer(hand_made):
    with RunFile(hand_made / "before.h5") as before, RunFile(hand_made / "after.h5") as after:
        assert [(p.seed, p.before, p.after) for p in pair_runs(before, after)] == [(0, 0, 1), (1, 1, 0)]
        study = drift_study(before, after, "wooden")
    assert study.objects == ("bench", "bird") and study.own == "bench"
    assert study.before.score.shape == (2, 3, 1, 2)  # pairs, steps, layers, objects
    np.testing.assert_allclose(study.area, 0.5)
    before, after = study.per_pair("score")
    np.testing.assert_allclose(before, [[1, 0], [1, 0]], atol=1e-6)
    np.testing.assert_allclose(after, [[0, 1], [0, 1]], atol=1e-6)
    intervals = study.intervals("score")
    assert intervals["bench"].difference.estimate == pytest.approx(-1.0)
    assert intervals["bird"].difference.estimate == pytest.approx(1.0)
    first_before, first_after = study.first_wrong_steps()
    assert list(first_before) == [-1, -1] and list(first_after) == [0, 0]
    assert study.summary()["first_wrong_step"]["after"]["share_of_pairs"] == 1.0


def test_drift_command_writes_numbers_and_figures(hand_made, tmp_path, capsys):
    out = tmp_path / "drift"
    assert main([
        "drift", str(hand_made / "before.h5"), str(hand_made / "after.h5"), "--word", "wooden",
        "--object", "bench", "--object", "bird", "--resamples", "200", "--out", str(out),
    ]) == 0
    summary = json.loads((out / "drift.json").read_text())
    assert summary["pairs"] == 2 and summary["own"] == "bench"
    assert summary["binding"]["score"]["bird"]["difference"]["estimate"] == pytest.approx(1.0)
    with (out / "drift_pairs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 6  # pairs × objects × quantities
    with (out / "drift_layers_steps.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 3 * 1 * 2 * 6  # steps × layers × objects × quantities
    for stem in ("drift_panel", "binding_heatmap"):
        assert all((out / f"{stem}.{ext}").stat().st_size > 0 for ext in FIGURES)
    # "wooden" moves from the bench's half to the bird's: just as dispersed, but no longer inside its object
    dispersal = {(r["word"], r["quantity"]): r for r in json.loads((out / "dispersal.json").read_text())["rows"]}
    assert dispersal[("wooden", "entropy")]["before"] == pytest.approx(0.75)  # 8 of 16 cells: log 8 / log 16
    assert dispersal[("wooden", "entropy")]["change"] == pytest.approx(0.0, abs=1e-9)
    assert dispersal[("wooden", "in_object")]["change"] == pytest.approx(-1.0)
    assert dispersal[("bird", "in_object")]["before"] == pytest.approx(1.0)
    assert all((out / f"dispersal.{ext}").stat().st_size > 0 for ext in ("png", "pdf"))
    assert "on bird" in capsys.readouterr().out


def test_drift_command_explains_a_missing_word(hand_made, tmp_path, capsys):
    assert main(["drift", str(hand_made / "before.h5"), str(hand_made / "after.h5"), "--word", "metal",
                 "--out", str(tmp_path)]) == 2
    assert "metal" in capsys.readouterr().err


def test_relations_and_the_toy_concept_set():
    assert relation("bench", "bench") == "target"
    assert relation("wooden bench", "bench") == "variant"
    assert relation("furniture", "bench") == "superclass"
    assert relation("chair", "bench") == "sibling"
    assert relation("wooden chair", "bench") == "sibling variant"
    assert relation("wooden", "bench") == "attribute"
    assert relation("bird", "bench") == "unrelated"
    assert relation("hot dog", "bench") == "unrelated"  # a COCO class
    assert relation("spaceship", "bench") == "other"
    concepts = toy_concepts("bench")
    assert concepts[0] == "bench" and len(concepts) == len(set(concepts))
    assert {relation(c, "bench") for c in concepts} == {
        "target", "superclass", "sibling", "variant", "sibling variant", "attribute", "unrelated"}


@pytest.fixture(scope="module")
def tiny_edit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edit")
    assert main(["erase", "--model", "tiny-sd", "--method", "uce", "--concept", "bench",
                 "--out", str(folder / "bench.edit")]) == 0
    return folder / "bench.edit"


def test_capture_erase_drift_on_the_tiny_model(tiny_edit, tmp_path):
    common = ["--model", "tiny-sd", "--prompt", "a wooden bench and a red bird", "--seed", "0", "--seed", "1",
              "--steps", "3", "--no-progress"]
    assert main(["capture", *common, "--out", str(tmp_path / "before.h5")]) == 0
    assert main(["capture", *common, "--edit", str(tiny_edit), "--out", str(tmp_path / "after.h5")]) == 0
    out = tmp_path / "drift"
    assert main(["drift", str(tmp_path / "before.h5"), str(tmp_path / "after.h5"), "--word", "wooden",
                 "--resamples", "100", "--out", str(out)]) == 0
    summary = json.loads((out / "drift.json").read_text())
    assert summary["objects"] == ["bench", "bird"] and summary["pairs"] == 2
    assert len(summary["layers"]) == 16 and summary["steps"][:3] == [0, 1, 2]  # PNDM may add a step


@pytest.mark.parametrize("how", ["file", "on the fly"])
def test_entangle_command(tiny_edit, tmp_path, how):
    concepts = tmp_path / "concepts.txt"
    concepts.write_text("# the erased class and some neighbours\nbench\nchair\nwooden bench\n\nbird\nwooden\n")
    edit = ["--edit", str(tiny_edit)] if how == "file" else ["--erase", "bench", "--method", "uce"]
    out = tmp_path / "entangle"
    assert main(["entangle", "--model", "tiny-sd", *edit, "--concepts", str(concepts), "--out", str(out)]) == 0
    summary = json.loads((out / "entanglement.json").read_text())
    assert summary["target"] == "bench" and summary["concepts"] == ["bench", "chair", "wooden bench", "bird", "wooden"]
    relations = {r["concept"]: r["relation"] for r in summary["rows"]}
    assert relations == {"bench": "target", "chair": "sibling", "wooden bench": "variant", "bird": "unrelated",
                         "wooden": "attribute"}
    assert len(summary["spaces"]) == 1 + 2 * 16
    for stem in ("movement", "similarity", "map_pca"):
        assert all((out / f"{stem}.{ext}").stat().st_size > 0 for ext in FIGURES)


def test_entangle_centred_with_a_list(tiny_edit, tmp_path):
    out = tmp_path / "entangle"
    assert main(["entangle", "--model", "tiny-sd", "--edit", str(tiny_edit), "--concepts", "bench, car,bird",
                 "--centre", "--rep", "eos", "--out", str(out)]) == 0
    summary = json.loads((out / "entanglement.json").read_text())
    assert summary["centred"] and summary["rep"] == "eos" and len(summary["rows"]) == 3


def test_entangle_needs_exactly_one_edit_source(tiny_edit, tmp_path, capsys):
    assert main(["entangle", "--model", "tiny-sd", "--concepts", "bench,car", "--out", str(tmp_path)]) == 2
    assert "--edit" in capsys.readouterr().err


def test_attribute_command(tmp_path, capsys):
    out = tmp_path / "attribution"
    assert main(["attribute", "--model", "tiny-sd", "--prompt", PROMPT, "--word", "wooden", "--object", "bird",
                 "--object", "bench", "--steps", "3", "--at-step", "1", "--ig-steps", "4", "--out", str(out)]) == 0
    summary = json.loads((out / "attribution.json").read_text())
    assert [t["name"].split(" in the ")[-1] for t in summary["targets"][:2]] == ["bird region", "bench region"]
    assert summary["targets"][2]["baseline"] == 0.0 and "wooden" in summary["targets"][0]["by_word"]
    for stem in ("attribution", "attribution_maps"):
        assert all((out / f"{stem}.{ext}").stat().st_size > 0 for ext in FIGURES)
    assert "squared change" in capsys.readouterr().out


def test_drift_benchmark_runs_in_smoke_mode(tmp_path):
    out = tmp_path / "drift.md"
    assert benchmark("drift").main(["--smoke", "--out", str(out), "--results", str(tmp_path / "results"),
                        "--figures", str(tmp_path / "figures"), "--work", str(tmp_path / "work"),
                        "--resamples", "100", "--threads", str(torch.get_num_threads())]) == 0
    report = out.read_text()
    assert "Smoke run" in report and "| the bird is wooden |" in report
    assert (tmp_path / "figures" / "oracle" / "drift_panel.png").exists()
    assert (tmp_path / "results" / "drift.json").exists()
