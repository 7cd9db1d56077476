"""The side-effect benchmark runner: every prompt × seed, for the base model and each edit.

::

    from attnscope.runner import BASE, Plan, Reduction, edited_states, sample_states

    states = [BASE, *edited_states(pipe, ["uce", "rece"], ["bench"], out)]
    passes = sample_states(pipe, plan, states, out, judge=oracle, batch_size=16)
    # out/base.h5, out/uce-bench.h5, ...: images + attention maps (attnscope run files)
    # out/base.answers.csv, ...: one side-effect record per judged question

Modules: :mod:`.plan` (what to sample), :mod:`.states` (base + edits),
:mod:`.records` (judging and the answer CSVs), :mod:`.run` (the resumable
loop), :mod:`.shard` (several processes under ``torchrun``), :mod:`.leakage`
(the benchmark in phases: states as separate processes, throughput, report
only), :mod:`.tradeoff` (growing edits), :mod:`.toy_evaluation` (the toy
model measured with its oracle), :mod:`.timing` (timing GPU work),
:mod:`.presets` (the benchmark's sizes and judges, light: the command line
reads them while parsing).

Names are imported on first use, so importing :mod:`.presets` stays light.
"""

from attnscope._lazy import lazy_attributes

_EXPORTS = {
    "leakage_benchmark": "leakage",
    "Key": "plan",
    "Plan": "plan",
    "Reduction": "plan",
    "benchmark_prompts": "plan",
    "job_key": "plan",
    "reduce_rows": "plan",
    "Ledger": "records",
    "RECORD_COLUMNS": "records",
    "judge_jobs": "records",
    "read_ledgers": "records",
    "StatePass": "passes",
    "judge_run_file": "passes",
    "judge_stored": "passes",
    "merge_state": "passes",
    "sample_states": "passes",
    "sample_state": "passes",
    "Shard": "shard",
    "init_distributed": "shard",
    "BASE": "states",
    "METHODS": "states",
    "State": "states",
    "ablation_states": "states",
    "edited_states": "states",
    "state_name": "states",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_attributes(__name__, _EXPORTS)
