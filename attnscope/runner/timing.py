"""Timing of GPU work: wall-clock seconds with the device synchronised before and after, peak memory,
and the name of the device a time was measured on."""

from __future__ import annotations

import platform
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


def device_name(device: torch.device) -> str:
    """The GPU's name (``"NVIDIA H100 80GB HBM3"``), else the CPU's (``"x86_64"``, or ``"CPU"``)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
