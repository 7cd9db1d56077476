"""The toy world's built-in text-to-image model and its oracle judge.

The trained weights ship in ``attnscope/assets/``: ``toy/`` is a diffusers
pipeline folder, ``oracle.safetensors`` (+ ``oracle.json``) the oracle.
"""

from __future__ import annotations

from pathlib import Path

from attnscope.models.toy.pipeline import ToyModelConfig, ToyWorldPipeline, build_toy_pipeline

_ASSETS = Path(__file__).resolve().parents[2] / "assets"


def default_model_path() -> Path:
    """Folder of the shipped toy pipeline (``attnscope/assets/toy``); may not exist yet."""
    return _ASSETS / "toy"


def default_oracle_path() -> Path:
    """The shipped oracle weights (``attnscope/assets/oracle.safetensors``); may not exist yet."""
    return _ASSETS / "oracle.safetensors"


def load_toy_and_oracle(model: str = "toy", device=None, oracle: str | Path | None = None, smoke: bool = False):
    """``(pipeline, oracle)`` for toy-world experiments: the shipped ones (or ``model`` /
    ``oracle`` paths), or, with ``smoke``, a random tiny pipeline and an untrained oracle
    that only check the code runs."""
    from attnscope.models.toy.oracle import OracleNet, ToyOracle

    if smoke:
        pipe = build_toy_pipeline(ToyModelConfig.tiny()).to(device or "cpu")
        pipe.set_progress_bar_config(disable=True)
        return pipe, ToyOracle(OracleNet(8), device=device or "cpu")
    from attnscope.models import load_pipeline

    pipe = load_pipeline(model, device=device)
    return pipe, ToyOracle.load(oracle, device=pipe.device)


__all__ = [
    "ToyModelConfig",
    "ToyWorldPipeline",
    "build_toy_pipeline",
    "default_model_path",
    "default_oracle_path",
    "load_toy_and_oracle",
]
