"""Concept maps in output space (ConceptAttention-style) for joint-attention transformers.

Concept tokens — the T5 embeddings of phrases such as ``"bench"`` or
``"wooden bench"`` — ride along the text stream of every SD3 joint block and
every Flux double-stream block without touching the image:

* at the transformer's input they pass the model's ``context_embedder``;
* in each block they are modulated by the block's ``norm1_context`` (with
  that step's ``temb``), projected by its ``add_q/k/v_proj`` and QK-norms,
  and their queries attend to ``[concept keys; image keys]`` (the image keys
  and values as the model computed them: normed, rotated); no image query
  ever sees a concept key, so the image is unchanged;
* their attention output goes through ``to_add_out``, the gated residual and
  ``ff_context`` as the prompt's text tokens do, giving the next block's
  concept stream (SD3's last block is ``context_pre_only``: it ends there).

A concept's map at a layer is the softmax over concepts of the dot product
between each image token's attention output and the concept's attention
output (heads concatenated, before the output projection). A multi-token
concept's output is the mean of the outputs of *all* its tokens, so
``"wooden bench"`` is one concept built from every piece of both words.
Flux's text tokens sit at rotary position 0 (``txt_ids`` are zero), so
concept tokens get no rotation, exactly like the prompt's.

Single-stream Flux blocks and cross-attention DiTs have no separate text
stream; their concept rows stay zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from attnscope.hooks.sdpa import SDPACall
from attnscope.models.prompts import text_streams, token_ids


@dataclass
class ConceptSet:
    """Concept phrases, their token embeddings ``(tokens, width)`` and which rows belong to which concept."""

    names: list[str]
    embeddings: torch.Tensor
    groups: list[list[int]]


@torch.no_grad()
def encode_concepts(pipe, concepts: Sequence[str]) -> ConceptSet:
    """T5-encode each concept alone, keeping its word pieces (no EOS, no padding)."""
    stream = next(s for s in text_streams(pipe) if s.name == "t5")
    tokenizer, encoder = getattr(pipe, stream.tokenizer), getattr(pipe, stream.encoder)
    device = next(encoder.parameters()).device
    rows, groups = [], []
    for name in concepts:
        ids = torch.tensor([token_ids(tokenizer, name)])
        ids = ids[:, ids[0] != tokenizer.eos_token_id]
        if ids.shape[1] == 0:
            raise ValueError(f"concept {name!r} has no tokens")
        start = sum(len(g) for g in groups)
        groups.append(list(range(start, start + ids.shape[1])))
        rows.append(encoder(ids.to(device))[0][0])
    return ConceptSet(list(concepts), torch.cat(rows), groups)


def concept_saliency(image_out: torch.Tensor, concept_out: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """``(B, C, N)``: softmax over the ``C`` concepts of ``image_out · mean(concept_out[group])``.

    ``image_out``: ``(B, N, width)`` attention outputs of the image tokens;
    ``concept_out``: ``(B, tokens, width)`` of the concept tokens.
    """
    per_concept = torch.stack([concept_out[:, group].mean(1) for group in groups], dim=1)  # (B, C, width)
    return torch.softmax(per_concept.float() @ image_out.float().transpose(1, 2), dim=1)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, S, H·D) → (B, H, S, D)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


class ConceptStream:
    """The concept tokens' residual stream through one transformer call (rows: the captured batch rows)."""

    def __init__(self, concepts: ConceptSet):
        self.concepts = concepts
        self.hidden: torch.Tensor | None = None  # (rows, tokens, dim)
        self.temb: torch.Tensor | None = None  # the running block's temb, (rows, dim)

    def start(self, transformer: torch.nn.Module, rows: int) -> None:
        """At the transformer's input: embed the concepts as it embeds the prompt."""
        embedder = transformer.context_embedder
        embedded = embedder(self.concepts.embeddings.to(embedder.weight.dtype))
        self.hidden = embedded[None].expand(rows, -1, -1)

    def step(self, block: torch.nn.Module, call: SDPACall, image: slice) -> torch.Tensor:
        """Advance the stream through ``block`` and return the concept maps ``(rows, C, N)``.

        ``call``: the block's SDPA call (rows already picked); ``image``: the
        image positions of its joint sequence.
        """
        attn = block.attn
        if getattr(block, "context_pre_only", False):
            normed, gates = block.norm1_context(self.hidden, self.temb), None
        else:
            normed, *gates = block.norm1_context(self.hidden, emb=self.temb)
        heads = attn.heads
        query, key = _heads(attn.add_q_proj(normed), heads), _heads(attn.add_k_proj(normed), heads)
        if attn.norm_added_q is not None:  # QK RMS-norm over the head width (SD3.5, Flux; not SD3.0)
            query, key = attn.norm_added_q(query), attn.norm_added_k(key)
        value = _heads(attn.add_v_proj(normed), heads)
        keys = torch.cat([key, call.key[:, :, image]], dim=2)
        values = torch.cat([value, call.value[:, :, image]], dim=2)
        out = F.scaled_dot_product_attention(query, keys, values, scale=call.scale)  # (rows, H, tokens, D)
        concept_out = out.transpose(1, 2).flatten(2)
        image_out = call.output[:, :, image].transpose(1, 2).flatten(2)
        maps = concept_saliency(image_out, concept_out, self.concepts.groups)
        if gates is not None:
            self._advance(block, concept_out, gates)
        return maps

    def _advance(self, block: torch.nn.Module, concept_out: torch.Tensor, gates: list[torch.Tensor]) -> None:
        """The rest of the block's text stream: output projection, gated residual, modulated feed-forward."""
        gate_msa, shift_mlp, scale_mlp, gate_mlp = gates
        hidden = self.hidden + gate_msa.unsqueeze(1) * block.attn.to_add_out(concept_out.to(self.hidden.dtype))
        normed = block.norm2_context(hidden) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        self.hidden = hidden + gate_mlp.unsqueeze(1) * block.ff_context(normed)
