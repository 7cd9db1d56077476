"""Timing of GPU work: wall-clock seconds with the device synchronised before and after, and peak memory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Timed(Generic[T]):
    """``seconds`` one call took, what it returned, and the most CUDA memory allocated meanwhile
    (``peak_bytes``; 0 on the CPU)."""

    seconds: float
    result: T
    peak_bytes: int


def timed(work: Callable[[], T], device: torch.device) -> Timed[T]:
    """Call ``work()`` once on ``device``'s queue: queued kernels finish before the clock starts and
    ``work``'s own before it stops."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    result = work()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    return Timed(seconds, result, torch.cuda.max_memory_allocated(device) if cuda else 0)
