"""See the exact query, key and log-sum-exp of the attention an attention processor computes.

Diffusion transformers normalise queries and keys (QK RMS-norm), rotate them
(Flux's RoPE) and concatenate the text and image streams *inside* their
attention processors, then call ``torch.nn.functional.scaled_dot_product_attention``.
:class:`SDPAObserver` is a ``TorchFunctionMode`` entered around one call of
the model's own processor: it lets every torch function through unchanged,
and when the processor calls SDPA it records the ``query``, ``key``,
``attn_mask`` and ``scale`` exactly as passed, then runs that same call. So
the output — and the image — is the processor's own, bit for bit, and the
recorded q/k carry every norm and rotation the model applied.

The softmax normaliser comes for free when SDPA runs a flash kernel (CUDA's
``_scaled_dot_product_flash_attention`` or the CPU one): their second output
is the log-sum-exp of each query row over all keys, which a
``TorchDispatchMode`` around the SDPA call picks up. cuDNN's kernel (which
PyTorch prefers on Hopper GPUs) writes it too when asked
(``compute_log_sumexp``, off at inference): the mode asks, and the output is
the same. Other kernels (memory-efficient, math) do not return it;
:func:`row_logsumexp` then recomputes it from the recorded q/k in query chunks.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_SDPA_PARAMETERS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def _flash_ops() -> tuple:
    aten = torch.ops.aten
    ops = [aten._scaled_dot_product_flash_attention_for_cpu.default]
    if hasattr(aten, "_scaled_dot_product_flash_attention"):
        ops.append(aten._scaled_dot_product_flash_attention.default)
    return tuple(ops)


def _cudnn_op():
    op = getattr(torch.ops.aten, "_scaled_dot_product_cudnn_attention", None)
    return None if op is None else op.default


_CUDNN_COMPUTE_LSE = 4  # position of ``compute_log_sumexp`` in the cuDNN op's arguments


@dataclass
class SDPACall:
    """One SDPA call as the processor made it.

    ``query``: ``(B, H, Sq, D)``; ``key``: ``(B, H, Sk, D)``; ``attn_mask``:
    ``None``, or additive/boolean, broadcastable to ``(B, H, Sq, Sk)``;
    ``scale``: the softmax scale; ``lse``: ``(B, H, Sq)`` float32 log-sum-exp
    of the scaled (and masked) scores over all ``Sk`` keys when the kernel
    returned it, else ``None``; ``value`` ``(B, H, Sk, Dv)`` and ``output``
    ``(B, H, Sq, Dv)``: what concept maps read (None where not kept).
    """

    query: torch.Tensor
    key: torch.Tensor
    attn_mask: torch.Tensor | None
    scale: float
    lse: torch.Tensor | None
    value: torch.Tensor | None = None
    output: torch.Tensor | None = None


class _KernelLogSumExp(TorchDispatchMode):
    """Keeps the log-sum-exp output of a flash-attention kernel run under it."""

    def __init__(self):
        super().__init__()
        self.lse: torch.Tensor | None = None
        self._flash = _flash_ops()
        self._cudnn = _cudnn_op()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten.scaled_dot_product_attention.default:
            with self:  # not decomposed yet (inference mode): run its decomposition under this mode
                return func.decompose(*args, **kwargs)
        if func is self._cudnn and len(args) > _CUDNN_COMPUTE_LSE:
            args = (*args[:_CUDNN_COMPUTE_LSE], True, *args[_CUDNN_COMPUTE_LSE + 1 :])
            out = func(*args, **kwargs)
            self.lse = out[1].squeeze(-1) if out[1].dim() == 4 else out[1]
            return out
        out = func(*args, **kwargs)
        if func in self._flash:
            self.lse = out[1]
        return out


class SDPAObserver(TorchFunctionMode):
    """``with observer: processor(...)`` records the processor's SDPA calls in ``observer.calls``."""

    def __init__(self, *, kernel_lse: bool = True):
        super().__init__()
        self.kernel_lse = kernel_lse
        self.calls: list[SDPACall] = []
        self._signature = inspect.signature(lambda query, key, value, attn_mask=None, dropout_p=0.0,
                                            is_causal=False, scale=None, enable_gqa=False: None)

    def __enter__(self) -> "SDPAObserver":
        self.calls = []
        return super().__enter__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        bound = self._signature.bind(*args, **kwargs).arguments
        query, key = bound["query"], bound["key"]
        if bound.get("is_causal") or bound.get("enable_gqa"):
            raise NotImplementedError("capture does not support causal or grouped-query attention")
        scale = bound.get("scale")
        scale = query.shape[-1] ** -0.5 if scale is None else float(scale)
        if self.kernel_lse:
            with _KernelLogSumExp() as kernel:
                out = func(*args, **kwargs)
            lse = kernel.lse
            if lse is not None and tuple(lse.shape) != tuple(query.shape[:3]):
                lse = None  # a kernel layout this code does not know: recompute instead
        else:
            out, lse = func(*args, **kwargs), None
        self.calls.append(SDPACall(query, key, bound.get("attn_mask"), scale, lse, bound["value"], out))
        return out


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """An SDPA mask as an additive bias in ``dtype`` (boolean ``False`` → ``-inf``)."""
    if mask is None or mask.dtype != torch.bool:
        return None if mask is None else mask.to(dtype)
    return torch.zeros((), dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


def row_logsumexp(call: SDPACall, rows: slice, chunk: int = 1024) -> torch.Tensor:
    """``(B, H, n)`` float32 log-sum-exp over all keys of the query rows ``rows``.

    Taken from the kernel when it returned one, else recomputed from the
    recorded q/k (and mask) in chunks of ``chunk`` query rows.
    """
    if call.lse is not None:
        return call.lse[:, :, rows].float()
    query = call.query[:, :, rows]
    key = call.key.float().transpose(-1, -2)
    mask = additive_mask(call.attn_mask, torch.float32)
    parts = []
    for start in range(0, query.shape[2], chunk):
        scores = query[:, :, start : start + chunk].float() @ key * call.scale
        if mask is not None:
            scores = scores + _mask_rows(mask, rows, start, scores.shape[2])
        parts.append(torch.logsumexp(scores, dim=-1))
    return torch.cat(parts, dim=-1)


def _mask_rows(mask: torch.Tensor, rows: slice, start: int, length: int) -> torch.Tensor:
    """The rows of a broadcastable mask that belong to query rows ``rows[start:start+length]``."""
    if mask.shape[-2] == 1:
        return mask
    first = (rows.start or 0) + start
    return mask[..., first : first + length, :]


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` ``(B, T)`` of ``x`` ``(B or 1, H, S, ...)`` along axis 2, per batch row."""
    batch, heads = index.shape[0], x.shape[1]
    index = index[:, None, :].expand(batch, heads, -1)
    index = index.reshape(*index.shape, *([1] * (x.dim() - 3))).expand(batch, heads, -1, *x.shape[3:])
    return x.expand(batch, *x.shape[1:]).gather(2, index)


def selected_probabilities(
    call: SDPACall, query_rows: slice | torch.Tensor, key_index: torch.Tensor, *, mean_heads: bool
) -> torch.Tensor:
    """Attention probabilities of the queries ``query_rows`` on the keys ``key_index``.

    ``query_rows``: a slice of query positions, or ``(B, Q)`` positions per
    batch row (no mask then); ``key_index``: ``(B, T)`` key positions per
    batch row. The probabilities are normalised over *all* keys of the call
    (``exp(s − lse)``), exactly as the kernel normalised them. Returns
    ``(B, heads or 1, n, T)`` float32 (``n``: the queries).
    """
    if isinstance(query_rows, torch.Tensor):
        if call.attn_mask is not None:
            raise ValueError("query positions per batch row are for unmasked (joint) attention")
        query = _gather(call.query, query_rows).float()
        keys = _gather(call.key, key_index).float()
        lse = _gather(row_logsumexp(call, slice(None)), query_rows)
        probs = torch.exp(query @ keys.transpose(-1, -2) * call.scale - lse[..., None])
        return probs.mean(dim=1, keepdim=True) if mean_heads else probs
    batch, heads = call.query.shape[:2]
    query = call.query[:, :, query_rows]
    if mean_heads and call.attn_mask is None and call.lse is not None and _fusable(query, call.key, key_index):
        from attnscope.hooks.fused import head_mean_probabilities  # Triton: only where CUDA is

        return head_mean_probabilities(query, call.key, key_index, call.lse[:, :, query_rows], call.scale)
    index = key_index[:, None, :, None].expand(batch, heads, -1, call.key.shape[-1])
    keys = call.key.expand(batch, heads, -1, -1).gather(2, index)
    scores = _scores(query, keys).mul_(call.scale)
    mask = additive_mask(call.attn_mask, torch.float32)
    if mask is not None:
        mask = mask.expand(batch, heads, -1, -1)
        rows = _mask_rows(mask, query_rows, 0, query.shape[2])
        scores += rows.gather(-1, key_index[:, None, None, :].expand(batch, heads, rows.shape[2], -1))
    probs = scores.sub_(row_logsumexp(call, query_rows)[..., None]).exp_()
    return probs.mean(dim=1, keepdim=True) if mean_heads else probs


def _fusable(query: torch.Tensor, key: torch.Tensor, key_index: torch.Tensor) -> bool:
    """Whether the one-kernel head mean of :mod:`attnscope.hooks.fused` takes these queries, keys and key positions."""
    if not query.is_cuda:
        return False
    try:
        from attnscope.hooks.fused import fits
    except ImportError:  # a CUDA build of PyTorch without Triton
        return False
    return fits(query, key, key_index)


def _scores(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``query @ keysᵀ`` in float32: ``(B, H, n, D)`` × ``(B, H, T, D)`` → ``(B, H, n, T)``.

    Half-precision inputs on a GPU go straight into a float32-output matmul
    (exact products, float32 sums), so the image queries are never copied to
    float32; elsewhere both sides are converted first.
    """
    if query.is_cuda and query.dtype in (torch.float16, torch.bfloat16):
        flat = torch.bmm(query.flatten(0, 1), keys.flatten(0, 1).transpose(1, 2), out_dtype=torch.float32)
        return flat.unflatten(0, query.shape[:2])
    return query.float() @ keys.float().transpose(-1, -2)
