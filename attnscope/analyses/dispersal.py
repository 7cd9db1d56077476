"""Concentration and dispersal of a word's attention map, and how an edit changes them.

SEE explains attribute leakage by the attribute word's attention becoming
*dispersed* (spread over the image) or *concentrated* on the wrong object.
For a map ``p`` (..., H, W), normalised to a distribution over its cells:

* **entropy** ``H = −Σ p log p`` in nats, divided by ``log(H·W)`` when
  ``normalise`` (then 0 = all mass in one cell, 1 = uniform, at any grid);
* **top-k share**: the mass in the ``k = ceil(fraction · H·W)`` largest
  cells (a fraction, so that 16×16 and 8×8 layers compare);
* **spread**: the root of the second moment about the centroid,
  ``sqrt(Σ p ‖x − μ‖²)``, with cell centres at ``((i + ½)/H, (j + ½)/W)`` so
  it is a fraction of the image side (0 for one cell; ``sqrt(1/6)·sqrt(1 − 1/n²)``
  ≈ 0.40 for a uniform n×n map);
* **in-object share**: the mass inside a region (the binding score of
  :func:`attnscope.analyses.binding.binding_score`).

:func:`dispersal_study` measures every word in paired runs before and after
an edit (per pair, step and layer) and gives paired, prompt-clustered
bootstrap intervals of the change.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from attnscope.analyses.binding import binding_score
from attnscope.analyses.regions import regions_from_masks
from attnscope.analyses.stats import PairedIntervals, paired_cluster_bootstrap

QUANTITIES = ("entropy", "top_share", "spread")
TOP_FRACTION = 0.1


def _distribution(maps: np.ndarray) -> np.ndarray:
    """``maps`` (..., H, W) scaled to sum to 1 over the cells; NaN for an all-zero map."""
    p = np.clip(np.asarray(maps, dtype=float), 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        return p / p.sum(axis=(-2, -1), keepdims=True)


def entropy(maps: np.ndarray, normalise: bool = True) -> np.ndarray:
    """Shannon entropy (nats) of each map (..., H, W) → (...); divided by ``log(H·W)`` if ``normalise``."""
    p = _distribution(maps)
    with np.errstate(invalid="ignore", divide="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=(-2, -1))
    h = np.where(np.isnan(p).any(axis=(-2, -1)), np.nan, h)
    cells = p.shape[-2] * p.shape[-1]
    return h / math.log(cells) if normalise and cells > 1 else h


def top_share(maps: np.ndarray, fraction: float = TOP_FRACTION, k: int | None = None) -> np.ndarray:
    """Share of each map's mass (..., H, W) in its ``k`` largest cells → (...).

    ``k`` defaults to ``ceil(fraction · H·W)`` (at least 1).
    """
    p = _distribution(maps)
    cells = p.shape[-2] * p.shape[-1]
    k = k or max(1, math.ceil(fraction * cells))
    flat = p.reshape(*p.shape[:-2], cells)
    return np.sort(flat, axis=-1)[..., cells - k:].sum(axis=-1)


def centroid(maps: np.ndarray) -> np.ndarray:
    """Centre of mass (..., 2) as (row, column) in fractions of the image side."""
    p = _distribution(maps)
    h, w = p.shape[-2:]
    rows, cols = (np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w
    return np.stack([np.einsum("...hw,h->...", p, rows), np.einsum("...hw,w->...", p, cols)], axis=-1)


def spread(maps: np.ndarray) -> np.ndarray:
    """Root second moment of each map's mass about its centroid (..., H, W) → (...), in image sides."""
    p = _distribution(maps)
    h, w = p.shape[-2:]
    mu = centroid(maps)
    dr = (np.arange(h) + 0.5) / h - mu[..., 0, None]  # (..., H)
    dc = (np.arange(w) + 0.5) / w - mu[..., 1, None]  # (..., W)
    second = np.einsum("...hw,...h->...", p, dr ** 2) + np.einsum("...hw,...w->...", p, dc ** 2)
    return np.sqrt(np.clip(second, 0.0, None))


