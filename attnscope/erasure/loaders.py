"""Released erased weights → :class:`~attnscope.erasure.Edit`, by diffing against the base.

Two kinds of release are covered:

* a full (or partial) erased UNet state dict, as ESD, MACE, RECE and UCE
  publish — or, for a diffusion-transformer pipeline (PixArt, Sana, SD3,
  Flux), an erased transformer state dict in diffusers names (e.g. EraseAnything's
  or a fine-tuned PixArt's ``transformer/diffusion_pytorch_model.safetensors``): safetensors, or
  ``.pt``/``.ckpt``/``.bin`` read with ``torch.load(weights_only=True)`` (told apart by content, not
  extension); diffusers names (optionally prefixed
  ``unet.``/``module.``, or wrapped in ``{"state_dict": ...}``) or the original
  Stable Diffusion (LDM) names ``model.diffusion_model.*`` (converted with
  diffusers' single-file converter for the pipeline's UNet config);
* an SPM/LoRA-style adapter whose low-rank pairs are merged into the weights
  they adapt: ``W + scale · (alpha / rank) · up @ down``. Key styles:
  kohya/LECO (``lora_unet_<path_with_underscores>.lora_down.weight``,
  ``.lora_up.weight``, ``.alpha``; ``lora_te_``/``lora_te1_``/``lora_te2_`` for
  text encoders), PEFT (``<path>.lora_A.weight``/``.lora_B.weight``) and older
  diffusers (``<path>.lora.down.weight``, ``<attn>.processor.to_k_lora.down.weight``).
  SPM's inference-time "facilitated transport" gate is dynamic and is not part
  of a merge: the merged edit is the adapter at full strength.

Only tensors whose value changes (after casting to the parameter's dtype)
enter the edit; ``edit.meta["diff"]`` lists them with their relative change.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load_file

from attnscope.erasure.edit import Edit, changes, edit_meta
from attnscope.errors import UnreadableFile
from attnscope.models.layers import backbone

LDM_UNET_PREFIX = "model.diffusion_model."
_STRIPPED_PREFIXES = ("module.", "unet.", "transformer.")


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` starts like a safetensors file (8-byte header length, then a JSON object),
    whatever its extension."""
    with open(path, "rb") as file:
        head = file.read(9)
    return len(head) == 9 and int.from_bytes(head[:8], "little") < 100_000_000 and head[8:9] == b"{"


def read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from a file (safetensors or torch, told apart by content) or a mapping, on CPU."""
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise UnreadableFile(f"{path}: no such weights file")
        try:
            if is_safetensors(path):
                state = load_file(str(path), device="cpu")
            else:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as error:  # safetensors', pickle's and zipfile's own errors
            raise UnreadableFile(f"{path} is not a readable safetensors or torch state dict "
                                 f"({type(error).__name__}: {' '.join(str(error).split())[:200]})") from error
    while isinstance(state.get("state_dict"), Mapping):
        state = dict(state["state_dict"])
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _STRIPPED_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def unet_state_dict(pipe, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with diffusers UNet names (LDM names converted for ``pipe.unet``'s config).

    An LDM release must hold the whole UNet: diffusers' converter infers the
    block layout from the keys, so a partial one would be renamed wrongly.
    """
    ldm_keys = sum(k.startswith(LDM_UNET_PREFIX) for k in state)
    if not ldm_keys:
        return _strip_prefixes(state)
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    try:
        converted = convert_ldm_unet_checkpoint(state, dict(pipe.unet.config))
    except KeyError:  # the converter indexes blocks it inferred from the keys
        converted = {}
    if len(converted) != ldm_keys:
        raise ValueError(
            f"an original-SD (LDM) release must hold the whole UNet: {ldm_keys} '{LDM_UNET_PREFIX}*' tensors "
            f"became {len(converted)} diffusers tensors"
        )
    return converted


@torch.no_grad()
def _diff_edit(pipe, candidates: dict[str, torch.Tensor], atol: float, method: str, **meta) -> Edit:
    """An edit of the ``candidates`` (pipeline-relative names) that differ from ``pipe``'s weights by > ``atol``."""
    new, old = {}, {}
    for name, value in candidates.items():
        component, _, rest = name.partition(".")
        param = getattr(pipe, component).get_parameter(rest)
        if param.shape != value.shape:
            raise ValueError(f"{name}: released shape {tuple(value.shape)} != model shape {tuple(param.shape)}")
        value = value.to(param.dtype)
        base = param.detach().cpu()
        if not torch.equal(value, base) and (value.float() - base.float()).abs().max().item() > atol:
            new[name], old[name] = value, base
    rows = changes(old, new)
    diff = [{"name": r.name, "relative": r.relative, "max_abs": r.max_abs} for r in rows]
    return Edit(new, edit_meta(pipe, method, compared=len(candidates), changed=len(new), diff=diff, **meta))


