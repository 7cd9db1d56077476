"""On the GPU: the asynchronous path (pinned buffers, CUDA events, writer thread)."""

import numpy as np
import pytest
import torch

from attnscope import capture, cross_attention_layers
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


def test_every_layer_on_cuda_matches_explicit_softmax_of_the_same_q_and_k(cuda_sd):
    """Grouped layers, fp16 and the asynchronous host copy: each step's maps are that step's q/k's softmax."""
    layers = {layer.name: layer.module for layer in cross_attention_layers(cuda_sd.unet)}
    seen = {name: {"q": [], "k": []} for name in layers}
    hooks = [getattr(module, f"to_{which}").register_forward_hook(
                 lambda m, i, o, name=name, which=which: seen[name][which].append(o.detach().clone()))
             for name, module in layers.items() for which in ("q", "k")]
    try:
        with capture(cuda_sd, heads="all", dtype=torch.float32) as cap:
            generate(cuda_sd, [Job("a wooden bench and a bird", 0), Job("a red car", 1)],
                     SamplerSettings(steps=4, guidance_scale=7.5, height=64, width=64), progress=False, cap=cap)
    finally:
        for hook in hooks:
            hook.remove()
    for run, row in ((0, 2), (1, 3)):  # UNet rows are [uncond, uncond, cond, cond]
        positions = [t.position for t in cap.file.tokens(cap.run_ids[run])]
        for name, attn in layers.items():
            maps = cap.maps(name, run=run)  # (steps, tokens, heads, h, w)
            for step in range(maps.shape[0]):
                q, k = seen[name]["q"][step][row : row + 1], seen[name]["k"][step][row : row + 1]
                probs = attn.get_attention_scores(attn.head_to_batch_dim(q), attn.head_to_batch_dim(k)).float()
                reference = probs[:, :, positions].permute(2, 0, 1).cpu()  # (tokens, heads, n)
                captured = torch.from_numpy(maps[step].reshape(*reference.shape))
                assert torch.allclose(captured, reference, atol=2e-3), (name, run, step)


def test_steps_go_to_the_file_in_blocks_through_pinned_buffers_and_the_copy_stream(cuda_sd):
    """Chunks of 2 steps: each block leaves the device step by step on the side stream and is written while
    the next block samples; the maps equal those of one block of every step."""
    from attnscope.store.compression import Storage

    jobs, settings = [Job("a wooden bench and a bird", 0)], SamplerSettings(steps=5, height=64, width=64)
    with capture(cuda_sd, storage=Storage("lossless", step_block=2)) as blocks:
        generate(cuda_sd, jobs, settings, progress=False, cap=blocks)
    with capture(cuda_sd, storage=Storage("lossless", step_block=50)) as whole:
        generate(cuda_sd, jobs, settings, progress=False, cap=whole)
    assert blocks.file.file["maps"].chunks[1] == 2 < whole.file.file["maps"].chunks[1]
    for layer in cross_attention_layers(cuda_sd.unet):
        assert np.array_equal(blocks.maps(layer.name), whole.maps(layer.name))


@pytest.mark.parametrize("heads", [5, 8])  # 320 channels in 64-wide (SD 2.x) and 40-wide (SD 1.x) heads
def test_probabilities_of_sd_shaped_layers_equal_the_explicit_softmax(heads, monkeypatch):
    """At Stable Diffusion's head widths the maps come from the memory-efficient kernel called by name."""
    from attnscope.hooks import probabilities as module
    from attnscope.hooks.probabilities import store_tokens, token_probabilities, token_values

    def not_this_path(*args, **kwargs):
        raise AssertionError("SD head widths go to the named memory-efficient kernel, not F.sdpa")

    monkeypatch.setattr(module.F, "scaled_dot_product_attention", not_this_path)

    generator = torch.Generator("cuda").manual_seed(0)
    query = torch.randn(2, 4096, 320, device="cuda", dtype=torch.float16, generator=generator)
    key = torch.randn(2, 77, 320, device="cuda", dtype=torch.float16, generator=generator)
    index = torch.tensor([[0, 1, 2, 5, 9], [3, 4, 6, 7, 8]], device="cuda")
    scale = (320 // heads) ** -0.5
    values = token_values(index, 77, heads, torch.float16)
    probabilities = token_probabilities(query, key, values, heads=heads, scale=scale, upcast=False)
    q, k = (x.float().unflatten(-1, (heads, -1)).transpose(1, 2) for x in (query, key))
    expected = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)  # (2, heads, 4096, 77)
    expected = torch.stack([expected[row][..., index[row]] for row in range(2)])
    assert torch.allclose(probabilities[..., :5].float(), expected, atol=2e-3)
    target = torch.empty(2, 5, 1, 4096, device="cuda", dtype=torch.float16)
    store_tokens(target, probabilities, mean_heads=True)
    assert torch.allclose(target[:, :, 0].float(), expected.mean(1).transpose(1, 2), atol=2e-3)
