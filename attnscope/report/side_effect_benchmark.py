"""The side-effect benchmark from nothing (or from run files) to its report: what
``attnscope leakage-report`` does, as one function (:func:`leakage_report`).

Three modes, chosen by :class:`~attnscope.runner.presets.LeakageOptions`:

* **generate** — the base model and each method's edit sample every prompt ×
  seed with capture (``out/base.h5``, ``out/uce-bench.h5``, ...), the judge
  answers each prompt's questions (``out/*.answers.csv``), then the report is
  written (``report.html``, ``metrics.json``, ``records.csv``, ``tables/``,
  ``figures/``); re-running resumes. Under ``torchrun`` each process samples
  its shard and the first writes the report.
* **existing run files** — ``before`` (the unedited model) and ``after``
  (edited): judged and reported, nothing sampled.
* **phases** — ``state``, ``throughput``, ``report_only``, each its own
  process (:func:`~attnscope.report.benchmark.phased_benchmark`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from attnscope.datasets.see import split
from attnscope.judges import BlipVQAJudge, Florence2Judge, Judge, QwenVLJudge, ToyOracle
from attnscope.models import load_pipeline
from attnscope.models.prompts import text_embedder
from attnscope.report.benchmark import BenchmarkSettings, phased_benchmark
from attnscope.report.leakage import ReportInputs, StateInfo, write_leakage_report
from attnscope.runner import (
    BASE,
    Plan,
    Reduction,
    State,
    ablation_states,
    benchmark_prompts,
    edited_states,
    init_distributed,
    judge_run_file,
    read_ledgers,
    sample_states,
)
from attnscope.runner.presets import FULL_SEEDS, FULL_STEPS, REDUCED_SEEDS, REDUCED_STEPS, LeakageOptions
from attnscope.sampling import SamplerSettings
from attnscope.store import RunFile


def cpu_threads(setting: str) -> int:
    """The number of torch CPU threads for ``--threads``: a number, or ``"auto"``: one core less
    than the machine has (at least 1).

    Why not all cores: OpenMP threads spin while they wait for each other, so
    when any other work shares the cores (the writer thread, another job),
    a thread per core stalls — on a shared 2-core machine two threads sampled
    3-25x slower than one.
    """
    if setting != "auto":
        return int(setting)
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - 1))


def load_judge(kind: str, model: str | None, device) -> Judge:
    """The judge ``kind`` (:data:`~attnscope.runner.presets.JUDGES`) on ``device``; a VQA judge from
    ``model`` (a local folder or cached hub id)."""
    if kind == "oracle":
        return ToyOracle.load(device=device)
    if not model:
        raise ValueError(f"--judge {kind} needs --judge-model PATH (a local folder or cached hub id)")
    judges = {"blip": BlipVQAJudge, "florence2": Florence2Judge, "qwen2.5-vl": QwenVLJudge}
    return judges[kind].from_pretrained(model, device=device)


def _prompts(kind: str, judge: str, erased: list[str]):
    if kind == "see" and judge == "oracle":
        raise ValueError("the toy oracle only knows the toy world: use --prompts toy or a VQA --judge")
    return benchmark_prompts(kind, erased)


def _load(options: LeakageOptions, model: str, device):
    dtype = None if options.dtype is None else getattr(torch, options.dtype)
    return load_pipeline(model, device=device, dtype=dtype)


def _kind(options: LeakageOptions) -> str:
    return options.prompts or ("toy" if options.judge == "oracle" else "see")


def _plan(options: LeakageOptions, pipe) -> Plan:
    """The benchmark's plan: every prompt × seed with ``full``, else the reduced set."""
    rows = split(_prompts(_kind(options), options.judge, options.erase), options.erase, embed=text_embedder(pipe))
    seeds = options.seeds or (FULL_SEEDS if options.full else REDUCED_SEEDS)
    steps = options.steps or (FULL_STEPS if options.full else REDUCED_STEPS)
    plan = Plan(tuple(rows), tuple(range(seeds)), SamplerSettings(steps=steps, guidance_scale=options.guidance),
                tuple(options.erase))
    return plan if options.full else plan.reduced(Reduction())


def _settings(options: LeakageOptions, **extra) -> dict:
    """The report's settings table: the options that shape the numbers, the CPU threads, ``extra``."""
    keep = ("erase", "method", "epochs", "ablate", "full", "seeds", "steps", "guidance", "batch_size", "model",
            "dtype", "no_capture", "storage", "examples", "out")
    return {**{k: getattr(options, k) for k in keep}, "cpu_threads": torch.get_num_threads(), **extra}


def _write(options: LeakageOptions, inputs: ReportInputs, started: float) -> list[Path]:
    path = write_leakage_report(options.out, inputs, examples=options.examples)
    seconds = time.perf_counter() - started
    print(f"wrote {path} (+ metrics.json, records.csv, tables/, figures/); {seconds:.0f} s in all")
    return [path]


