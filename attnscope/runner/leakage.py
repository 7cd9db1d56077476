"""The side-effect benchmark in phases, each runnable as its own process
(``attnscope leakage-report --state/--throughput/--report-only``, ``benchmarks/see_toy.py``).

* **states** (:func:`run_timed_state`) — one model state, the base model or one
  method's edit of the plan's erased concepts, sampled with capture into
  ``{work}/{state}.h5`` and judged into ``{work}/{state}.answers.csv``
  (:func:`~attnscope.runner.passes.sample_state`: resumable), then
  ``{work}/{state}.timing.json``. An edited state computes only its own edit
  (``{work}/{state}.edit``), so states can run as parallel processes on one GPU;
  a re-run that finds nothing left to do keeps the timing file.
* **throughput** (:func:`measure_throughput`) — the base model's first N
  batches, after a warm-up batch, in four passes (with capture, without,
  without, with; the writer's drain included): ``{work}/throughput.json``.
* **report** (:func:`collect`) — no sampling: every expected state's answers
  and timings as found in ``work``, and which states lack answers.

:func:`leakage_benchmark` runs the phases asked for, in that order.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from attnscope.erasure.edit import Edit
from attnscope.hooks import capture
from attnscope.judges.base import Judge
from attnscope.runner.plan import Plan, job_key
from attnscope.runner.records import read_ledgers, record_key
from attnscope.runner.passes import sample_state
from attnscope.runner.states import BASE, edited_states, state_name
from attnscope.runner.timing import device_name, timed
from attnscope.sampling import SamplerSettings, batches, sample_batch

Timing = dict[str, Any]
PASSES = ("with", "without", "without", "with")  # ABBA: a linear drift hits both alike


def file_stem(method: str, erased: Sequence[str]) -> str:
    """A state's file stem: ``base`` or e.g. ``uce-furniture``."""
    return BASE.name if method == BASE.method else state_name(method, erased)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


# --------------------------------------------------------------------------- phase 1: states


def run_timed_state(pipe, judge: Judge, method: str, plan: Plan, work: Path, *, epochs: int = 3,
                    batch_size: int = 16, progress: bool = True) -> Timing | None:
    """Sample ``method``'s state with capture, judge it, and write ``{state}.timing.json``.

    The edit (only this method's) is computed first; ``started`` is taken
    before it. Returns the timing, or ``None`` when an earlier session had
    already done every job (its timing file is kept).
    """
    started = time.time()
    state = BASE if method == BASE.method else edited_states(pipe, [method], plan.erased, work, epochs=epochs)[0]
    edit_seconds = time.time() - started
    done = sample_state(pipe, state, plan, work, judge=judge, batch_size=batch_size, progress=progress)
    path = work / f"{state.name}.timing.json"
    if not (done.sampled or done.judged):
        print(f"{state.name}: all {done.jobs} jobs were done already; kept {path.name}", flush=True)
        return None
    run_file = work / f"{state.name}.h5"
    timing = {
        "state": state.name,
        "method": state.method,
        "jobs": done.jobs,
        "sampled": done.sampled,
        "sample_seconds": round(done.sample_seconds, 3),
        "judged": done.judged,
        "judge_seconds": round(done.judge_seconds, 3),
        "images_per_second": round(done.images_per_second, 3) if done.sampled else None,
        "edit_seconds": round(edit_seconds, 3),
        "started": started,
        "finished": time.time(),
        "device": device_name(pipe.device),
        "torch_device": str(pipe.device),
        "batch_size": batch_size,
        "run_file_gb": round(run_file.stat().st_size / 1e9 if run_file.exists() else 0.0, 6),
    }
    path.write_text(json.dumps(timing, indent=1))
    print(f"{state.name}: {done.sampled} images with capture in {done.sample_seconds:.1f} s "
          f"({done.images_per_second:.1f}/s), {done.judged} judged in {done.judge_seconds:.1f} s; wrote {path}",
          flush=True)
    return timing


# --------------------------------------------------------------------------- phase 2: throughput


def _sample_captured(pipe, chosen: list[list], settings: SamplerSettings, sink: Path) -> None:
    """The batches in one capture context, as the runner samples a state; returns once the writer has drained."""
    with capture(pipe, sink=sink) as cap:
        for batch in chosen:
            sample_batch(pipe, batch, settings, cap)
    sink.unlink()


def _sample_plain(pipe, chosen: list[list], settings: SamplerSettings) -> None:
    for batch in chosen:
        sample_batch(pipe, batch, settings)