def edit_from_unet_state_dict(
    pipe, source: str | Path | Mapping[str, torch.Tensor], *, atol: float = 0.0
) -> Edit:
    """The edit that turns ``pipe``'s UNet (or transformer) into the released one (see module docstring).

    Tensors differing by at most ``atol`` (absolute, in float32) are treated as
    unchanged. Names the denoiser does not have are counted in
    ``meta["unmatched"]`` (with up to 10 examples) and otherwise ignored.
    """
    component, denoiser = backbone(pipe)
    state = read_state_dict(source)
    state = unet_state_dict(pipe, state) if component == "unet" else _strip_prefixes(state)
    params = dict(denoiser.named_parameters())
    unmatched = sorted(k for k in state if k not in params)
    if len(unmatched) == len(state):
        raise ValueError(
            f"none of the {len(state)} tensors in the release names a {component} parameter, e.g. {unmatched[:3]}"
        )
    candidates = {f"{component}.{k}": v for k, v in state.items() if k in params}
    source_name = "<state dict>" if isinstance(source, Mapping) else str(source)
    return _diff_edit(
        pipe, candidates, atol, "checkpoint", source=source_name,
        unmatched={"count": len(unmatched), "examples": unmatched[:10]},
    )


_LORA_PARTS = (
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".lora.down.weight", "down"),
    (".lora.up.weight", "up"),
    (".alpha", "alpha"),
)
_KOHYA_PREFIXES = (("lora_unet_", "unet"), ("lora_te_", "text_encoder"), ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"))
_PROCESSOR_LORA = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)_lora\.")


def _processor_key(key: str) -> str:
    """Old diffusers attention-processor LoRA keys in ``<path>.lora.down.weight`` form."""
    return _PROCESSOR_LORA.sub(lambda m: f".{m.group(1)}{'.0' if m.group(1) == 'to_out' else ''}.lora.", key)


def _kohya_names(pipe) -> dict[str, str]:
    """``{"lora_unet_down_blocks_0_..._to_k": "unet.down_blocks.0....to_k"}`` for every module with a weight.

    Text-encoder names are also reachable with the ``text_model_`` infix that
    files written against transformers < 5 carry (``CLIPTextModel.text_model``).
    """
    names = {}
    for prefix, component in _KOHYA_PREFIXES:
        module = getattr(pipe, component, None)
        if module is None:
            continue
        infix = "text_model_" if component != "unet" and not hasattr(module, "text_model") else ""
        for path, sub in module.named_modules():
            if isinstance(getattr(sub, "weight", None), torch.Tensor):
                flat = path.replace(".", "_")
                names[prefix + flat] = f"{component}.{path}"
                if infix:
                    names[prefix + infix + flat] = f"{component}.{path}"
    return names


def _module_name(key: str, kohya: dict[str, str], pipe) -> str:
    """The pipeline-relative module path a LoRA key adapts."""
    if key in kohya:
        return kohya[key]
    key = key.removeprefix("base_model.model.")
    component = key.partition(".")[0]
    if not isinstance(getattr(pipe, component, None), torch.nn.Module):
        key = f"unet.{key}"
    return key


def lora_pairs(pipe, state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{module path: {"down": (r, in, ...), "up": (out, r, ...), "alpha"?: ()}}`` from an adapter state dict."""
    kohya = _kohya_names(pipe)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        key = _processor_key(key)
        for suffix, part in _LORA_PARTS:
            if key.endswith(suffix):
                module = _module_name(key[: -len(suffix)], kohya, pipe)
                pairs.setdefault(module, {})[part] = tensor
                break
    incomplete = [m for m, p in pairs.items() if not {"down", "up"} <= set(p)]
    if incomplete:
        raise ValueError(f"{len(incomplete)} adapted modules lack a down or up matrix, e.g. {incomplete[0]}")
    if not pairs:
        raise ValueError(f"no LoRA down/up pairs found among {len(state)} tensors, e.g. {sorted(state)[:3]}")
    return pairs


def merged_delta(weight_shape: torch.Size, down: torch.Tensor, up: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
    """``(alpha / rank) · up @ down`` reshaped to ``weight_shape`` (linear or conv), float32."""
    rank = down.shape[0]
    scale = (alpha.float().item() if alpha is not None else rank) / rank
    return (up.float().flatten(1) @ down.float().flatten(1)).reshape(weight_shape) * scale


@torch.no_grad()
def edit_from_lora(pipe, source: str | Path | Mapping[str, torch.Tensor], *, scale: float = 1.0) -> Edit:
    """Merge an SPM/LoRA-style adapter into ``pipe``'s weights, as an edit (see module docstring)."""
    pairs = lora_pairs(pipe, read_state_dict(source))
    candidates = {}
    for module_name, part in pairs.items():
        name = f"{module_name}.weight"
        component, _, rest = name.partition(".")
        try:
            weight = getattr(pipe, component).get_parameter(rest)
        except AttributeError as error:
            raise KeyError(f"the adapter adapts {module_name!r}, which the pipeline does not have") from error
        delta = merged_delta(weight.shape, part["down"], part["up"], part.get("alpha"))
        candidates[name] = (weight.detach().float().cpu() + scale * delta).to(weight.dtype)
    source_name = "<state dict>" if isinstance(source, Mapping) else str(source)
    return _diff_edit(pipe, candidates, 0.0, "lora", source=source_name, scale=scale)
