"""Capturing cross-attention: exactness, restoration, selections, architectures."""

import importlib
import numpy as np
import pytest
import torch

from attnscope import capture, cross_attention_layers
from attnscope.store.compression import Storage
from conftest import seeded

PROMPT = "a wooden bench and a bird"
LAYER = "up_blocks.3.attentions.0.transformer_blocks.0.attn2"


def sample(pipe, prompts=(PROMPT,), steps=4, **kwargs):
    kwargs.setdefault("height", 64)
    kwargs.setdefault("width", 64)
    return pipe(list(prompts), num_inference_steps=steps, generator=seeded(*range(len(prompts))),
                output_type="np", **kwargs).images


def test_image_is_bit_identical_with_and_without_capture(sd):
    plain = sample(sd, (PROMPT, "a red car"), negative_prompt=["blurry", ""])
    with capture(sd, dtype=torch.float32, branch="both", heads="all"):
        captured = sample(sd, (PROMPT, "a red car"), negative_prompt=["blurry", ""])
    assert np.array_equal(plain, captured)


def test_probabilities_match_explicit_softmax_and_sum_to_one(sd):
    """Reference: diffusers' own ``get_attention_scores`` on the same q and k."""
    attn = dict(sd.unet.named_modules())[LAYER]
    seen = {}
    hooks = [attn.to_q.register_forward_hook(lambda m, i, o: seen.setdefault("q", []).append(o)),
             attn.to_k.register_forward_hook(lambda m, i, o: seen.setdefault("k", []).append(o))]
    try:
        with capture(sd, tokens="all", dtype=torch.float32, steps=[0, 2]) as cap:
            sample(sd, steps=3, guidance_scale=7.5)
    finally:
        for hook in hooks:
            hook.remove()
    maps = cap.maps(LAYER)  # (steps, tokens, heads=1, h, w)
    assert maps.shape[:3] == (2, 77, 1)
    for slot, step in enumerate([0, 2]):
        q, k = seen["q"][step][1:], seen["k"][step][1:]  # conditional half of [uncond, cond]
        probs = attn.get_attention_scores(attn.head_to_batch_dim(q), attn.head_to_batch_dim(k))
        reference = probs.reshape(1, attn.heads, *probs.shape[1:]).mean(1)[0]  # (n, tokens)
        captured = torch.from_numpy(maps[slot, :, 0].reshape(77, -1).T)
        assert torch.allclose(captured, reference, atol=1e-3)
        assert torch.allclose(captured.sum(-1), torch.ones(captured.shape[0]), atol=1e-4)


def test_every_layer_head_and_branch_matches_explicit_softmax(sd):
    """Layers are computed in groups of equal shape; each must land at its own place in the file."""
    layers = {layer.name: layer.module for layer in cross_attention_layers(sd.unet)}
    seen: dict[str, dict[str, list]] = {name: {"q": [], "k": []} for name in layers}
    hooks = [getattr(module, f"to_{which}").register_forward_hook(
                 lambda m, i, o, name=name, which=which: seen[name][which].append(o))
             for name, module in layers.items() for which in ("q", "k")]
    try:
        with capture(sd, heads="all", branch="both", dtype=torch.float32) as cap:
            sample(sd, steps=2, guidance_scale=7.5, negative_prompt=["blurry"])
    finally:
        for hook in hooks:
            hook.remove()
    for name, attn in layers.items():
        for branch, rows in (("uncond", slice(0, 1)), ("cond", slice(1, 2))):
            maps = cap.maps(name, branch=branch)  # (steps, tokens, heads, h, w)
            positions = [t.position for t in cap.file.tokens(cap.run_ids[-1], branch=branch)]
            for step in range(maps.shape[0]):
                q, k = seen[name]["q"][step][rows], seen[name]["k"][step][rows]
                probs = attn.get_attention_scores(attn.head_to_batch_dim(q), attn.head_to_batch_dim(k))
                reference = probs[:, :, positions].permute(2, 0, 1)  # (tokens, heads, n)
                captured = torch.from_numpy(maps[step].reshape(*reference.shape))
                assert torch.allclose(captured, reference, atol=1e-5), (name, branch, step)


def test_layers_of_one_shape_share_one_attention_call_per_step(sd, monkeypatch):
    """The maps of a step come from one fused call per group of same-shaped layers, not one per layer."""
    hooks = importlib.import_module("attnscope.hooks.capture")  # the module; the package exports the function
    calls = []
    real = hooks.token_probabilities
    monkeypatch.setattr(hooks, "token_probabilities", lambda query, *args, **kwargs: (
        calls.append(query.shape), real(query, *args, **kwargs))[1])
    layers = cross_attention_layers(sd.unet)
    shapes = {(layer.resolution((8, 8)), layer.module.to_q.out_features, layer.module.heads) for layer in layers}
    with capture(sd, dtype=torch.float32, steps=[1, 2]) as cap:
        sample(sd, steps=3, guidance_scale=7.5)
    assert len(shapes) < len(layers) and len(calls) == 2 * len(shapes)
    assert sum(shape[0] for shape in calls) == 2 * len(layers)  # each layer's one cond row, stacked by shape
    assert cap.maps(LAYER).shape[0] == 2


