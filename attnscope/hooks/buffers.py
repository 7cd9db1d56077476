"""Where a batch's maps live while it samples: two steps on the device, blocks of steps on the host."""

from __future__ import annotations

import threading
import time
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
        self.waited = 0.0  # seconds ``take`` waited for a buffer to come back
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
                started = time.perf_counter()
                self._available.wait(timeout=0.5)
                self.waited += time.perf_counter() - started

    def _give_back(self, flat: torch.Tensor) -> None:
        with self._available:
            self._free.append(flat)
            self._available.notify()


class StepMaps:
    """One batch's maps, filled one stored step at a time and handed on in blocks of steps.

    The hooks fill ``slot(index)`` — ``(runs, tokens, L)`` — with stored step
    ``index`` (0, 1, … in order) and call ``filled(index)`` when the step
    ends. Steps gather in host buffers of ``block`` steps, ``(block, runs,
    tokens, L)``, from ``take(shape, dtype) -> (buffer, release)``; each full
    block, and the last (shorter) one, goes to ``hand(first, buffer, ready,
    release)`` — the run writer, which compresses it while sampling goes on.

    On a GPU two device slots alternate: ``filled`` queues the slot's copy to
    its row of the host block on a side stream (it runs beside the next
    step's kernels), and the sampling stream waits — on the GPU, never the
    host — for a slot's previous copy before it fills the slot again. So the
    device holds two steps of maps, and the host gets one copy per step;
    ``ready`` (a CUDA event) is set when a block's copies are done. On a CPU
    the slot is the host block's row itself and ``ready`` is ``None``.
    """

    def __init__(self, shape: tuple[int, int, int], n_steps: int, block: int, dtype: torch.dtype,
                 take: Callable, hand: Callable, device: torch.device | None = None,
                 stream: torch.cuda.Stream | None = None):
        self.shape, self.n_steps, self.block, self.dtype = shape, n_steps, block, dtype
        self._take, self._hand = take, hand
        self._stream = stream if device is not None and device.type == "cuda" else None
        self._host: torch.Tensor | None = None
        self._release: Callable[[], None] | None = None
        self._first = 0
        self._slots: list[torch.Tensor] = []
        self._copied: list[torch.cuda.Event | None] = [None, None]
        if self._stream is not None:
            for _ in range(2):
                slot = torch.zeros(shape, dtype=dtype, device=device)  # parts no layer writes stay 0
                slot.record_stream(self._stream)  # its memory is reused only after the copies queued on the stream
                self._slots.append(slot)

    def _block(self, index: int) -> torch.Tensor:
        """The host block that holds stored step ``index`` (taken when its first step starts)."""
        if self._host is None:
            self._first = index - index % self.block
            steps = min(self.block, self.n_steps - self._first)
            self._host, self._release = self._take((steps, *self.shape), self.dtype)
        return self._host

    def slot(self, index: int) -> torch.Tensor:
        """``(runs, tokens, L)``: where stored step ``index`` is written."""
        if self._stream is not None:
            return self._slots[index % 2]
        return self._block(index)[index - self._first]

    def filled(self, index: int) -> None:
        """Stored step ``index`` is complete: copy it to the host (GPU); hand the block on when it is full."""
        host = self._block(index)
        ready = None
        if self._stream is not None:
            sampling = torch.cuda.current_stream(self._slots[0].device)
            self._stream.wait_stream(sampling)
            with torch.cuda.stream(self._stream):
                host[index - self._first].copy_(self._slots[index % 2], non_blocking=True)
                copied = torch.cuda.Event()
                copied.record()
            self._copied[index % 2] = copied
            following = self._copied[(index + 1) % 2]
            if following is not None:
                sampling.wait_event(following)
            ready = copied  # copies on the stream run in order: the last one's event covers the block
        if index + 1 == self._first + len(host):
            self._hand(self._first, host, ready, self._release)
            self._host = self._release = None

    def release(self) -> None:
        """Give back the block being filled (the batch is dropped)."""
        if self._release is not None:
            self._release()
            self._host = self._release = None
