"""Sample, capture and judge every job of a plan for each model state; resumable.

For each :class:`~attnscope.runner.states.State`, :func:`sample_state` applies
its edit in place, cuts the plan's jobs (this rank's shard) into fixed
batches, and for each batch not yet done samples it with cross-attention
capture into ``{state}.h5`` and asks the judge every question, appending the
records to ``{state}.answers.csv`` (a :class:`~attnscope.runner.records.Ledger`).

Resuming: a job is done when its run is complete (with its image) in the run
file and its answers are in the ledger. Batches whose jobs are all done are
skipped; runs captured but not yet judged are judged from their stored image;
any other batch is sampled again whole. Batches are cut from the full job
list, so a job always lands in the same batch and its image does not depend
on where a previous pass stopped.

Several processes (``torchrun``, :mod:`attnscope.runner.shard`) share the
batches, not the jobs: rank ``r`` of ``w`` samples batches ``r, r + w, ...``
of that same cut, so every job is sampled in the same batch whatever the
number of processes, and the merged answers (put back in plan order) give
the metrics of a one-process pass.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from attnscope.datasets.see import SplitRow
from attnscope.hooks import capture
from attnscope.judges.base import Judge
from attnscope.runner.plan import Key, Plan, job_key
from attnscope.runner.records import RECORD_COLUMNS, Ledger, judge_jobs, read_ledgers, record_key
from attnscope.runner.shard import Shard
from attnscope.runner.states import State
from attnscope.sampling import Job, batches, sample_batch
from attnscope.store import RunFile, merge_shards
from attnscope.store.reader import index_runs
from attnscope.store.tables import write_table


@dataclass
class StatePass:
    """What one rank did for one state: counts and seconds spent sampling (with capture) and judging."""

    state: str
    jobs: int
    sampled: int = 0
    judged: int = 0
    sample_seconds: float = 0.0
    judge_seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.sampled / self.sample_seconds if self.sample_seconds else float("nan")


def judge_stored(
    judge: Judge,
    runs: RunFile,
    index: Mapping[Key, int],
    jobs: Sequence[Job],
    rows: Mapping[str, SplitRow],
    ledger: Ledger,
    *,
    state: State,
    erased: str,
    batch_size: int,
) -> int:
    """Judge the ``jobs`` whose images are stored in ``runs`` (at ``index``) and not in ``ledger``; returns how many."""
    todo = [job for job in jobs if job_key(job) in index and job_key(job) not in ledger.done]
    for batch in batches(todo, batch_size):
        images = [runs.image(index[job_key(job)]) for job in batch]
        ledger.append(judge_jobs(judge, batch, images, rows, method=state.method, erased=erased, state=state.name))
    return len(todo)


def _expected(jobs: Sequence[Job], rows: Mapping[str, SplitRow]) -> dict[Key, int]:
    return {job_key(job): len(rows[job.extra["prompt_id"]].prompt.questions) for job in jobs}


def sample_state(
    pipe,
    state: State,
    plan: Plan,
    folder: Path,
    *,
    judge: Judge | None,
    capture_maps: bool = True,
    batch_size: int = 8,
    shard: Shard = Shard(),
    progress: bool = True,
    storage: str = "lossless",
) -> StatePass:
    """Sample (and capture, and judge) this rank's share of ``plan`` for ``state``; see the module docstring.

    ``judge=None`` only samples (and captures); with neither a judge nor
    capture nothing is kept, and every job is sampled (a timing pass).
    ``storage`` is the run file's map storage ("lossless", "quantised", "raw").
    """
    mine = shard.take(list(batches(plan.jobs(), batch_size)))  # whole batches: see the module docstring
    jobs = [job for batch in mine for job in batch]
    rows = plan.by_id()
    result = StatePass(state.name, len(jobs))
    run_path = shard.file(folder, state.name, ".h5") if capture_maps else None
    ledger = Ledger(shard.file(folder, state.name, ".answers.csv"), _expected(jobs, rows)) if judge else None

    stored: dict[Key, int] = {}
    if run_path is not None and run_path.exists():
        with RunFile(run_path) as runs:
            stored = index_runs(runs)
            if ledger is not None:
                started = time.perf_counter()
                result.judged += judge_stored(judge, runs, stored, jobs, rows, ledger, state=state,
                                              erased=plan.label, batch_size=batch_size)
                result.judge_seconds += time.perf_counter() - started

    kept = ([set(stored)] if run_path else []) + ([ledger.done] if ledger else [])  # where finished work is

    def done(job: Job) -> bool:
        return bool(kept) and all(job_key(job) in keys for keys in kept)

    todo = [batch for batch in mine if not all(done(job) for job in batch)]
    remaining = sum(len(batch) for batch in todo)
    folder.mkdir(parents=True, exist_ok=True)
    with state.edit.applied(pipe) if state.edit else nullcontext():
        with tqdm(total=len(jobs), initial=len(jobs) - remaining, desc=state.name, unit="img",
                  disable=not progress, dynamic_ncols=True) as bar:
            started, judging = time.perf_counter(), 0.0
            with capture(pipe, sink=run_path, resume=True, storage=storage) if run_path else nullcontext() as cap:
                for batch in todo:
                    images = sample_batch(pipe, batch, plan.settings, cap)
                    result.sampled += len(batch)
                    if ledger is not None:
                        judged = time.perf_counter()
                        fresh = [i for i, job in enumerate(batch) if job_key(job) not in ledger.done]
                        ledger.append(judge_jobs(judge, [batch[i] for i in fresh], [images[i] for i in fresh], rows,
                                                 method=state.method, erased=plan.label, state=state.name))
                        result.judged += len(fresh)
                        judging += time.perf_counter() - judged
                    bar.update(len(batch))
            # sampling time includes the writer draining its queue when the capture closes
            result.sample_seconds = time.perf_counter() - started - judging
            result.judge_seconds += judging
    return result


def merge_state(
    state: State, folder: Path, shard: Shard, *, capture_maps: bool = True, plan: Plan | None = None
) -> None:
    """After all ranks finished ``state``: rank 0 joins their run files and answer CSVs (barrier first).

    With ``plan`` the merged answers are put in plan order (a one-process run's order), so that order-dependent
    statistics (bootstrap intervals) come out the same.
    """
    shard.barrier()
    if shard.world == 1 or not shard.is_main:
        return
    if capture_maps:
        parts = [p for p in shard.files(folder, state.name, ".h5") if p.exists()]
        if parts:
            merge_shards(parts, folder / f"{state.name}.h5")
    ledgers = shard.files(folder, state.name, ".answers.csv")
    if any(p.exists() for p in ledgers):
        records = read_ledgers(ledgers)
        if plan is not None:  # stable sort: each job's questions keep their order
            order = {record_key({"prompt_id": pid, "seed": seed}): index
                     for index, (pid, seed) in enumerate(map(job_key, plan.jobs()))}
            records.sort(key=lambda record: order.get(record_key(record), len(order)))
        write_table(records, folder / f"{state.name}.answers.csv", RECORD_COLUMNS)


def check_plan(folder: Path, description: Mapping[str, Any], shard: Shard) -> None:
    """Write ``folder/plan.json``, or check that the one there describes the same benchmark.

    Resuming into a folder written with other prompts, seeds, settings, judge
    or number of processes would mix incompatible runs: ``ValueError``.
    """
    path = folder / "plan.json"
    if path.exists():
        found = json.loads(path.read_text())
        if found != json.loads(json.dumps(description)):
            changed = sorted(k for k in set(found) | set(description) if found.get(k) != description.get(k))
            raise ValueError(f"{folder} holds results of another benchmark (differs in {', '.join(changed)}); "
                             "choose another output folder or delete it")
    elif shard.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"plan.json.{os.getpid()}")  # atomic: processes started together may race
        temporary.write_text(json.dumps(description, indent=1))
        os.replace(temporary, path)
    shard.barrier()


def sample_states(
    pipe,
    plan: Plan,
    states: Sequence[State],
    folder: str | Path,
    *,
    judge: Judge | None,
    capture_maps: bool = True,
    batch_size: int = 8,
    shard: Shard = Shard(),
    progress: bool = True,
    storage: str = "lossless",
) -> list[StatePass]:
    """:func:`sample_state` then :func:`merge_state` for every state; returns this rank's :class:`StatePass` s.

    Afterwards ``folder`` holds ``{state}.h5`` (with capture),
    ``{state}.answers.csv`` (with a judge) and ``plan.json``.
    """
    folder = Path(folder)
    check_plan(folder, {
        "plan": plan.summary(),
        "judge": getattr(judge, "name", None),
        "capture": capture_maps,
        "processes": shard.world,
    }, shard)
    results = []
    for state in states:
        results.append(sample_state(pipe, state, plan, folder, judge=judge, capture_maps=capture_maps,
                                    batch_size=batch_size, shard=shard, progress=progress, storage=storage))
        merge_state(state, folder, shard, capture_maps=capture_maps, plan=plan)
    return results


def judge_run_file(
    judge: Judge,
    path: str | Path,
    state: State,
    rows: Mapping[str, SplitRow],
    folder: Path,
    *,
    erased: str,
    batch_size: int = 8,
) -> StatePass:
    """Judge the images of an existing run file into ``folder/{state.name}.answers.csv`` (resumable).

    Runs are matched to ``rows`` by their ``prompt_id`` metadata, or else by
    prompt text; runs of unknown prompts are left out.
    """
    ids_by_prompt = {row.prompt.prompt: prompt_id for prompt_id, row in rows.items()}
    started = time.perf_counter()
    with RunFile(path) as runs:
        index = {key: run for key, run in index_runs(runs, ids_by_prompt).items() if key[0] in rows}
        jobs = [Job(rows[pid].prompt.prompt, seed, extra={"prompt_id": pid}) for pid, seed in sorted(index)]
        ledger = Ledger(folder / f"{state.name}.answers.csv", _expected(jobs, rows))
        judged = judge_stored(judge, runs, index, jobs, rows, ledger, state=state, erased=erased, batch_size=batch_size)
    return StatePass(state.name, len(jobs), judged=judged, judge_seconds=time.perf_counter() - started)
