"""A light grounding signal for training the toy UNet: word tokens attend to their objects.

TokenCompose (Wang et al., CVPR 2024) fine-tunes Stable Diffusion with a
token-level loss that pulls each noun token's cross-attention into its
object's segmentation mask. The toy world's renderer knows every object's
mask, so the toy UNet can get the same signal from the start, for nouns and
attribute words alike:

    L_ground = mean over layers and grounded tokens of (1 − Σ_in A / Σ A)²,

where ``A`` is the token's attention map (heads averaged) and "in" weighs
each cell by the fraction of it the object covers. Only queries and keys
receive this gradient: what a token's value vector carries (and so how an
attribute leaks into another object) is left to the denoising loss.

Usage in a training step::

    maps = []
    originals = set_grounding_processors(unet, maps)
    pred = unet(x_t, t, encoder_hidden_states=embeds).sample
    loss = denoise + weight * grounding_loss(maps, token_objects, masks)
    maps.clear()
    ...
    unet.set_attn_processor(originals)  # after training
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attnscope.datasets.toyworld import Scene, word_objects


class GroundedAttnProcessor:
    """Cross-attention computed with explicit probabilities, which are appended to ``maps``.

    Same result as diffusers' ``AttnProcessor`` for attention modules without
    group/spatial/cross norms or residual connection (the toy UNet's
    ``attn2``); each call appends probabilities of shape (batch, queries,
    tokens), heads averaged, with their gradient.
    """

    def __init__(self, maps: list[torch.Tensor]):
        self.maps = maps

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs) -> torch.Tensor:
        if attn.residual_connection or attn.group_norm is not None or attn.spatial_norm is not None or attn.norm_cross:
            raise NotImplementedError("GroundedAttnProcessor supports plain cross-attention modules only")
        batch = hidden_states.shape[0]
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, attention_mask)  # (batch·heads, queries, tokens)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        self.maps.append(probs.unflatten(0, (batch, attn.heads)).mean(dim=1))
        return out / attn.rescale_output_factor


def set_grounding_processors(unet: torch.nn.Module, maps: list[torch.Tensor]) -> dict[str, object]:
    """Give every cross-attention module (``attn2``) of ``unet`` a :class:`GroundedAttnProcessor`
    appending to ``maps``; returns the original processors (``unet.set_attn_processor(them)`` restores)."""
    originals = unet.attn_processors
    unet.set_attn_processor({
        name: GroundedAttnProcessor(maps) if name.endswith("attn2.processor") else processor
        for name, processor in originals.items()
    })
    return originals


def token_objects(scenes: list[Scene], n_positions: int, dropped: list[bool] | None = None) -> torch.Tensor:
    """(len(scenes), n_positions) int64: per token position of the tokenised caption, the index of
    the object the word names (nouns and attribute words) or -1 (start/end tokens, "a", "and",
    padding, and every position of a dropped caption). Position 0 is the start token."""
    out = torch.full((len(scenes), n_positions), -1, dtype=torch.long)
    for row, scene in enumerate(scenes):
        if dropped is not None and dropped[row]:
            continue
        objects = word_objects(scene.caption)[: n_positions - 2]
        out[row, 1 : 1 + len(objects)] = torch.tensor(objects, dtype=torch.long)
    return out


def grounding_loss(maps: list[torch.Tensor], objects: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean over layers and grounded tokens of ``(1 − in-object share of the token's attention)²``.

    ``maps``: per layer (B, queries, tokens) probabilities on a square grid;
    ``objects``: (B, tokens) object index per token, -1 for ungrounded ones;
    ``masks``: (B, max_objects, H, W) object masks at image resolution.
    """
    grounded = objects >= 0
    if not grounded.any():
        return masks.new_zeros(())
    index = objects.clamp(min=0)
    total = masks.new_zeros(())
    for probs in maps:
        side = math.isqrt(probs.shape[1])
        cover = F.adaptive_avg_pool2d(masks.float(), side).flatten(2)  # (B, objects, queries)
        token_cover = cover.gather(1, index[:, :, None].expand(-1, -1, cover.shape[-1]))  # (B, tokens, queries)
        attention = probs.float().transpose(1, 2)  # (B, tokens, queries)
        inside = (attention * token_cover).sum(-1) / attention.sum(-1).clamp_min(1e-12)
        total = total + ((1 - inside) ** 2)[grounded].mean()
    return total / len(maps)
