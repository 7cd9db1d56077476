"""Localisation: does a word's attention land on the object it names?

DAAM (Tang et al., 2023) found that Stable Diffusion's cross-attention
localises nouns *and* attribute words on their objects. These functions
measure that against object masks (the toy renderer's or oracle's, or any
segmentation a user has):

* :func:`token_heatmaps` — DAAM's aggregation kept unnormalised: every
  layer's ``(steps, tokens, heads, h, w)`` maps upsampled to the image size
  and summed over layers, steps and heads → ``(tokens, H, W)``;
* :func:`heatmap_iou` — IoU of the heat map scaled to [0, 1] and thresholded
  (DAAM's 0.4) with the mask;
* :func:`mass_ratio` — the share of attention mass on the object divided by
  the object's share of the image (1 = no better than a uniform map);
* :func:`own_share` — for a word of one object in a two-object image: its
  mass on its own object over its mass on both objects (chance 0.5);
* :func:`token_mass` — the mean attention probability each token position
  receives (every query's probabilities sum to 1 over positions), for
  "where does the mass go" by token kind (start, words, end, padding);
* :func:`run_localisation` — all of it for one run of a run file.

Heat maps and masks are arrays whose two trailing axes are ``(H, W)``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from attnscope.store.aggregate import normalise, upsample

DAAM_THRESHOLD = 0.4


def token_heatmaps(per_layer: Mapping[str, np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Per-token DAAM heat maps, unnormalised: ``(tokens, H, W)`` float32.

    ``per_layer[name]``: ``(steps, tokens, heads, h, w)`` maps of one layer
    (layers may differ in ``h, w``); each is summed over steps and heads,
    upsampled bilinearly to ``size`` and added up.
    """
    total = None
    for maps in per_layer.values():
        summed = upsample(maps.astype(np.float32).sum(axis=(0, 2)), size)
        total = summed if total is None else total + summed
    if total is None:
        raise ValueError("token_heatmaps needs at least one layer")
    return total


def heatmap_iou(heat: np.ndarray, mask: np.ndarray, threshold: float = DAAM_THRESHOLD) -> np.ndarray:
    """IoU of ``normalise(heat) ≥ threshold`` with the boolean ``mask``; shape of the leading axes.

    An empty mask gives NaN (nothing to localise on).
    """
    region = normalise(heat) >= threshold
    mask = np.broadcast_to(mask.astype(bool), region.shape)
    inter = (region & mask).sum(axis=(-2, -1))
    union = (region | mask).sum(axis=(-2, -1))
    return np.where(mask.any(axis=(-2, -1)), inter / np.maximum(union, 1), np.nan)


def mass_ratio(heat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(mass of ``heat`` inside ``mask`` / total mass) / (mask area / image area).

    ``heat`` must be non-negative. NaN for an empty mask or a zero map.
    """
    heat = heat.astype(np.float64)
    mask = np.broadcast_to(mask.astype(bool), heat.shape)
    total = heat.sum(axis=(-2, -1))
    inside = (heat * mask).sum(axis=(-2, -1))
    area = mask.mean(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((area > 0) & (total > 0), inside / total / area, np.nan)


def own_share(heat: np.ndarray, own: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Mass of ``heat`` on ``own`` / mass on ``own`` and ``other`` (masks assumed disjoint).

    0.5 is chance for a word that ignores which object it belongs to; NaN when
    neither region holds mass.
    """
    heat = heat.astype(np.float64)
    on_own = (heat * own.astype(bool)).sum(axis=(-2, -1))
    on_other = (heat * other.astype(bool)).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(on_own + on_other > 0, on_own / (on_own + on_other), np.nan)


def token_mass(per_layer: Mapping[str, np.ndarray]) -> np.ndarray:
    """Mean attention probability per token position: ``(tokens,)``.

    ``per_layer[name]``: ``(steps, tokens, heads, h, w)``; averaged over
    steps, heads and query cells within a layer, then over layers (each layer
    counts once, whatever its resolution). With every position captured the
    result sums to 1.
    """
    means = [maps.astype(np.float64).mean(axis=(0, 2, 3, 4)) for maps in per_layer.values()]
    return np.mean(means, axis=0)


def mass_by_kind(mass: np.ndarray, kinds: Sequence[str]) -> dict[str, float]:
    """Sum ``mass`` (tokens,) by the kind label of each position → ``{kind: share}``."""
    if len(kinds) != len(mass):
        raise ValueError(f"{len(kinds)} kinds for {len(mass)} token positions")
    out: dict[str, float] = {}
    for kind, m in zip(kinds, mass):
        out[kind] = out.get(kind, 0.0) + float(m)
    return out


def run_localisation(runs, run: int, masks: Mapping[str, np.ndarray], layers: str | Sequence[str] | None = None,
                     threshold: float = DAAM_THRESHOLD) -> dict[str, dict[str, float]]:
    """IoU and mass ratio of each word's heat map with its mask, for one run of a run file.

    Args:
        runs: a :class:`~attnscope.store.reader.RunFile`.
        run: the run's index in it.
        masks: ``{word: (H, W) bool}`` at image resolution (e.g. from the toy
            oracle or a segmentation model).
        layers: which layers to aggregate (default all; names, globs or places).
        threshold: the heat level that counts as attended (DAAM's 0.4).

    Returns:
        ``{word: {"iou": ..., "mass_ratio": ...}}``.
    """
    out = {}
    for word, mask in masks.items():
        per_layer = {spec.name: runs.maps(run, spec.name, word=word)[:, None]
                     for spec in runs.select_layers(layers)}
        heat = token_heatmaps(per_layer, mask.shape)[0]
        out[word] = {"iou": float(heatmap_iou(heat, mask, threshold)),
                     "mass_ratio": float(mass_ratio(heat, mask))}
    return out
