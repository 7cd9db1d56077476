"""The toy model's training recipe: grounding loss, its attention processor, the text pre-training."""

import json

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor

from attnscope.datasets.toyworld import sample_scenes, word_objects
from attnscope.models.toy.grounding import GroundedAttnProcessor, grounding_loss, set_grounding_processors, token_objects
from attnscope.models.toy.pipeline import ToyModelConfig, ToyWorldPipeline, build_toy_pipeline


def _maps(in_object: torch.Tensor, n_tokens: int = 3, token: int = 1) -> torch.Tensor:
    """(1, 16, n_tokens) probabilities on a 4×4 grid: ``token`` gets ``in_object`` (16,) (renormalised
    to 0.5 of each query's mass where positive), the first token the rest."""
    probs = torch.zeros(1, 16, n_tokens)
    probs[0, :, token] = in_object
    probs[0, :, 0] = 1 - in_object
    return probs


LEFT_HALF = torch.zeros(1, 2, 8, 8)
LEFT_HALF[0, 0, :, :4] = 1  # object 0 covers the left half of the image
LEFT_CELLS = torch.arange(16).view(4, 4)[:, :2].flatten()


def test_word_objects_and_token_positions():
    assert word_objects("a small red car and a blue bird") == [-1, 0, 0, 0, -1, -1, 1, 1]
    scenes = sample_scenes(8, seed=0)
    objects = token_objects(scenes, 16, dropped=[False] * 7 + [True])
    for scene, row in zip(scenes[:7], objects[:7]):
        words = scene.caption.split()
        assert row[0] == -1 and row[len(words) + 1 :].eq(-1).all()  # start, end and padding
        assert row[1 : len(words) + 1].tolist() == word_objects(scene.caption)
    assert objects[7].eq(-1).all()  # a dropped caption grounds nothing


def test_uniform_attention_over_the_object_costs_nothing():
    uniform = torch.zeros(16)
    uniform[LEFT_CELLS] = 0.5
    assert grounding_loss([_maps(uniform)], torch.tensor([[-1, 0, -1]]), LEFT_HALF).item() == pytest.approx(0, abs=1e-6)


def test_attention_outside_the_object_costs_one():
    right = torch.zeros(16)
    right[torch.arange(16).view(4, 4)[:, 2:].flatten()] = 0.5
    loss = grounding_loss([_maps(right)], torch.tensor([[-1, 0, -1]]), LEFT_HALF, coverage=0)
    assert loss.item() == pytest.approx(1.0)


def test_coverage_term_penalises_a_peak_inside_the_object():
    peak = torch.zeros(16)
    peak[LEFT_CELLS[0]] = 0.9
    objects = torch.tensor([[-1, 0, -1]])
    assert grounding_loss([_maps(peak)], objects, LEFT_HALF, coverage=0).item() == pytest.approx(0, abs=1e-6)
    uneven = torch.zeros(16)
    uneven[LEFT_CELLS[:4]], uneven[LEFT_CELLS[4:]] = 0.3, 0.1  # 3/16 and 1/16 of the mass per cell
    expected = 0.5 * torch.log(torch.tensor(2 / 3)) + 0.5 * torch.log(torch.tensor(2.0))  # KL from 1/8 each
    assert grounding_loss([_maps(uneven)], objects, LEFT_HALF, coverage=1).item() == pytest.approx(
        expected.item(), abs=1e-5)
    assert grounding_loss([_maps(peak)], objects, LEFT_HALF, coverage=1) > 1.0


def test_ungrounded_tokens_and_layers_average():
    uniform = torch.zeros(16)
    uniform[LEFT_CELLS] = 0.5
    nothing = torch.tensor([[-1, -1, -1]])
    assert grounding_loss([_maps(uniform)], nothing, LEFT_HALF).item() == 0
    right = torch.zeros(16)
    right[torch.arange(16).view(4, 4)[:, 2:].flatten()] = 0.5
    two_layers = [_maps(uniform), _maps(right)]  # perfect in one layer, all outside in the other
    loss = grounding_loss(two_layers, torch.tensor([[-1, 0, -1]]), LEFT_HALF, coverage=0)
    assert loss.item() == pytest.approx(0.5)


def test_grounded_processor_computes_what_diffusers_computes():
    pipe = build_toy_pipeline(ToyModelConfig.tiny())
    x = torch.randn(2, 12, 32, 32)
    embeds = torch.randn(2, 16, ToyModelConfig.tiny().text_hidden)
    pipe.unet.set_attn_processor(AttnProcessor())
    with torch.no_grad():
        reference = pipe.unet(x, 10, encoder_hidden_states=embeds).sample
    maps: list[torch.Tensor] = []
    originals = set_grounding_processors(pipe.unet, maps)
    with torch.no_grad():
        grounded = pipe.unet(x, 10, encoder_hidden_states=embeds).sample
    assert torch.allclose(grounded, reference, atol=1e-5)
    n_cross = sum(name.endswith("attn2") for name, _ in pipe.unet.named_modules())
    assert len(maps) == n_cross and all(m.shape[0] == 2 and m.shape[2] == 16 for m in maps)
    assert all(torch.allclose(m.sum(-1), torch.ones(())) for m in maps)  # softmax over tokens
    pipe.unet.set_attn_processor(originals)
    assert not any(isinstance(p, GroundedAttnProcessor) for p in pipe.unet.attn_processors.values())


def test_pretrain_then_train_frozen_and_grounded(tmp_path):
    from attnscope.models.toy import pretrain_text, train

    summary = pretrain_text.pretrain(tmp_path / "text", seconds=0, batch=8, config=ToyModelConfig.tiny(), device="cpu")
    assert summary["steps"] == 1 and (tmp_path / "text" / "text_encoder.safetensors").exists()
    run = tmp_path / "run"
    train.main(["--out", str(run), "--tiny", "--cpu", "--minutes", "0.05", "--batch", "4", "--log-every", "1",
                "--sample-steps", "2", "--text-encoder", str(tmp_path / "text" / "text_encoder.safetensors"),
                "--ground", "0.05", "--save-ema-only", "--export-pipeline"])
    meta = json.loads((run / "state.json").read_text())
    assert meta["frozen_text_encoder"] and meta["step"] > 0
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert all(record["ground"] > 0 for record in log)
    exported = ToyWorldPipeline.from_pretrained(run / "pipeline", torch_dtype=torch.float32)
    pretrained = build_toy_pipeline(ToyModelConfig.tiny()).text_encoder
    pretrain_text.load_text_encoder(pretrained, tmp_path / "text" / "text_encoder.safetensors")
    for name, value in pretrained.state_dict().items():  # the text encoder stayed frozen
        assert torch.equal(exported.text_encoder.state_dict()[name].half(), value.half()), name
