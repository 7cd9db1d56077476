"""The benchmark runner: plans, the answer ledger, resumable sampling + capture + judging."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from attnscope import cli
from attnscope.datasets.see import build_pair_prompts, build_toy_prompts, split, toy_recipe
from attnscope.judges import ToyOracle
from attnscope.models.toy import ToyModelConfig, build_toy_pipeline
from attnscope.runner import BASE, RECORD_COLUMNS, Ledger, Plan, Reduction, edited_states, job_key, sample_states
from attnscope.sampling import SamplerSettings
from attnscope.store import RunFile
from attnscope.store.reader import index_runs

SETTINGS = SamplerSettings(steps=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe():
    pipe = build_toy_pipeline(ToyModelConfig.tiny())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def rows():
    return split(build_toy_prompts() + build_pair_prompts(toy_recipe()), "bench")


@pytest.fixture(scope="module")
def oracle():
    return ToyOracle.load()


def small_plan(rows, seeds=(0, 1)) -> Plan:
    return Plan(tuple(rows), seeds, SETTINGS, ("bench",)).reduced(
        Reduction(targets=2, retain_per_class=0, neighbours_per_class=1, leakage_pairs=2))


def test_reduction_is_stratified_seeded_and_keeps_order(rows):
    plan = Plan(tuple(rows), (0, 1), SETTINGS, ("bench",))
    small = plan.reduced(Reduction())
    assert small.reduced(Reduction()).rows == small.rows  # idempotent given the sample
    assert plan.reduced(Reduction()).rows == small.rows  # seeded: the same sample every time
    singles = [r for r in small.rows if r.prompt.kind == "single"]
    targets = [r for r in singles if r.role == "target"]
    assert len(targets) == 6 and targets[0].prompt.prompt == "a bench"  # the bare concept is always in
    retained = {r.prompt.object: sum(r2.prompt.object == r.prompt.object for r2 in singles)
                for r in singles if r.role == "retain"}
    assert retained == {"bicycle": 1, "bird": 1, "bus": 1, "cake": 1, "car": 1, "cat": 1, "chair": 2, "couch": 2,
                        "dog": 1, "donut": 1, "pizza": 1}  # neighbours of the bench get two
    leakage = [r for r in small.rows if r.prompt.kind == "pair"]
    assert len(leakage) == 9 and all(r.role == "target" and r.other_role == "retain" for r in leakage)
    assert {slot for r in leakage for slot in r.prompt.attributes} == {"size", "colour", "material"}
    positions = [rows.index(r) for r in small.rows]
    assert positions == sorted(positions)
    assert "28 of 1404 prompts" in small.note


def test_jobs_are_prompt_major_with_their_ids(rows):
    plan = small_plan(rows, seeds=(3, 5))
    jobs = plan.jobs()
    assert len(jobs) == 2 * len(plan.rows)
    assert [job.seed for job in jobs[:4]] == [3, 5, 3, 5]
    assert job_key(jobs[0]) == (plan.rows[0].prompt.prompt_id, 3)
    assert jobs[0].extra == {"prompt_id": plan.rows[0].prompt.prompt_id, "role": plan.rows[0].role,
                             "kind": plan.rows[0].prompt.kind}
    with pytest.raises(ValueError, match="unique"):
        Plan(plan.rows * 2, (0,), SETTINGS, ("bench",))


def test_ledger_drops_a_cut_line_and_incomplete_jobs(tmp_path):
    path = tmp_path / "answers.csv"
    row = {"prompt_id": "p", "seed": 0, "question_id": "q", "check": "presence", "judged_yes": True, "score": 0.9}
    expected = {("p", 0): 2, ("r", 0): 1}
    ledger = Ledger(path, expected)
    ledger.append([row, {**row, "question_id": "q2"}])
    ledger.append([{**row, "prompt_id": "r"}])
    assert ledger.done == {("p", 0), ("r", 0)}
    with path.open("a", newline="") as f:  # a killed writer: one whole row of a two-question job, then half a line
        csv.DictWriter(f, RECORD_COLUMNS, lineterminator="\n").writerow({**row, "prompt_id": "s"})
        f.write("s,a picture")
    reopened = Ledger(path, {**expected, ("s", 0): 2})
    assert reopened.done == {("p", 0), ("r", 0)}
    assert path.read_text().count("\n") == 4  # header + 3 complete rows; the rest is gone
    assert Ledger(path, {("p", 0): 3, ("r", 0): 1}).done == {("r", 0)}  # p now lacks a question


def test_benchmark_writes_run_files_and_one_record_per_question(tmp_path, pipe, rows, oracle):
    plan = small_plan(rows)
    states = [BASE, *edited_states(pipe, ["uce"], ["bench"], tmp_path)]
    passes = sample_states(pipe, plan, states, tmp_path, judge=oracle, batch_size=4, progress=False)
    n = len(plan.jobs())
    assert n == 12 and [(p.state, p.sampled, p.judged) for p in passes] == [("base", n, n), ("uce-bench", n, n)]

    questions = sum(len(r.prompt.questions) for r in plan.rows) * len(plan.seeds)
    for state in states:
        with RunFile(tmp_path / f"{state.name}.h5") as file:
            assert file.complete.all() and file.has_image.all()
            assert set(index_runs(file)) == {job_key(job) for job in plan.jobs()}
            assert (file.schema.edit is None) == (state.edit is None)
        lines = (tmp_path / f"{state.name}.answers.csv").read_text().splitlines()
        assert len(lines) == 1 + questions
    assert (tmp_path / "uce-bench.edit").exists()

    again = sample_states(pipe, plan, states, tmp_path, judge=oracle, batch_size=4, progress=False)
    assert [(r.sampled, r.judged) for r in again] == [(0, 0), (0, 0)]
    with pytest.raises(ValueError, match="another benchmark"):
        sample_states(pipe, small_plan(rows, seeds=(0,)), states, tmp_path, judge=oracle, progress=False)


def test_runs_captured_but_not_judged_are_judged_from_the_run_file(tmp_path, pipe, rows, oracle):
    plan = small_plan(rows, seeds=(0,))
    sample_states(pipe, plan, [BASE], tmp_path, judge=oracle, batch_size=4, progress=False)
    answers = tmp_path / "base.answers.csv"
    full = answers.read_text()
    answers.write_text("\n".join(full.splitlines()[:2]) + "\n")  # as if killed after capture, before judging
    (again,) = sample_states(pipe, plan, [BASE], tmp_path, judge=oracle, batch_size=4, progress=False)
    first_job = 1 + len(plan.rows[0].prompt.questions) == 2  # its only answer was kept
    assert again.sampled == 0 and again.judged == len(plan.rows) - first_job
    assert sorted(answers.read_text().splitlines()) == sorted(full.splitlines())


def test_without_judge_or_capture_every_job_is_sampled(tmp_path, pipe, rows):
    plan = small_plan(rows, seeds=(0,))
    for _ in range(2):
        (done,) = sample_states(pipe, plan, [BASE], tmp_path, judge=None, capture_maps=False, progress=False)
        assert done.sampled == len(plan.rows) and done.images_per_second > 0
    assert not list(tmp_path.glob("*.h5")) and not list(tmp_path.glob("*.csv"))


# --------------------------------------------------------------------------- kill and resume


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, pipe):
    folder = tmp_path_factory.mktemp("tiny-toy")
    pipe.save_pretrained(folder)
    return folder


def report_args(model, out):
    return ["leakage-report", "--erase", "bench", "--model", str(model), "--steps", "2", "--seeds", "1",
            "--batch-size", "2", "--examples", "0", "--threads", "1", "--no-progress", "--out", str(out)]


def test_a_killed_run_resumes_to_the_metrics_of_an_uninterrupted_one(tmp_path, tiny_folder):
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "attnscope.cli", *report_args(tiny_folder, killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": os.getcwd()})
    answers = killed / "uce-bench.answers.csv"
    deadline = time.monotonic() + 120
    while not (answers.exists() and answers.read_text().count("\n") > 3):  # mid-way through the second state
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "metrics.json").exists()

    assert cli.main(report_args(tiny_folder, killed)) == 0  # resumes
    assert cli.main(report_args(tiny_folder, tmp_path / "whole")) == 0
    resumed, whole = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("killed", "whole"))
    timing = {s["name"]: s["timing"] for s in resumed["states"]}
    assert timing["base"]["sampled"] == 0 and 0 < timing["uce-bench"]["sampled"] < 28  # it did resume
    assert resumed["tables"] == whole["tables"]
    assert sorted((tmp_path / "killed" / "records.csv").read_text().splitlines()) == \
        sorted((tmp_path / "whole" / "records.csv").read_text().splitlines())
