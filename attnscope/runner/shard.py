"""Split a benchmark over processes (``torchrun``): strided shards, per-rank files, one merge.

Rank ``r`` of ``w`` takes items ``r, r + w, r + 2w, ...`` (the runner hands
it whole batches of jobs) and writes its own
files, named ``{stem}.rank{r}{ext}`` (``base.rank0.h5``,
``base.rank0.answers.csv``); a single process writes ``{stem}{ext}``
directly. After a barrier, rank 0 joins the shards: run files with
:func:`attnscope.store.merge_shards` (virtual datasets, no copy), answer CSVs
by concatenation (put back in plan order).

Run under ``torchrun --nproc-per-node N`` (and ``--nnodes M --rdzv-endpoint
HOST:PORT`` across machines); :func:`init_distributed` joins the process group
it describes (NCCL on CUDA, gloo on CPU), one GPU per local rank. The merged
run file refers to the shards by relative path: on several nodes, write to a
folder all nodes share.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's share of a run: rank ``rank`` of ``world`` processes."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "Shard":
        """From the initialised process group, else a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, items: Sequence[T]) -> list[T]:
        """This rank's strided share of ``items``."""
        return list(items)[self.rank :: self.world]

    def file(self, folder: Path, stem: str, ext: str, rank: int | None = None) -> Path:
        """``folder/{stem}{ext}`` for one process, else ``folder/{stem}.rank{rank}{ext}``."""
        rank = self.rank if rank is None else rank
        return folder / (f"{stem}{ext}" if self.world == 1 else f"{stem}.rank{rank}{ext}")

    def files(self, folder: Path, stem: str, ext: str) -> list[Path]:
        """Every rank's :meth:`file`."""
        return [self.file(folder, stem, ext, rank) for rank in range(self.world)]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init_distributed(device: str = "auto") -> tuple[Shard, str]:
    """Join the process group described by torchrun's environment, if any.

    Returns the shard and the device this rank should use: ``cuda:LOCAL_RANK``
    when ``device`` is "auto"/"cuda" and CUDA is present, else ``device``.
    Without ``WORLD_SIZE > 1`` nothing is initialised.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        cuda = torch.cuda.is_available() and device in ("auto", "cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=2))
    shard = Shard.current()
    if shard.world > 1 and torch.cuda.is_available() and device in ("auto", "cuda"):
        device = f"cuda:{torch.cuda.current_device()}"
    return shard, device
