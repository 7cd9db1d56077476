"""Append runs to a run file from a background thread.

The capture hooks hand over each batch of runs while it samples, in *step
blocks*: host tensors ``(steps, runs, tokens_max, L)`` of :attr:`RunWriter.step_block`
stored steps (possibly still being filled by asynchronous device-to-host
copies, signalled by a CUDA event). A block fills whole chunks of ``/maps``,
so the single writer thread compresses and writes it while the next block
samples; when the sampling loop ends only the last block is left to write.
Then come one :class:`RunRecord` per run: the thread appends the labels,
flushes, and only then marks the runs complete, so a file from a killed
process opens and tells which runs are whole. (:meth:`RunWriter.submit`
takes a whole batch at once.)

Files on disk are written in HDF5's single-writer/multiple-reader (SWMR) mode:
HDF5 then keeps the file consistent at every flush, which is what makes a
killed writer's file readable (``RunFile`` opens such a file in SWMR-read
mode). Without ``path`` the file lives in memory (for notebooks and tests).

One writer per file: a :class:`~attnscope.store.lock.RunFileLock` is held
from construction to :meth:`RunWriter.close` (SWMR mode gives up HDF5's own
file lock). Nothing is overwritten that is not a run file, and a run file
only with ``overwrite=True`` (or appended to with ``resume=True``).

No wait of the producer is unbounded: a failed writer thread is reported at
the producer's next call (capture checks at every UNet step), and a writer
that makes no progress for ``stall_seconds`` is reported as failed.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch

from attnscope.errors import FileRefused, UserError
from attnscope.store.compression import Storage, carry, encode, encoding, storage_mode
from attnscope.store.lock import RunFileLock
from attnscope.store.schema import FORMAT_NAME, FORMAT_VERSION, CaptureSchema, RunRecord

_STR = h5py.string_dtype()
_RUN_FIELDS = {  # name -> dtype of the 1-D datasets under /runs
    "prompt": _STR,
    "negative_prompt": _STR,
    "seed": np.int64,
    "guidance_scale": np.float32,
    "row_start": np.int64,
    "n_tokens": np.int32,
    "n_uncond_tokens": np.int32,
    "extra": _STR,
    "complete": bool,
    "has_image": bool,
}
_TOKEN_FIELDS = {"text": _STR, "position": np.int32, "word": np.int32, "branch": np.int8}


class RunFileError(UserError, RuntimeError):
    """A run file cannot be opened or appended to as asked."""


class RunWriterFailed(RuntimeError):
    """The writer thread failed or stopped making progress; the capture ends with its error."""


@dataclass
class WriterTiming:
    """Seconds a capture's writing took, and how much of it the sampling felt.

    ``writing``: the writer thread encoding, compressing and writing (beside the
    sampling; it includes waiting for a block's device-to-host copies to land);
    ``waited``: the sampling thread blocked on the writer — its queue or its
    host buffers full, i.e. the writer fell behind; ``drain``: closing, after
    sampling ended (the last blocks still to write).
    """

    writing: float = 0.0
    waited: float = 0.0
    drain: float = 0.0


def _versions() -> dict[str, str]:
    import diffusers

    from attnscope._version import __version__

    return {
        "attnscope": __version__,
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "h5py": h5py.__version__,
    }


def create_layout(file: h5py.File, schema: CaptureSchema, storage: Storage = Storage(),
                  encoding: str | None = None) -> None:
    """Create every group and dataset of an empty run file (SWMR forbids later creation); ``encoding`` of
    /maps: the storage mode's, or that of a file being copied."""
    file.attrs["format"] = FORMAT_NAME
    file.attrs["format_version"] = FORMAT_VERSION
    file.attrs["schema"] = schema.to_json()
    file.attrs["versions"] = json.dumps(_versions())
    file.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    runs = file.create_group("runs")
    for name, dtype in _RUN_FIELDS.items():
        runs.create_dataset(name, (0,), maxshape=(None,), dtype=dtype, chunks=(1024,))
    tokens = file.create_group("tokens")
    for name, dtype in _TOKEN_FIELDS.items():
        tokens.create_dataset(name, (0,), maxshape=(None,), dtype=dtype, chunks=(4096,))
    storage.create_maps(file, len(schema.steps), schema.width_l, schema.dtype, encoding)
    file.create_dataset(
        "images", (0, schema.height, schema.width, 3), maxshape=(None, schema.height, schema.width, 3),
        dtype=np.uint8, chunks=(1, schema.height, schema.width, 3),
    )


def _append(dataset: h5py.Dataset, values) -> int:
    """Append ``values`` along axis 0; returns the start index."""
    start = dataset.shape[0]
    values = np.asarray(values, dtype=dataset.dtype) if dataset.dtype != _STR else list(values)
    dataset.resize((start + len(values),) + dataset.shape[1:])
    dataset[start:] = values
    return start


@dataclass
class BatchRows:
    """The ``/maps`` rows of one batch of runs, allocated when its first steps are written.

    ``slots[i]``: the token slots of the host maps that run ``i`` owns; the
    writer thread sets ``starts`` (each run's first row) and keeps what the next block of steps is
    encoded against (lossless and quantised files encode each step against the one before).
    """

    slots: list[list[int]]
    starts: list[int] | None = None
    previous: np.ndarray | None = None  # `compression.carry` of the last block written: (rows, L)


@dataclass
class _Steps:
    rows: BatchRows
    first: int  # the block's first stored step
    maps: torch.Tensor  # (steps, runs, tokens_max, L) on the host
    ready: torch.cuda.Event | None  # set when the device-to-host copies finished
    release: Callable[[], None]  # hands the host buffer back to its pool


@dataclass
class _Batch:
    rows: BatchRows
    records: list[RunRecord]
    run_ids: list[int]


@dataclass
class _Images:
    images: np.ndarray  # (runs, H, W, 3) uint8
    run_ids: list[int]


def recover(path: str | os.PathLike) -> int:
    """Rewrite a file left by a killed writer so it can be appended to again.

    HDF5 marks a file open for writing until it is closed; a killed process
    leaves the mark. Complete runs are copied to a fresh file that replaces the
    old one; incomplete runs are dropped. Returns the number of runs kept.
    Refused (:class:`~attnscope.store.lock.RunFileLocked`) while a live writer holds the file.
    """
    with RunFileLock(path, "recovering"):
        return _recover(Path(path))


def _recover(path: Path) -> int:
    """:func:`recover` for a caller that holds the file's lock."""
    from attnscope.store.reader import RunFile

    temporary = path.with_name(path.name + ".recovering")
    with RunFile(path) as old, h5py.File(temporary, "w", libver="latest") as new:
        maps = old.file["maps"]  # copied as stored: same mode, same encoding, same steps per chunk
        create_layout(new, old.schema, Storage(storage_mode(maps), step_block=maps.chunks[1]), encoding(maps))
        keep = np.flatnonzero(old.complete)
        for run in keep:
            record = old.record(int(run))
            rows = old.rows(int(run))
            start = _append(new["maps"], old.file["maps"][rows])
            _write_run_entries(new, [record], [start], complete=True)
            if old.has_image[run]:
                _append(new["images"], old.file["images"][int(run)][None])
                new["runs/has_image"][-1] = True
            else:
                _append(new["images"], np.zeros((1,) + new["images"].shape[1:], np.uint8))
    os.replace(temporary, path)
    return len(keep)


def _write_run_entries(file: h5py.File, records: list[RunRecord], row_starts: list[int], complete: bool) -> None:
    """Append the /runs and /tokens entries of ``records`` (maps rows from ``row_starts``): one write per field."""
    runs, tokens = file["runs"], file["tokens"]
    values = {
        "prompt": [r.prompt for r in records],
        "negative_prompt": [r.negative_prompt for r in records],
        "seed": [r.seed for r in records],
        "guidance_scale": [r.guidance_scale for r in records],
        "row_start": row_starts,
        "n_tokens": [r.n_tokens for r in records],
        "n_uncond_tokens": [r.n_uncond_tokens for r in records],
        "extra": [json.dumps(r.extra, sort_keys=True) for r in records],
        "complete": [complete] * len(records),
        "has_image": [False] * len(records),
    }
    for name, value in values.items():
        _append(runs[name], value)
    every = [token for r in records for token in r.tokens]
    _append(tokens["position"], [p for p, _, _ in every])
    _append(tokens["text"], [t for _, t, _ in every])
    _append(tokens["word"], [w for _, _, w in every])
    _append(tokens["branch"], [b for r in records for b in [1] * r.n_tokens + [0] * r.n_uncond_tokens])


def _pad_tokens(file: h5py.File, rows: int) -> None:
    """Append /tokens entries that belong to no run (text "", position and word -1) up to ``rows`` entries,
    so that /tokens stays aligned with /maps after the rows of a batch dropped mid-sampling."""
    tokens = file["tokens"]
    n = rows - tokens["position"].shape[0]
    if n > 0:
        _append(tokens["text"], [""] * n)
        _append(tokens["position"], [-1] * n)
        _append(tokens["word"], [-1] * n)
        _append(tokens["branch"], [0] * n)


class RunWriter:
    """Owns one run file and the thread that appends to it.

    ``path=None`` keeps the file in memory. ``resume=True`` appends to an
    existing file (recovering it first if its writer was killed); its schema
    and storage mode must match. ``storage``: "lossless", "quantised" or "raw"
    (:mod:`attnscope.store.compression`). Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        *,
        resume: bool = False,
        overwrite: bool = False,
        max_pending: int = 16,
        stall_seconds: float = 600.0,
        storage: str | Storage = "lossless",
    ):
        self.path = None if path is None else Path(path)
        self.storage = Storage.of(storage)
        self._resume = resume
        self._stall_seconds = stall_seconds
        self._file_lock = None if self.path is None else RunFileLock(self.path, "capturing").acquire()
        try:
            if self.path is not None:
                _check_target(self.path, resume=resume, overwrite=overwrite)
        except BaseException:
            self._file_lock.release()
            raise
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._progress = time.monotonic()  # last time work was handed over or finished
        self._lock = threading.Lock()
        self.file: h5py.File | None = None
        self.schema: CaptureSchema | None = None
        self._n_runs = 0
        self.step_block = 0  # stored steps per chunk of /maps, known once the file is open: write steps in blocks of it
        self.timing = WriterTiming()
        self._thread = threading.Thread(target=self._work, name="attnscope-run-writer", daemon=True)
        self._thread.start()

    # -- opening -----------------------------------------------------------
    def open(self, schema: CaptureSchema) -> None:
        """Create (or reopen for appending) the file for ``schema``; idempotent."""
        if self.file is not None:
            if diff := self.schema.compatible_with(schema):
                raise RunFileError(f"runs with a different capture schema ({', '.join(diff)}) need another file")
            return
        if self.path is None:
            self.file = h5py.File(f"attnscope-memory-{id(self)}.h5", "w", driver="core", backing_store=False)
            create_layout(self.file, schema, self.storage)
        elif self._resume and self.path.exists():
            self.file = self._reopen(schema)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = h5py.File(self.path, "w", libver="latest")
            create_layout(self.file, schema, self.storage)
            self.file.swmr_mode = True
        self.schema = schema
        self._n_runs = self.file["runs/complete"].shape[0]
        self.step_block = self.file["maps"].chunks[1]

    def _reopen(self, schema: CaptureSchema) -> h5py.File:
        try:
            file = h5py.File(self.path, "r+", libver="latest")
        except OSError:
            _recover(self.path)
            file = h5py.File(self.path, "r+", libver="latest")
        existing = CaptureSchema.from_json(file.attrs["schema"])
        if diff := existing.compatible_with(schema):
            file.close()
            raise RunFileError(
                f"cannot resume {self.path}: its capture schema differs in {', '.join(diff)}; "
                "write to a new file or capture with the same settings"
            )
        if (found := storage_mode(file["maps"])) != self.storage.mode:
            file.close()
            raise RunFileError(f"cannot resume {self.path}: it stores maps {found}, not {self.storage.mode}; "
                               f"resume with storage={found!r}")
        file.swmr_mode = True
        return file

    def reserve(self, n: int) -> list[int]:
        """Run ids for the next ``n`` runs (ids are row numbers of /runs)."""
        with self._lock:
            ids = list(range(self._n_runs, self._n_runs + n))
            self._n_runs += n
        return ids

    # -- feeding -----------------------------------------------------------
    def submit(self, maps, ready, records, run_ids, release=lambda: None, slots=None) -> None:
        """Queue a whole batch: ``maps`` ``(runs, tokens_max, steps, L)``, ``ready`` a CUDA event
        (or None), one record and run id per run; ``slots[i]`` lists the token
        slots run ``i`` owns (default: its first ``len(record.tokens)``).
        Blocks when ``max_pending`` items wait (backpressure)."""
        rows = BatchRows(slots or [list(range(len(record.tokens))) for record in records])
        self.submit_steps(rows, 0, maps.permute(2, 0, 1, 3), ready, release)
        self.submit_runs(rows, records, run_ids)

    def submit_steps(self, rows: BatchRows, first: int, maps, ready=None, release=lambda: None) -> None:
        """Queue stored steps ``first …`` of a batch while it samples: ``maps`` ``(steps, runs, tokens_max, L)``
        on the host, ``ready`` a CUDA event (or None) set once it is filled. Blocks of :attr:`step_block`
        steps (the last may be shorter) fill whole chunks, so they are compressed and written at once."""
        self._put(_Steps(rows, first, maps, ready, release))

    def submit_runs(self, rows: BatchRows, records: list[RunRecord], run_ids: list[int]) -> None:
        """Queue the end of a batch whose steps were all submitted: one record and run id per run."""
        self._put(_Batch(rows, records, run_ids))

    def submit_images(self, images: np.ndarray, run_ids: list[int]) -> None:
        """Queue images ``(runs, H, W, 3)`` uint8 of runs already submitted."""
        self._put(_Images(np.ascontiguousarray(images), run_ids))

    def flush(self) -> None:
        """Wait until everything queued is written and flushed."""
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                self._raise_if_failed()
                self._check_stalled()
                self._queue.all_tasks_done.wait(timeout=0.5)
        self._raise_if_failed()

    def close(self) -> None:
        """Drain the queue, close the file and release the lock; raises the thread's error, if any."""
        started = time.perf_counter()
        try:
            self._stop_thread()
            if self.file is not None and self._error is None:
                _pad_tokens(self.file, self.file["maps"].shape[0])  # a last batch dropped mid-sampling
            if self.file is not None and self.path is not None:
                self.file.close()
        finally:
            if self._file_lock is not None and not self._thread.is_alive():
                self._file_lock.release()  # a stalled thread may still write: then the lock stays until exit
            self.timing.drain = time.perf_counter() - started
        self._raise_if_failed()

    def check(self) -> None:
        """Raise :class:`RunWriterFailed` if the thread failed, died or stalled (cheap; for the sampling loop)."""
        self._raise_if_failed()
        self._check_stalled()

    def _put(self, item) -> None:
        """Queue ``item``, waiting for room in slices so that a failed, dead or stalled thread ends the wait."""
        started = time.perf_counter()
        while True:
            self._raise_if_failed()
            try:
                self._queue.put(item, timeout=0.5)
                self._progress = time.monotonic()  # the stall clock runs from when work was handed over
                self.timing.waited += time.perf_counter() - started
                return
            except queue.Full:
                self._check_stalled()

    def _stop_thread(self) -> None:
        """Queue the stop item and wait for the thread to drain (a failed thread drains without writing)."""
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=0.5)
                break
            except queue.Full:
                self._check_stalled()
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)
            self._check_stalled()

    def _check_stalled(self) -> None:
        """Raise when, with work queued, the thread died or has finished nothing for ``stall_seconds``."""
        if not self._queue.unfinished_tasks:  # an idle writer is not stalled
            return
        where = self.path or "the in-memory file"
        if not self._thread.is_alive():
            raise RunWriterFailed(f"the run writer of {where} stopped with work queued")
        if time.monotonic() - self._progress > self._stall_seconds:
            raise RunWriterFailed(f"the run writer of {where} made no progress for {self._stall_seconds:g} s "
                                  "(file system stuck?); complete runs so far are kept")

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RunWriterFailed(
                f"the run writer of {self.path or 'the in-memory file'} failed: {self._error}"
            ) from self._error

    # -- the thread --------------------------------------------------------
    def _work(self) -> None:
        write = {_Steps: self._write_steps, _Batch: self._write_batch, _Images: self._write_images}
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    started = time.perf_counter()
                    write[type(item)](item)
                    self.timing.writing += time.perf_counter() - started
            except BaseException as error:  # reported to the producer on its next call
                self._error = error
            finally:
                if isinstance(item, _Steps):
                    item.release()
                self._progress = time.monotonic()
                self._queue.task_done()

    def _write_steps(self, item: _Steps) -> None:
        """Write a block of stored steps of every run of a batch (the batch's rows are made at its first block)."""
        dataset, rows = self.file["maps"], item.rows
        if rows.starts is None:
            start = dataset.shape[0]
            counts = [len(owned) for owned in rows.slots]
            dataset.resize((start + sum(counts),) + dataset.shape[1:])
            rows.starts = [start + sum(counts[:i]) for i in range(len(counts))]
        if item.ready is not None:
            item.ready.synchronize()
        maps = item.maps.numpy()
        n_steps, runs, tokens, width = maps.shape
        by_slot = maps.reshape(n_steps, runs * tokens, width)
        owned = [run * tokens + slot for run, slots in enumerate(rows.slots) for slot in slots]  # file row order
        values = (by_slot if owned == list(range(runs * tokens)) else by_slot[:, owned]).transpose(1, 0, 2)
        kind = encoding(dataset)
        # One write per block (the batch's rows are consecutive): h5py drops and retakes the GIL around each
        # HDF5 call it makes, so fewer calls hand the GIL back and forth with the sampling thread less often.
        dataset[rows.starts[0] : rows.starts[0] + len(owned), item.first : item.first + n_steps] = encode(
            kind, values, rows.previous)
        rows.previous = carry(kind, values)

    def _write_batch(self, batch: _Batch) -> None:
        """Label the batch's runs, after all its steps: /runs and /tokens entries, then ``complete``."""
        file = self.file
        first = batch.run_ids[0]
        if file["runs/complete"].shape[0] != first:
            raise RunFileError(f"runs must be written in order: expected run {file['runs/complete'].shape[0]}, got {first}")
        _pad_tokens(file, batch.rows.starts[0])  # after rows of a batch dropped mid-sampling, if any
        _write_run_entries(file, batch.records, batch.rows.starts, complete=False)
        file.flush()
        file["runs/complete"][first : first + len(batch.run_ids)] = True
        file.flush()

    def _write_images(self, item: _Images) -> None:
        images = self.file["images"]
        last = max(item.run_ids) + 1
        if images.shape[0] < last:
            images.resize((last,) + images.shape[1:])
        if item.images.shape[1:] != images.shape[1:]:
            raise RunFileError(f"image shape {item.images.shape[1:]} does not match the file's {images.shape[1:]}")
        first, n = item.run_ids[0], len(item.run_ids)
        consecutive = item.run_ids == list(range(first, first + n))  # the runs of one pipeline call
        if consecutive:
            images[first : first + n] = item.images
        else:
            for image, run in zip(item.images, item.run_ids):
                images[run] = image
        self.file.flush()
        has_image = self.file["runs/has_image"]
        if consecutive:
            has_image[first : first + n] = True
        else:
            for run in item.run_ids:
                has_image[run] = True
        self.file.flush()


def _check_target(path: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to write ``path`` when it is a folder, not a run file, or a run file to keep."""
    from attnscope.store.reader import is_run_file

    if path.is_dir():
        raise FileRefused(f"{path} is a folder: give the run file's path, e.g. {path / 'run.h5'}")
    if not path.exists():
        return
    if not is_run_file(path):
        raise FileRefused(f"{path} exists and is not an attnscope run file: it will not be overwritten; "
                          "choose another output path")
    if not (resume or overwrite):
        raise FileRefused(f"{path} already holds runs: resume it (--resume), replace it (--overwrite), "
                          "or choose another output path")
