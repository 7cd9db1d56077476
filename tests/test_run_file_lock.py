"""One writer per run file, and a writer that fails or stalls ends the capture instead of hanging it."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from attnscope.errors import FileRefused
from attnscope.hooks import capture
from attnscope.store import RunWriter, recover
from attnscope.store.lock import RunFileLock, RunFileLocked, lock_path
from attnscope.store.writer import RunWriterFailed

# A second process that opens a run writer on argv[1], says so, and holds it until killed.
HOLDER = """
import sys, time
from attnscope.store import RunWriter
writer = RunWriter(sys.argv[1])
print("holding", flush=True)
time.sleep(600)
"""


def test_a_second_writer_in_another_process_is_refused_and_a_killed_holders_lock_is_taken_over(tmp_path, capsys):
    path = tmp_path / "run.h5"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(RunFileLocked, match=rf"{path} is being written by pid {holder.pid} on host "):
            RunWriter(path)
        with pytest.raises(RunFileLocked, match=f"pid {holder.pid}"):
            recover(path)  # would replace the file under the live writer
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(path).exists()  # the killed holder could not clean up ...
    with RunWriter(path):  # ... but its lock does not block the next writer
        pass
    assert f"took over the stale lock of {path} left by pid {holder.pid}" in capsys.readouterr().err
    assert not lock_path(path).exists()


def test_two_writers_in_one_process_and_a_released_lock(tmp_path):
    path = tmp_path / "run.h5"
    with RunFileLock(path, "capturing"):
        with pytest.raises(RunFileLocked, match=f"pid {os.getpid()}.*capturing"):
            RunFileLock(path).acquire()
    with RunFileLock(path):  # released: free again
        assert lock_path(path).exists()


def test_a_writer_refuses_what_it_did_not_write(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(FileRefused, match="notes.txt exists and is not an attnscope run file"):
        RunWriter(notes, overwrite=True)
    assert notes.read_text() == "mine" and not lock_path(notes).exists()
    with pytest.raises(FileRefused, match="is a folder"):
        RunWriter(tmp_path)
    with RunWriter(tmp_path / "run.h5") as writer:
        writer.open(_schema())
    with pytest.raises(FileRefused, match="already holds runs: resume it .*replace it"):
        RunWriter(tmp_path / "run.h5")
    RunWriter(tmp_path / "run.h5", overwrite=True).close()


def _schema():
    from attnscope.store.schema import CaptureSchema, layout

    return CaptureSchema(8, 8, 4, 4, tuple(layout([("up.attn2", "up", 2, 2, 1)])), (0,), (999.0,), "mean", "cond",
                         "float16")


def _batch(writer: RunWriter, n_tokens: int = 2):
    """A minimal valid batch for an in-memory writer."""
    from attnscope.store.schema import RunRecord

    writer.open(_schema())
    record = RunRecord("a car", "", 0, 7.5, [(0, "<s>", -1), (1, "car", 0)][:n_tokens])
    return torch.zeros(1, n_tokens, 1, 4, dtype=torch.float16), record


def test_a_stalled_writer_thread_ends_the_wait(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(RunWriter, "_write_batch", lambda self, batch: release.wait(30))
    writer = RunWriter(None, stall_seconds=0.5)
    maps, record = _batch(writer)
    writer.submit(maps, None, [record], writer.reserve(1))
    started = time.perf_counter()
    with pytest.raises(RunWriterFailed, match="made no progress for 0.5 s"):
        writer.flush()
    assert time.perf_counter() - started < 5
    release.set()
    writer.close()


def test_a_failed_writer_ends_the_capture_at_the_next_step(sd, tmp_path, monkeypatch, one_thread):
    def fail(self, batch):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunWriter, "_write_batch", fail)
    steps = []
    handle = sd.unet.register_forward_pre_hook(lambda *a: steps.append(1))
    try:
        with pytest.raises(RunWriterFailed, match="No space left on device"):
            with capture(sd, sink=tmp_path / "run.h5") as cap:
                for seed in (0, 1):
                    cap.label_next(["a red car"], [seed])
                    sd("a red car", num_inference_steps=4, height=64, width=64, output_type="np",
                       generator=torch.Generator().manual_seed(seed))
                    time.sleep(0.5)  # let the writer thread take the batch
    finally:
        handle.remove()
    assert len(steps) == len(sd.scheduler.timesteps) + 1  # the second call stopped at its first UNet step
    assert not lock_path(tmp_path / "run.h5").exists()


def test_a_merge_takes_the_lock_and_keeps_other_files(tmp_path):
    from attnscope.store import merge_shards

    shard = tmp_path / "shard-0.h5"
    with RunWriter(shard) as writer:
        writer.open(_schema())
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(FileRefused, match="not an attnscope run file"):
        merge_shards([shard], notes)
    with RunFileLock(tmp_path / "merged.h5"):
        with pytest.raises(RunFileLocked):
            merge_shards([shard], tmp_path / "merged.h5")
    assert merge_shards([shard], tmp_path / "merged.h5") == 0


def test_waiting_for_a_pinned_buffer_ends_when_the_writer_fails():
    from attnscope.hooks.buffers import PinnedPool

    def writer_failed():
        raise RunWriterFailed("the run writer failed: disk full")

    with pytest.raises(RunWriterFailed, match="disk full"):
        PinnedPool(capacity=0).take((2, 3), torch.float16, check=writer_failed)  # every buffer is taken
