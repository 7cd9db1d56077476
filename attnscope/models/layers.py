"""The attention layers of a pipeline's denoiser: discovery, names, places, resolutions.

A layer is named by its diffusers module path within the UNet or transformer,
e.g. ``up_blocks.1.attentions.0.transformer_blocks.0.attn2``; the name is the
same for SD 1.x, SD 2.x, SDXL and the toy model, and is what run files store.
Layers are chosen with the one rule of :func:`attnscope.store.layers.select_layers`
(``"all"``, names, globs, places), by capture, erasure and the run-file reader alike.

UNet layers (:class:`CrossAttentionLayer`) are diffusers ``Attention`` modules
whose keys come from the text; place ``"down"``, ``"mid"`` or ``"up"``.

Diffusion transformers (:class:`TransformerLayer`) have two kinds of
text→image attention:

* **cross** — like the UNet's (PixArt-α/Σ and Sana
  ``transformer_blocks.N.attn2``); place ``"cross"``;
* **joint** — an MM-DiT attention over the concatenated text and image
  sequence: SD3/SD3.5 ``transformer_blocks.N.attn`` (place ``"joint"``,
  order ``[image, text]``), Flux ``transformer_blocks.N.attn`` (place
  ``"double"``) and ``single_transformer_blocks.N.attn`` (place
  ``"single"``), both in order ``[text, image]``.

Every transformer layer's query grid is the transformer's token grid (no
down-sampling). SD3.5's image-only ``attn2`` (dual attention) and Sana's
linear self-attention are not text attention and are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from attnscope.store.layers import select_layers


@dataclass(frozen=True)
class CrossAttentionLayer:
    name: str
    module: torch.nn.Module  # a diffusers ``Attention``
    place: str  # "down" | "mid" | "up"
    halvings: int  # how many 2× downsamplings separate it from the latent

    def resolution(self, latent_hw: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` of this layer's query grid for a latent of ``latent_hw``."""
        height, width = latent_hw
        for _ in range(self.halvings):
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        return height, width


@dataclass(frozen=True)
class TransformerLayer:
    name: str
    module: torch.nn.Module
    place: str  # "cross" | "joint" | "double" | "single"
    text_first: bool  # joint layers: the sequence is [text, image] (Flux) or [image, text] (SD3)

    @property
    def joint(self) -> bool:
        return self.place != "cross"

    @property
    def block(self) -> int:
        """Index of the block within its stack (``transformer_blocks.3.attn`` → 3)."""
        return int(self.name.split(".")[1])

    def resolution(self, grid_hw: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` of the query grid: the transformer's token grid itself."""
        return grid_hw


def _place_and_halvings(name: str, n_down: int, n_up: int) -> tuple[str, int]:
    parts = name.split(".")
    if parts[0] == "down_blocks":
        return "down", int(parts[1])
    if parts[0] == "mid_block":
        return "mid", n_down - 1
    if parts[0] == "up_blocks":
        return "up", n_up - 1 - int(parts[1])
    raise ValueError(f"cannot place layer {name!r}: not in down_blocks, mid_block or up_blocks")


def cross_attention_layers(unet: torch.nn.Module) -> list[CrossAttentionLayer]:
    """Every cross-attention module of ``unet`` in forward order (down, mid, up).

    A module counts as cross-attention when it is a diffusers ``Attention``
    whose keys come from the text (``is_cross_attention``).

    Args:
        unet: a diffusers ``UNet2DConditionModel`` (``pipe.unet``).

    Returns:
        One :class:`CrossAttentionLayer` (name, module, place, resolution) per module.
    """
    n_down, n_up = len(unet.down_blocks), len(unet.up_blocks)
    layers = []
    for name, module in unet.named_modules():
        if getattr(module, "is_cross_attention", False) and hasattr(module, "set_processor"):
            place, halvings = _place_and_halvings(name, n_down, n_up)
            layers.append(CrossAttentionLayer(name, module, place, halvings))
    return layers


def transformer_attention_layers(transformer: torch.nn.Module) -> list[TransformerLayer]:
    """Every text-attending attention module of ``transformer`` in forward order."""
    flux = type(transformer).__name__.startswith("Flux")
    layers = []
    for name, module in transformer.named_modules():
        if not hasattr(module, "set_processor"):
            continue
        if getattr(module, "is_cross_attention", False):
            layers.append(TransformerLayer(name, module, "cross", text_first=False))
        elif getattr(module, "added_kv_proj_dim", None) is not None:
            layers.append(TransformerLayer(name, module, "double" if flux else "joint", text_first=flux))
        elif flux and name.startswith("single_transformer_blocks.") and name.endswith(".attn"):
            layers.append(TransformerLayer(name, module, "single", text_first=True))
    return layers


def backbone(pipe) -> tuple[str, torch.nn.Module]:
    """``("unet", pipe.unet)`` or ``("transformer", pipe.transformer)``: the denoiser of ``pipe``."""
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return name, module
    raise ValueError(f"{type(pipe).__name__} has neither a UNet nor a transformer")


def is_transformer_pipeline(pipe) -> bool:
    return backbone(pipe)[0] == "transformer"


def text_key_layers(pipe, layers: str | Sequence[str] = "all") -> list[CrossAttentionLayer | TransformerLayer]:
    """The chosen layers of ``pipe`` whose keys and values are projections of the text alone
    (UNet and PixArt/Sana cross-attention; not MM-DiT joint attention).

    Raises ``ValueError`` for a joint-attention transformer (SD3, Flux), which has none.
    """
    component, module = backbone(pipe)
    if component == "unet":
        found: list = cross_attention_layers(module)
    else:
        found = [layer for layer in transformer_attention_layers(module) if not layer.joint]
    if not found:
        raise ValueError(
            f"{type(module).__name__} has no cross-attention layers to edit (joint-attention MM-DiTs such as "
            "SD3 and Flux have no closed-form UCE/RECE edit; see docs/dit.md)"
        )
    return select_layers(found, layers)


__all__ = [
    "CrossAttentionLayer",
    "TransformerLayer",
    "backbone",
    "cross_attention_layers",
    "is_transformer_pipeline",
    "select_layers",
    "text_key_layers",
    "transformer_attention_layers",
]
