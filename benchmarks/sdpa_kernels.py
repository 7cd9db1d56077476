"""Where does capturing a diffusion transformer's attention cost time? One attention call, piece by piece (GPU).

For the joint attention of a Flux.1-dev-shaped block (24 heads × 128, 4096
image + 512 text tokens) and an SD3.5-medium-shaped one (24 × 64, 4096 +
333, CFG doubles the batch), bf16, CUDA-event timing of:

* ``sdpa``: ``F.scaled_dot_product_attention`` as the model calls it (PyTorch picks the kernel);
* ``cudnn``: the cuDNN kernel as PyTorch calls it at inference (``compute_log_sumexp=False``);
* ``cudnn + lse``: the same kernel asked for its log-sum-exp, as capture asks;
* ``flash``: the flash kernel (returns its log-sum-exp always);
* ``observed``: the SDPA call under :class:`~attnscope.hooks.sdpa.SDPAObserver` (what capture adds around the
  model's own call: the torch-function and dispatch modes, the cuDNN log-sum-exp);
* ``maps``: :func:`~attnscope.hooks.sdpa.selected_probabilities` of the image queries on 17 text keys, heads
  averaged (the capture math itself).

Times are medians of ``--iters`` calls after warm-up; the ratio column divides by ``sdpa``.

    python benchmarks/sdpa_kernels.py --out benchmarks/results/sdpa_kernels.md
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from attnscope.hooks.sdpa import SDPAObserver, selected_probabilities

SHAPES = {  # name: (batch sizes, heads, head dim, image tokens, text tokens, text first)
    "Flux.1-dev-shaped": ((1, 4), 24, 128, 4096, 512, True),
    "SD3.5-medium-shaped (CFG: 2 × batch)": ((2, 8), 24, 64, 4096, 333, False),
}
TOKENS = 17


def median_ms(fn: Callable[[], object], iters: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def pieces(batch: int, heads: int, dim: int, image: int, text: int, text_first: bool) -> dict[str, Callable]:
    q, k, v = (torch.randn(batch, heads, image + text, dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    cudnn = torch.ops.aten._scaled_dot_product_cudnn_attention
    observer = SDPAObserver()

    def observed():
        with observer:
            F.scaled_dot_product_attention(q, k, v)

    with observer:
        F.scaled_dot_product_attention(q, k, v)
    call = observer.calls[-1]
    queries = slice(text, text + image) if text_first else slice(0, image)
    keys = torch.arange(TOKENS, device="cuda").expand(batch, -1) + (0 if text_first else image)

    def flash():
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            F.scaled_dot_product_attention(q, k, v)

    return {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
        "cudnn": lambda: cudnn(q, k, v, None, False),
        "cudnn + lse": lambda: cudnn(q, k, v, None, True),
        "flash": flash,
        "observed": observed,
        "maps": lambda: selected_probabilities(call, queries, keys, mean_heads=True),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    lines = ["# One attention call of a diffusion transformer, piece by piece", "",
             f"`python benchmarks/sdpa_kernels.py` (method in its docstring); {torch.cuda.get_device_name()}, "
             f"torch {torch.__version__}, bf16, median of {args.iters} calls, milliseconds.", ""]
    for name, (batches, heads, dim, image, text, text_first) in SHAPES.items():
        lines += [f"## {name}: {heads} heads × {dim}, {image} image + {text} text tokens", "",
                  "| batch | piece | ms | ÷ sdpa |", "|---:|---|---:|---:|"]
        for batch in batches:
            timed = {piece: median_ms(fn, args.iters) for piece, fn in pieces(batch, heads, dim, image, text,
                                                                               text_first).items()}
            lines += [f"| {batch} | {piece} | {ms:.3f} | {ms / timed['sdpa']:.2f} |" for piece, ms in timed.items()]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
