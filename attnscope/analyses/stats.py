"""Percentile-bootstrap confidence intervals.

Two designs cover the benchmarks:

* :func:`bootstrap_ci` — independent units (one value per unit): resample
  units with replacement and recompute any statistic.
* :func:`cluster_bootstrap_ci` / :func:`paired_cluster_bootstrap` — units are
  *prompts* and several observations (seeds, questions) nest inside each
  prompt. Whole prompts are resampled, so the interval reflects that seeds of
  one prompt are not independent. The statistic is the pooled mean of all
  observations of the drawn prompts, ``Σ sums[drawn] / Σ counts[drawn]``
  (e.g. the fraction of images in which the judge says yes).

Resampling is vectorised (a block of resamples at a time, bounded memory) and
deterministic: the same inputs and ``seed`` give the same interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Iterator, Sequence

import numpy as np

# Upper bound on the size of one block of resampled indices (resamples × units).
_BLOCK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile-bootstrap interval.

    ``n`` is the number of resampling units (values, or prompts for the
    cluster variants); ``level`` the nominal coverage (0.95 for 95 %).
    """

    estimate: float
    low: float
    high: float
    level: float
    n: int

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _index_blocks(rng: np.random.Generator, n_units: int, n_resamples: int) -> Iterator[np.ndarray]:
    """Yield int arrays of shape (block, n_units) of unit indices, ``n_resamples`` rows in all."""
    block = max(1, _BLOCK_ELEMENTS // max(n_units, 1))
    for start in range(0, n_resamples, block):
        yield rng.integers(0, n_units, size=(min(block, n_resamples - start), n_units))


def _interval(estimate: float, replicates: np.ndarray, level: float, n: int) -> Interval:
    """Percentile interval of the bootstrap ``replicates`` (shape (B,)); undefined (nan bounds) with
    fewer than 2 units, where every resample is the sample itself and the interval would have zero width."""
    alpha = (1.0 - level) / 2.0
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0 or n < 2:
        return Interval(float(estimate), np.nan, np.nan, level, n)
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return Interval(float(estimate), float(low), float(high), level, n)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[..., np.ndarray] = np.mean,
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``statistic`` over independent units.

    ``values``: shape (n,) — one value per unit. ``statistic(x, axis=-1)``
    must reduce the last axis (``np.mean``, ``np.median``, ...); it is called
    once on the data and once on a (B, n) block of resamples.
    """
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        return Interval(np.nan, np.nan, np.nan, level, 0)
    rng = np.random.default_rng(seed)
    replicates = np.concatenate(
        [statistic(x[idx], axis=-1) for idx in _index_blocks(rng, x.size, n_resamples)]
    )
    return _interval(float(statistic(x, axis=-1)), replicates, level, x.size)


def _cluster_sums(values: np.ndarray, clusters: Sequence[Hashable]) -> tuple[list, np.ndarray, np.ndarray]:
    """Per-cluster (ids, sums, counts), ids compared as strings and sorted."""
    ids, inverse = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(ids))
    counts = np.bincount(inverse, minlength=len(ids)).astype(float)
    return list(ids), sums, counts


def cluster_bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[Hashable],
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Interval of the pooled mean of ``values`` (shape (n,)), resampling whole clusters.

    ``clusters[i]`` names the unit (e.g. the prompt id) that observation ``i``
    belongs to; clusters may hold different numbers of observations.
    Estimate: ``mean(values)``; each replicate draws as many clusters as
    there are, with replacement, and pools their observations.
    """
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        return Interval(np.nan, np.nan, np.nan, level, 0)
    _, sums, counts = _cluster_sums(x, clusters)
    rng = np.random.default_rng(seed)
    replicates = np.concatenate(
        [sums[idx].sum(-1) / counts[idx].sum(-1) for idx in _index_blocks(rng, len(sums), n_resamples)]
    )
    return _interval(float(x.mean()), replicates, level, len(sums))


@dataclass(frozen=True)
class PairedIntervals:
    """Intervals for two conditions measured on the same units, and their difference ``b − a``."""

    a: Interval
    b: Interval
    difference: Interval


def paired_cluster_bootstrap(
    values_a: Sequence[float] | np.ndarray,
    clusters_a: Sequence[Hashable],
    values_b: Sequence[float] | np.ndarray,
    clusters_b: Sequence[Hashable],
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedIntervals:
    """Pooled means of two conditions (e.g. before/after an edit) and of ``b − a``.

    Both conditions are resampled with the *same* draw of clusters, so the
    difference's interval accounts for the pairing (same prompts, same
    seeds). Only clusters present in both conditions are used. For
    independent units pass ``clusters = range(n)`` for both.
    """
    xa, xb = np.asarray(values_a, dtype=float).ravel(), np.asarray(values_b, dtype=float).ravel()
    ids_a, sums_a, counts_a = _cluster_sums(xa, clusters_a)
    ids_b, sums_b, counts_b = _cluster_sums(xb, clusters_b)
    shared = sorted(set(ids_a) & set(ids_b))
    if not shared:
        empty = Interval(np.nan, np.nan, np.nan, level, 0)
        return PairedIntervals(empty, empty, empty)
    pick_a = np.searchsorted(ids_a, shared)
    pick_b = np.searchsorted(ids_b, shared)
    sums_a, counts_a, sums_b, counts_b = sums_a[pick_a], counts_a[pick_a], sums_b[pick_b], counts_b[pick_b]

    rng = np.random.default_rng(seed)
    reps_a, reps_b = [], []
    for idx in _index_blocks(rng, len(shared), n_resamples):
        reps_a.append(sums_a[idx].sum(-1) / counts_a[idx].sum(-1))
        reps_b.append(sums_b[idx].sum(-1) / counts_b[idx].sum(-1))
    rep_a, rep_b = np.concatenate(reps_a), np.concatenate(reps_b)
    est_a, est_b = sums_a.sum() / counts_a.sum(), sums_b.sum() / counts_b.sum()
    n = len(shared)
    return PairedIntervals(
        a=_interval(est_a, rep_a, level, n),
        b=_interval(est_b, rep_b, level, n),
        difference=_interval(est_b - est_a, rep_b - rep_a, level, n),
    )


def cluster_bootstrap(
    statistic: Callable[[np.ndarray], float],
    clusters: Sequence[Hashable],
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Interval of any ``statistic`` of observations, resampling whole clusters.

    ``statistic(indices)`` gets an int array of observation indices (with
    repeats: a cluster drawn twice contributes its observations twice) and
    returns a number; NaN replicates (e.g. an AUC on a draw with one class)
    are left out of the interval. ``clusters[i]``: the unit of observation
    ``i``; for independent units pass ``range(n)``. Slower than the pooled-mean
    variants (one Python call per resample), for statistics that are not means:
    AUC, correlations, regression coefficients.
    """
    ids, inverse = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    if not len(ids):
        return Interval(np.nan, np.nan, np.nan, level, 0)
    members = [np.flatnonzero(inverse == c) for c in range(len(ids))]
    rng = np.random.default_rng(seed)
    replicates = np.array([
        statistic(np.concatenate([members[c] for c in draw]))
        for draw in rng.integers(0, len(ids), size=(n_resamples, len(ids)))
    ], dtype=float)
    return _interval(float(statistic(np.arange(len(inverse)))), replicates, level, len(ids))
