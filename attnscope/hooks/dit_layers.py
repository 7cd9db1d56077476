"""Attention layers of diffusion transformers: names, places, and where the text sits.

Two kinds of layer carry text→image attention:

* **cross** — a diffusers ``Attention`` whose keys come from the text
  (PixArt-α/Σ and Sana ``transformer_blocks.N.attn2``), like the UNet's;
  place ``"cross"``;
* **joint** — an MM-DiT attention over the concatenated text and image
  sequence: SD3/SD3.5 ``transformer_blocks.N.attn`` (place ``"joint"``,
  order ``[image, text]``), Flux ``transformer_blocks.N.attn`` (place
  ``"double"``) and ``single_transformer_blocks.N.attn`` (place
  ``"single"``), both in order ``[text, image]``.

Every layer's query grid is the transformer's token grid (no down-sampling),
so :meth:`TransformerLayer.resolution` returns the grid it is given. SD3.5's
image-only ``attn2`` (dual attention) and Sana's linear self-attention are
not text attention and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def backbone(pipe) -> tuple[str, torch.nn.Module]:
    """``("unet", pipe.unet)`` or ``("transformer", pipe.transformer)``: the denoiser of ``pipe``."""
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return name, module
    raise ValueError(f"{type(pipe).__name__} has neither a UNet nor a transformer")


def is_transformer_pipeline(pipe) -> bool:
    return backbone(pipe)[0] == "transformer"


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


@dataclass(frozen=True)
class TextStream:
    """A tokenizer's ids that fill part of the text key sequence.

    ``encoder``/``tokenizer``: the pipeline attributes; the stream's tokens
    occupy the text keys from ``offset`` (its length is its ids' length).
    """

    name: str
    encoder: str
    tokenizer: str


def text_streams(pipe) -> list[TextStream]:
    """The streams whose tokens the transformer attends to, in key order.

    SD3: CLIP (77 positions; CLIP-L and CLIP-G share the positions, their
    features are concatenated) then T5; Flux: T5 only (CLIP gives the pooled
    vector); PixArt and Sana: their one text encoder.
    """
    kind = type(backbone(pipe)[1]).__name__
    if kind.startswith("SD3"):
        return [TextStream("clip", "text_encoder", "tokenizer"), TextStream("t5", "text_encoder_3", "tokenizer_3")]
    if kind.startswith("Flux"):
        return [TextStream("t5", "text_encoder_2", "tokenizer_2")]
    return [TextStream("text", "text_encoder", "tokenizer")]