def _generate(options: LeakageOptions, started: float) -> list[Path]:
    if not options.erase:
        raise ValueError("name a concept to erase with --erase (or report on run files with --before/--after)")
    methods = options.method or ["uce", "rece"]
    shard, device = init_distributed(options.device)
    pipe = _load(options, options.model, device)
    judge = load_judge(options.judge, options.judge_model, pipe.device)
    plan = _plan(options, pipe)
    seeds, steps = len(plan.seeds), plan.settings.steps
    edited = edited_states(pipe, methods, options.erase, options.out, epochs=options.epochs, shard=shard)
    states = [BASE, *edited, *(part for kind in options.ablate for part in ablation_states(pipe, edited, kind))]
    passes = sample_states(pipe, plan, states, options.out, judge=judge, capture_maps=not options.no_capture,
                               batch_size=options.batch_size, shard=shard, progress=not options.no_progress,
                               storage=options.storage)
    if not shard.is_main:
        return []
    notes = []
    if plan.note:
        notes.append(f"Reduced set (no --full): {plan.note}; {seeds} seeds, {steps} sampling steps. "
                     f"The full benchmark is every prompt × {FULL_SEEDS} seeds × {FULL_STEPS} steps (--full).")
    timing = {r.state: {"sampled": r.sampled, "sample_seconds": round(r.sample_seconds, 2),
                        "images_per_second": round(r.images_per_second, 3), "judged": r.judged,
                        "judge_seconds": round(r.judge_seconds, 2)} for r in passes}
    inputs = ReportInputs(
        erased=plan.label,
        records=read_ledgers([options.out / f"{s.name}.answers.csv" for s in states]),
        states=[StateInfo(s.name, s.method, None if options.no_capture else options.out / f"{s.name}.h5",
                          s.edit.meta if s.edit else None, timing[s.name]) for s in states],
        settings=_settings(options, device=str(pipe.device), judge=judge.name, prompts=_kind(options),
                           processes=shard.world),
        plan=plan.summary(),
        notes=notes,
        wall_seconds=time.perf_counter() - started,
    )
    return _write(options, inputs, started)


def _existing(options: LeakageOptions, started: float) -> list[Path]:
    if not options.before or not options.after:
        raise ValueError("--before and --after go together: one run file of the unedited model and at least one edited")
    edits = {}
    for path in options.after:
        with RunFile(path) as runs:
            edits[path] = (runs.schema.edit or {}).get("edits") or []
        if not edits[path]:
            raise ValueError(f"{path} was captured without an edit: it cannot be an --after file")
    with RunFile(options.before) as runs:
        if runs.schema.edit:
            raise ValueError(f"{options.before} was captured with an edit applied: it cannot be the --before file")
        model = options.model if options.model != "toy" else runs.schema.model.get("id") or "toy"
    erased = options.erase or list(edits[options.after[0]][-1].get("concepts", []))
    if not erased:
        raise ValueError("the edit does not name its concepts: pass --erase CONCEPT")
    kind = _kind(options)
    pipe = _load(options, model, options.device)
    judge = load_judge(options.judge, options.judge_model, pipe.device)
    rows = {r.prompt.prompt_id: r for r in split(_prompts(kind, options.judge, erased), erased,
                                                  embed=text_embedder(pipe))}
    label = "+".join(erased)
    methods = [edits[p][-1].get("method", p.stem) for p in options.after]
    states = [State("base", "base")] + [
        State(path.stem if path.stem != "base" else "after", method if methods.count(method) == 1 else path.stem)
        for path, method in zip(options.after, methods)
    ]
    files = [options.before, *options.after]
    timing = {}
    for state, path in zip(states, files):
        done = judge_run_file(judge, path, state, rows, options.out, erased=label, batch_size=options.batch_size)
        timing[state.name] = {"runs": done.jobs, "judged": done.judged, "judge_seconds": round(done.judge_seconds, 2)}
    inputs = ReportInputs(
        erased=label,
        records=read_ledgers([options.out / f"{s.name}.answers.csv" for s in states]),
        states=[StateInfo(s.name, s.method, path, (edits.get(path) or [None])[-1], timing[s.name])
                for s, path in zip(states, files)],
        settings=_settings(options, device=str(pipe.device), judge=judge.name, prompts=kind,
                           before=str(options.before), after=[str(p) for p in options.after]),
        wall_seconds=time.perf_counter() - started,
    )
    return _write(options, inputs, started)


def _phased(options: LeakageOptions) -> list[Path]:
    if not options.erase:
        raise ValueError("name the concept the states erase with --erase")
    if options.before or options.after or options.ablate:
        raise ValueError("--state, --throughput and --report-only run the generated benchmark: "
                         "no --before/--after, no --ablate")
    pipe = _load(options, options.model, options.device)
    judge = load_judge(options.judge, options.judge_model, pipe.device)
    plan = _plan(options, pipe)
    notes = [f"Reduced set (no --full): {plan.note}; {len(plan.seeds)} seeds, {plan.settings.steps} sampling steps."
             ] if plan.note else []
    settings = BenchmarkSettings(
        model=str(options.model), judge=judge.name, device=None, steps=plan.settings.steps,
        guidance=options.guidance, batch_size=options.batch_size, epochs=options.epochs, notes=notes,
        extra=_settings(options, prompts=_kind(options)))
    expected = options.state or ["base", *(options.method or ["uce", "rece"])]
    written = phased_benchmark(pipe, judge, plan, options.out, settings,
                               states=[] if options.report_only else options.state or [],
                               throughput=options.throughput, report=expected if options.report_only else None,
                               progress=not options.no_progress)
    if written is None:
        return []
    summary, html = written
    print(f"wrote {html} and {summary} (+ metrics.json, records.csv, tables/, figures/)")
    return [html, summary]


def leakage_report(options: LeakageOptions) -> list[Path]:
    """Run the side-effect benchmark as ``options`` ask (see the module docstring) and write its report
    into ``options.out``; returns the report files written (none for a phase that writes no report,
    or a process of ``torchrun`` other than the first).

    Raises :class:`~attnscope.runner.leakage.IncompleteStates` when ``report_only`` finds states
    without all their answers.
    """
    started = time.perf_counter()
    torch.set_num_threads(cpu_threads(options.threads))
    options.out.mkdir(parents=True, exist_ok=True)
    try:
        if options.phased:
            return _phased(options)
        if options.before or options.after:
            return _existing(options, started)
        return _generate(options, started)
    finally:
        if dist.is_initialized():  # joined by init_distributed under torchrun
            dist.destroy_process_group()
