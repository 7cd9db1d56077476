"""Resolve a ``--model`` string to a ready pipeline.

``model`` may be:

* ``None`` or ``"toy"`` — the built-in toy-world model shipped in the package;
* ``"tiny-sd"``, ``"tiny-sd2"``, ``"tiny-sdxl"``, ``"tiny-sd3"``,
  ``"tiny-flux"``, ``"tiny-pixart"``, ``"tiny-sana"`` — tiny random pipelines with the real
  architectures (tests, benchmarks, smoke runs);
* a local diffusers folder (has ``model_index.json``);
* a hub id such as ``"CompVis/stable-diffusion-v1-4"``, read from the local
  Hugging Face cache only. attnscope never downloads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch

from attnscope.errors import UsageError

TOY = "toy"
TINY_BUILDERS = ("tiny-sd", "tiny-sd2", "tiny-sdxl", "tiny-sd3", "tiny-flux", "tiny-pixart", "tiny-sana")


class ModelNotFoundError(FileNotFoundError):
    """The model is neither a local folder nor in the offline hub cache."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" → CUDA when available, else CPU. Refuses a device this machine does not have."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise UsageError(f"--device {device}: this machine has no CUDA device; use --device cpu (or auto)")
        if resolved.index is not None and resolved.index >= count:
            raise UsageError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return resolved


def _tiny_builder(name: str) -> Callable:
    from attnscope.models import tiny, tiny_dit

    return {
        "tiny-sd": tiny.tiny_sd_pipeline,
        "tiny-sd2": tiny.tiny_sd2_pipeline,
        "tiny-sdxl": tiny.tiny_sdxl_pipeline,
        "tiny-sd3": tiny_dit.tiny_sd3_pipeline,
        "tiny-flux": tiny_dit.tiny_flux_pipeline,
        "tiny-pixart": tiny_dit.tiny_pixart_pipeline,
        "tiny-sana": tiny_dit.tiny_sana_pipeline,
    }[name]


def _is_toy_folder(folder: Path) -> bool:
    index = json.loads((folder / "model_index.json").read_text())
    return index.get("_class_name") == "ToyWorldPipeline"


def dtype_keyword(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``from_pretrained``'s dtype argument: ``dtype=`` where diffusers knows it, else the older ``torch_dtype=``."""
    from diffusers.pipelines import pipeline_utils

    return {"dtype": dtype} if hasattr(pipeline_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def _from_folder(folder: Path, dtype: torch.dtype):
    from diffusers import DiffusionPipeline

    kwargs = {**dtype_keyword(dtype), "low_cpu_mem_usage": False}
    if _is_toy_folder(folder):
        from attnscope.models.toy import ToyWorldPipeline

        return ToyWorldPipeline.from_pretrained(folder, **kwargs)
    index = json.loads((folder / "model_index.json").read_text())
    if "safety_checker" in index:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    return DiffusionPipeline.from_pretrained(folder, local_files_only=True, **kwargs)


def _from_hub_cache(model_id: str, dtype: torch.dtype):
    from diffusers import DiffusionPipeline
    from huggingface_hub import constants

    kwargs = {**dtype_keyword(dtype), "low_cpu_mem_usage": False}
    try:
        return DiffusionPipeline.from_pretrained(
            model_id, local_files_only=True, safety_checker=None, requires_safety_checker=False, **kwargs
        )
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(
            f"model {model_id!r} is not a local diffusers folder (no model_index.json at "
            f"{Path(model_id).resolve()}) and is not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}). attnscope works offline and never downloads: "
            f"pass the path of a folder that holds the weights, or fill the cache on a machine "
            f"with network access. ({error.__class__.__name__}: {error})"
        ) from error


def load_pipeline(
    model: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress_bar: bool = False,
):
    """Load a text-to-image pipeline, ready to sample.

    Args:
        model: ``None``/``"toy"`` (the built-in toy model), a ``"tiny-*"`` random
            model, a local diffusers folder or a hub id already in the offline
            cache (see the module docstring); attnscope never downloads.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``None``/``"auto"`` (CUDA when present).
        dtype: the weights' dtype (default: float16 on CUDA, float32 on CPU).
        progress_bar: show diffusers' per-step progress bar.

    Returns:
        A diffusers pipeline (the toy model's is a ``DiffusionPipeline``
        subclass): ``pipe(prompt, ...)`` samples and ``pipe.unet`` (or
        ``pipe.transformer``) holds the attention layers.
    """
    name = TOY if model is None else str(model)
    device = resolve_device(device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    if name == TOY:
        from attnscope.models.toy import default_model_path

        folder = default_model_path()
        if not (folder / "model_index.json").exists():
            raise ModelNotFoundError(f"the built-in toy model is missing from {folder}: reinstall attnscope")
        pipe = _from_folder(folder, dtype)
    elif name in TINY_BUILDERS:
        pipe = _tiny_builder(name)()
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
    elif Path(name).is_dir():
        if not (Path(name) / "model_index.json").exists():
            raise ModelNotFoundError(f"{Path(name).resolve()} is a folder but has no model_index.json")
        pipe = _from_folder(Path(name), dtype)
    else:
        pipe = _from_hub_cache(name, dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=not progress_bar)
    pipe.attnscope_model_id = name
    return pipe


def load_toy_and_oracle(model: str = TOY, device=None, oracle: str | os.PathLike | None = None, smoke: bool = False):
    """``(pipeline, oracle)`` for toy-world experiments: the shipped ones (or ``model`` /
    ``oracle`` paths), or, with ``smoke``, a random tiny pipeline and an untrained oracle
    that only check the code runs."""
    from attnscope.judges.toy_oracle import OracleNet, ToyOracle
    from attnscope.models.toy import ToyModelConfig, build_toy_pipeline

    if smoke:
        pipe = build_toy_pipeline(ToyModelConfig.tiny()).to(device or "cpu")
        pipe.set_progress_bar_config(disable=True)
        return pipe, ToyOracle(OracleNet(8), device=device or "cpu")
    pipe = load_pipeline(model, device=device)
    return pipe, ToyOracle.load(oracle, device=pipe.device)
