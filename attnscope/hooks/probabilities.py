"""Attention probabilities of the selected text tokens, from one fused attention call per group of layers.

Token ``t``'s map is column ``t`` of ``P = softmax(q kᵀ · scale)``. Give the
attention values that are one-hot columns of the selected tokens
(``V[key, j] = 1`` where ``key`` is the ``j``-th selected token) and its
output ``P V`` *is* those columns. So PyTorch's
``scaled_dot_product_attention`` — on a GPU one flash / memory-efficient
kernel that reads ``q`` and ``k`` once, in the layout the layer produced them,
and never writes the ``(rows, heads, n, keys)`` scores — returns the selected
probabilities, normalised over all keys as the model normalised them. A
head mean written straight into the step's buffer is the only other kernel.
On a GPU the call goes straight to the memory-efficient kernel: it takes a
value width unlike the query's, and at batch 1, where sampling is bound by
the host launching kernels, its host-side cost is the lowest (cuDNN's,
which PyTorch would pick on Hopper, builds its call on the host each time).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ALIGNMENT = 8  # fused attention kernels want the value width a multiple of 8


def token_values(token_index: torch.Tensor, keys: int, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """One-hot values ``(rows, heads, keys, width)``: column ``j`` is 1 at key ``token_index[row, j]``.

    ``token_index``: ``(rows, tokens)`` key positions; ``width`` is ``tokens``
    rounded up to :data:`ALIGNMENT` (the extra columns are 0).
    """
    rows, tokens = token_index.shape
    width = -(-tokens // ALIGNMENT) * ALIGNMENT
    onehot = torch.zeros(rows, keys, width, dtype=dtype, device=token_index.device)
    onehot.scatter_(1, token_index[:, None, :], 1)
    return onehot[:, None].expand(rows, heads, keys, width).contiguous()


def token_probabilities(
    query: torch.Tensor, key: torch.Tensor, values: torch.Tensor, *, heads: int, scale: float, upcast: bool
) -> torch.Tensor:
    """``softmax(q kᵀ · scale)`` at the selected keys: ``(rows, heads, n, width)``.

    ``query``: ``(rows, n, heads·d)`` — the ``to_q`` outputs of one or more
    same-shaped layers, stacked along the rows; ``key``: ``(rows, keys,
    heads·d)``; ``values``: :func:`token_values` in the attention dtype
    (float32 when ``upcast``). Column ``j`` holds the probabilities of the
    ``j``-th selected token, in that dtype.
    """
    q = query.unflatten(-1, (heads, -1)).transpose(1, 2)  # views: no copy of q
    k = key.unflatten(-1, (heads, -1)).transpose(1, 2)
    if upcast:
        q, k = q.float(), k.float()
    if q.is_cuda and q.shape[-1] % ALIGNMENT == 0:  # the memory-efficient kernel, named: no backend choice, the
        # lightest host side; it needs head dims in whole 16-byte vectors (SD's 40, 64, 80, 160; not a toy's 4)
        return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, values, None, False, scale=scale)[0]
    return F.scaled_dot_product_attention(q, k, values, scale=scale)


def store_tokens(target: torch.Tensor, probabilities: torch.Tensor, *, mean_heads: bool) -> None:
    """Write the first ``tokens`` columns of ``probabilities`` into ``target`` (in its dtype).

    ``target``: ``(rows, tokens, heads or 1, n)``, a view of the step buffer;
    ``probabilities``: ``(rows, heads, n, width ≥ tokens)``. Heads are averaged
    (accumulated in float32) when ``mean_heads``.
    """
    source = probabilities[..., : target.shape[1]]
    if not mean_heads:
        target.copy_(source.permute(0, 3, 1, 2))
    elif source.dtype == target.dtype:  # one kernel: the mean lands in the buffer
        torch.mean(source, dim=1, keepdim=True, out=target.permute(0, 2, 3, 1))
    else:
        target.permute(0, 2, 3, 1).copy_(source.mean(dim=1, keepdim=True, dtype=torch.float32))
