"""The toy world's built-in text-to-image model.

The trained weights ship in ``attnscope/assets/``: ``toy/`` is a diffusers
pipeline folder (its oracle judge, ``oracle.safetensors``, is
:mod:`attnscope.judges.toy_oracle`'s).
"""

from __future__ import annotations

from pathlib import Path

from attnscope.models.toy.pipeline import ToyModelConfig, ToyWorldPipeline, build_toy_pipeline

_ASSETS = Path(__file__).resolve().parents[2] / "assets"


def default_model_path() -> Path:
    """Folder of the shipped toy pipeline (``attnscope/assets/toy``); may not exist yet."""
    return _ASSETS / "toy"


__all__ = [
    "ToyModelConfig",
    "ToyWorldPipeline",
    "build_toy_pipeline",
    "default_model_path",
]
