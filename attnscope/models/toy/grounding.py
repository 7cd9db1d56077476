"""A light grounding signal for training the toy UNet: word tokens attend to their objects.

TokenCompose (Wang et al., CVPR 2024) fine-tunes Stable Diffusion with a
token-level loss that pulls each noun token's cross-attention into its
object's segmentation mask, and a pixel-level one that makes it cover the
whole mask. The toy world's renderer knows every object's mask, so the toy
UNet can get the same signal from the start, for nouns and attribute words
alike:

    L_ground = mean over layers and grounded tokens of
               (1 − Σ_in A / Σ A)²  +  c · KL(m / Σ m ‖ A / Σ A),

where ``A`` is the token's attention map over the query cells (heads
averaged) and ``m`` the fraction of each cell the object covers. The first
term (TokenCompose's token loss) puts the mass inside the object; the second
(``c``: ``coverage``) spreads it over the object instead of one peak — a
peaked map inside the object fails DAAM's thresholded IoU. Only queries and
keys receive this gradient: what a token's value vector carries (and so how
an attribute leaks into another object) is left to the denoising loss.
Whether the start token and padding act as attention sinks is left free too:
each map is normalised over space, not over tokens.

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

from attnscope.datasets.toy_vocabulary import Scene, word_objects
from attnscope.models.layers import cross_attention_layers


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
    """Give every cross-attention module of ``unet`` (:func:`~attnscope.models.layers.cross_attention_layers`)
    a :class:`GroundedAttnProcessor` appending to ``maps``; returns the original processors
    (``unet.set_attn_processor(them)`` restores)."""
    cross = {f"{layer.name}.processor" for layer in cross_attention_layers(unet)}
    originals = unet.attn_processors
    unet.set_attn_processor({
        name: GroundedAttnProcessor(maps) if name in cross else processor
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


def grounding_loss(maps: list[torch.Tensor], objects: torch.Tensor, masks: torch.Tensor,
                   coverage: float = 1.0) -> torch.Tensor:
    """Mean over layers and grounded tokens of ``(1 − in-object share of the token's attention)²``
    plus ``coverage`` × KL divergence of the token's spatial distribution from the uniform one
    over its object's mask (see the module docstring).

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
        spatial = attention / attention.sum(-1, keepdim=True).clamp_min(1e-12)
        inside = (spatial * token_cover).sum(-1)
        loss = (1 - inside) ** 2
        if coverage > 0:
            target = token_cover / token_cover.sum(-1, keepdim=True).clamp_min(1e-12)
            kl = (target * (target.clamp_min(1e-8).log() - spatial.clamp_min(1e-8).log())).sum(-1)
            loss = loss + coverage * kl
        total = total + loss[grounded].mean()
    return total / len(maps)
