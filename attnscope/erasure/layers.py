"""The weights closed-form erasure edits: cross-attention ``to_k``/``to_v``.

A cross-attention layer is a diffusers ``Attention`` module whose name ends in
``attn2`` (SD 1.x/2.x, SDXL and the toy model share this). Its key and value
projections map a text embedding ``c`` (``d`` = the text encoder's width) to
keys/values: ``k = W_k c``, ``v = W_v c`` with ``W`` of shape ``(out, d)``.

Parameters are named relative to the pipeline, e.g.
``unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Sequence

import torch
from diffusers.models.attention_processor import Attention

PROJECTIONS = ("to_k", "to_v")


def cross_attention_names(unet: torch.nn.Module) -> list[str]:
    """Module paths of the UNet's cross-attention layers, in ``named_modules`` order."""
    return [n for n, m in unet.named_modules() if n.endswith("attn2") and isinstance(m, Attention)]


def select_layers(unet: torch.nn.Module, layers: str | Sequence[str] = "all") -> list[str]:
    """Cross-attention layer paths matching ``layers``: ``"all"`` or names/globs.

    Raises ``ValueError`` naming the available layers when a pattern matches none.
    """
    names = cross_attention_names(unet)
    if not names:
        raise ValueError(f"{type(unet).__name__} has no cross-attention ('attn2') layers to edit")
    if layers == "all":
        return names
    patterns = [layers] if isinstance(layers, str) else list(layers)
    for pattern in patterns:
        if not any(fnmatchcase(n, pattern) for n in names):
            raise ValueError(f"layer pattern {pattern!r} matches no cross-attention layer; have {names}")
    return [n for n in names if any(fnmatchcase(n, p) for p in patterns)]


def kv_parameters(pipe, layers: str | Sequence[str] = "all") -> dict[str, torch.nn.Parameter]:
    """``{pipeline-relative name: weight}`` of ``to_k`` then ``to_v`` of each selected layer.

    Biases are left alone (SD's projections have none; UCE/RECE edit weights only).
    """
    params = {}
    for layer in select_layers(pipe.unet, layers):
        attn = pipe.unet.get_submodule(layer)
        for proj in PROJECTIONS:
            params[f"unet.{layer}.{proj}.weight"] = getattr(attn, proj).weight
    return params


@dataclass
class KVStack:
    """Several ``(out_i, d)`` projection matrices stacked row-wise into one ``(sum out_i, d)`` matrix.

    Closed-form erasure right-multiplies every matrix by the same ``(d, d)``
    matrix and sums Gram matrices ``Σ_i W_iᵀ W_i``; both are one matmul on
    the stack. ``weight`` is kept in float32 whatever the model dtype.
    """

    names: list[str]
    sizes: list[int]
    weight: torch.Tensor  # (sum(sizes), d), float32

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "KVStack":
        """Stack ``tensors`` (all ``(out_i, d)`` with one ``d``) in float32."""
        widths = {t.shape[1] for t in tensors.values()}
        if len(widths) != 1:
            raise ValueError(f"K/V matrices must share their input width, got widths {sorted(widths)}")
        weight = torch.cat([t.detach().float() for t in tensors.values()])
        return cls(list(tensors), [t.shape[0] for t in tensors.values()], weight)

    def matmul(self, matrix: torch.Tensor) -> "KVStack":
        """The stack with every matrix ``W_i`` replaced by ``W_i @ matrix`` (``matrix``: ``(d, d)``)."""
        return KVStack(self.names, self.sizes, self.weight @ matrix)

    def split(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """``{name: (out_i, d) tensor}`` cast to ``dtype`` (new storage per tensor)."""
        return {n: t.to(dtype, copy=True) for n, t in zip(self.names, self.weight.split(self.sizes))}
