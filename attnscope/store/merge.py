"""Merge run-file shards (one per GPU rank or per resumed session) without copying maps.

The merged file's ``maps``, ``images`` and token datasets are HDF5 virtual
datasets that point into the shards; only the small run table is rewritten
(row offsets shift by the rows of the shards before). Keep the shards next to
the merged file: it refers to them by relative path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from attnscope.errors import FileRefused
from attnscope.store.compression import encoding, storage_mode
from attnscope.store.lock import RunFileLock
from attnscope.store.reader import RunFile, is_run_file
from attnscope.store.writer import _RUN_FIELDS, _TOKEN_FIELDS, RunFileError


def _virtual(out: h5py.File, name: str, shards: list[tuple[str, h5py.Dataset]]) -> None:
    """Concatenate ``shards``' datasets along axis 0 into virtual dataset ``name``."""
    first = shards[0][1]
    total = sum(ds.shape[0] for _, ds in shards)
    layout = h5py.VirtualLayout(shape=(total,) + first.shape[1:], dtype=first.dtype)
    start = 0
    for relative, dataset in shards:
        n = dataset.shape[0]
        if n:
            layout[start : start + n] = h5py.VirtualSource(relative, dataset.name, shape=dataset.shape)
        start += n
    out.create_virtual_dataset(name, layout, fillvalue=None)


def merge_shards(shards: Sequence[str | os.PathLike], out: str | os.PathLike) -> int:
    """Write ``out`` joining the runs of ``shards`` in order; returns the run count.

    All shards must share one capture schema. Each shard's images dataset is
    padded to its run count first, so run ``i`` of the merge has image row ``i``.
    """
    out = Path(out)
    opened = [RunFile(path) for path in shards]
    try:
        schema = opened[0].schema
        for shard in opened[1:]:
            if diff := schema.compatible_with(shard.schema):
                raise RunFileError(f"{shard.file.filename} differs from {opened[0].file.filename} in {diff}")
            if (mode := storage_mode(shard.file["maps"])) != storage_mode(opened[0].file["maps"]):
                raise RunFileError(f"{shard.file.filename} stores maps {mode}, {opened[0].file.filename} does not")
            if (kind := encoding(shard.file["maps"])) != encoding(opened[0].file["maps"]):  # format 2 vs 3
                raise RunFileError(f"{shard.file.filename} encodes maps {kind}, {opened[0].file.filename} does not")
        if out.exists() and not is_run_file(out):
            raise FileRefused(f"{out} exists and is not an attnscope run file: it will not be overwritten by a merge")
        with RunFileLock(out, "merging"), h5py.File(out, "w", libver="latest") as merged:
            for key, value in opened[0].file.attrs.items():
                merged.attrs[key] = value
            relative = [os.path.relpath(shard.file.filename, out.parent) for shard in opened]
            _virtual(merged, "maps", [(r, s.file["maps"]) for r, s in zip(relative, opened)])
            for key, value in opened[0].file["maps"].attrs.items():  # how to decode the maps
                merged["maps"].attrs[key] = value
            for name in _TOKEN_FIELDS:
                _virtual(merged, f"tokens/{name}", [(r, s.file["tokens"][name]) for r, s in zip(relative, opened)])
            images = merged.create_dataset(
                "images", (0,) + opened[0].file["images"].shape[1:], maxshape=(None,) + opened[0].file["images"].shape[1:],
                dtype=np.uint8, chunks=(1,) + opened[0].file["images"].shape[1:],
            )
            runs = merged.create_group("runs")
            row_offset = 0
            columns: dict[str, list] = {name: [] for name in _RUN_FIELDS}
            for shard in opened:
                for name in _RUN_FIELDS:
                    values = shard.file["runs"][name][:]
                    columns[name].append(values + row_offset if name == "row_start" else values)
                row_offset += shard.file["maps"].shape[0]
                n = len(shard)
                has = shard.has_image
                block = np.zeros((n,) + images.shape[1:], np.uint8)
                for run in np.flatnonzero(has):
                    block[run] = shard.file["images"][run]
                start = images.shape[0]
                images.resize((start + n,) + images.shape[1:])
                images[start:] = block
            for name, dtype in _RUN_FIELDS.items():
                runs.create_dataset(name, data=np.concatenate(columns[name]), dtype=dtype, maxshape=(None,), chunks=True)
            return int(runs["complete"].shape[0])
    finally:
        for shard in opened:
            shard.close()
