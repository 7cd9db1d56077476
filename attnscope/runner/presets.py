"""The side-effect benchmark's sizes, judges, options and output files: light (no torch), so that
the command line reads them while it parses arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

REDUCED_SEEDS = 2  # the reduced set: a stratified sample of the prompts, 2 seeds, 20 steps (a laptop CPU)
REDUCED_STEPS = 20
FULL_SEEDS = 4  # the full benchmark: every prompt × 4 seeds × 50 steps (a GPU)
FULL_STEPS = 50
JUDGES = ("oracle", "blip", "florence2", "qwen2.5-vl")  # the toy oracle, then VQA models
REPORT_MARKERS = ("plan.json", "metrics.json")  # a folder holding one of these was written by leakage-report
PHASE_FILES = ("*.h5", "*.h5.lock", "*.edit", "*.answers.csv", "*.timing.json", "*.tmp", "throughput.json",
               "summary.md", "report.html", "records.csv", "tables", "figures", *REPORT_MARKERS)  # the phases' files


@dataclass
class LeakageOptions:
    """What ``attnscope leakage-report`` is asked to do (its options, one field each; see its ``--help``).

    Three modes: generate (sample, judge and report the base model and each
    ``method``'s edit of ``erase``), existing run files (``before`` and
    ``after``), or phases (``state``, ``throughput``, ``report_only``).
    """

    erase: list[str] = field(default_factory=list)
    method: list[str] | None = None  # None: uce and rece
    epochs: int = 3
    ablate: list[str] = field(default_factory=list)
    before: Path | None = None
    after: list[Path] = field(default_factory=list)
    full: bool = False
    seeds: int | None = None  # None: FULL_SEEDS with full, else REDUCED_SEEDS
    steps: int | None = None  # None: FULL_STEPS with full, else REDUCED_STEPS
    guidance: float | None = None
    batch_size: int = 16
    prompts: str | None = None  # "toy" or "see"; None: toy with the oracle, else see
    no_capture: bool = False
    storage: str = "lossless"
    model: str = "toy"
    device: str = "auto"
    dtype: str | None = None
    judge: str = "oracle"
    judge_model: str | None = None
    threads: str = "auto"
    state: list[str] | None = None
    throughput: int | None = None
    report_only: bool = False
    examples: int = 3
    out: Path = Path("leakage-report")
    no_progress: bool = False

    @property
    def phased(self) -> bool:
        """Whether a phase was asked for (each its own process) instead of the whole benchmark."""
        return bool(self.state or self.throughput or self.report_only)
