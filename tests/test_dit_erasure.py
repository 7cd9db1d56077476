"""Edits on diffusion transformers: UCE/RECE on PixArt's cross-attention, released weights, the CLI loop."""

import pytest
import torch
from safetensors.torch import save_file

from attnscope.erasure import edit_from_unet_state_dict, erase_rece, erase_uce, kv_parameters
from attnscope.erasure.embeddings import erasure_rows
from attnscope.models import tiny_pixart_pipeline, tiny_sana_pipeline, tiny_sd3_pipeline


@pytest.fixture(scope="module")
def pixart(one_thread):
    return tiny_pixart_pipeline(seed=3)


def test_uce_on_pixart_zeroes_the_objective_gradient(pixart):
    """The edited K/V of every PixArt attn2 minimise λ‖W−W0‖² + η_e Σ‖W c − W0 g‖² + η_p Σ‖W c_j − W0 c_j‖²."""
    lam, eta_e, eta_p = 0.3, 1.0, 0.7
    edit = erase_uce(pixart, ["bench"], guides="car", preserve=["bird"],
                     lam=lam, erase_scale=eta_e, preserve_scale=eta_p)
    rows = erasure_rows(pixart, ["bench"], ["car"], ["bird"], "last")
    keys, guides, kept = rows.erase[0].keys.double(), rows.erase[0].guide_keys.double(), rows.preserve.double()
    params = kv_parameters(pixart)
    assert sorted(params) == sorted(edit.tensors) and len(params) == 4  # 2 blocks × to_k, to_v
    for name, w0 in params.items():
        w0, w = w0.detach().double(), edit.tensors[name].double()
        terms = [
            lam * (w - w0),
            eta_e * (w @ keys.T - w0 @ guides.T) @ keys,
            eta_p * (w @ kept.T - w0 @ kept.T) @ kept,
        ]
        # the edit is stored in float32: the residual is float32 rounding of W (the float64 UNet version: 1e-5)
        assert sum(terms).norm() / sum(t.norm() for t in terms) < 1e-4, name


def test_rece_on_pixart_keeps_its_stages_and_samples(pixart):
    edit = erase_rece(pixart, ["bench"], epochs=2, token_choice="eos-aligned")
    assert edit.stages == ["uce", "rece epoch 1", "rece epoch 2"]
    assert all(n.startswith("transformer.transformer_blocks.") and n.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))
               for n in edit.tensors)
    with edit.applied(pixart):
        image = pixart("a bench", num_inference_steps=2, height=64, width=64, use_resolution_binning=False,
                       output_type="np").images
    assert image.shape == (1, 64, 64, 3)


def test_released_transformer_weights_load_as_an_edit(pixart, tmp_path):
    uce = erase_uce(pixart, ["bench"])
    state = {name: tensor.clone() for name, tensor in pixart.transformer.state_dict().items()}
    for name, tensor in uce.tensors.items():
        state[name.removeprefix("transformer.")] = tensor
    save_file(state, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    edit = edit_from_unet_state_dict(pixart, tmp_path / "diffusion_pytorch_model.safetensors")
    assert sorted(edit.tensors) == sorted(uce.tensors)
    assert all(torch.equal(edit.tensors[n], uce.tensors[n]) for n in uce.tensors)


def test_joint_attention_models_and_sana_refuse_closed_form_edits_with_a_reason():
    with pytest.raises(ValueError, match="docs/dit.md"):
        erase_uce(tiny_sd3_pipeline(), ["bench"])
    with pytest.raises(NotImplementedError, match="complex human instruction"):
        erase_uce(tiny_sana_pipeline(), ["bench"])


def test_cli_capture_erase_show_and_drift_on_tiny_pixart(tmp_path, capsys):
    from attnscope.cli import main

    common = ["--model", "tiny-pixart", "--device", "cpu"]
    sampled = ["--prompt", "a wooden bench and a bird", "--seed", "0", "--seed", "1", "--steps", "3", "--height", "64", "--width", "64", "--no-progress"]
    edit = tmp_path / "bench.edit"
    erase_args = ["erase", "--method", "uce", "--concept", "bench", "--out", str(edit), *common]
    assert main(erase_args) == 0
    assert "transformer_blocks.0.attn2" in capsys.readouterr().out
    for name, extra in (("before", []), ("after", ["--edit", str(edit)])):
        assert main(["capture", *sampled, *common, *extra, "--out", str(tmp_path / f"{name}.h5")]) == 0
    assert main(["show", str(tmp_path / "before.h5"), "--word", "wooden", "--by-resolution"]) == 0
    assert (tmp_path / "before-show.png").stat().st_size > 0
    out = tmp_path / "drift"
    assert main(["drift", str(tmp_path / "before.h5"), str(tmp_path / "after.h5"), "--word", "wooden",
                 "--object", "bench", "--object", "bird", "--resamples", "50", "--out", str(out)]) == 0
    assert (out / "drift.json").exists() and (out / "drift_layers_steps.csv").read_text().count("transformer_blocks.1.attn2") > 0
