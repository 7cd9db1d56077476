"""Cross-attention capture: per-pipeline processors, step tracking, labels.

Layers are discovered and chosen in :mod:`attnscope.models.layers`.
"""

from attnscope.hooks.capture import Capture, CaptureProcessor, RunView
from attnscope.hooks.front import capture
from attnscope.hooks.selection import Selection

__all__ = [
    "Capture",
    "CaptureProcessor",
    "RunView",
    "Selection",
    "capture",
]
