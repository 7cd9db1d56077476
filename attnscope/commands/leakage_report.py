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
from pathlib import Path

from attnscope.commands.common import (
    DTYPES,
    STORAGE_MODES,
    finite_float,
    non_negative_int,
    options_from,
    positive_int,
    writable_parent,
)
from attnscope.errors import FileRefused
from attnscope.runner.presets import (
    FULL_SEEDS,
    FULL_STEPS,
    JUDGES,
    PHASE_FILES,
    REDUCED_SEEDS,
    REDUCED_STEPS,
    REPORT_MARKERS,
    LeakageOptions,
)


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
                       help="how run files keep the maps: lossless (Zstandard, default), quantised (8-bit, "
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


def main(args: argparse.Namespace) -> int:
    from attnscope.report.side_effect_benchmark import leakage_report
    from attnscope.runner.leakage import IncompleteStates

    options = options_from(args, LeakageOptions)
    check_out(options.out, options.phased)
    try:
        leakage_report(options)
    except IncompleteStates as error:
        print(f"attnscope leakage-report: {error}", file=sys.stderr)
        return 1
    return 0
