"""Released erased weights → Edit: full UNet state dicts (diffusers and LDM names) and LoRA adapters."""

import re

import pytest
import torch
from safetensors.torch import save_file

from attnscope.erasure import applied_edits, edit_from_lora, edit_from_unet_state_dict, erase_uce
from attnscope.models import tiny_sd_pipeline

TO_K = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
CONV = "up_blocks.1.resnets.0.conv1.weight"


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd_pipeline(seed=7)


def _released(pipe) -> dict[str, torch.Tensor]:
    """The UNet state dict with two tensors changed, as an erasure release would be."""
    state = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    state[TO_K] += 0.1
    state[CONV] *= 1.5
    return state


# ------------------------------------------------------------------ original SD (LDM) names, for SD1-layout UNets

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_MID = {("resnets", 0): 0, ("attentions", 0): 1, ("resnets", 1): 2}


def _ldm_name(key: str) -> str:
    """The original Stable Diffusion name of a key of an SD 1.x-layout diffusers UNet (2 layers per block)."""
    for new, old in _TOP.items():
        if key.startswith(new + "."):
            return f"model.diffusion_model.{old}{key[len(new):]}"
    mid = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if mid:
        kind, rest = mid.group(1), mid.group(3)
        block = f"middle_block.{_MID[(kind, int(mid.group(2)))]}"
    else:
        side, i, kind, j, rest = re.match(r"(down|up)_blocks\.(\d+)\.(\w+)\.(\d+)\.(.*)", key).groups()
        i, j = int(i), int(j)
        if side == "down":
            block = {"resnets": f"input_blocks.{3 * i + j + 1}.0", "attentions": f"input_blocks.{3 * i + j + 1}.1",
                     "downsamplers": f"input_blocks.{3 * (i + 1)}.0.op"}[kind]
            rest = rest.removeprefix("conv.") if kind == "downsamplers" else rest
        else:
            n = 3 * i + (2 if kind == "upsamplers" else j)
            block = {"resnets": f"output_blocks.{n}.0", "attentions": f"output_blocks.{n}.1",
                     "upsamplers": f"output_blocks.{n}.{1 if i == 0 else 2}"}[kind]
    if kind == "resnets":
        head, _, tail = rest.partition(".")
        rest = f"{_RESNET[head]}.{tail}"
    return f"model.diffusion_model.{block}.{rest}"


# ------------------------------------------------------------------ full state dicts


def _check_release_edit(pipe, edit, state):
    assert sorted(edit.tensors) == sorted([f"unet.{TO_K}", f"unet.{CONV}"])
    assert edit.meta["method"] == "checkpoint" and edit.meta["changed"] == 2
    assert {row["name"] for row in edit.meta["diff"]} == set(edit.tensors)
    assert all(row["relative"] > 0 for row in edit.meta["diff"])
    with edit.applied(pipe):
        assert all(torch.equal(p, state[n]) for n, p in pipe.unet.state_dict().items())
    assert applied_edits(pipe) == []


def test_safetensors_state_dict(pipe, tmp_path):
    state = _released(pipe)
    save_file(state, str(tmp_path / "erased.safetensors"))
    _check_release_edit(pipe, edit_from_unet_state_dict(pipe, tmp_path / "erased.safetensors"), state)


@pytest.mark.parametrize("wrap", ["plain", "unet-prefix", "state_dict", "ldm"])
def test_torch_checkpoints_in_common_layouts(pipe, tmp_path, wrap):
    state = _released(pipe)
    saved = {
        "plain": state,
        "unet-prefix": {f"unet.{k}": v for k, v in state.items()},
        "state_dict": {"state_dict": state, "global_step": torch.tensor(3)},
        "ldm": {"state_dict": {_ldm_name(k): v for k, v in state.items()}},
    }[wrap]
    torch.save(saved, tmp_path / "erased.pt")
    _check_release_edit(pipe, edit_from_unet_state_dict(pipe, tmp_path / "erased.pt"), state)


