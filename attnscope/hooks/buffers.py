"""Reusable pinned host buffers for asynchronous device-to-host copies."""

from __future__ import annotations

import threading
from typing import Callable

import torch


class PinnedPool:
    """At most ``capacity`` pinned buffers, handed out and returned by the writer.

    ``take`` blocks while all buffers are in use (the writer is behind), which
    bounds host memory; the GPU keeps working meanwhile. The wait is in slices
    that call ``check`` (the writer's health check), so a failed or stalled
    writer ends it.
    """

    def __init__(self, capacity: int = 3):
        self.capacity = capacity
        self._free: list[torch.Tensor] = []
        self._count = 0
        self._available = threading.Condition()

    def take(
        self, shape: tuple[int, ...], dtype: torch.dtype, check: Callable[[], None] = lambda: None
    ) -> tuple[torch.Tensor, Callable[[], None]]:
        """A pinned tensor of ``shape`` and a function that gives it back; ``check`` raises to stop waiting."""
        numel = 1
        for size in shape:
            numel *= size
        with self._available:
            while True:
                for index, flat in enumerate(self._free):
                    if flat.dtype == dtype and flat.numel() >= numel:
                        flat = self._free.pop(index)
                        return flat[:numel].view(shape), lambda: self._give_back(flat)
                if self._count < self.capacity:
                    if self._free:  # too small: replace it with a larger one
                        self._free.pop(0)
                        self._count -= 1
                    flat = torch.empty(numel, dtype=dtype, pin_memory=True)
                    self._count += 1
                    return flat.view(shape), lambda: self._give_back(flat)
                check()
                self._available.wait(timeout=0.5)

    def _give_back(self, flat: torch.Tensor) -> None:
        with self._available:
            self._free.append(flat)
            self._available.notify()
