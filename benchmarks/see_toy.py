"""The full SEE-style side-effect benchmark on the built-in toy model (GPU), in phases.

Every toy prompt (single-object variants of every class, the erased
superclass's own variants, and the two-object leakage prompts) × 4 seeds ×
50 DDIM steps, for the base model and its UCE and RECE edits of ``--erase``
(default "furniture": a superclass, so evasion is measured too). The work
comes in three phases, each runnable on its own, so that one shell command
fits a 10-minute limit and the run files (about 1 MB per image) need not
outlive it:

* ``--state NAME`` (``base``, ``uce``, ``rece``; repeatable) — for each
  state, every job sampled with all cross-attention maps captured into
  ``{work}/{state}.h5`` and every question answered by the toy oracle into
  ``{work}/{state}.answers.csv``, then ``{work}/{state}.timing.json``. An
  edited state computes only its own edit (``{work}/{state}.edit``), so the
  states can run as parallel processes on one GPU. Resumable: a re-run skips
  the jobs already sampled and judged, as long as the run file is there (and
  keeps the timing file when nothing was left to do).
* ``--throughput N`` — on a quiet GPU, the base model's first N batches,
  after a warm-up batch, in four passes: with capture (one capture context
  over the N batches, into a scratch ``{work}/throughput.h5``, the writer's
  drain included), without, without, with: ``{work}/throughput.json``.
* ``--report`` — no sampling: checks that every expected state (those given
  by ``--state``, else all three) has all its answers (exit code 1 if not),
  then writes the Markdown summary to ``--out`` (the states' wall time and
  timings, images/s with and without capture and their ratio, target /
  retain / evasion / leakage per method with 95 % intervals) and the
  self-contained HTML report beside it (``.html``; its CSVs and figures go to
  ``--work``). Example images need the states' run files; without them the
  report is written without examples.

Without any of these options, one process does all three in turn (all
states, throughput with 8 batches, report).

    W=/tmp/see-toy
    for s in base uce rece; do python3 benchmarks/see_toy.py --work $W --state $s > $s.log 2>&1 & done; wait
    python3 benchmarks/see_toy.py --work $W --throughput 8
    python3 benchmarks/see_toy.py --work $W --report --out benchmarks/results/see_toy.md

    python3 benchmarks/see_toy.py --work $W --out benchmarks/results/see_toy.md    # all phases, one process
    python3 benchmarks/see_toy.py --smoke --work /tmp/st --out /tmp/see_toy.md    # tiny random model on the CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from collections import Counter
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from attnscope.analyses.side_effects import to_markdown
from attnscope.datasets.see import split
from attnscope.erasure.edit import Edit
from attnscope.hooks import capture
from attnscope.judges import ToyOracle
from attnscope.models.toy import load_toy_and_oracle
from attnscope.models.toy.pipeline import DEFAULT_GUIDANCE_SCALE
from attnscope.report import ReportInputs, StateInfo, side_effect_metrics, write_leakage_report
from attnscope.runner import (
    BASE,
    Plan,
    Reduction,
    benchmark_prompts,
    edited_states,
    job_key,
    read_ledgers,
    run_state,
    state_name,
)
from attnscope.runner.records import record_key
from attnscope.sampling import SamplerSettings, batches, sample_batch

STATES = ("base", "uce", "rece")  # the base model and the erasure methods, in report order
THROUGHPUT_BATCHES = 8  # throughput batches when no phase option is given
SMOKE_REDUCTION = Reduction(targets=3, retain_per_class=0, neighbours_per_class=1, leakage_pairs=3)
SMOKE_NOTE = ("SMOKE RUN (random tiny model and untrained oracle, reduced prompts): checks the script, "
              "numbers mean nothing.")
METRICS = ("target", "evasion", "retain", "retain_attributes", "leakage", "retain_by_distance")

Timing = dict[str, Any]


# --------------------------------------------------------------------------- setup


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options; without a phase option, all three phases (``--state`` for every state, ``--throughput 8``,
    ``--report``). Applies ``--smoke``'s reductions."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", action="append", choices=STATES,
                        help="sample (with capture) and judge this state; repeatable. With --report: the states "
                             "the report expects (default all three)")
    parser.add_argument("--throughput", type=int, metavar="N",
                        help="images/s with vs without capture on N batches of the base model (quiet GPU)")
    parser.add_argument("--report", action="store_true", help="write the Markdown and HTML reports (no sampling)")
    parser.add_argument("--out", type=Path, help="Markdown summary to write (the report phase); HTML beside it")
    parser.add_argument("--work", type=Path, default=Path("/tmp/attnscope-see-toy"),
                        help="run files, answers, timings and the report's files (about 1 MB per image with capture)")
    parser.add_argument("--erase", action="append", default=None, help="concept(s) to erase (default furniture)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="RECE epochs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fresh", action="store_true",
                        help="delete --work first (only without phase options; default: resume what is there)")
    parser.add_argument("--smoke", action="store_true",
                        help="random tiny model on the CPU, a few prompts, 1 seed, 2 steps, batch 8: checks the script")
    args = parser.parse_args(argv)
    phased = bool(args.state or args.throughput is not None or args.report)
    if args.fresh and phased:
        parser.error("--fresh deletes all of --work, which other phases may be using: delete it yourself")
    if not phased:
        args.state, args.throughput, args.report = list(STATES), THROUGHPUT_BATCHES, True
    if args.report and args.out is None:
        parser.error("the report needs --out")
    if args.throughput is not None and args.throughput < 1:
        parser.error("--throughput needs at least one batch")
    args.state = list(dict.fromkeys(args.state or []))
    args.erase = args.erase or ["furniture"]
    if args.smoke:
        args.seeds, args.steps, args.batch_size, args.device = 1, 2, 8, "cpu"
    return args


def make_plan(pipe, args: argparse.Namespace) -> Plan:
    """Every toy prompt × ``--seeds`` (a stratified sample of the prompts with ``--smoke``)."""
    erased = args.erase
    rows = split(benchmark_prompts("toy", erased), erased, encoder=(pipe.tokenizer, pipe.text_encoder))
    plan = Plan(tuple(rows), tuple(range(args.seeds)), SamplerSettings(steps=args.steps), tuple(erased))
    return plan.reduced(SMOKE_REDUCTION) if args.smoke else plan


def file_stem(method: str, erased: Sequence[str]) -> str:
    """The state's file stem: ``base`` or e.g. ``uce-furniture``."""
    return BASE.name if method == BASE.method else state_name(method, erased)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"


