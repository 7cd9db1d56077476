"""Aggregations of captured maps: heads, layers, steps, resolutions, words.

All functions take and return numpy arrays; the trailing two axes of a map are
always ``(h, w)``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F


def upsample(maps: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize ``(..., h, w)`` maps to ``(..., *size)`` (float32)."""
    lead = maps.shape[:-2]
    flat = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).reshape(-1, 1, *maps.shape[-2:])
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(flat, size=size, mode=mode, **kwargs)
    return out.reshape(*lead, *size).numpy()


def mean_over(maps: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Mean over the given axes, in float32 (captured maps are usually float16)."""
    return maps.astype(np.float32).mean(axis=axes)


def merge_words(maps: np.ndarray, word_of_token: np.ndarray, n_words: int, axis: int = 0) -> np.ndarray:
    """Sum sub-word token maps into word maps along ``axis``.

    ``word_of_token[i]`` is token ``i``'s word index (-1: special, dropped).
    ``(…, tokens, …)`` → ``(…, n_words, …)``.
    """
    moved = np.moveaxis(maps.astype(np.float32), axis, 0)
    words = np.zeros((n_words,) + moved.shape[1:], dtype=np.float32)
    for token, word in enumerate(word_of_token):
        if word >= 0:
            words[word] += moved[token]
    return np.moveaxis(words, 0, axis)


def normalise(heatmap: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the last two axes (a constant map becomes zeros)."""
    low = heatmap.min(axis=(-2, -1), keepdims=True)
    span = heatmap.max(axis=(-2, -1), keepdims=True) - low
    return np.where(span > 0, (heatmap - low) / np.where(span > 0, span, 1), 0.0).astype(np.float32)


def global_heatmap(per_layer: Mapping[str, np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """DAAM's aggregation: upsample every layer's ``(steps, heads, h, w)`` maps
    to ``size``, sum over layers, steps and heads, and scale to [0, 1] → ``size``."""
    total = np.zeros(size, dtype=np.float32)
    for maps in per_layer.values():
        total += upsample(maps.astype(np.float32).sum(axis=tuple(range(maps.ndim - 2))), size)
    return normalise(total)
