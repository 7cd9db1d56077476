"""The full SEE-style side-effect benchmark on the built-in toy model (GPU), in phases.

A preset of :mod:`attnscope.runner.leakage` (the phases of ``attnscope
leakage-report --state/--throughput/--report-only``): every toy prompt (single-object
variants of every class, the erased superclass's own variants, and the
two-object leakage prompts) × 4 seeds × 50 DDIM steps, for the base model and
its UCE and RECE edits of ``--erase`` (default "furniture": a superclass, so
evasion is measured too). Each phase runs on its own, so that one shell
command fits a 10-minute limit and the run files (about 1 MB per image) need
not outlive it:

* ``--state NAME`` (``base``, ``uce``, ``rece``; repeatable) — sample with
  capture and judge with the toy oracle into ``--work`` (resumable; an edited
  state computes only its own edit, so states can run as parallel processes);
* ``--throughput N`` — images/s with vs without capture on the base model's
  first N batches (a quiet GPU): ``{work}/throughput.json``;
* ``--report`` — no sampling: checks that every expected state (those given by
  ``--state``, else all three) has all its answers (exit code 1 if not), then
  writes the Markdown summary to ``--out`` and the self-contained HTML report
  beside it (``.html``; its CSVs and figures stay in ``--work``).

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
import shutil
import sys
from pathlib import Path
from typing import Sequence

import torch

from attnscope.datasets.see import split
from attnscope.models.loading import load_toy_and_oracle
from attnscope.models.prompts import text_embedder
from attnscope.models.toy.pipeline import DEFAULT_GUIDANCE_SCALE
from attnscope.report.benchmark import BenchmarkSettings, phased_benchmark
from attnscope.runner import Plan, Reduction, benchmark_prompts
from attnscope.runner.leakage import IncompleteStates
from attnscope.sampling import SamplerSettings

STATES = ("base", "uce", "rece")  # the base model and the erasure methods, in report order
THROUGHPUT_BATCHES = 8  # throughput batches when no phase option is given
SMOKE_REDUCTION = Reduction(targets=3, retain_per_class=0, neighbours_per_class=1, leakage_pairs=3)
SMOKE_NOTE = ("SMOKE RUN (random tiny model and untrained oracle, reduced prompts): checks the script, "
              "numbers mean nothing.")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options; without a phase option, all three phases. Applies ``--smoke``'s reductions."""
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
    rows = split(benchmark_prompts("toy", args.erase), args.erase, embed=text_embedder(pipe))
    plan = Plan(tuple(rows), tuple(range(args.seeds)), SamplerSettings(steps=args.steps), tuple(args.erase))
    return plan.reduced(SMOKE_REDUCTION) if args.smoke else plan


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        torch.set_num_threads(1)
    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)
    pipe, oracle = load_toy_and_oracle(device=args.device, smoke=args.smoke)
    plan = make_plan(pipe, args)
    print(f"{len(plan.rows)} prompts x {len(plan.seeds)} seeds = {len(plan.jobs())} images per state, "
          f"{args.steps} steps, batch {args.batch_size}, on {pipe.device}", flush=True)
    settings = BenchmarkSettings(
        model="toy", judge=oracle.name, device=None, steps=args.steps, guidance=DEFAULT_GUIDANCE_SCALE,
        batch_size=args.batch_size, epochs=args.epochs, notes=[SMOKE_NOTE] if args.smoke else [],
        extra={"benchmark": "benchmarks/see_toy.py"})
    report = (args.state or list(STATES)) if args.report else None
    try:
        written = phased_benchmark(pipe, oracle, plan, args.work, settings, states=args.state,
                                   throughput=args.throughput, report=report)
    except IncompleteStates as error:
        print(f"cannot write the report, {error}", file=sys.stderr)
        return 1
    if written is None:
        return 0
    summary, html = written
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(summary, args.out)
    shutil.copy(html, args.out.with_suffix(".html"))  # self-contained: figures are inlined
    print(summary.read_text())
    print(f"wrote {args.out}, {args.out.with_suffix('.html')} and the report's files in {args.work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