def in_object_share(maps: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Share of each map's mass (..., H, W) inside one region (H, W) (bool or soft) → (...)."""
    return binding_score(maps, np.asarray(region)[None])[..., 0]


def dispersal(maps: np.ndarray, region: np.ndarray | None = None, *, fraction: float = TOP_FRACTION
              ) -> dict[str, np.ndarray]:
    """Every measure of this module for maps (..., H, W): ``{quantity: (...)}``; ``in_object`` with a region."""
    out = {"entropy": entropy(maps), "top_share": top_share(maps, fraction), "spread": spread(maps)}
    if region is not None:
        out["in_object"] = in_object_share(maps, region)
    return out


# --------------------------------------------------------------------------- run files


def run_dispersal(runs, run: int, word: str, layers: Sequence[str], region: np.ndarray | None = None,
                  *, fraction: float = TOP_FRACTION) -> dict[str, np.ndarray]:
    """``{quantity: (steps, layers)}`` for ``word`` in one run of a :class:`~attnscope.store.RunFile`.

    Each layer is measured on its own grid; ``region`` (H, W) at any
    resolution is resized to it as soft cell coverage.
    """
    from attnscope.analyses.run_binding import word_maps

    return layers_dispersal(word_maps(runs, run, word, layers), region, fraction=fraction)


def layers_dispersal(maps: Mapping[str, np.ndarray], region: np.ndarray | None = None, *,
                     fraction: float = TOP_FRACTION) -> dict[str, np.ndarray]:
    """``{quantity: (steps, layers)}`` from ``{layer: (steps, h, w)}`` maps, each layer on its own grid."""
    per_layer = []
    for layer_maps in maps.values():
        soft = None
        if region is not None:
            soft = regions_from_masks({"object": region}, layer_maps.shape[-2:], min_coverage=None)["object"]
        per_layer.append(dispersal(layer_maps, soft, fraction=fraction))
    return {q: np.stack([m[q] for m in per_layer], axis=1) for q in per_layer[0]}


@dataclass(frozen=True)
class DispersalStudy:
    """Dispersal of some words in paired runs, before and after an edit.

    ``before[word][quantity]`` / ``after[...]``: (pairs, steps, layers);
    ``clusters``: the prompt of each pair (the bootstrap's unit).
    """

    words: tuple[str, ...]
    steps: tuple[int, ...]
    layers: tuple[str, ...]
    clusters: tuple[str, ...]
    seeds: tuple[int, ...]
    before: dict[str, dict[str, np.ndarray]]
    after: dict[str, dict[str, np.ndarray]]

    def quantities(self, word: str) -> list[str]:
        return list(self.before[word])

    def per_pair(self, word: str, quantity: str) -> tuple[np.ndarray, np.ndarray]:
        """(before, after), each (pairs,): averaged over steps and layers."""
        return _mean(self.before[word][quantity], (1, 2)), _mean(self.after[word][quantity], (1, 2))

    def intervals(self, word: str, quantity: str, **bootstrap) -> PairedIntervals:
        """Means before and after and their change, prompts resampled together (pairs with a NaN left out)."""
        before, after = self.per_pair(word, quantity)
        ok = np.isfinite(before) & np.isfinite(after)
        clusters = np.asarray(self.clusters, dtype=object)[ok]
        return paired_cluster_bootstrap(before[ok], clusters, after[ok], clusters, **bootstrap)

    def rows(self, **bootstrap) -> list[dict]:
        """One row per word and quantity: before, after and after − before with intervals."""
        rows = []
        for word in self.words:
            for quantity in self.quantities(word):
                pi = self.intervals(word, quantity, **bootstrap)
                before, after = self.per_pair(word, quantity)
                rows.append({"word": word, "quantity": quantity,
                             "pairs": int((np.isfinite(before) & np.isfinite(after)).sum()), "prompts": pi.a.n,
                    **{f"{part}{suffix}": getattr(getattr(pi, name), field)
                       for part, name in (("before", "a"), ("after", "b"), ("change", "difference"))
                       for suffix, field in (("", "estimate"), ("_low", "low"), ("_high", "high"))}})
        return rows

    def layer_step_rows(self) -> list[dict]:
        """One row per word, quantity, layer and step: means over pairs before and after."""
        rows = []
        for word in self.words:
            for quantity in self.quantities(word):
                before = _mean(self.before[word][quantity], 0)
                after = _mean(self.after[word][quantity], 0)
                for s, step in enumerate(self.steps):
                    for l, layer in enumerate(self.layers):
                        rows.append({"word": word, "quantity": quantity, "layer": layer, "step": int(step),
                                     "before": float(before[s, l]), "after": float(after[s, l]),
                                     "change": float(after[s, l] - before[s, l])})
        return rows


def _mean(values: np.ndarray, axis) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def dispersal_study(before, after, words: Sequence[str], *, layers: Sequence[str] | None = None,
                    regions: Mapping[str, str] | None = None, fraction: float = TOP_FRACTION) -> DispersalStudy:
    """Dispersal of ``words`` in every pair of runs (same prompt and seed) of two run files.

    ``regions`` maps a word to the object whose region gives its
    ``in_object`` share (``{"wooden": "bench"}``); regions are the Otsu
    regions of the object words' maps in the *before* run, as in
    :func:`~attnscope.analyses.run_binding.drift_study`. Pairs whose prompt
    lacks a word get NaN for it.
    """
    from attnscope.analyses.run_binding import attention_regions, pair_runs

    pairs = pair_runs(before, after)
    if not pairs:
        raise ValueError("no run of the before file has a run with the same prompt and seed in the after file")
    names = list(layers or [spec.name for spec in before.layers])
    regions = dict(regions or {})
    words = tuple(words)
    measured: dict[str, dict[str, dict[str, list]]] = {side: {w: {} for w in words} for side in ("before", "after")}
    for pair in pairs:
        present = set(before.words(pair.before))
        owners = [o for o in set(regions.values()) if o in present]
        masks = attention_regions(before, pair.before, owners) if owners else {}
        blank = np.full((len(before.steps), len(names)), np.nan)
        for word in words:
            region = masks.get(regions.get(word, ""))
            expected = (*QUANTITIES, *(["in_object"] if word in regions else []))
            for side, runs, run in (("before", before, pair.before), ("after", after, pair.after)):
                values = run_dispersal(runs, run, word, names, region, fraction=fraction) if word in present else {}
                for quantity in expected:
                    measured[side][word].setdefault(quantity, []).append(values.get(quantity, blank))
    stacked = {side: {w: {q: np.stack(a) for q, a in qs.items()} for w, qs in by_word.items()}
               for side, by_word in measured.items()}
    return DispersalStudy(words, tuple(int(s) for s in before.steps), tuple(names),
                          tuple(p.prompt for p in pairs), tuple(p.seed for p in pairs),
                          stacked["before"], stacked["after"])