def gigabytes(path: Path) -> float:
    return path.stat().st_size / 1e9 if path.exists() else 0.0


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


# --------------------------------------------------------------------------- phase 1: states


def run_captured(pipe, oracle: ToyOracle, method: str, plan: Plan, args: argparse.Namespace) -> None:
    """Sample ``method``'s state with capture, judge it, and write ``{state}.timing.json``.

    The edit (only this method's) is computed first; ``started`` is taken
    before it. When an earlier session already did every job, the timing
    file it wrote is kept.
    """
    started = time.time()
    if method == BASE.method:
        state = BASE
    else:
        state = edited_states(pipe, [method], plan.erased, args.work, epochs=args.epochs)[0]
    edit_seconds = time.time() - started
    run = run_state(pipe, state, plan, args.work, judge=oracle, batch_size=args.batch_size)
    path = args.work / f"{state.name}.timing.json"
    if not (run.sampled or run.judged):
        print(f"{state.name}: all {run.jobs} jobs were done already; kept {path.name}", flush=True)
        return
    timing = {
        "state": state.name,
        "method": state.method,
        "jobs": run.jobs,
        "sampled": run.sampled,
        "sample_seconds": round(run.sample_seconds, 3),
        "judged": run.judged,
        "judge_seconds": round(run.judge_seconds, 3),
        "images_per_second": round(run.images_per_second, 3) if run.sampled else None,
        "edit_seconds": round(edit_seconds, 3),
        "started": started,
        "finished": time.time(),
        "device": device_name(pipe.device),
        "torch_device": str(pipe.device),
        "batch_size": args.batch_size,
        "run_file_gb": round(gigabytes(args.work / f"{state.name}.h5"), 6),
    }
    path.write_text(json.dumps(timing, indent=1))
    print(f"{state.name}: {run.sampled} images with capture in {run.sample_seconds:.1f} s "
          f"({run.images_per_second:.1f}/s), {run.judged} judged in {run.judge_seconds:.1f} s; wrote {path}",
          flush=True)


# --------------------------------------------------------------------------- phase 2: throughput


