"""The toy tokenizer, pipeline and training script, on tiny random models."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from attnscope.models.toy import ToyModelConfig, ToyWorldPipeline, build_toy_pipeline, default_model_path
from attnscope.models.toy.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def pipe():
    p = build_toy_pipeline(ToyModelConfig.tiny(), seed=0)
    p.set_progress_bar_config(disable=True)
    return p


def _sample(pipe, prompt="a wooden bench and a blue bird", **kw):
    kw = {"num_inference_steps": 3, "output_type": "pt", "generator": torch.Generator().manual_seed(0), **kw}
    return pipe(prompt, **kw).images


def test_tokenizer_round_trip(tmp_path):
    tok = build_tokenizer()
    enc = tok(["a small red wooden car and a blue bird", ""], padding="max_length",
              max_length=tok.model_max_length, truncation=True)
    assert tok.model_max_length == 16
    assert all(len(ids) == 16 for ids in enc.input_ids)
    assert enc.input_ids[0][0] == tok.bos_token_id and enc.input_ids[1][:2] == [tok.bos_token_id, tok.eos_token_id]
    assert tok.pad_token_id == tok.eos_token_id
    assert tok.decode(enc.input_ids[0], skip_special_tokens=True) == "a small red wooden car and a blue bird"
    assert tok("a zebra").input_ids[2] == tok.unk_token_id
    tok.save_pretrained(tmp_path)
    loaded = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    assert loaded("A Red CAR").input_ids == tok("a red car").input_ids
    assert loaded.model_max_length == 16


def test_save_load_offline_same_output(pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert {"unet", "text_encoder", "tokenizer", "scheduler"} <= set(index)
    assert list(tmp_path.glob("unet/*.safetensors")) and list(tmp_path.glob("text_encoder/*.safetensors"))
    loaded = ToyWorldPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert torch.allclose(_sample(pipe), _sample(loaded), atol=1e-5)


def test_cfg_and_no_cfg(pipe):
    cfg = _sample(pipe, guidance_scale=4.0)
    assert pipe.do_classifier_free_guidance
    plain = _sample(pipe, guidance_scale=1.0)
    assert not pipe.do_classifier_free_guidance
    assert cfg.shape == plain.shape == (1, 3, 64, 64)
    assert not torch.allclose(cfg, plain)


def test_cfg_batch_is_uncond_then_cond(pipe):
    seen = []
    handle = pipe.unet.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["encoder_hidden_states"]), with_kwargs=True)
    try:
        _sample(pipe, "a red car", num_inference_steps=1)
    finally:
        handle.remove()
    cond, uncond = pipe.encode_prompt("a red car", pipe.device, 1, True)
    assert torch.allclose(seen[0][:1], uncond) and torch.allclose(seen[0][1:], cond)


def test_batches_generators_and_output_types(pipe):
    images = _sample(pipe, ["a car", "a blue bird"], num_images_per_prompt=2)
    assert images.shape == (4, 3, 64, 64) and 0 <= images.min() and images.max() <= 1
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    pair = _sample(pipe, ["a car", "a car"], generator=gens)
    single = _sample(pipe, "a car", generator=torch.Generator().manual_seed(2))
    assert torch.allclose(pair[1:], single, atol=1e-5)
    assert _sample(pipe, "a car", output_type="np").shape == (1, 64, 64, 3)
    pil = pipe("a car", num_inference_steps=2, output_type="pil").images
    assert pil[0].size == (64, 64)
    out = pipe("a car", num_inference_steps=2, return_dict=False)
    assert isinstance(out, tuple)


def test_callback_on_step_end(pipe):
    steps = []

    def callback(p, i, t, kwargs):
        steps.append(i)
        return {"latents": kwargs["latents"] * 0}

    images = _sample(pipe, callback_on_step_end=callback, num_inference_steps=4)
    assert steps == [0, 1, 2, 3]
    assert torch.allclose(images, torch.full_like(images, 0.5))


def test_train_smoke_and_resume(tmp_path):
    from attnscope.models.toy import train

    run1, run2 = tmp_path / "run1", tmp_path / "run2"
    train.main(["--out", str(run1), "--tiny", "--minutes", "0.08", "--batch", "4", "--log-every", "1",
                "--sample-steps", "2"])
    meta = json.loads((run1 / "state.json").read_text())
    assert meta["step"] > 0 and (run1 / "samples.png").exists()
    assert all((run1 / s).stat().st_size <= 15 * 10**6 for s in meta["shards"])
    train.main(["--out", str(run2), "--resume", str(run1), "--minutes", "0.05", "--batch", "4", "--log-every", "1",
                "--sample-steps", "2", "--export-pipeline"])
    meta2 = json.loads((run2 / "state.json").read_text())
    assert meta2["step"] > meta["step"] and meta2["config"] == meta["config"]
    log = [json.loads(line) for line in (run2 / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 1 and log[-1]["step"] == meta2["step"]
    assert len(list(run2.iterdir())) <= 8
    loaded = ToyWorldPipeline.from_pretrained(run2 / "pipeline", torch_dtype=torch.float32)
    assert loaded.unet.config.block_out_channels == list(ToyModelConfig.tiny().block_out_channels)


@pytest.mark.skipif(not (default_model_path() / "model_index.json").exists(),
                    reason="the trained toy model is not in attnscope/assets/toy yet")
def test_shipped_model_loads_offline_and_draws_the_prompt(monkeypatch):
    from attnscope.judges.toy_oracle import ToyOracle, default_oracle_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = ToyWorldPipeline.from_pretrained(default_model_path(), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(["a large red car", "a blue bird"], num_inference_steps=25, output_type="np",
                  generator=[torch.Generator().manual_seed(s) for s in (0, 1)]).images
    if not default_oracle_path().exists():
        pytest.skip("the trained oracle is not in attnscope/assets yet")
    oracle = ToyOracle.load()
    found = oracle.describe(images)
    assert any(d.cls == "car" and d.colour == "red" for d in found[0])
    assert any(d.cls == "bird" and d.colour == "blue" for d in found[1])
