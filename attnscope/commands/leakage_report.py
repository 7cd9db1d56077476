"""``attnscope leakage-report``: from nothing (or from run files) to a side-effect report.

    attnscope leakage-report --erase bench --method uce --method rece --out report/
    attnscope leakage-report --erase bench --full --out full/          # every prompt × 4 seeds × 50 steps (GPU)
    torchrun --nproc_per_node 4 -m attnscope.cli leakage-report --erase bench --full --out full/
    attnscope leakage-report --before base.h5 --after bench-uce.h5 --out report/

Generating: the base model and each method's edit sample every prompt × seed
with attention capture (``out/base.h5``, ``out/uce-bench.h5``, ...), the judge
answers each prompt's questions (``out/*.answers.csv``), then the report is
written (``report.html``, ``metrics.json``, ``records.csv``, ``tables/``,
``figures/``). Re-running the same command resumes where it stopped.

Without ``--full`` a reduced set runs (a stratified sample of the prompts,
2 seeds, 20 steps) that finishes on a laptop CPU; the report says what was
reduced.

The same benchmark in phases, each its own process (a GPU session of limited
length; states in parallel on one GPU), as ``benchmarks/see_toy.py`` runs it::

    for s in base uce rece; do attnscope leakage-report --erase bench --state $s --out work/ & done; wait
    attnscope leakage-report --erase bench --throughput 8 --out work/    # images/s with vs without capture
    attnscope leakage-report --erase bench --report-only --out work/     # report.html + summary.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from attnscope.commands.common import (
    DTYPES,
    STORAGE_MODES,
    finite_float,
    non_negative_int,
    positive_int,
    torch_dtype,
    writable_parent,
)
from attnscope.errors import FileRefused

REDUCED_SEEDS = 2
REDUCED_STEPS = 20
FULL_SEEDS = 4
FULL_STEPS = 50
JUDGES = ("oracle", "blip", "florence2", "qwen2.5-vl")


def add_parser(subparsers) -> argparse.ArgumentParser:
    from attnscope.erasure.methods import METHODS, SUBSET_KINDS

    parser = subparsers.add_parser(
        "leakage-report", help="benchmark erasure side effects (target/retain/evasion/leakage) and write a report",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    erase = parser.add_argument_group("what to erase")
    erase.add_argument("--erase", action="append", default=[], metavar="CONCEPT",
                       help="concept to erase ('bench', 'furniture', 'wooden bench'); repeat to erase several together")
    erase.add_argument("--method", action="append", choices=METHODS, default=None,
                       help="erasure method; repeatable (default: uce and rece)")
    erase.add_argument("--epochs", type=non_negative_int, default=3, help="RECE epochs (default 3)")
    erase.add_argument("--ablate", action="append", choices=SUBSET_KINDS, default=[],
                       help="also sample each part of every edit alone (per layer, resolution, place, or keys vs "
                            "values) and add the ablation section; repeatable")
    existing = parser.add_argument_group("report on existing run files instead")
    existing.add_argument("--before", type=Path, help="run file of the unedited model")
    existing.add_argument("--after", type=Path, action="append", default=[],
                          help="run file of an edited model (repeatable); its edit names the method and concept")
    bench = parser.add_argument_group("benchmark size")
    bench.add_argument("--full", action="store_true",
                       help=f"every prompt, {FULL_SEEDS} seeds, {FULL_STEPS} steps (meant for a GPU)")
    bench.add_argument("--seeds", type=positive_int,
                       help=f"seeds 0..N-1 per prompt (default {REDUCED_SEEDS}; --full {FULL_SEEDS})")
    bench.add_argument("--steps", type=positive_int,
                       help=f"sampling steps (default {REDUCED_STEPS}; --full {FULL_STEPS})")
    bench.add_argument("--guidance", type=finite_float, default=None, help="CFG scale (default: the model's)")
    bench.add_argument("--batch-size", type=positive_int, default=16, help="images per pipeline call (default 16)")
    bench.add_argument("--prompts", choices=("toy", "see"), default=None,
                       help="prompt set: the toy world's (default with the oracle judge) or SEE's COCO set "
                            "(default with a VQA judge)")
    bench.add_argument("--no-capture", action="store_true", help="do not record attention maps (no examples)")
    bench.add_argument("--storage", choices=STORAGE_MODES, default="lossless",
                       help="how run files keep the maps: lossless (Blosc2, default), quantised (8-bit, "
                            "error <= 1.96e-3) or raw")
    model = parser.add_argument_group("model and judge")
    model.add_argument("--model", default="toy", help="'toy' (built-in, default), a diffusers folder or cached hub id")
    model.add_argument("--device", default="auto", help="'auto' (CUDA if present), 'cpu', 'cuda:1', ...")
    model.add_argument("--dtype", choices=DTYPES, default=None,
                       help="model dtype (default: float16 on CUDA, float32 on CPU)")
    model.add_argument("--judge", choices=JUDGES, default="oracle",
                       help="who answers the questions (default: the toy oracle)")
    model.add_argument("--judge-model", default=None, help="VQA judges: local folder or cached hub id of the model")
    model.add_argument("--threads", default="auto",
                       help="CPU threads for torch: a number, or 'auto' (default): one core less than the machine "
                            "has (at least 1), leaving a core to the run-file writer and the rest of the system")
    phases = parser.add_argument_group(
        "phases, each its own process (see attnscope.runner.leakage); without them, everything in one process")
    phases.add_argument("--state", action="append", choices=("base", *METHODS), default=None,
                        help="only sample (with capture) and judge this state of the --erase edit, then stop; "
                             "repeatable; states can run as parallel processes into one --out")
    phases.add_argument("--throughput", type=positive_int, metavar="N",
                        help="only measure images/s with vs without capture on N batches of the base model")
    phases.add_argument("--report-only", action="store_true",
                        help="no sampling: write the report and summary.md from the states found in --out (those "
                             "of --state, else base and every --method); exit status 1 while answers are missing")
    parser.add_argument("--examples", type=non_negative_int, default=3,
                        help="example image pairs per method (default 3)")
    parser.add_argument("--out", type=Path, default=Path("leakage-report"),
                        help="output folder (default leakage-report/); a folder of an earlier report resumes")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def _judge(args: argparse.Namespace, device):
    from attnscope.judges import BlipVQAJudge, Florence2Judge, QwenVLJudge, ToyOracle

    if args.judge == "oracle":
        return ToyOracle.load(device=device)
    if not args.judge_model:
        raise ValueError(f"--judge {args.judge} needs --judge-model PATH (a local folder or cached hub id)")
    kind = {"blip": BlipVQAJudge, "florence2": Florence2Judge, "qwen2.5-vl": QwenVLJudge}[args.judge]
    return kind.from_pretrained(args.judge_model, device=device)


def _prompts(kind: str, judge: str, erased: list[str]):
    from attnscope.runner import benchmark_prompts

    if kind == "see" and judge == "oracle":
        raise ValueError("the toy oracle only knows the toy world: use --prompts toy or a VQA --judge")
    return benchmark_prompts(kind, erased)


def cpu_threads(setting: str) -> int:
    """The number of torch CPU threads for ``--threads`` (see its help).

    Why not all cores: OpenMP threads spin while they wait for each other, so
    when any other work shares the cores (the writer thread, another job),
    a thread per core stalls — on a shared 2-core machine two threads sampled
    3-25x slower than one.
    """
    import os

    import torch

    if setting != "auto":
        return int(setting)
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - 1))


def _load(args: argparse.Namespace, model: str, device):
    from attnscope.models import load_pipeline

    return load_pipeline(model, device=device, dtype=torch_dtype(args.dtype))


def _plan(args: argparse.Namespace, pipe):
    """The benchmark's plan (every prompt × seed with --full, else the reduced set) and the prompt set's kind."""
    from attnscope.datasets.see import split
    from attnscope.models.prompts import text_embedder
    from attnscope.runner import Plan, Reduction
    from attnscope.sampling import SamplerSettings

    kind = args.prompts or ("toy" if args.judge == "oracle" else "see")
    rows = split(_prompts(kind, args.judge, args.erase), args.erase, embed=text_embedder(pipe))
    seeds = args.seeds or (FULL_SEEDS if args.full else REDUCED_SEEDS)
    steps = args.steps or (FULL_STEPS if args.full else REDUCED_STEPS)
    plan = Plan(tuple(rows), tuple(range(seeds)), SamplerSettings(steps=steps, guidance_scale=args.guidance),
                tuple(args.erase))
    return (plan if args.full else plan.reduced(Reduction())), kind


def _generate(args: argparse.Namespace, started: float) -> int:
    from attnscope.report import ReportInputs, StateInfo
    from attnscope.runner import BASE, ablation_states, edited_states, init_distributed, read_ledgers, run_benchmark

    if not args.erase:
        raise ValueError("name a concept to erase with --erase (or report on run files with --before/--after)")
    methods = args.method or ["uce", "rece"]
    shard, device = init_distributed(args.device)
    pipe = _load(args, args.model, device)
    judge = _judge(args, pipe.device)
    plan, kind = _plan(args, pipe)
    seeds, steps = len(plan.seeds), plan.settings.steps
    edited = edited_states(pipe, methods, args.erase, args.out, epochs=args.epochs, shard=shard)
    states = [BASE, *edited, *(part for kind in args.ablate for part in ablation_states(pipe, edited, kind))]
    runs = run_benchmark(pipe, plan, states, args.out, judge=judge, capture_maps=not args.no_capture,
                         batch_size=args.batch_size, shard=shard, progress=not args.no_progress,
                         storage=args.storage)
    if not shard.is_main:
        return 0
    notes = []
    if plan.note:
        notes.append(f"Reduced set (no --full): {plan.note}; {seeds} seeds, {steps} sampling steps. "
                     f"The full benchmark is every prompt × {FULL_SEEDS} seeds × {FULL_STEPS} steps (--full).")
    timing = {r.state: {"sampled": r.sampled, "sample_seconds": round(r.sample_seconds, 2),
                        "images_per_second": round(r.images_per_second, 3), "judged": r.judged,
                        "judge_seconds": round(r.judge_seconds, 2)} for r in runs}
    inputs = ReportInputs(
        erased=plan.label,
        records=read_ledgers([args.out / f"{s.name}.answers.csv" for s in states]),
        states=[StateInfo(s.name, s.method, None if args.no_capture else args.out / f"{s.name}.h5",
                          s.edit.meta if s.edit else None, timing[s.name]) for s in states],
        settings=_settings(args, device=str(pipe.device), judge=judge.name, prompts=kind, processes=shard.world),
        plan=plan.summary(),
        notes=notes,
        wall_seconds=time.perf_counter() - started,
    )
    return _write(args, inputs, started)


def _existing(args: argparse.Namespace, started: float) -> int:
    from attnscope.datasets.see import split
    from attnscope.models.prompts import text_embedder
    from attnscope.report import ReportInputs, StateInfo
    from attnscope.runner import State, judge_run_file, read_ledgers
    from attnscope.store import RunFile

    if not args.before or not args.after:
        raise ValueError("--before and --after go together: one run file of the unedited model and at least one edited")
    edits = {}
    for path in args.after:
        with RunFile(path) as runs:
            edits[path] = (runs.schema.edit or {}).get("edits") or []
        if not edits[path]:
            raise ValueError(f"{path} was captured without an edit: it cannot be an --after file")
    with RunFile(args.before) as runs:
        if runs.schema.edit:
            raise ValueError(f"{args.before} was captured with an edit applied: it cannot be the --before file")
        model = args.model if args.model != "toy" else runs.schema.model.get("id") or "toy"
    erased = args.erase or list(edits[args.after[0]][-1].get("concepts", []))
    if not erased:
        raise ValueError("the edit does not name its concepts: pass --erase CONCEPT")
    kind = args.prompts or ("toy" if args.judge == "oracle" else "see")
    device = args.device
    pipe = _load(args, model, device)
    judge = _judge(args, pipe.device)
    rows = {r.prompt.prompt_id: r for r in split(_prompts(kind, args.judge, erased), erased,
                                                  embed=text_embedder(pipe))}
    label = "+".join(erased)
    methods = [edits[p][-1].get("method", p.stem) for p in args.after]
    states = [State("base", "base")] + [
        State(path.stem if path.stem != "base" else "after", method if methods.count(method) == 1 else path.stem)
        for path, method in zip(args.after, methods)
    ]
    files = [args.before, *args.after]
    timing = {}
    for state, path in zip(states, files):
        done = judge_run_file(judge, path, state, rows, args.out, erased=label, batch_size=args.batch_size)
        timing[state.name] = {"runs": done.jobs, "judged": done.judged, "judge_seconds": round(done.judge_seconds, 2)}
    inputs = ReportInputs(
        erased=label,
        records=read_ledgers([args.out / f"{s.name}.answers.csv" for s in states]),
        states=[StateInfo(s.name, s.method, path, (edits.get(path) or [None])[-1], timing[s.name])
                for s, path in zip(states, files)],
        settings=_settings(args, device=str(pipe.device), judge=judge.name, prompts=kind,
                           before=str(args.before), after=[str(p) for p in args.after]),
        wall_seconds=time.perf_counter() - started,
    )
    return _write(args, inputs, started)


def _phased(args: argparse.Namespace) -> int:
    """The phases asked for (--state, --throughput, --report-only), see :mod:`attnscope.runner.leakage`."""
    from attnscope.report.benchmark import BenchmarkSettings, write_benchmark_report
    from attnscope.runner.leakage import device_name, leakage_benchmark

    if not args.erase:
        raise ValueError("name the concept the states erase with --erase")
    if args.before or args.after or args.ablate:
        raise ValueError("--state, --throughput and --report-only run the generated benchmark: "
                         "no --before/--after, no --ablate")
    pipe = _load(args, args.model, args.device)
    judge = _judge(args, pipe.device)
    plan, kind = _plan(args, pipe)
    expected = args.state or ["base", *(args.method or ["uce", "rece"])]
    found = leakage_benchmark(pipe, judge, plan, args.out, states=[] if args.report_only else args.state or [],
                              throughput=args.throughput, report=expected if args.report_only else None,
                              epochs=args.epochs, batch_size=args.batch_size, progress=not args.no_progress)
    if found is None:
        return 0
    if found.problems:
        print("attnscope leakage-report: states incomplete (run their --state phase again, it resumes):\n  "
              + "\n  ".join(found.problems), file=sys.stderr)
        return 1
    timings = [t for t in found.timings.values() if t]
    notes = [f"Reduced set (no --full): {plan.note}; {len(plan.seeds)} seeds, {plan.settings.steps} sampling steps."
             ] if plan.note else []
    settings = BenchmarkSettings(
        model=str(args.model), judge=judge.name, device=timings[0]["device"] if timings else device_name(pipe.device),
        steps=plan.settings.steps, guidance=args.guidance, batch_size=args.batch_size, epochs=args.epochs,
        notes=notes, extra=_settings(args, prompts=kind))
    summary, html = write_benchmark_report(plan, found, settings)
    print(f"wrote {html} and {summary} (+ metrics.json, records.csv, tables/, figures/)")
    return 0


def _settings(args: argparse.Namespace, **extra) -> dict:
    import torch

    keep = ("erase", "method", "epochs", "ablate", "full", "seeds", "steps", "guidance", "batch_size", "model",
            "dtype", "no_capture", "storage", "examples", "out")
    return {**{k: getattr(args, k) for k in keep}, "cpu_threads": torch.get_num_threads(), **extra}


def _write(args: argparse.Namespace, inputs, started: float) -> int:
    from attnscope.report import write_leakage_report

    path = write_leakage_report(args.out, inputs, examples=args.examples)
    seconds = time.perf_counter() - started
    print(f"wrote {path} (+ metrics.json, records.csv, tables/, figures/); {seconds:.0f} s in all")
    return 0


REPORT_MARKERS = ("plan.json", "metrics.json")  # a folder holding one of these was written by leakage-report
PHASE_FILES = ("*.h5", "*.h5.lock", "*.edit", "*.answers.csv", "*.timing.json", "*.tmp", "throughput.json",
               "summary.md", "report.html", "records.csv", "tables", "figures", *REPORT_MARKERS)  # the phases' files


def check_out(out: Path, phased: bool = False) -> None:
    """Refuse an --out that is a file, or a folder with other content than an earlier report
    (re-running into a report's folder resumes it; see the module docstring). With ``phased``, a
    folder of only the files the phases write is theirs (other phases may be writing it now)."""
    if out.exists() and not out.is_dir():
        raise FileRefused(f"--out {out} is a file: leakage-report writes a folder; choose another --out")
    writable_parent(out / "plan.json", "--out")
    if phased and out.is_dir() and all(any(p.match(name) for name in PHASE_FILES) for p in out.iterdir()):
        return
    if out.is_dir() and any(out.iterdir()) and not any((out / name).exists() for name in REPORT_MARKERS):
        raise FileRefused(f"--out {out} is a folder with other content (no plan.json or metrics.json of a report): "
                          "choose an empty or new folder")


def run(args: argparse.Namespace) -> int:
    import torch

    import torch.distributed as dist

    started = time.perf_counter()
    phased = bool(args.state or args.throughput or args.report_only)
    check_out(args.out, phased)
    torch.set_num_threads(cpu_threads(args.threads))
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        if phased:
            return _phased(args)
        if args.before or args.after:
            return _existing(args, started)
        return _generate(args, started)
    finally:
        if dist.is_initialized():  # joined by init_distributed under torchrun
            dist.destroy_process_group()
