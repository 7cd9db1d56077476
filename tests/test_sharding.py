"""Multi-process runs: strided shards, per-rank files, rank 0 merges (2 CPU processes, gloo)."""

import json
import socket
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from attnscope.report import side_effect_metrics
from attnscope.runner import Shard, job_key, read_ledgers
from attnscope.sampling import batches
from attnscope.store import RunFile
from attnscope.store.reader import index_runs

WORLD = 2
BATCH = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plan_and_pipe():
    """The same tiny pipeline and small plan in every process (seeded construction)."""
    from attnscope.datasets.see import build_pair_prompts, build_toy_prompts, split, toy_recipe
    from attnscope.models.toy import ToyModelConfig, build_toy_pipeline
    from attnscope.runner import Plan, Reduction
    from attnscope.sampling import SamplerSettings

    pipe = build_toy_pipeline(ToyModelConfig.tiny())
    pipe.set_progress_bar_config(disable=True)
    rows = split(build_toy_prompts() + build_pair_prompts(toy_recipe()), "bench")
    plan = Plan(tuple(rows), (0, 1), SamplerSettings(steps=2), ("bench",)).reduced(
        Reduction(targets=2, retain_per_class=0, neighbours_per_class=1, leakage_pairs=1))
    return pipe, plan


def test_shards_are_strided_and_files_named_per_rank(tmp_path):
    shards = [Shard(rank, 3) for rank in range(3)]
    assert [s.take(range(8)) for s in shards] == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert shards[1].file(tmp_path, "base", ".h5") == tmp_path / "base.rank1.h5"
    assert Shard().file(tmp_path, "base", ".answers.csv") == tmp_path / "base.answers.csv"
    assert [p.name for p in shards[0].files(tmp_path, "uce-bench", ".h5")] == [
        "uce-bench.rank0.h5", "uce-bench.rank1.h5", "uce-bench.rank2.h5"]


def run_everything(folder: Path, pipe, plan, shard: Shard) -> list:
    """The benchmark every process runs: the base model and its UCE erasure of "bench", judged by the oracle."""
    from attnscope.judges import ToyOracle
    from attnscope.runner import BASE, edited_states, sample_states

    states = [BASE, *edited_states(pipe, ["uce"], ["bench"], folder, shard=shard)]
    return sample_states(pipe, plan, states, folder, judge=ToyOracle.load(), batch_size=BATCH, shard=shard,
                         progress=False)


def worker(rank: int, folder: str, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        pipe, plan = plan_and_pipe()
        runs = run_everything(Path(folder), pipe, plan, Shard.current())
        (Path(folder) / f"done.rank{rank}.json").write_text(json.dumps([r.sampled for r in runs]))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_split_the_jobs_and_rank0_merges(tmp_path, monkeypatch, one_thread):
    two, one = tmp_path / "two", tmp_path / "one"
    mp.spawn(worker, args=(str(two), free_port()), nprocs=WORLD, join=True)
    pipe, plan = plan_and_pipe()
    run_everything(one, pipe, plan, Shard())  # the same plan in this one process
    jobs = plan.jobs()
    sampled = [json.loads((two / f"done.rank{r}.json").read_text()) for r in range(WORLD)]
    shares = [Shard(r, WORLD).take(list(batches(jobs, BATCH))) for r in range(WORLD)]  # whole batches per rank
    assert [s[0] for s in sampled] == [sum(len(batch) for batch in share) for share in shares]

    monkeypatch.chdir(tmp_path)  # the merged file finds its shards relative to itself
    for state in ("base", "uce-bench"):
        shards = [two / f"{state}.rank{r}.h5" for r in range(WORLD)]
        with ExitStack() as files:
            merged = files.enter_context(RunFile(two / f"{state}.h5"))
            alone = files.enter_context(RunFile(one / f"{state}.h5"))
            parts = [files.enter_context(RunFile(p)) for p in shards]
            keys, alone_keys = index_runs(merged), index_runs(alone)
            assert sorted(keys) == sorted(alone_keys) == sorted(job_key(job) for job in jobs)  # every job once
            assert len(merged) == len(jobs)
            for part in parts:  # maps and images of each shard read back through the merge
                for key, run in index_runs(part).items():
                    np.testing.assert_array_equal(merged.image(keys[key]), part.image(run))
                    word = part.words(run)[-1]
                    np.testing.assert_array_equal(merged.heatmap(keys[key], word=word), part.heatmap(run, word=word))
            for key, run in keys.items():  # the same images and maps as one process made
                np.testing.assert_array_equal(merged.image(run), alone.image(alone_keys[key]))
                mid = "mid_block.*"
                np.testing.assert_array_equal(merged.maps(run, mid), alone.maps(alone_keys[key], mid))
        records = read_ledgers([two / f"{state}.answers.csv"])
        per_rank = read_ledgers(Shard(0, WORLD).files(two, state, ".answers.csv"))
        assert len(records) == len(per_rank) == len(plan.seeds) * sum(len(r.prompt.questions) for r in plan.rows)
        assert {(r["prompt_id"], r["seed"]) for r in records} == {job_key(job) for job in jobs}
        one_process = read_ledgers([one / f"{state}.answers.csv"])
        pd.testing.assert_frame_equal(pd.DataFrame(records), pd.DataFrame(one_process))  # same answers and order
        assert repr(side_effect_metrics(records)) == repr(side_effect_metrics(one_process))  # repr: nan == nan
