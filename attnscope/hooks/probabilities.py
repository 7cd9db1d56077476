"""Attention probabilities of several same-shaped cross-attention layers at once.

The capture hooks keep each layer's ``q``/``k`` as the UNet produces them and
hand over a *group* of consecutive layers with the same query grid, heads and
head width (SD 1.4: the two 64×64 layers of the first down block, the three
of the last up block, ...). One stacked batched matmul, one softmax, one
gather and one head-mean serve the whole group: the sampling thread launches
a handful of kernels per group instead of per layer, which is what capture
costs when sampling is bound by kernel launches (batch 1).
"""

from __future__ import annotations

from typing import Sequence

import torch


def group_probabilities(
    queries: Sequence[torch.Tensor],
    keys: Sequence[torch.Tensor],
    *,
    heads: int,
    scale: float,
    upcast: bool,
    token_index: torch.Tensor,
    mean_heads: bool,
) -> torch.Tensor:
    """``softmax(q kᵀ · scale)`` over the text tokens, tokens picked, heads averaged or kept.

    ``queries[g]``: ``(rows, n, heads·d)`` — layer ``g``'s ``to_q`` output;
    ``keys[g]``: ``(rows, tokens, heads·d)``; all layers share these shapes.
    ``token_index``: ``(rows, picked)`` token positions to keep per row.
    Returns ``(layers, rows, heads or 1, n, picked)`` float32 probabilities.
    """
    # (G, rows, heads, n, d) and (G, rows, heads, tokens, d), one copy each
    q = torch.stack([x.unflatten(-1, (heads, -1)).transpose(1, 2) for x in queries])
    k = torch.stack([x.unflatten(-1, (heads, -1)).transpose(1, 2) for x in keys])
    if upcast:
        q, k = q.float(), k.float()
    n_layers, rows, _, n, d = q.shape
    flat_q = q.view(-1, n, d)
    flat_k = k.view(-1, k.shape[-2], d).transpose(1, 2)
    # beta=0: the (unallocated) input only supplies the output's shape, as in diffusers' get_attention_scores
    scores = torch.baddbmm(flat_q.new_empty(()).expand(flat_q.shape[0], n, flat_k.shape[-1]),
                           flat_q, flat_k, beta=0, alpha=scale)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).view(n_layers, rows, heads, n, -1)
    picked = probs.gather(-1, token_index[None, :, None, None, :].expand(n_layers, -1, heads, n, -1))
    return picked.mean(dim=2, keepdim=True) if mean_heads else picked
