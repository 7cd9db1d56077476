"""The phased side-effect benchmark's report: a Markdown summary beside the HTML leakage report.

:func:`write_benchmark_report` takes what :func:`attnscope.runner.leakage.collect`
found in the work folder and writes ``summary.md`` (what ran, the states'
wall time and timings, images/s with and without capture, every metric with
its interval) and the HTML report with its tables and figures
(:func:`~attnscope.report.leakage.write_leakage_report`) into that folder;
:func:`phased_benchmark` runs the phases asked for and then writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import torch

from attnscope.analyses.side_effects import to_markdown
from attnscope.report.leakage import ReportInputs, StateInfo, side_effect_metrics, write_leakage_report
from attnscope.judges.base import Judge
from attnscope.runner.leakage import Collected, IncompleteStates, Timing, leakage_benchmark
from attnscope.runner.plan import Plan
from attnscope.runner.states import BASE

METRICS = ("target", "evasion", "retain", "retain_attributes", "leakage", "retain_by_distance")
GROUPS = {"evasion": ("method", "erased", "relation"), "retain_by_distance": ("method", "erased", "attr_distance")}


@dataclass
class BenchmarkSettings:
    """What the summary says was run: ``model`` and ``judge`` names, ``device`` (``None``: the one the
    states were sampled on), sampler ``steps`` and ``guidance``, ``batch_size``, RECE ``epochs``, and
    ``notes`` shown first (e.g. a smoke run's)."""

    model: str
    judge: str
    device: str | None
    steps: int | None
    guidance: float | None
    batch_size: int
    epochs: int = 3
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # more rows of the HTML report's settings table


def states_lines(timings: dict[str, Timing | None], wall: float | None) -> list[str]:
    """The states' wall time and whether they ran in parallel."""
    found = [t for t in timings.values() if t]
    if not found:
        return ["- states: no timing files in the work folder (answers made by another session)"]
    own = sum(t["finished"] - t["started"] for t in found)
    overlap = any(a["started"] < b["finished"] and b["started"] < a["finished"] for a, b in combinations(found, 2))
    devices = sorted({f"{t['device']} ({t['torch_device']})" for t in found})
    if overlap:
        where = f"on one GPU, {devices[0]}" if len(devices) == 1 and found[0]["torch_device"] != "cpu" \
            else f"on {', '.join(devices)}"
        how = f"ran in parallel processes {where} (their time intervals overlap)"
    else:
        how = f"ran one after another on {', '.join(devices)}"
    lines = [f"- states: wall time {wall:.0f} s from the first state's start to the last one's finish (edit, "
             f"sampling with capture, judging; the sum of the states' own times is {own:.0f} s); the "
             f"{len(found)} states{' with timing files' if len(found) < len(timings) else ''} {how}"]
    for t in found:
        if t["sampled"] < t["jobs"]:
            lines.append(f"- RESUMED: {t['state']}'s timings cover the {t['sampled']} of its {t['jobs']} images "
                         "sampled in its last session")
    return lines


def state_table(names: Sequence[str], timings: dict[str, Timing | None]) -> list[str]:
    """Per state: images, seconds and images/s with capture, judging, run file size, time interval."""
    found = [t for t in timings.values() if t]
    zero = min((t["started"] for t in found), default=0.0)
    lines = ["| state | images | sample s | img/s with capture | judge s | edit s | run file GB "
             "| ran (s after first start) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name in names:
        t = timings[name]
        if t is None:
            lines.append(f"| {name} | no timing file | | | | | | |")
            continue
        rate = f"{t['images_per_second']:.1f}" if t["images_per_second"] else "–"
        lines.append(f"| {name} | {t['sampled']} | {t['sample_seconds']:.1f} | {rate} | {t['judge_seconds']:.1f} "
                     f"| {t['edit_seconds']:.1f} | {t['run_file_gb']:.2f} "
                     f"| {t['started'] - zero:.0f} → {t['finished'] - zero:.0f} |")
    return lines


def throughput_lines(result: dict | None, work: Path) -> list[str]:
    """The with / without capture comparison of ``throughput.json``."""
    if result is None:
        return [f"Not measured: no {work / 'throughput.json'} (run the throughput phase on a quiet GPU)."]
    return [
        f"{result['images']} images of the base model (its first {result['batches']} batch(es) of jobs, batch size "
        f"{result['batch_size']}, after a warm-up batch), sampled in four passes — with capture, without, without, "
        f"with — in one process on a quiet {result['device']}; the table gives the mean of the two passes of each "
        "kind. A pass with capture is one capture context over all its batches, as the runner samples a state: "
        "every cross-attention map of every step goes to a scratch run file, and the writer's drain at its close "
        "is included. Pass seconds: " + ", ".join(
            f"{'with' if p['capture'] else 'without'} {p['seconds']:.1f}" for p in result["passes"]) + ".",
        "",
        "| | seconds | images/s |",
        "|---|---:|---:|",
        f"| with capture | {result['seconds_with_capture']:.1f} | {result['images_per_second_with_capture']:.2f} |",
        f"| without capture | {result['seconds_without_capture']:.1f} "
        f"| {result['images_per_second_without_capture']:.2f} |",
        f"| **ratio** (images/s with / without) | | **{result['ratio']:.3f}** |",
    ]


def metrics_lines(tables: dict[str, list]) -> list[str]:
    lines = []
    for name in METRICS:
        if tables.get(name):
            group = GROUPS.get(name, ("method", "erased"))
            lines += [f"### {name.replace('_', ' ')}", "", to_markdown(tables[name], group)]
    return lines


def header_lines(plan: Plan, found: Collected, settings: BenchmarkSettings) -> list[str]:
    """Title and what was run: prompts, seeds, states, sampler, judge, device, capture."""
    edited = [m.upper() for m in found.methods if m != BASE.method]
    kinds = plan.summary()["kinds"]
    guidance = "the model's default CFG" if settings.guidance is None else f"CFG {settings.guidance}"
    return [
        f"# SEE-style side effects on the {settings.model} model: erasing “{plan.label}”"
        + (f" with {' and '.join(edited)}" if edited else ""),
        "",
        *[f"- {note}" for note in settings.notes],
        f"- {len(plan.rows)} prompts ({kinds['single']} single-object, {kinds['pair']} two-object) × seeds "
        f"{list(plan.seeds)} = {len(plan.jobs())} images per model state; states {', '.join(found.names)}"
        + (f" (RECE {settings.epochs} epochs)" if "rece" in found.methods else "")
        + ", library default hyper-parameters",
        f"- {settings.steps} sampling steps, {guidance}, batch {settings.batch_size}; judge: {settings.judge}; "
        f"device: {settings.device}; torch {torch.__version__}",
        "- capture: every cross-attention layer, every step, the prompt's tokens, heads averaged, float16, "
        "written to disk by the writer thread (its drain at the end is included)",
    ]


def benchmark_markdown(plan: Plan, found: Collected, settings: BenchmarkSettings) -> str:
    """The Markdown summary (see the module docstring)."""
    return "\n".join([
        *header_lines(plan, found, settings),
        *states_lines(found.timings, found.wall_seconds),
        "",
        "## Model states: sampling with capture, judging",
        "",
        *state_table(found.names, found.timings),
        "",
        "## Throughput: images/s with capture vs without",
        "",
        *throughput_lines(found.throughput, found.work),
        "",
        "## Metrics (rate of yes answers, 95% cluster-bootstrap interval over prompts; Δ vs base, paired)",
        "",
        *metrics_lines(side_effect_metrics(found.records)),
    ])


def report_inputs(plan: Plan, found: Collected, settings: BenchmarkSettings) -> ReportInputs:
    """The HTML report's inputs; notes the states whose run files are gone (no example images from them)."""
    keep = ("sampled", "sample_seconds", "images_per_second", "judge_seconds", "edit_seconds", "run_file_gb")
    states = [StateInfo(name, method, found.work / f"{name}.h5", found.edits[name],
                        {k: found.timings[name][k] for k in keep} if found.timings[name] else None)
              for name, method in zip(found.names, found.methods)]
    table = {"model": settings.model, "judge": settings.judge, "device": settings.device,
             "batch_size": settings.batch_size, **settings.extra}
    if found.throughput:
        t = found.throughput
        table["throughput"] = (f"{t['images_per_second_with_capture']:.2f} images/s with capture, "
                               f"{t['images_per_second_without_capture']:.2f} without, ratio {t['ratio']:.3f} "
                               f"({t['images']} images, interleaved)")
    notes = list(settings.notes)
    absent = [s.name for s in states if not s.run_file.exists()]
    if absent:
        notes.append(f"Run files not in the work folder ({', '.join(absent)}): no example images from them.")
    return ReportInputs(erased=plan.label, records=found.records, states=states, settings=table,
                        plan=plan.summary(), notes=notes, wall_seconds=found.wall_seconds)


def write_benchmark_report(plan: Plan, found: Collected, settings: BenchmarkSettings) -> tuple[Path, Path]:
    """Write ``summary.md`` and the HTML report (``report.html`` and its files) into ``found.work``;
    returns both paths. The states must be complete (``found.problems`` empty)."""
    if found.problems:
        raise ValueError("states incomplete: " + "; ".join(found.problems))
    summary = found.work / "summary.md"
    summary.write_text(benchmark_markdown(plan, found, settings))
    return summary, write_leakage_report(found.work, report_inputs(plan, found, settings))


def phased_benchmark(pipe, judge: Judge, plan: Plan, work: Path, settings: BenchmarkSettings, *,
                     states: Sequence[str] = (), throughput: int | None = None, report: Sequence[str] | None = None,
                     progress: bool = True) -> tuple[Path, Path] | None:
    """The phases asked for (:func:`~attnscope.runner.leakage.leakage_benchmark`: ``states``, then
    ``throughput``), then with ``report`` (the methods it expects) the report of what ``work`` holds:
    ``(summary.md, report.html)``; ``None`` without ``report``.

    Raises :class:`~attnscope.runner.leakage.IncompleteStates` when an expected state lacks answers.
    """
    found = leakage_benchmark(pipe, judge, plan, work, states=states, throughput=throughput, report=report,
                              epochs=settings.epochs, batch_size=settings.batch_size, progress=progress)
    if found is None:
        return None
    if found.problems:
        raise IncompleteStates(found.problems)
    if settings.device is None:
        settings = replace(settings, device=found.device(pipe.device))
    return write_benchmark_report(plan, found, settings)
