"""Concept maps in output space (ConceptAttention-style) on joint-attention transformers."""

import numpy as np
import pytest
import torch

import attnscope.hooks.dit as dit
from attnscope import capture
from attnscope.hooks.concepts import ConceptSet, ConceptStream, concept_saliency
from attnscope.hooks.sdpa import SDPAObserver
from attnscope.models import tiny_flux_pipeline, tiny_sd3_pipeline
from conftest import seeded

PROMPT = "a wooden bench and a bird"


@pytest.fixture(scope="module")
def flux(one_thread):
    return tiny_flux_pipeline()


def sample(pipe, **kwargs):
    return pipe([PROMPT], num_inference_steps=2, generator=seeded(0), height=64, width=64, output_type="np",
                **kwargs).images


def test_saliency_of_hand_made_outputs_picks_the_matching_concept():
    """Left image tokens output along e1, right ones along e2; concept A outputs e1, concept B e2."""
    e1, e2 = torch.eye(4)[0], torch.eye(4)[1]
    image = torch.stack([10 * e1, 10 * e1, 10 * e2, 10 * e2])[None]  # (B=1, N=4, width=4)
    concepts = torch.stack([e1, e2])[None]  # (1, 2 tokens, 4)
    maps = concept_saliency(image, concepts, [[0], [1]])
    assert maps.shape == (1, 2, 4)
    assert torch.allclose(maps[0, 0], torch.tensor([1.0, 1.0, 0.0, 0.0]), atol=1e-4)
    assert torch.allclose(maps[0, 1], torch.tensor([0.0, 0.0, 1.0, 1.0]), atol=1e-4)
    # a two-token concept is the mean of its tokens: e2 + e3 and e2 − e3 give e2, so an image token along e3
    # scores 0 on both concepts (0.5 each); its first token alone would have claimed it
    e3 = torch.eye(4)[2]
    image = torch.stack([10 * e1, 10 * e2, 10 * e3])[None]
    two = concept_saliency(image, torch.stack([e1, e2 + e3, e2 - e3])[None], [[0], [1, 2]])
    assert torch.allclose(two[0, :, 2], torch.tensor([0.5, 0.5]))
    assert two[0, 0, 0] > 0.99 and two[0, 1, 1] > 0.99


def test_concept_stream_equals_the_blocks_own_text_stream_under_a_mask(flux):
    """Reference: the model's own double-stream block with the concepts appended to the text and a mask that
    keeps image and prompt away from the concepts and the concepts away from the prompt."""
    transformer = flux.transformer
    block = transformer.transformer_blocks[0]
    g = torch.Generator().manual_seed(0)
    n_text, n_concepts, side, dim = 5, 3, 4, transformer.inner_dim
    image = torch.randn(1, side * side, dim, generator=g)
    text, concepts = torch.randn(1, n_text, dim, generator=g), torch.randn(1, n_concepts, dim, generator=g)
    temb = torch.randn(1, dim, generator=g)
    grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2)
    img_ids = torch.cat([torch.zeros(side * side, 1), grid.float()], 1)

    def rope(n):
        return transformer.pos_embed(torch.cat([torch.zeros(n, 3), img_ids]))

    with torch.no_grad():
        observer = SDPAObserver()
        with observer:
            _, plain_image = block(image, text, temb, rope(n_text))
        (call,) = observer.calls
        stream = ConceptStream(ConceptSet(["x", "y"], torch.zeros(n_concepts, 1), [[0, 1], [2]]))
        stream.hidden, stream.temb = concepts, temb
        maps = stream.step(block, call, slice(n_text, None))

        total = n_text + n_concepts + side * side
        concept_keys = slice(n_text, n_text + n_concepts)
        mask = torch.ones(1, 1, total, total, dtype=torch.bool)
        mask[:, :, :, concept_keys] = False  # nobody sees the concepts ...
        mask[:, :, concept_keys, concept_keys] = True  # ... except the concepts themselves
        mask[:, :, concept_keys, :n_text] = False  # the concepts do not see the prompt
        text_out, image_out = block(image, torch.cat([text, concepts], 1), temb, rope(n_text + n_concepts),
                                    joint_attention_kwargs={"attention_mask": mask})
    assert torch.allclose(stream.hidden, text_out[:, concept_keys], atol=1e-5)
    assert torch.allclose(image_out, plain_image, atol=1e-5)  # the concepts leave the image alone
    assert maps.shape == (1, 2, side * side) and torch.allclose(maps.sum(1), torch.ones(1, side * side))


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_concept_maps_are_stored_beside_the_attention_maps_and_images_stay_identical(family, flux):
    pipe = flux if family == "flux" else tiny_sd3_pipeline()
    extra = {"max_sequence_length": 32} if family == "flux" else {}
    plain = sample(pipe, **extra)
    with capture(pipe, concepts=["wooden bench", "bird", "sky"], dtype=torch.float32) as cap:
        captured = sample(pipe, **extra)
    assert np.array_equal(plain, captured)
    runs, run = cap.file, cap.run_ids[-1]
    assert runs.concepts(run) == ["wooden bench", "bird", "sky"]
    assert runs.words(run) == ["a", "wooden", "bench", "and", "a", "bird"]  # concept rows are not prompt words
    for spec in runs.layers:
        maps = np.stack([runs.concept_maps(run, spec.name, c) for c in runs.concepts(run)])  # (C, steps, 1, h, w)
        expected = 0.0 if spec.place == "single" else 1.0  # single-stream blocks have no text stream to ride
        assert np.allclose(maps.sum(0), expected, atol=1e-5), spec.name


def test_a_multi_token_concept_uses_all_its_tokens(flux, monkeypatch):
    """Changing only the last piece of "wooden bench" changes its maps (a first-token-only map would not)."""
    def maps():
        with capture(flux, layers="double", concepts=["wooden bench", "bird"], dtype=torch.float32) as cap:
            sample(flux, max_sequence_length=32)
        return cap.file.concept_maps(cap.run_ids[-1], "transformer_blocks.1.attn", "wooden bench")

    usual = maps()
    encode = dit.encode_concepts

    def last_piece_changed(pipe, concepts):
        encoded = encode(pipe, concepts)
        assert len(encoded.groups[0]) == 7  # ▁w o o d e n ▁bench
        encoded.embeddings[encoded.groups[0][-1]] += 1.0
        return encoded

    monkeypatch.setattr(dit, "encode_concepts", last_piece_changed)
    assert not np.allclose(maps(), usual, atol=1e-4)


def test_concepts_need_every_joint_block_and_a_joint_model(flux, sd):
    with pytest.raises(ValueError, match="every joint/double-stream"):
        capture(flux, layers="transformer_blocks.0.*", concepts=["bird"])
    with pytest.raises(ValueError, match="UNet"):
        capture(sd, concepts=["bird"])


def test_cli_capture_stores_concepts_and_inspect_lists_them(tmp_path, capsys):
    from attnscope.cli import main
    from attnscope.store import RunFile

    out = tmp_path / "flux.h5"
    assert main(["capture", "--prompt", PROMPT, "--model", "tiny-flux", "--device", "cpu", "--steps", "2",
                 "--height", "64", "--width", "64", "--concept", "bench", "--concept", "bird",
                 "--no-progress", "--out", str(out)]) == 0
    with RunFile(out) as runs:
        assert runs.concepts(0) == ["bench", "bird"]
        assert "concepts: bench, bird" in runs.summary()
        assert runs.concept_maps(0, "transformer_blocks.0.attn", "bird").shape == (2, 1, 4, 4)
