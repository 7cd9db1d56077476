"""Object regions on the grid of an attention map.

A *region* is a boolean (or, on request, fractional) array of shape (H, W):
which cells of an attention map belong to an object. Three sources:

* :func:`regions_from_attention` — from the object tokens' own attention
  maps: aggregate over steps/layers, then Otsu-threshold (DAAM-style).
* :func:`regions_from_masks` — from ground-truth masks (the toy world's
  renderer) or user-drawn masks at any resolution, resized to the map's grid.
* :func:`otsu_threshold` / :func:`otsu_mask` — the thresholding itself,
  vectorised over any leading axes.

Maps are arrays of shape (..., H, W); leading axes (steps, layers, heads,
batch) are carried through untouched unless a function says it reduces them.
"""

from __future__ import annotations

from typing import Literal, Mapping, Sequence

import numpy as np

ResizeMethod = Literal["auto", "area", "bilinear"]


# --------------------------------------------------------------------------- resizing


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights: output cell i averages the input cells it overlaps."""
    scale = n_in / n_out
    lo = np.arange(n_out)[:, None] * scale
    cells = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(lo + scale, cells + 1) - np.maximum(lo, cells), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def _linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of linear interpolation between cell centres (half-pixel aligned)."""
    x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    j0 = np.floor(x).astype(int)
    j1 = np.minimum(j0 + 1, n_in - 1)
    frac = x - j0
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), j0), 1.0 - frac)
    np.add.at(weights, (np.arange(n_out), j1), frac)
    return weights


def _axis_matrix(n_in: int, n_out: int, method: ResizeMethod) -> np.ndarray:
    if method == "area" or (method == "auto" and n_out <= n_in):
        return _area_matrix(n_in, n_out)
    return _linear_matrix(n_in, n_out)


def resize(maps: np.ndarray, size: tuple[int, int], method: ResizeMethod = "auto") -> np.ndarray:
    """Resize maps of shape (..., h, w) to (..., H, W).

    ``"area"`` averages the overlapped cells (exact for shrinking, blocky for
    enlarging); ``"bilinear"`` interpolates between cell centres like
    ``torch.nn.functional.interpolate(align_corners=False)``; ``"auto"``
    (default) uses area to shrink and bilinear to enlarge, per axis.
    Both are linear, so a constant map stays constant.
    """
    x = np.asarray(maps, dtype=float)
    rows = _axis_matrix(x.shape[-2], size[0], method)
    cols = _axis_matrix(x.shape[-1], size[1], method)
    return np.einsum("ih,...hw,jw->...ij", rows, x, cols)


# --------------------------------------------------------------------------- Otsu


def otsu_threshold(maps: np.ndarray) -> np.ndarray:
    """Otsu threshold of each map in ``maps`` (..., H, W); returns shape (...).

    Exact Otsu on the sorted values (equivalent to a histogram with
    infinitely fine bins): among all splits of the map's values into a low
    and a high class, take the one that maximises the between-class variance
    ``w0·w1·(μ0 − μ1)²``. The threshold lies halfway between the largest low
    value and the smallest high value, so a two-level image is split in the
    middle of its gap. The foreground is ``map > threshold``; a constant map
    has threshold equal to its value and an empty foreground.
    """
    x = np.asarray(maps, dtype=float)
    values = np.sort(x.reshape(x.shape[:-2] + (-1,)), axis=-1)
    n = values.shape[-1]
    if n == 1:  # a 1×1 map (SD's mid block on a small latent) is constant
        return values[..., 0]
    low_count = np.arange(1, n)
    cumulative = np.cumsum(values, axis=-1)
    low_mean = cumulative[..., :-1] / low_count
    high_mean = (cumulative[..., -1:] - cumulative[..., :-1]) / (n - low_count)
    between = low_count * (n - low_count) * (low_mean - high_mean) ** 2
    between = np.where(values[..., 1:] > values[..., :-1], between, -np.inf)  # never split ties
    best = np.argmax(between, axis=-1)[..., None]
    below = np.take_along_axis(values, best, axis=-1)
    above = np.take_along_axis(values, np.minimum(best + 1, n - 1), axis=-1)
    return ((below + above) / 2)[..., 0]


