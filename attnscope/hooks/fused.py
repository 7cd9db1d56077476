"""Head-averaged probabilities of selected keys in one GPU kernel (Triton), for the transformer capture.

A diffusion transformer's joint attention normalises each image query over
every key (text and image), and the kernel that ran it returned the
log-sum-exp ``lse`` of each query row. The map of text token ``t`` at query
``i`` is then ``exp(q_i · k_t · scale − lse_i)``, averaged over heads. Done
with PyTorch ops that is a gather, a matmul, three elementwise passes over a
float32 ``(B, H, n, T)`` tensor and a mean: eight launches and a few hundred MB of
traffic at batch 4. Here one kernel reads each query row once, gathers the
``T`` selected keys itself, and writes only the ``(B, n, T)`` head mean.

Used on CUDA for half-precision queries and keys, head means, unmasked
attention and a normaliser the attention kernel returned (:func:`fits` and
its caller); everything else takes the PyTorch path in
:mod:`attnscope.hooks.sdpa`, which is also the reference the GPU tests hold
this kernel to.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_QUERIES = 32  # query rows per program: n / 32 programs per batch row keep every SM busy at batch 1


def fits(query: torch.Tensor, key: torch.Tensor, key_index: torch.Tensor) -> bool:
    """Whether :func:`head_mean_probabilities` takes queries ``(B, H, n, D)``, keys ``(B or 1, H, S, D)`` and
    ``key_index`` ``(B or 1, T)``: half precision on CUDA (bfloat16 from compute capability 8.0), a power-of-two
    head width of 16 or more, at most 256 selected keys, contiguous last axes."""
    d = query.shape[-1]
    if not (query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) and key.dtype == query.dtype):
        return False
    if query.dtype == torch.bfloat16 and torch.cuda.get_device_capability(query.device) < (8, 0):
        return False
    return (d >= 16 and d & (d - 1) == 0 and key.shape[1] == query.shape[1] and key.shape[-1] == d
            and key_index.shape[-1] <= 256 and query.stride(-1) == 1 and key.stride(-1) == 1)


@triton.jit
def _head_mean_kernel(Q, K, INDEX, LSE, OUT, n, T, H, scale,
                      s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_ib, s_lb, s_lh, s_ln, s_ob, s_on,
                      D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr):
    block, b = tl.program_id(0), tl.program_id(1)
    rows = block * BLOCK_N + tl.arange(0, BLOCK_N)
    tokens = tl.arange(0, BLOCK_T)
    dims = tl.arange(0, D)
    row_ok, token_ok = rows < n, tokens < T
    keys = tl.load(INDEX + b * s_ib + tokens, mask=token_ok, other=0)
    total = tl.zeros((BLOCK_N, BLOCK_T), dtype=tl.float32)
    for h in range(H):
        q = tl.load(Q + b * s_qb + h * s_qh + rows[:, None] * s_qn + dims[None, :], mask=row_ok[:, None], other=0.0)
        k = tl.load(K + b * s_kb + h * s_kh + keys[:, None] * s_kn + dims[None, :], mask=token_ok[:, None], other=0.0)
        lse = tl.load(LSE + b * s_lb + h * s_lh + rows * s_ln, mask=row_ok, other=0.0)
        scores = tl.dot(q, tl.trans(k))  # float32 sums of the half-precision products
        total += tl.exp(scores * scale - lse[:, None])
    out = OUT + b * s_ob + rows[:, None] * s_on + tokens[None, :]
    tl.store(out, total / H, mask=row_ok[:, None] & token_ok[None, :])


def head_mean_probabilities(query: torch.Tensor, key: torch.Tensor, key_index: torch.Tensor, lse: torch.Tensor,
                            scale: float) -> torch.Tensor:
    """``mean over heads of exp(q kᵀ · scale − lse)`` at the selected keys: ``(B, 1, n, T)`` float32.

    ``query``: ``(B, H, n, D)`` (the query rows of the maps, last axis
    contiguous); ``key``: ``(B or 1, H, S, D)``; ``key_index``: ``(B, T)`` key
    positions per batch row; ``lse``: ``(B, H, n)`` float32 log-sum-exp of each
    query row over all keys. Check :func:`fits` first.
    """
    batch, heads, n, d = query.shape
    tokens = key_index.shape[1]
    if not fits(query, key, key_index):
        raise ValueError("these queries/keys do not fit the kernel: check fits() first")
    key = key.expand(batch, *key.shape[1:])
    index = key_index.expand(batch, tokens).contiguous()
    out = torch.empty(batch, n, tokens, dtype=torch.float32, device=query.device)
    grid = (triton.cdiv(n, BLOCK_QUERIES), batch)
    _head_mean_kernel[grid](
        query, key, index, lse, out, n, tokens, heads, scale,
        query.stride(0), query.stride(1), query.stride(2), key.stride(0), key.stride(1), key.stride(2),
        index.stride(0), lse.stride(0), lse.stride(1), lse.stride(2), out.stride(0), out.stride(1),
        D=d, BLOCK_N=BLOCK_QUERIES, BLOCK_T=max(16, triton.next_power_of_2(tokens)),
    )
    return out[:, None]
