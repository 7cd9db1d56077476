"""``attnscope leakage-report``: outputs, escaping, figures, before/after mode, rendering in Chromium."""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from attnscope import cli
from attnscope.figures.side_effects import metric_intervals, retain_by
from attnscope.models.toy import ToyModelConfig, build_toy_pipeline
from attnscope.report import ReportInputs, StateInfo, write_leakage_report
from attnscope.report.examples import Leak, find_leaks, leak_regions, render_side
from attnscope.store import RunFile
from attnscope.store.reader import index_runs

EVIL = "<img src=x onerror=alert(1)>"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One reduced run of the command on a tiny random toy model (2 steps, 1 seed)."""
    model = tmp_path_factory.mktemp("tiny-toy")
    build_toy_pipeline(ToyModelConfig.tiny()).save_pretrained(model)
    out = tmp_path_factory.mktemp("report")
    assert cli.main(["leakage-report", "--erase", "bench", "--method", "uce", "--method", "rece", "--model", str(model),
                     "--steps", "2", "--seeds", "1", "--batch-size", "8", "--threads", "1", "--no-progress",
                     "--out", str(out)]) == 0
    return model, out


def record(method, prompt_id, check, subject, role, yes, *, other="", other_role="", seed=0, value="", score=None):
    return {"method": method, "erased": "bench", "state": method, "prompt_id": prompt_id, "prompt": prompt_id,
            "seed": seed, "question_id": f"{prompt_id}#{subject}:{check}", "check": check, "subject": subject,
            "object": "bench" if role == "target" else subject, "role": role, "other_object": other,
            "other_role": other_role, "relation": "concept" if role == "target" else "", "evasion": False,
            "attr_distance": 0, "text_similarity": float("nan"), "value": value, "judged_yes": yes,
            "score": float(yes) if score is None else score}


def hand_made_records(methods=("base", "uce")):
    records = []
    for method in methods:
        erased = method != "base"
        for i in range(4):
            records.append(record(method, f"t{i}", "presence", "bench", "target", not erased and i < 3))
            records.append(record(method, f"r{i}", "presence", "bird", "retain", i < 3))
            pair = record(method, f"p{i}", "leakage", "bird", "target", erased and i < 2, other="bird",
                          other_role="retain", value="wooden")
            records.append({**pair, "object": "bench"})
    return records


# --------------------------------------------------------------------------- figures


def test_metric_bars_have_one_bar_per_method_and_group():
    rows = [{"method": m, "erased": "bench", "estimate": e, "low": e - 0.1, "high": e + 0.1}
            for m, e in (("uce", 0.2), ("base", 0.8))]
    evasion = [{**r, "relation": rel} for r in rows for rel in ("subclass", "variant")]
    figure = metric_intervals({"target": rows, "evasion": evasion, "leakage": []}, order=["base", "uce"])
    target, evasion_axis = figure.axes
    assert [t.get_text() for t in target.get_xticklabels()] == ["base", "uce"]
    assert [t.get_text() for t in evasion_axis.get_xticklabels()] == [
        "base subclass", "base variant", "uce subclass", "uce variant"]
    assert [p.get_height() for p in target.patches] == [0.8, 0.2]
    curve = retain_by([{**r, "attr_distance": d} for r in rows for d in (0, 1)], "attr_distance")
    assert [line.get_label() for line in curve.axes[0].get_lines()] == ["base", "uce"]


def test_find_leaks_puts_flips_first_and_skips_unchanged_answers():
    records = hand_made_records()
    leaks = find_leaks(records, per_method=5)
    assert [(k.prompt_id, k.flipped) for k in leaks] == [("p0", True), ("p1", True)]  # p2, p3: no → no
    assert find_leaks(records, per_method=1)[0].value == "wooden"


# --------------------------------------------------------------------------- the report itself


def test_report_is_self_contained_and_escapes_user_text(tmp_path):
    records = hand_made_records(("base", EVIL))
    inputs = ReportInputs(
        erased=EVIL, records=records, states=[StateInfo("base", "base"), StateInfo("evil", EVIL)],
        settings={"model": EVIL, "judge": "oracle"}, plan={"prompt_ids": [EVIL]}, notes=[f"note {EVIL}"],
    )
    page = write_leakage_report(tmp_path, inputs).read_text()
    assert EVIL not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<script" not in page and "<link" not in page and "href=" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    metrics = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    target = {r["method"]: r for r in metrics["tables"]["target"]}
    assert target["base"]["estimate"] == 0.75 and target[EVIL]["estimate"] == 0.0
    assert target[EVIL]["delta"] == -0.75
    for name in ("records.csv", "tables/target.csv", "tables/leakage.csv", "figures/metrics.png", "figures/metrics.pdf"):
        assert (tmp_path / name).stat().st_size > 0


def test_generated_report_files(generated):
    _, out = generated
    page = (out / "report.html").read_text()
    assert "Reduced set" in page and "uce" in page and "rece" in page
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["name"] for s in metrics["states"]] == ["base", "uce-bench", "rece-bench"]
    assert [r["method"] for r in metrics["headline"]] == ["base", "uce", "rece"]
    assert metrics["plan"]["seeds"] == [0] and metrics["plan"]["settings"]["steps"] == 2
    assert metrics["run_files"]["base"]["complete"] == metrics["plan"]["images_per_state"]
    for name in ("base.h5", "uce-bench.h5", "rece-bench.edit", "records.csv", "figures/retain_by_distance.pdf"):
        assert (out / name).exists()


def test_example_maps_of_a_pair_prompt(generated):
    _, out = generated
    with RunFile(out / "base.h5") as runs:
        key, run = next((k, r) for k, r in index_runs(runs).items() if "+" in k[0])  # a two-object prompt
        words = runs.words(run)  # "a wooden bench and a cat"
        leak = Leak("uce", "uce-bench", "base", key[0], runs.record(run).prompt, key[1], "bench", words[-1],
                    words[1], False, 0.0, True, 1.0)
        regions = leak_regions(runs, run, leak)
        view = render_side(runs, run, leak, "before", regions)
    assert set(regions) == {"bench", words[-1]} and all(r.dtype == bool for r in regions.values())
    assert len(view.figure.axes) == 4  # the image, the attribute word, both objects
    assert set(view.binding) == {"bench", words[-1]}
    assert sum(view.binding.values()) == pytest.approx(1.0)


def test_before_after_run_files_give_the_same_numbers(generated, tmp_path):
    model, out = generated
    assert cli.main(["leakage-report", "--before", str(out / "base.h5"), "--after", str(out / "uce-bench.h5"),
                     "--model", str(model), "--threads", "1", "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "metrics.json").read_text())
    first = json.loads((out / "metrics.json").read_text())
    assert again["erased"] == "bench"
    for table in ("target", "retain", "leakage"):
        assert again["tables"][table] == [r for r in first["tables"][table] if r["method"] in ("base", "uce")]


def test_phases_resume_a_state_and_report_only_what_is_complete(generated, tmp_path, capsys):
    model, done = generated
    out = tmp_path / "phased"
    shutil.copytree(done, out)
    command = ["leakage-report", "--erase", "bench", "--method", "uce", "--method", "rece", "--model", str(model),
               "--steps", "2", "--seeds", "1", "--batch-size", "8", "--threads", "1", "--no-progress",
               "--out", str(out)]
    capsys.readouterr()
    assert cli.main([*command, "--state", "uce"]) == 0  # sampled and judged already: nothing to do
    assert "uce-bench: all" in capsys.readouterr().out and not (out / "uce-bench.timing.json").exists()
    (out / "rece-bench.answers.csv").unlink()
    assert cli.main([*command, "--report-only"]) == 1
    assert "rece-bench: no answers" in capsys.readouterr().err
    assert cli.main([*command, "--report-only", "--state", "base", "--state", "uce"]) == 0
    summary = (out / "summary.md").read_text()
    assert "erasing “bench” with UCE" in summary and "| base | no timing file |" in summary
    assert "### target" in summary and "Not measured" in summary
    metrics = json.loads((out / "metrics.json").read_text())
    assert {r["method"] for r in metrics["tables"]["target"]} == {"base", "uce"}


BROWSER = pytest.mark.skipif(os.environ.get("ATTNSCOPE_BROWSER_TESTS") != "1" or not shutil.which("chromium"),
                             reason="opt-in: set ATTNSCOPE_BROWSER_TESTS=1 and install chromium")


def screenshot(page, tmp_path) -> np.ndarray:
    """Grey pixels (2000, 1200) of ``page`` rendered by headless Chromium."""
    shot = tmp_path / "report.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1200,2000", f"--screenshot={shot}", page.as_uri()],
        check=True, timeout=120, capture_output=True,
    )
    return np.asarray(Image.open(shot).convert("L"))


@BROWSER
def test_report_renders_in_headless_chromium(generated, tmp_path):
    _, out = generated
    pixels = screenshot(out / "report.html", tmp_path)
    assert pixels.shape == (2000, 1200)
    assert (pixels < 128).mean() > 0.01  # text and figures were drawn, not a blank page


@pytest.fixture(scope="module")
def ablated(generated, tmp_path_factory):
    """--ablate kv, resumed in a copy of a finished report folder: only the keys-only and values-only parts
    of the edit are sampled."""
    model, done = generated
    out = tmp_path_factory.mktemp("ablated") / "report"
    shutil.copytree(done, out)
    assert cli.main(["leakage-report", "--erase", "bench", "--method", "uce", "--ablate", "kv", "--model", str(model),
                     "--steps", "2", "--seeds", "1", "--batch-size", "8", "--threads", "1", "--no-progress",
                     "--examples", "0", "--out", str(out)]) == 0
    return out


def test_ablation_by_keys_and_values_adds_the_inside_sections(ablated):
    out = ablated
    metrics = json.loads((out / "metrics.json").read_text())
    rows = metrics["inside"]["ablation"]["rows"]
    assert {r["part"] for r in rows} == {"all", "k", "v"} and {r["edit"] for r in rows} == {"uce"}
    assert {"ablation", "dispersal:uce-bench", "outcome:uce-bench"} <= set(metrics["inside"])
    assert metrics["inside"]["outcome:uce-bench"]["images"] > 0
    for stem in ("ablation", "dispersal_uce-bench", "outcome_uce-bench"):
        assert (out / "figures" / f"{stem}.png").exists() and (out / "figures" / f"{stem}.pdf").exists()
    html = (out / "report.html").read_text()
    assert "Which part of the edit causes which side effect" in html and "Does attention explain the leak?" in html
    assert (out / "uce-bench@k.answers.csv").exists() and (out / "tables" / "ablation.csv").exists()


@BROWSER
def test_ablation_report_renders_in_headless_chromium(ablated, tmp_path):
    pixels = screenshot(ablated / "report.html", tmp_path)
    assert (pixels < 128).mean() > 0.01