def otsu_mask(maps: np.ndarray) -> np.ndarray:
    """Boolean foreground ``map > otsu_threshold(map)`` of each map; shape (..., H, W)."""
    x = np.asarray(maps, dtype=float)
    return x > otsu_threshold(x)[..., None, None]


# --------------------------------------------------------------------------- regions


def _unit_mass(maps: np.ndarray) -> np.ndarray:
    """Each (H, W) map divided by its sum; all-zero maps stay zero."""
    total = maps.sum(axis=(-2, -1), keepdims=True)
    return np.divide(maps, total, out=np.zeros_like(maps), where=total > 0)


def _as_list(maps: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """One array, or a sequence of arrays of different resolutions, as a list of float arrays."""
    return [np.asarray(m, dtype=float) for m in ([maps] if isinstance(maps, np.ndarray) else maps)]


def _largest_size(arrays: Sequence[np.ndarray]) -> tuple[int, int]:
    return max(a.shape[-2] for a in arrays), max(a.shape[-1] for a in arrays)


def aggregate(maps: np.ndarray | Sequence[np.ndarray], size: tuple[int, int] | None = None) -> np.ndarray:
    """Average attention maps into one distribution of shape (H, W).

    ``maps``: one array (..., h, w), or a sequence of them at different
    resolutions (e.g. one (steps, h_l, w_l) array per layer). Every 2-D map is
    resized to ``size`` (default: the largest h, w present), scaled to unit
    mass so each step and layer weighs the same, and the mean is returned
    (it sums to 1 unless every map was zero).
    """
    arrays = _as_list(maps)
    size = size or _largest_size(arrays)
    flat = [_unit_mass(resize(a, size)).reshape(-1, *size) for a in arrays]
    return np.concatenate(flat).mean(axis=0)


def regions_from_attention(
    object_maps: Mapping[str, np.ndarray | Sequence[np.ndarray]],
    size: tuple[int, int] | None = None,
    *,
    exclusive: bool = True,
) -> dict[str, np.ndarray]:
    """Object regions from the object tokens' attention maps.

    ``object_maps[name]``: that object token's maps, anything
    :func:`aggregate` accepts (e.g. (steps, layers, H, W), or one array per
    layer). Each object's maps are aggregated, scaled to a maximum of 1 and
    Otsu-thresholded. With ``exclusive`` (default) a cell claimed by several
    objects goes to the one whose scaled map is highest there, so regions do
    not overlap and binding shares over regions add up to at most 1.
    Returns ``{name: bool (H, W)}`` at ``size`` (default: the largest
    resolution among all maps).
    """
    names = list(object_maps)
    size = size or _largest_size([a for m in object_maps.values() for a in _as_list(m)])
    stacked = np.stack([aggregate(object_maps[name], size) for name in names])  # (K, H, W)
    peak = stacked.max(axis=(-2, -1), keepdims=True)
    scaled = np.divide(stacked, peak, out=np.zeros_like(stacked), where=peak > 0)
    masks = otsu_mask(scaled)
    if exclusive:
        masks &= scaled.argmax(axis=0) == np.arange(len(names))[:, None, None]
    return {name: masks[k] for k, name in enumerate(names)}


def regions_from_masks(
    masks: Mapping[str, np.ndarray],
    size: tuple[int, int],
    *,
    min_coverage: float | None = 0.5,
) -> dict[str, np.ndarray]:
    """Ground-truth or user masks (any resolution, (h, w) each) on a map's (H, W) grid.

    Each mask is area-resized: a cell's *coverage* is the fraction of it that
    the mask covers. Returns ``{name: coverage >= min_coverage}`` as bool
    (H, W), or the float coverage itself when ``min_coverage`` is None (a
    soft region; the binding functions accept both). At coarse layers a small
    object may cover no cell by half — lower ``min_coverage`` or use soft
    regions there.
    """
    coverage = {name: resize(np.asarray(m, dtype=float), size, method="area") for name, m in masks.items()}
    if min_coverage is None:
        return coverage
    return {name: c >= min_coverage - 1e-9 for name, c in coverage.items()}