def test_maps_are_the_same_when_held_layers_are_mapped_early(sd, monkeypatch):
    """Held q/k are mapped once they keep HELD_BYTES alive; mapping every layer at once gives the same maps."""
    hooks = importlib.import_module("attnscope.hooks.capture")
    with capture(sd, dtype=torch.float32) as grouped:
        sample(sd, steps=2, guidance_scale=7.5)
    monkeypatch.setattr(hooks, "HELD_BYTES", 1)
    with capture(sd, dtype=torch.float32) as one_by_one:
        sample(sd, steps=2, guidance_scale=7.5)
    for layer in cross_attention_layers(sd.unet):
        assert np.allclose(grouped.maps(layer.name), one_by_one.maps(layer.name), atol=1e-6), layer.name


def test_layers_stored_in_another_order_than_they_run_give_the_same_maps(sd):
    """The step buffer is laid out in the stored order, whatever order the layers run and are grouped in."""
    with capture(sd, dtype=torch.float32) as usual:
        sample(sd, steps=2)
    reordered = capture(sd, dtype=torch.float32)
    reordered.layers.reverse()
    with reordered:
        sample(sd, steps=2)
    assert [spec.name for spec in reordered.file.layers] == [spec.name for spec in usual.file.layers][::-1]
    for spec in usual.file.layers:
        assert np.allclose(usual.maps(spec.name), reordered.maps(spec.name), atol=1e-6)


def test_processors_are_the_original_objects_after_exit_and_after_an_error(sd):
    before = dict(sd.unet.attn_processors)
    with capture(sd):
        sample(sd, steps=2)
    assert all(sd.unet.attn_processors[name] is proc for name, proc in before.items())
    with pytest.raises(RuntimeError, match="boom"):
        with capture(sd):
            sd.unet.register_forward_hook(_RaisesOnce())
            sample(sd, steps=2)
    assert all(sd.unet.attn_processors[name] is proc for name, proc in before.items())
    assert not sd.unet._forward_pre_hooks and not sd.text_encoder._forward_pre_hooks


class _RaisesOnce:
    """A forward hook that unregisters itself and raises: a pipeline failing mid-sampling."""

    def __call__(self, module, args, output):
        for key, hook in list(module._forward_hooks.items()):
            if hook is self:
                del module._forward_hooks[key]
        raise RuntimeError("boom")


def test_self_attention_keeps_its_processor(sd):
    before = dict(sd.unet.attn_processors)
    with capture(sd):
        for name, proc in sd.unet.attn_processors.items():
            if "attn1" in name:
                assert proc is before[name]
            else:
                assert type(proc).__name__ == "CaptureProcessor"


def test_default_tokens_are_the_prompt_with_start_and_end(sd):
    with capture(sd) as cap:
        sample(sd, steps=2)
    tokens = cap.file.tokens(cap.run_ids[-1])
    assert tokens[0].text == "<|startoftext|>" and tokens[-1].text == "<|endoftext|>"
    assert cap[0].words == ["a", "wooden", "bench", "and", "a", "bird"]
    wooden = cap.maps(LAYER, word="wooden")  # 6 sub-word tokens summed
    pieces = cap.maps(LAYER)[:, [t.word == 1 for t in tokens]]
    assert np.allclose(wooden, pieces.astype(np.float32).sum(1), atol=1e-3)


def test_word_selection_and_step_selection(sd):
    with capture(sd, tokens=["bird", "wooden"], steps=[-1]) as cap:
        sample(sd, steps=5)
    run = cap[0]
    assert [t.text for t in cap.file.tokens(run.run)] == ["w", "o", "o", "d", "e", "n</w>", "bird</w>"]
    assert list(cap.file.steps) == [5]  # PNDM: 5 steps → 6 UNet calls
    assert cap.maps(LAYER, word="bird").shape == (1, 1, 8, 8)


def test_batches_without_cfg_and_several_images_per_prompt(sd):
    with capture(sd) as cap:
        sd([PROMPT, "a red car"], num_inference_steps=2, guidance_scale=1.0, num_images_per_prompt=2,
           height=64, width=64, generator=seeded(0, 1, 2, 3), output_type="np")
    prompts = cap.file.column("prompt")
    assert list(prompts) == [PROMPT, PROMPT, "a red car", "a red car"]


