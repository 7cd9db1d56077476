"""Token attribution on the tiny SD pipeline: completeness, shapes, determinism, known values."""

import numpy as np
import pytest
import torch

from attnscope.analyses.attribution import (
    attention_target,
    default_steps,
    integrated_gradients,
    noise_target,
    trace,
)
from attnscope.analyses.binding import binding_score
from attnscope.analyses.regions import regions_from_masks
from attnscope.models.prompts import encode, tokenize
from attnscope.sampling import SamplerSettings

PROMPT = "a wooden bench and a bird"  # "wooden" is six character tokens in the tiny tokenizer
SETTINGS = SamplerSettings(steps=6)


@pytest.fixture(scope="module")
def recorded(sd):
    return trace(sd, PROMPT, seed=3, settings=SETTINGS, steps=[1, 4])


@pytest.fixture(scope="module")
def regions(recorded):
    return recorded.regions(["bench", "bird"])


def test_trace_records_the_chosen_steps_and_every_layer_then_removes_its_hooks(sd, recorded):
    assert recorded.steps == (1, 4)
    assert len(recorded.layers) == 16  # SD 1.x cross-attention layers
    layer = recorded.layers[0]
    assert recorded.queries[(layer.name, 4)].shape == (1, 8 * 8, 32)  # 8×8 latent at the first layer
    assert recorded.latents[1].shape == (1, 4, 8, 8)
    assert set(recorded.attention) == {"a", "wooden", "bench", "and", "bird"}
    assert recorded.image.shape == (64, 64, 3)
    assert not sd.unet._forward_pre_hooks and not layer.module.to_q._forward_hooks
    assert default_steps(20) == (4, 10, 16)


def test_tokens_group_sub_word_pieces(sd):
    tokens = tokenize(sd, PROMPT)
    assert tokens.ids.shape == (1, 77)
    assert tokens.words == ("a", "wooden", "bench", "and", "a", "bird")
    assert tokens.positions("wooden") == [2, 3, 4, 5, 6, 7]
    assert tokens.positions("a") == [1, 10]
    with pytest.raises(KeyError):
        tokens.positions("chair")


def test_attention_target_equals_the_binding_score_of_the_captured_maps(sd, recorded, regions):
    """With the recorded queries, the differentiable attention is the captured attention."""
    target = attention_target(sd, recorded, "wooden", regions["bird"])
    with torch.no_grad():
        value = float(target.fn(encode(sd, tokenize(sd, PROMPT).ids))[0])
    expected = []
    for layer in recorded.layers:
        maps = recorded.attention["wooden"][layer.name][list(recorded.steps)]  # (steps, h, w)
        region = regions_from_masks({"r": regions["bird"]}, maps.shape[-2:], min_coverage=None)["r"]
        expected.append(binding_score(maps, region[None])[:, 0])
    assert value == pytest.approx(float(np.mean(expected)), abs=1e-5)

    everywhere = attention_target(sd, recorded, "wooden", np.ones((8, 8), bool))
    with torch.no_grad():
        assert float(everywhere.fn(encode(sd, tokenize(sd, PROMPT).ids))[0]) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("kind", ["share", "mass", "noise"])
def test_completeness_shapes_and_determinism(sd, recorded, regions, kind):
    target = (noise_target(sd, recorded) if kind == "noise"
              else attention_target(sd, recorded, "wooden", regions["bird"], measure=kind, label="bird"))
    first = integrated_gradients(sd, PROMPT, target, n_steps=8)
    again = integrated_gradients(sd, PROMPT, target, n_steps=8)

    n_real = 1 + 1 + 6 + 1 + 1 + 1 + 1 + 1  # start, a, w-o-o-d-e-n, bench, and, a, bird, end
    assert first.values.shape == (n_real,) and len(first.texts) == n_real
    assert first.texts[0] == "<|startoftext|>" and first.texts[-1] == "<|endoftext|>"
    assert first.values[0] == 0.0 and first.values[-1] == 0.0  # same token as the baseline's there
    assert set(first.by_word()) == {"<|startoftext|>", "a", "wooden", "bench", "and", "a#2", "bird", "<|endoftext|>"}

    change = first.target - first.baseline
    assert abs(change) > 0
    assert first.values.sum() == pytest.approx(change, rel=1e-3, abs=1e-7)
    assert abs(first.delta) <= 1e-3 * abs(change) + 1e-7
    if kind == "noise":
        assert first.baseline == 0.0
    np.testing.assert_array_equal(first.values, again.values)


def test_same_trace_twice(sd, recorded):
    again = trace(sd, PROMPT, seed=3, settings=SETTINGS, steps=[1, 4])
    torch.testing.assert_close(again.latents[4], recorded.latents[4], rtol=0, atol=0)
    np.testing.assert_array_equal(again.image, recorded.image)