def test_partial_release_with_foreign_keys_and_tolerance(pipe):
    uce = erase_uce(pipe, ["bench"])  # a K/V-only release, as the UCE code saves
    release = {n.removeprefix("unet."): t for n, t in uce.tensors.items()}
    release["text_projection.weight"] = torch.zeros(2, 2)
    edit = edit_from_unet_state_dict(pipe, release)
    assert edit.tensors.keys() == uce.tensors.keys()
    assert all(torch.equal(edit.tensors[n], uce.tensors[n]) for n in uce.tensors)
    assert edit.meta["unmatched"]["count"] == 1
    noise = {TO_K: pipe.unet.get_parameter(TO_K).detach() + 1e-7}
    assert edit_from_unet_state_dict(pipe, noise, atol=1e-6).tensors == {}
    with pytest.raises(ValueError, match="shape"):
        edit_from_unet_state_dict(pipe, {TO_K: torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="none of the"):
        edit_from_unet_state_dict(pipe, {"foo.weight": torch.zeros(1)})
    partial_ldm = {_ldm_name(k): v for k, v in pipe.unet.state_dict().items() if "attn2.to_k" in k}
    with pytest.raises(ValueError, match="whole UNet"):
        edit_from_unet_state_dict(pipe, partial_ldm)


def test_fp32_release_of_an_fp16_model_ignores_rounding_noise():
    pipe = tiny_sd_pipeline(seed=7).to(dtype=torch.float16)
    state = {k: v.float() for k, v in pipe.unet.state_dict().items()}
    state[TO_K] = state[TO_K] + 1e-5  # below fp16 resolution for most entries: not all change
    state[CONV] = state[CONV] * 2
    edit = edit_from_unet_state_dict(pipe, state)
    assert f"unet.{CONV}" in edit.tensors and edit.tensors[f"unet.{CONV}"].dtype == torch.float16
    assert len(edit.tensors) <= 2


# ------------------------------------------------------------------ LoRA / SPM adapters


def _lora_pair(weight: torch.Tensor, rank: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    down = torch.randn(rank, *weight.shape[1:], generator=g)
    up = torch.randn(weight.shape[0], rank, *([1] * (weight.dim() - 2)), generator=g)
    return down, up


def _expected(weight, down, up, factor):
    delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
    return weight.detach() + factor * delta


def test_kohya_style_adapter_with_alpha_merges_linear_conv_and_text_encoder(pipe, tmp_path):
    to_k = pipe.unet.get_parameter(TO_K)
    conv = pipe.unet.get_parameter(CONV)
    q_name = next(n for n, _ in pipe.text_encoder.named_parameters() if n.endswith("layers.0.self_attn.q_proj.weight"))
    q_proj = pipe.text_encoder.get_parameter(q_name)
    (kd, ku), (cd, cu), (qd, qu) = _lora_pair(to_k, 2, 0), _lora_pair(conv, 4, 1), _lora_pair(q_proj, 1, 2)
    kohya_k = "lora_unet_" + TO_K.removesuffix(".weight").replace(".", "_")
    kohya_c = "lora_unet_" + CONV.removesuffix(".weight").replace(".", "_")
    kohya_q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"  # the name files carry
    adapter = {
        f"{kohya_k}.lora_down.weight": kd, f"{kohya_k}.lora_up.weight": ku, f"{kohya_k}.alpha": torch.tensor(1.0),
        f"{kohya_c}.lora_down.weight": cd, f"{kohya_c}.lora_up.weight": cu,
        f"{kohya_q}.lora_down.weight": qd, f"{kohya_q}.lora_up.weight": qu, f"{kohya_q}.alpha": torch.tensor(0.5),
    }
    save_file(adapter, str(tmp_path / "spm.safetensors"))
    edit = edit_from_lora(pipe, tmp_path / "spm.safetensors", scale=0.5)
    assert sorted(edit.tensors) == sorted([f"unet.{TO_K}", f"unet.{CONV}", f"text_encoder.{q_name}"])
    torch.testing.assert_close(edit.tensors[f"unet.{TO_K}"], _expected(to_k, kd, ku, 0.5 * 1.0 / 2))
    torch.testing.assert_close(edit.tensors[f"unet.{CONV}"], _expected(conv, cd, cu, 0.5 * 4 / 4))
    torch.testing.assert_close(
        edit.tensors[f"text_encoder.{q_name}"],
        _expected(q_proj, qd, qu, 0.5 * 0.5 / 1),
    )
    assert edit.meta["method"] == "lora" and edit.meta["changed"] == 3


@pytest.mark.parametrize("style", ["peft", "diffusers", "processor"])
def test_dotted_adapter_styles(pipe, style):
    to_k = pipe.unet.get_parameter(TO_K)
    down, up = _lora_pair(to_k, 3, 4)
    module = TO_K.removesuffix(".weight")
    attn = module.removesuffix(".to_k")
    names = {
        "peft": (f"unet.{module}.lora_A.weight", f"unet.{module}.lora_B.weight"),
        "diffusers": (f"{module}.lora.down.weight", f"{module}.lora.up.weight"),
        "processor": (f"{attn}.processor.to_k_lora.down.weight", f"{attn}.processor.to_k_lora.up.weight"),
    }[style]
    edit = edit_from_lora(pipe, dict(zip(names, (down, up))))
    assert list(edit.tensors) == [f"unet.{TO_K}"]
    torch.testing.assert_close(edit.tensors[f"unet.{TO_K}"], _expected(to_k, down, up, 1.0))


def test_adapter_errors(pipe):
    with pytest.raises(ValueError, match="no LoRA"):
        edit_from_lora(pipe, {"foo.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="lack a down or up"):
        edit_from_lora(pipe, {"unet.conv_in.lora_A.weight": torch.zeros(1, 4, 3, 3)})
    with pytest.raises(KeyError, match="does not have"):
        edit_from_lora(pipe, {"unet.nowhere.lora_A.weight": torch.zeros(1, 2), "unet.nowhere.lora_B.weight": torch.zeros(2, 1)})
