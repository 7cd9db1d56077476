"""The HDF5 run format: writer thread, reader, shard merge, aggregations.

The layout is documented in ``docs/format.md``.
"""

from attnscope.store.merge import merge_shards
from attnscope.store.reader import RunFile, Token
from attnscope.store.schema import CaptureSchema, LayerSpec, RunRecord
from attnscope.store.writer import RunFileError, RunWriter, recover

__all__ = [
    "CaptureSchema",
    "LayerSpec",
    "RunFile",
    "RunFileError",
    "RunRecord",
    "RunWriter",
    "Token",
    "merge_shards",
    "recover",
]