def measure_throughput(pipe, plan: Plan, work: Path, n_batches: int, *, batch_size: int = 16) -> dict:
    """The base model's first ``n_batches`` batches, sampled in passes with and without capture
    (:data:`PASSES`); writes and returns ``throughput.json``."""
    scratch = work / "throughput.h5"
    chosen = list(batches(plan.jobs(), batch_size))[:n_batches]
    scratch.unlink(missing_ok=True)
    started = time.time()
    _sample_captured(pipe, chosen[:1], plan.settings, scratch)  # warm-up of both paths: kernels, allocator
    _sample_plain(pipe, chosen[:1], plan.settings)
    passes = []
    for kind in PASSES:
        if kind == "with":
            seconds = timed(lambda: _sample_captured(pipe, chosen, plan.settings, scratch), pipe.device).seconds
        else:
            seconds = timed(lambda: _sample_plain(pipe, chosen, plan.settings), pipe.device).seconds
        passes.append({"capture": kind == "with", "seconds": round(seconds, 3)})
    images = sum(len(batch) for batch in chosen)
    with_s = sum(p["seconds"] for p in passes if p["capture"])
    without_s = sum(p["seconds"] for p in passes if not p["capture"])
    n_each = len(PASSES) // 2
    rate_with, rate_without = n_each * images / with_s, n_each * images / without_s
    result = {
        "images": images,
        "batches": len(chosen),
        "batch_size": batch_size,
        "passes": passes,
        "seconds_with_capture": round(with_s / n_each, 3),
        "seconds_without_capture": round(without_s / n_each, 3),
        "images_per_second_with_capture": round(rate_with, 3),
        "images_per_second_without_capture": round(rate_without, 3),
        "ratio": round(rate_with / rate_without, 4),
        "device": device_name(pipe.device),
        "started": started,
        "finished": time.time(),
    }
    path = work / "throughput.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"throughput: {images} images, {result['images_per_second_with_capture']}/s with capture, "
          f"{result['images_per_second_without_capture']}/s without, ratio {result['ratio']}; wrote {path}",
          flush=True)
    return result


# --------------------------------------------------------------------------- phase 3: what the report reads


def read_answers(path: Path) -> list[dict]:
    """A state's judged records, less a last line cut by a killed writer (the ledger drops it when reopened).

    Read-only: a state's process may still be appending to the file.
    """
    records = read_ledgers([path])
    if records and not path.read_bytes().endswith(b"\n"):
        records.pop()
    return records


def missing_jobs(records: Sequence[dict], plan: Plan) -> int:
    """How many of the plan's jobs lack some of their answers in ``records``."""
    counts = Counter(record_key(r) for r in records)
    rows = plan.by_id()
    return sum(counts[job_key(job)] < len(rows[job.extra["prompt_id"]].prompt.questions) for job in plan.jobs())


class IncompleteStates(Exception):
    """States the report expects lack answers; ``problems``: one line per state."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("states incomplete (run their --state phase again, it resumes):\n  "
                         + "\n  ".join(self.problems))


@dataclass
class Collected:
    """The expected states as the report phase finds them in ``work``.

    ``names``/``methods``: the states in report order; ``answers``, ``timings``
    (``None`` without a timing file) and ``edits`` (the edit files' metadata)
    by state name; ``throughput``: ``throughput.json`` if measured;
    ``problems``: one line per state whose answers do not cover the plan.
    """

    work: Path
    names: list[str]
    methods: list[str]
    answers: dict[str, list[dict]]
    timings: dict[str, Timing | None]
    edits: dict[str, dict | None]
    throughput: dict | None
    problems: list[str]

    @property
    def records(self) -> list[dict]:
        return [r for name in self.names for r in self.answers[name]]

    @property
    def wall_seconds(self) -> float | None:
        """From the first state's start to the last one's finish (``None`` without timing files)."""
        found = [t for t in self.timings.values() if t]
        return max(t["finished"] for t in found) - min(t["started"] for t in found) if found else None

    def device(self, fallback: torch.device) -> str:
        """The device the states were sampled on (the first timing file's), else ``fallback``'s name."""
        found = [t for t in self.timings.values() if t]
        return found[0]["device"] if found else device_name(fallback)


def collect(plan: Plan, work: Path, methods: Sequence[str]) -> Collected:
    """Read every expected state's answers, timing and edit metadata from ``work`` (no sampling)."""
    names = [file_stem(m, plan.erased) for m in methods]
    answers = {name: read_answers(work / f"{name}.answers.csv") for name in names}
    problems = []
    for name, records in answers.items():
        if not records:
            problems.append(f"{name}: no answers ({work / f'{name}.answers.csv'})")
        elif missing := missing_jobs(records, plan):
            problems.append(f"{name}: {missing} of {len(plan.jobs())} jobs lack answers")
    edits = {name: Edit.load(work / f"{name}.edit").meta if (work / f"{name}.edit").exists() else None
             for name in names}
    return Collected(work, names, list(methods), answers,
                     {name: _read_json(work / f"{name}.timing.json") for name in names}, edits,
                     _read_json(work / "throughput.json"), problems)


def leakage_benchmark(pipe, judge: Judge, plan: Plan, work: Path, *, states: Sequence[str] = (),
                      throughput: int | None = None, report: Sequence[str] | None = None, epochs: int = 3,
                      batch_size: int = 16, progress: bool = True) -> Collected | None:
    """Run the phases asked for, in order: sample and judge each method of ``states`` (``"base"``,
    ``"uce"``, ...), measure ``throughput`` on that many batches, and with ``report`` (the methods the
    report expects) return what :func:`collect` finds; ``None`` without ``report``."""
    work.mkdir(parents=True, exist_ok=True)
    for method in dict.fromkeys(states):
        run_timed_state(pipe, judge, method, plan, work, epochs=epochs, batch_size=batch_size, progress=progress)
    if throughput is not None:
        measure_throughput(pipe, plan, work, throughput, batch_size=batch_size)
    return collect(plan, work, report) if report is not None else None