def timed(device: torch.device, work: Callable[[], object]) -> float:
    """Seconds ``work()`` takes, the GPU synchronised before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def sample_captured(pipe, chosen: list[list], settings: SamplerSettings, sink: Path) -> None:
    """The batches in one capture context, as the runner samples a state; returns once the writer has drained."""
    with capture(pipe, sink=sink) as cap:
        for batch in chosen:
            sample_batch(pipe, batch, settings, cap)
    sink.unlink()


def sample_plain(pipe, chosen: list[list], settings: SamplerSettings) -> None:
    for batch in chosen:
        sample_batch(pipe, batch, settings)


PASSES = ("with", "without", "without", "with")  # ABBA: a linear drift hits both alike


def measure_throughput(pipe, plan: Plan, args: argparse.Namespace, n_batches: int) -> None:
    """The base model's first ``n_batches`` batches, sampled in passes with and without capture: ``throughput.json``."""
    scratch = args.work / "throughput.h5"
    chosen = list(batches(plan.jobs(), args.batch_size))[:n_batches]
    scratch.unlink(missing_ok=True)
    started = time.time()
    sample_captured(pipe, chosen[:1], plan.settings, scratch)  # warm-up of both paths: kernels, allocator
    sample_plain(pipe, chosen[:1], plan.settings)
    passes = []
    for kind in PASSES:
        if kind == "with":
            seconds = timed(pipe.device, lambda: sample_captured(pipe, chosen, plan.settings, scratch))
        else:
            seconds = timed(pipe.device, lambda: sample_plain(pipe, chosen, plan.settings))
        passes.append({"capture": kind == "with", "seconds": round(seconds, 3)})
    images = sum(len(batch) for batch in chosen)
    with_s = sum(p["seconds"] for p in passes if p["capture"])
    without_s = sum(p["seconds"] for p in passes if not p["capture"])
    n_each = len(PASSES) // 2
    rate_with, rate_without = n_each * images / with_s, n_each * images / without_s
    result = {
        "images": images,
        "batches": len(chosen),
        "batch_size": args.batch_size,
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
    path = args.work / "throughput.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"throughput: {images} images, {result['images_per_second_with_capture']}/s with capture, "
          f"{result['images_per_second_without_capture']}/s without, ratio {result['ratio']}; wrote {path}",
          flush=True)


# --------------------------------------------------------------------------- phase 3: report


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


def wall_seconds(timings: dict[str, Timing | None]) -> float | None:
    """From the first state's start to the last one's finish (``None`` without timing files)."""
    found = [t for t in timings.values() if t]
    return max(t["finished"] for t in found) - min(t["started"] for t in found) if found else None


def states_lines(timings: dict[str, Timing | None]) -> list[str]:
    """The states' wall time and whether they ran in parallel."""
    found = [t for t in timings.values() if t]
    if not found:
        return ["- states: no timing files in the work folder (answers made by another session)"]
    wall = wall_seconds(timings)
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
        return [f"Not measured: no {work / 'throughput.json'} (run the `--throughput N` phase on a quiet GPU)."]
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
            group = {"evasion": ("method", "erased", "relation"),
                     "retain_by_distance": ("method", "erased", "attr_distance")}.get(name, ("method", "erased"))
            lines += [f"### {name.replace('_', ' ')}", "", to_markdown(tables[name], group)]
    return lines


def state_info(name: str, method: str, work: Path, timing: Timing | None) -> StateInfo:
    """The HTML report's view of a state: run file (if still there), edit metadata, timing."""
    edit = work / f"{name}.edit"
    keep = ("sampled", "sample_seconds", "images_per_second", "judge_seconds", "edit_seconds", "run_file_gb")
    return StateInfo(name, method, work / f"{name}.h5", Edit.load(edit).meta if edit.exists() else None,
                     {k: timing[k] for k in keep} if timing else None)


def incomplete(answers: dict[str, list[dict]], plan: Plan, work: Path) -> list[str]:
    """One line per state whose answers do not cover every job of ``plan``."""
    problems = []
    for name, records in answers.items():
        if not records:
            problems.append(f"{name}: no answers ({work / f'{name}.answers.csv'})")
        elif missing := missing_jobs(records, plan):
            problems.append(f"{name}: {missing} of {len(plan.jobs())} jobs lack answers")
    return problems


