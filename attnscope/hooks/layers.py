"""Cross-attention layers of a UNet: stable names, place and resolution.

A layer is named by its diffusers module path, e.g.
``up_blocks.1.attentions.0.transformer_blocks.0.attn2``; the name is the same
for SD 1.x, SD 2.x, SDXL and the toy model, and is what run files store.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Sequence

import torch


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
    """
    n_down, n_up = len(unet.down_blocks), len(unet.up_blocks)
    layers = []
    for name, module in unet.named_modules():
        if getattr(module, "is_cross_attention", False) and hasattr(module, "set_processor"):
            place, halvings = _place_and_halvings(name, n_down, n_up)
            layers.append(CrossAttentionLayer(name, module, place, halvings))
    return layers


def select_layers(layers: list[CrossAttentionLayer], pattern: str | Sequence[str] = "all") -> list[CrossAttentionLayer]:
    """Filter by exact names, globs (``"up_blocks.*"``), places (``"down"``) or ``"all"``."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    if patterns == ["all"]:
        return list(layers)
    chosen = [
        layer for layer in layers
        if any(p == layer.place or fnmatch.fnmatchcase(layer.name, p) for p in patterns)
    ]
    if not chosen:
        known = "\n  ".join(layer.name for layer in layers)
        raise ValueError(f"no cross-attention layer matches {patterns}; the model has:\n  {known}")
    return chosen
