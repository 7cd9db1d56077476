"""Cross-attention capture: per-pipeline processors, step tracking, labels."""

from attnscope.hooks.capture import AttentionCache, Capture, CaptureProcessor, RunView, capture
from attnscope.hooks.layers import CrossAttentionLayer, cross_attention_layers, select_layers
from attnscope.hooks.selection import Selection

__all__ = [
    "AttentionCache",
    "Capture",
    "CaptureProcessor",
    "CrossAttentionLayer",
    "RunView",
    "Selection",
    "capture",
    "cross_attention_layers",
    "select_layers",
]