def header_lines(plan: Plan, args: argparse.Namespace, methods: Sequence[str], names: Sequence[str],
                 device: str) -> list[str]:
    """Title and what was run: prompts, seeds, states, sampler, judge, device, capture."""
    edited = [m.upper() for m in methods if m != BASE.method]
    kinds = plan.summary()["kinds"]
    return [
        f"# SEE-style side effects on the toy model: erasing “{plan.label}”"
        + (f" with {' and '.join(edited)}" if edited else ""),
        "",
        *([f"- {SMOKE_NOTE}"] if args.smoke else []),
        f"- {len(plan.rows)} prompts ({kinds['single']} single-object, {kinds['pair']} two-object) × seeds "
        f"{list(plan.seeds)} = {len(plan.jobs())} images per model state; states {', '.join(names)}"
        + (f" (RECE {args.epochs} epochs)" if "rece" in methods else "") + ", library default hyper-parameters",
        f"- {args.steps} DDIM steps, CFG {DEFAULT_GUIDANCE_SCALE} (the toy model's default), batch {args.batch_size}; "
        f"judge: toy oracle; device: {device}; torch {torch.__version__}",
        "- capture: every cross-attention layer, every step, the prompt's tokens, heads averaged, float16, "
        "written to disk by the writer thread (its drain at the end is included)",
    ]


def write_html(args: argparse.Namespace, oracle: ToyOracle, plan: Plan, records: list[dict],
               states: list[StateInfo], device: str, throughput: dict | None, wall: float | None) -> Path:
    """The HTML report (files in ``--work``), copied beside ``--out``; notes the run files that are gone."""
    absent = [s.name for s in states if not s.run_file.exists()]
    settings = {"benchmark": "benchmarks/see_toy.py", "model": "toy (smoke: random tiny)" if args.smoke else "toy",
                "judge": oracle.name, "device": device, "batch_size": args.batch_size}
    if throughput:
        settings["throughput"] = (f"{throughput['images_per_second_with_capture']:.2f} images/s with capture, "
                                  f"{throughput['images_per_second_without_capture']:.2f} without, ratio "
                                  f"{throughput['ratio']:.3f} ({throughput['images']} images, interleaved)")
    notes = [SMOKE_NOTE] if args.smoke else []
    if absent:
        notes.append(f"Run files not in the work folder ({', '.join(absent)}): no example images from them.")
    inputs = ReportInputs(erased=plan.label, records=records, states=states, settings=settings, plan=plan.summary(),
                          notes=notes, wall_seconds=wall)
    html = args.out.with_suffix(".html")
    shutil.copy(write_leakage_report(args.work, inputs), html)  # self-contained: figures are inlined
    return html


def write_report(pipe, oracle: ToyOracle, plan: Plan, args: argparse.Namespace) -> int:
    """Markdown to ``--out`` and the HTML report beside it; 1 (and nothing written) if answers are missing."""
    methods = args.state or list(STATES)
    names = [file_stem(m, plan.erased) for m in methods]
    answers = {name: read_answers(args.work / f"{name}.answers.csv") for name in names}
    problems = incomplete(answers, plan, args.work)
    if problems:
        print("cannot write the report, states incomplete (run their --state phase again, it resumes):\n  "
              + "\n  ".join(problems), file=sys.stderr)
        return 1

    timings = {name: read_json(args.work / f"{name}.timing.json") for name in names}
    throughput = read_json(args.work / "throughput.json")
    records = [r for name in names for r in answers[name]]
    found = [t for t in timings.values() if t]
    device = found[0]["device"] if found else device_name(pipe.device)
    lines = [
        *header_lines(plan, args, methods, names, device),
        *states_lines(timings),
        "",
        "## Model states: sampling with capture, judging",
        "",
        *state_table(names, timings),
        "",
        "## Throughput: images/s with capture vs without",
        "",
        *throughput_lines(throughput, args.work),
        "",
        "## Metrics (rate of yes answers, 95% cluster-bootstrap interval over prompts; Δ vs base, paired)",
        "",
        *metrics_lines(side_effect_metrics(records)),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))

    states = [state_info(name, method, args.work, timings[name]) for name, method in zip(names, methods)]
    html = write_html(args, oracle, plan, records, states, device, throughput, wall_seconds(timings))
    print(f"wrote {args.out}, {html} and the report's files in {args.work}")
    return 0


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        torch.set_num_threads(1)
    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True, exist_ok=True)

    pipe, oracle = load_toy_and_oracle(device=args.device, smoke=args.smoke)
    plan = make_plan(pipe, args)
    print(f"{len(plan.rows)} prompts x {len(plan.seeds)} seeds = {len(plan.jobs())} images per state, "
          f"{args.steps} steps, batch {args.batch_size}, on {pipe.device}", flush=True)
    for method in args.state:
        run_captured(pipe, oracle, method, plan, args)
    if args.throughput is not None:
        measure_throughput(pipe, plan, args, args.throughput)
    return write_report(pipe, oracle, plan, args) if args.report else 0


if __name__ == "__main__":
    raise SystemExit(main())
