"""The run file: crash safety, resume, shard merge, reading and aggregation."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
import torch

from attnscope import capture
from attnscope.sampling import Job, SamplerSettings, generate
from attnscope.store import RunFile, merge_shards
from attnscope.store.aggregate import merge_words, upsample
from attnscope.store.compression import Storage
from attnscope.store.tokens import group_words

SETTINGS = SamplerSettings(steps=3, height=64, width=64)
JOBS = [Job("a wooden bench and a bird", seed) for seed in range(3)]

WRITER = textwrap.dedent(
    """
    import sys, torch
    from attnscope import capture
    from attnscope.models import tiny_sd_pipeline
    from attnscope.sampling import Job, SamplerSettings, generate
    pipe = tiny_sd_pipeline()
    with capture(pipe, sink=sys.argv[1]) as cap:
        for seed in range(10_000):  # runs until killed
            generate(pipe, [Job("a red car", seed)], SamplerSettings(steps=3, height=64, width=64), progress=False, cap=cap)
            print(seed, flush=True)
    """
)


def test_a_killed_writer_leaves_a_readable_file_that_resumes(tmp_path, sd):
    path = tmp_path / "killed.h5"
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.getcwd()})
    for _ in range(3):  # wait until a few batches went through, then kill mid-stream
        assert process.stdout.readline(), "writer died early"
    process.send_signal(signal.SIGKILL)
    process.wait()

    with RunFile(path) as runs:  # opens although HDF5 still marks the file as open for writing
        complete = runs.complete
        assert complete.sum() >= 2
        for run in np.flatnonzero(complete):
            assert np.isfinite(runs.maps(int(run), "mid_block.*", word="car")).all()
        n_complete = int(complete.sum())

    with capture(sd, sink=path, resume=True) as cap:  # recovers, then appends
        generate(sd, JOBS[:1], SETTINGS, progress=False, cap=cap)
    with RunFile(path) as runs:
        assert len(runs) == n_complete + 1 and runs.complete.all()
        assert runs.record(len(runs) - 1).prompt == JOBS[0].prompt


def test_runs_are_labelled_with_prompt_seed_and_metadata(tmp_path, sd):
    jobs = [Job("a red car", 7, extra={"prompt_id": 3, "role": "retain"})]
    with capture(sd, sink=tmp_path / "run.h5") as cap:
        images = generate(sd, jobs, SETTINGS, progress=False, cap=cap)
    with RunFile(tmp_path / "run.h5") as runs:
        record = runs.record(0)
        assert (record.prompt, record.seed, record.extra) == ("a red car", 7, {"prompt_id": 3, "role": "retain"})
        assert np.array_equal(runs.image(0), images[0])
        assert runs.find(role="retain") == [0]
        assert runs.versions["attnscope"]


def test_resume_refuses_other_settings(tmp_path, sd):
    with capture(sd, sink=tmp_path / "run.h5") as cap:
        generate(sd, JOBS[:1], SETTINGS, progress=False, cap=cap)
    with pytest.raises(Exception, match="capture schema differs in .*steps"):
        with capture(sd, sink=tmp_path / "run.h5", resume=True, steps=[0]) as cap:
            generate(sd, JOBS[:1], SETTINGS, progress=False, cap=cap)


def test_shards_merge_into_one_virtual_file(tmp_path, sd):
    for rank, jobs in enumerate([JOBS[:2], JOBS[2:]]):
        with capture(sd, sink=tmp_path / f"shard-{rank}.h5") as cap:
            generate(sd, jobs, SETTINGS, progress=False, cap=cap)
    n = merge_shards([tmp_path / "shard-0.h5", tmp_path / "shard-1.h5"], tmp_path / "all.h5")
    assert n == 3
    with RunFile(tmp_path / "all.h5") as merged, RunFile(tmp_path / "shard-1.h5") as last:
        assert list(merged.column("seed")) == [0, 1, 2]
        assert merged.file["maps"].is_virtual
        assert np.array_equal(merged.maps(2, "mid_block.*"), last.maps(0, "mid_block.*"))
        assert np.array_equal(merged.image(2), last.image(0))


def test_heatmap_is_scaled_and_image_sized(sd):
    with capture(sd) as cap:
        generate(sd, JOBS[:1], SETTINGS, progress=False, cap=cap)
    heat = cap.heatmap(word="bench")
    assert heat.shape == (64, 64) and heat.min() == 0 and heat.max() == pytest.approx(1)


def test_words_group_clip_subword_tokens():
    tokens = ["<|startoftext|>", "a</w>", "wood", "en</w>", "bench</w>", "<|endoftext|>"]
    assert group_words(tokens) == ([-1, 0, 1, 1, 2, -1], ["a", "wooden", "bench"])
    assert group_words(["<|startoftext|>", "a", "wooden", "bench"])[1] == ["a", "wooden", "bench"]


def test_merge_words_sums_pieces_and_drops_specials():
    maps = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 2, 2), np.float32)
    merged = merge_words(maps, np.array([-1, 0, 1, 1, -1]), n_words=2)
    assert merged[:, 0, 0].tolist() == [1.0, 5.0]


def test_upsample_keeps_constant_maps_constant():
    assert np.allclose(upsample(np.full((3, 4, 4), 0.25, np.float32), (16, 16)), 0.25)


def test_the_writer_times_its_work_and_the_waits_it_causes(tmp_path, monkeypatch):
    """A writer slower than the sampling: the producer waits for room in its queue (``waited``), the thread's
    time shows in ``writing``, and what is left when sampling ends in ``drain``."""
    from attnscope.store import writer as run_writer
    from attnscope.store.schema import CaptureSchema, RunRecord, layout

    write_steps = run_writer.RunWriter._write_steps
    monkeypatch.setattr(run_writer.RunWriter, "_write_steps", lambda self, item: (time.sleep(0.2), write_steps(self, item)))
    schema = CaptureSchema(height=8, width=8, latent_height=4, latent_width=4, layers=tuple(layout([("l", "mid", 4, 4, 1)])),
                           steps=(0, 1, 2, 3), timesteps=(3.0, 2.0, 1.0, 0.0), heads="mean", branch="cond", dtype="float16")
    rows = run_writer.BatchRows([[0, 1]])
    with run_writer.RunWriter(tmp_path / "slow.h5", max_pending=1, storage=Storage(step_block=1)) as writer:
        writer.open(schema)
        for step in range(4):  # one block per step: the queue holds one, the thread sleeps on another
            writer.submit_steps(rows, step, torch.rand(1, 1, 2, 16, dtype=torch.float16))
        writer.submit_runs(rows, [RunRecord("a red car", "", 0, 7.5, [(1, "red", 1), (2, "car", 2)])], writer.reserve(1))
    timing = writer.timing
    assert timing.writing >= 0.8 and timing.waited >= 0.3 and timing.drain >= 0.15
    with RunFile(tmp_path / "slow.h5") as runs:
        assert runs.complete.all()


def test_a_capture_reports_its_writer_timing(sd):
    with capture(sd) as cap:
        generate(sd, JOBS[:1], SETTINGS, progress=False, cap=cap)
    assert cap.writer_timing.writing > 0 and cap.writer_timing.drain > 0  # set once the file is closed


@pytest.mark.parametrize("mode", ["lossless", "quantised", "raw"])
@pytest.mark.parametrize("slots", [[[0, 1, 2, 3], [0, 2]], [[0, 1, 2, 3], [0, 1, 2, 3]]], ids=["uneven", "every slot"])
def test_each_run_of_a_batch_gets_its_token_slots_block_after_block_from_a_reused_buffer(tmp_path, mode, slots):
    """A batch is written in one piece per block of steps; runs own different slots of the host maps (a shorter
    prompt, an unconditional branch after the conditional one) and read back exactly those. The blocks arrive
    in one host buffer that is refilled once the writer is done with it, as the GPU's pinned blocks are: what
    the next block is encoded against must not live in that buffer."""
    from attnscope.store import compression
    from attnscope.store.schema import CaptureSchema, RunRecord, layout
    from attnscope.store.writer import BatchRows, RunWriter

    schema = CaptureSchema(height=8, width=8, latent_height=4, latent_width=4, layers=tuple(layout([("l", "mid", 4, 4, 1)])),
                           steps=tuple(range(6)), timesteps=(5.0, 4.0, 3.0, 2.0, 1.0, 0.0), heads="mean", branch="both",
                           dtype="float16")
    maps = torch.rand(6, 2, 4, 16, generator=torch.Generator().manual_seed(0)).to(torch.float16)  # (steps, runs, slots, L)
    # uneven: run 1 owns one conditional token (slot 0) and one unconditional (slot 2)
    tokens = {4: [(1, "a", 0), (2, "red", 1), (0, "<s>", -1), (1, "x", 0)], 2: [(1, "car", 0), (0, "<s>", -1)]}
    records = [RunRecord("a prompt", "", run, 7.5, tokens[len(owned)], len(owned) // 2) for run, owned in enumerate(slots)]
    rows, buffer = BatchRows(slots), torch.empty(2, 2, 4, 16, dtype=torch.float16)
    with RunWriter(tmp_path / f"{mode}.h5", storage=compression.Storage(mode, step_block=2)) as writer:
        writer.open(schema)
        for first in range(0, 6, 2):
            buffer.copy_(maps[first : first + 2])
            writer.submit_steps(rows, first, buffer)
            writer.flush()  # the writer is done with the buffer: it is refilled for the next block
        writer.submit_runs(rows, records, writer.reserve(2))
    with RunFile(tmp_path / f"{mode}.h5") as runs:
        for run, owned in enumerate(slots):
            stored = compression.read(runs.file["maps"], runs.rows(run))  # (rows, steps, L)
            expected = maps[:, run, owned].transpose(0, 1).float().numpy()
            assert np.abs(stored - expected).max() <= (compression.MAX_ERROR + 1e-6 if mode == "quantised" else 0)
