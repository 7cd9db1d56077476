"""The weights closed-form erasure edits: cross-attention ``to_k``/``to_v``.

Cross-attention layers are found and selected as capture does
(:func:`attnscope.models.layers.text_key_layers`): diffusers
``Attention`` modules whose keys come from the text, named ``...attn2`` in
SD 1.x/2.x, SDXL, the toy model, PixArt and Sana. A layer's key and value
projections map a text embedding ``c`` (``d`` = the text encoder's width) to
``k = W_k c (+ b)``, ``v = W_v c (+ b)``, ``W`` of shape ``(out, d)``. A bias
(PixArt, Sana) cancels from every term of UCE's objective, so editing ``W``
alone stays the exact solution.

MM-DiTs (SD3, Flux) have no such layer: their text keys/values come from
``add_k_proj``/``add_v_proj`` applied to a text stream that every previous
block has mixed with the image, so the closed form does not apply
(``docs/dit.md``); selecting layers there raises.

Parameters are named relative to the pipeline, e.g.
``unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight`` or
``transformer.transformer_blocks.0.attn2.to_k.weight``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from attnscope.models.layers import backbone, text_key_layers

PROJECTIONS = ("to_k", "to_v")


def kv_parameters(pipe, layers: str | Sequence[str] = "all") -> dict[str, torch.nn.Parameter]:
    """``{pipeline-relative name: weight}`` of ``to_k`` then ``to_v`` of each selected layer.

    Biases are left alone (SD's projections have none; PixArt's cancel; UCE/RECE edit weights only).
    """
    component = backbone(pipe)[0]
    params = {}
    for layer in text_key_layers(pipe, layers):
        for proj in PROJECTIONS:
            params[f"{component}.{layer.name}.{proj}.weight"] = getattr(layer.module, proj).weight
    return params


@dataclass
class KVStack:
    """Several ``(out_i, d)`` projection matrices stacked row-wise into one ``(sum out_i, d)`` matrix.

    Closed-form erasure right-multiplies every matrix by the same ``(d, d)``
    matrix and sums Gram matrices ``Σ_i W_iᵀ W_i``; both are one matmul on
    the stack. ``weight`` is kept in float64 whatever the model dtype: RECE's
    Gram matrices have condition numbers near 1e6, where float32 sums and
    solves lose percents; :meth:`split` writes back in the model's dtype.
    """

    names: list[str]
    sizes: list[int]
    weight: torch.Tensor  # (sum(sizes), d), float64

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "KVStack":
        """Stack ``tensors`` (all ``(out_i, d)`` with one ``d``) in float64."""
        widths = {t.shape[1] for t in tensors.values()}
        if len(widths) != 1:
            raise ValueError(f"K/V matrices must share their input width, got widths {sorted(widths)}")
        weight = torch.cat([t.detach().double() for t in tensors.values()])
        return cls(list(tensors), [t.shape[0] for t in tensors.values()], weight)

    def matmul(self, matrix: torch.Tensor) -> "KVStack":
        """The stack with every matrix ``W_i`` replaced by ``W_i @ matrix`` (``matrix``: ``(d, d)``)."""
        return KVStack(self.names, self.sizes, self.weight @ matrix)

    def split(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """``{name: (out_i, d) tensor}`` cast to ``dtype`` (new storage per tensor)."""
        return {n: t.to(dtype, copy=True) for n, t in zip(self.names, self.weight.split(self.sizes))}