def test_heads_all_averages_to_heads_mean(sd):
    with capture(sd, heads="all", dtype=torch.float32) as every:
        sample(sd, steps=2)
    with capture(sd, heads="mean", dtype=torch.float32) as mean:
        sample(sd, steps=2)
    per_head = every.maps(LAYER)
    assert per_head.shape[2] == 8
    assert np.allclose(per_head.mean(axis=2), mean.maps(LAYER)[:, :, 0], atol=1e-6)


@pytest.mark.parametrize("name", ["sd2", "sdxl"])
def test_other_architectures_and_non_square_images(name, request):
    pipe = request.getfixturevalue(name)
    plain = sample(pipe, height=64, width=96)
    with capture(pipe) as cap:
        captured = sample(pipe, height=64, width=96)
    assert np.array_equal(plain, captured)
    layers = cross_attention_layers(pipe.unet)
    assert len(cap.file.layers) == len(layers)
    for spec in cap.file.layers:
        maps = cap.maps(spec.name)
        assert maps.shape[-2:] == (spec.height, spec.width) and spec.width > spec.height


def test_layer_globs_and_places(sd):
    with capture(sd, layers=["mid", "down_blocks.0.*"]) as cap:
        sample(sd, steps=2)
    assert [spec.name for spec in cap.file.layers] == [
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2",
        "down_blocks.0.attentions.1.transformer_blocks.0.attn2",
        "mid_block.attentions.0.transformer_blocks.0.attn2",
    ]
    with pytest.raises(ValueError, match="no cross-attention layer matches"):
        capture(sd, layers="up_blocks.9.*")


def test_a_sampling_loop_stopped_early_is_dropped_and_the_next_call_is_kept(sd):
    def stop_after_one_step(pipe, step, timestep, callback_kwargs):
        pipe._interrupt = True
        return callback_kwargs

    with capture(sd) as cap:
        with pytest.warns(UserWarning, match="ended early"):
            sample(sd, steps=3, callback_on_step_end=stop_after_one_step)
            sample(sd, steps=3)
    assert len(cap) == 1 and cap.file.complete.all()
    assert cap.maps(LAYER).shape[0] == len(sd.scheduler.timesteps)  # every step of the second call


def test_a_word_selected_alone_reads_its_own_tokens(sd):
    """Word indices number the whole prompt's words; selecting only later words must not shift them."""
    with capture(sd, tokens=["bird", "wooden"], dtype=torch.float32) as only:
        sample(sd, steps=2)
    with capture(sd, dtype=torch.float32) as every:
        sample(sd, steps=2)
    assert np.allclose(only.maps(LAYER, word="bird"), every.maps(LAYER, word="bird"), atol=1e-6)
    assert not np.allclose(only.maps(LAYER, word="bird"), every.maps(LAYER, word="wooden"), atol=1e-3)


def test_a_compiled_unet_is_captured_like_the_eager_one_without_recompiling(sd):
    """``torch.compile(pipe.unet)``: the eager backend checks the tracing (graph breaks, guards), not codegen."""
    from torch._dynamo.utils import counters

    with capture(sd, dtype=torch.float32) as eager:
        sample(sd, steps=2)
    unet = sd.unet
    sd.unet = torch.compile(unet, backend="eager")
    try:
        compiled_plain = sample(sd, steps=2)
        with capture(sd, dtype=torch.float32) as first:
            captured = sample(sd, steps=2)
        graphs = counters["stats"]["unique_graphs"]
        with capture(sd, dtype=torch.float32) as second:  # a new context reuses the graphs of the first
            sample(sd, steps=2)
        assert counters["stats"]["unique_graphs"] == graphs
    finally:
        sd.unet = unet
        torch._dynamo.reset()
    assert np.array_equal(captured, compiled_plain)
    assert [spec.name for spec in first.file.layers] == [spec.name for spec in eager.file.layers]
    for spec in eager.file.layers:
        assert np.allclose(first.maps(spec.name), eager.maps(spec.name), atol=1e-5)
        assert np.array_equal(second.maps(spec.name), first.maps(spec.name))


def test_rows_of_a_batch_dropped_after_some_steps_were_written_belong_to_no_run(sd):
    """Steps go to the file in blocks while sampling (here one step per block); a loop stopped early
    leaves rows that no run points at, and the next run's maps and tokens are its own."""
    def stop_after_two_steps(pipe, step, timestep, callback_kwargs):
        pipe._interrupt = step == 1
        return callback_kwargs

    with capture(sd, storage=Storage("lossless", step_block=1)) as cap:
        with pytest.warns(UserWarning, match="ended early"):
            sample(sd, steps=3, callback_on_step_end=stop_after_two_steps)
            sample(sd, steps=3)
    with capture(sd) as fresh:
        sample(sd, steps=3)
    assert len(cap) == 1 and cap.file.complete.all()
    assert cap.file.rows(0).start > 0  # after the dropped batch's rows
    assert cap.file.tokens(0) == fresh.file.tokens(0)
    assert np.array_equal(cap.maps(LAYER), fresh.maps(LAYER))
