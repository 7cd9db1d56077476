"""On the GPU: the asynchronous path (pinned buffers, CUDA events, writer thread)."""

import numpy as np
import pytest
import torch

from attnscope import capture
from attnscope.models import tiny_sd_pipeline
from attnscope.sampling import Job, SamplerSettings, generate
from attnscope.store import RunFile

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_sd():
    return tiny_sd_pipeline().to("cuda", torch.float16)


def test_capture_on_cuda_keeps_the_image_and_writes_every_batch(cuda_sd, tmp_path):
    jobs = [Job("a wooden bench and a bird", seed) for seed in range(6)]
    settings = SamplerSettings(steps=5, height=64, width=64)
    plain = generate(cuda_sd, jobs, settings, batch_size=4, progress=False)
    with capture(cuda_sd, sink=tmp_path / "gpu.h5") as cap:
        captured = generate(cuda_sd, jobs, settings, batch_size=4, progress=False, cap=cap)
    assert np.array_equal(plain, captured)
    with RunFile(tmp_path / "gpu.h5") as runs:
        assert len(runs) == 6 and runs.complete.all() and runs.has_image.all()
        maps = runs.maps(5, "up_blocks.3.attentions.2.transformer_blocks.0.attn2", token=0)
        assert np.isfinite(maps).all() and maps.min() >= 0


def test_probabilities_on_cuda_sum_to_one_over_all_tokens(cuda_sd):
    with capture(cuda_sd, tokens="all", dtype=torch.float32) as cap:
        generate(cuda_sd, [Job("a red car", 0)], SamplerSettings(steps=3, height=64, width=64), progress=False, cap=cap)
    maps = cap.maps("down_blocks.0.attentions.0.transformer_blocks.0.attn2")  # (steps, 77, 1, 8, 8)
    assert np.allclose(maps.sum(axis=1), 1.0, atol=1e-3)
