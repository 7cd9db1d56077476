"""The side-effect benchmark runner: every prompt × seed, for the base model and each edit.

::

    from attnscope.runner import BASE, Plan, Reduction, edited_states, run_benchmark

    states = [BASE, *edited_states(pipe, ["uce", "rece"], ["bench"], out)]
    runs = run_benchmark(pipe, plan, states, out, judge=oracle, batch_size=16)
    # out/base.h5, out/uce-bench.h5, ...: images + attention maps (attnscope run files)
    # out/base.answers.csv, ...: one side-effect record per judged question

Modules: :mod:`.plan` (what to sample), :mod:`.states` (base + edits),
:mod:`.records` (judging and the answer CSVs), :mod:`.run` (the resumable
loop), :mod:`.shard` (several processes under ``torchrun``), :mod:`.leakage`
(the benchmark in phases: states as separate processes, throughput, report
only), :mod:`.tradeoff` (growing edits), :mod:`.toy_evaluation` (the toy
model measured with its oracle).
"""

from attnscope.runner.leakage import leakage_benchmark
from attnscope.runner.plan import Key, Plan, Reduction, benchmark_prompts, job_key, reduce_rows
from attnscope.runner.records import RECORD_COLUMNS, Ledger, judge_jobs, read_ledgers
from attnscope.runner.run import (
    StateRun,
    judge_run_file,
    judge_stored,
    merge_state,
    run_benchmark,
    run_state,
)
from attnscope.runner.shard import Shard, init_distributed
from attnscope.runner.states import BASE, METHODS, State, ablation_states, edited_states, state_name

__all__ = [
    "BASE",
    "METHODS",
    "RECORD_COLUMNS",
    "Key",
    "Ledger",
    "Plan",
    "Reduction",
    "Shard",
    "State",
    "StateRun",
    "ablation_states",
    "benchmark_prompts",
    "edited_states",
    "init_distributed",
    "job_key",
    "judge_jobs",
    "judge_run_file",
    "judge_stored",
    "leakage_benchmark",
    "merge_state",
    "read_ledgers",
    "reduce_rows",
    "run_benchmark",
    "run_state",
    "state_name",
]
