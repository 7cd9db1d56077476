"""runner.timing.timed: seconds, the call's result and peak GPU memory of one call."""

import time

import pytest
import torch

from attnscope.runner.timing import timed


def test_timed_returns_the_work_and_how_long_it_took():
    measured = timed(lambda: time.sleep(0.05) or "done", torch.device("cpu"))
    assert measured.result == "done"
    assert 0.05 <= measured.seconds < 1.0
    assert measured.peak_bytes == 0  # no CUDA memory on the CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_timed_sees_the_peak_cuda_memory_of_the_call():
    device = torch.device("cuda")
    measured = timed(lambda: torch.empty(64 * 2**20, dtype=torch.uint8, device=device).sum(), device)
    assert measured.peak_bytes >= 64 * 2**20
