"""attnscope: see what concept erasure does inside a text-to-image diffusion model.

The public API in one screen::

    import torch
    from attnscope import capture, load_pipeline

    pipe = load_pipeline()                       # the built-in toy model
    with capture(pipe, sink="run.h5") as cap:
        pipe("a wooden bench and a blue bird", generator=torch.Generator().manual_seed(0))
    cap.heatmap(word="wooden")                   # (H, W): all layers and steps, DAAM-style
    cap.maps("up_blocks.1.attentions.0.transformer_blocks.0.attn2", word="wooden")  # (steps, heads, h, w)

Heavy imports (torch, diffusers) happen on first use of a name, so the
command line starts fast.
"""

from attnscope._lazy import lazy_attributes

__version__ = "0.1.0"

_EXPORTS = {
    "AttentionCache": "hooks",
    "capture": "hooks",
    "cross_attention_layers": "hooks",
    "load_pipeline": "models",
    "RunFile": "store",
}

__all__ = sorted(_EXPORTS) + ["__version__"]
__getattr__ = lazy_attributes(__name__, _EXPORTS)
