"""Binding and drift measured on run files: every layer and step of every run.

The functions of :mod:`attnscope.analyses.binding` work on arrays; this
module reads them out of run files and pairs runs before and after an edit::

    with RunFile("before.h5") as before, RunFile("after.h5") as after:
        study = drift_study(before, after, word="wooden", objects=["bench", "bird"])
    study.intervals("score")["bird"].difference   # 95 % CI of the change, clustered by prompt

**Grids.** Each layer is measured on its own grid (16×16, 8×8, …): object
regions are computed once at the finest grid and resized to coarser ones
as soft cell coverage. Centre-of-mass distances are divided by the layer's
side, so they are fractions of the image side at every layer.

**Regions of a pair come from the *before* run** and are shared by both
runs: the edit changes the object tokens' own attention (the erased noun's
above all), so the after run's object maps are not a stable reference,
while the same seed starts both runs from the same noise. Sources:
``"attention"`` — Otsu regions of the object words' maps aggregated over
all layers and steps (:func:`~attnscope.analyses.regions.regions_from_attention`);
``"oracle"`` — the toy oracle's segmentation of the before image, each
object matched to the detection most likely to be it (an object the oracle
does not find gets an empty region).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Literal, Mapping, Sequence

import numpy as np

from attnscope.analyses.binding import Binding, first_wrong, measure_binding, pair_attributes
from attnscope.analyses.regions import regions_from_attention, regions_from_masks
from attnscope.analyses.stats import PairedIntervals, paired_cluster_bootstrap
from attnscope.store.reader import RunFile

RegionSource = Literal["attention", "oracle"]


# --------------------------------------------------------------------------- one run


def word_maps(runs: RunFile, run: int, word: str, layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """``{layer: (steps, h, w)}`` maps of ``word`` (sub-word tokens summed, heads averaged)."""
    names = layers or [spec.name for spec in runs.layers]
    return {name: runs.maps(run, name, word=word).mean(axis=1) for name in names}


def attention_regions(runs: RunFile, run: int, objects: Sequence[str]) -> dict[str, np.ndarray]:
    """Exclusive regions ``{object: bool (H, W)}`` at the finest layer grid from the objects' own maps."""
    return regions_from_attention({o: list(word_maps(runs, run, o).values()) for o in objects})


def oracle_regions(image: np.ndarray, objects: Sequence[str], oracle) -> dict[str, np.ndarray]:
    """Regions ``{object: bool (H, W)}`` at image resolution from the toy oracle's detections.

    Objects are matched greedily, most confident first, each to a different
    detection whose probability of being that noun is at least ½; an object
    without a match gets an empty region.
    """
    detections = oracle.describe([image])[0]
    candidates = sorted(
        ((d.noun_prob(o), i, o) for i, d in enumerate(detections) for o in objects), reverse=True
    )
    regions = {o: np.zeros(image.shape[:2], dtype=bool) for o in objects}
    used, matched = set(), set()
    for prob, i, o in candidates:
        if prob >= 0.5 and i not in used and o not in matched:
            regions[o] = detections[i].mask
            used.add(i)
            matched.add(o)
    return regions


def _stack(bindings: Sequence[Binding], axis: int) -> Binding:
    """Stack Bindings with the same objects along a new leading ``axis`` of every quantity."""
    first = bindings[0]
    return Binding(
        objects=first.objects,
        **{q: np.stack([getattr(b, q) for b in bindings], axis=axis) for q in first.quantities},
    )


def run_binding(
    runs: RunFile,
    run: int,
    word: str,
    regions: Mapping[str, np.ndarray],
    layers: Sequence[str] | None = None,
) -> Binding:
    """Binding of ``word`` to every object of ``regions`` in one run: arrays (steps, layers, K).

    ``regions``: ``{object: (H, W)}`` bool or soft masks at any resolution;
    the object maps (for IoU/IoA, JS, centre of mass) are the objects' own
    maps in this run. Layers are measured on their own grids (module docstring).
    """
    names = layers or [spec.name for spec in runs.layers]
    attribute = word_maps(runs, run, word, names)
    objects = {o: word_maps(runs, run, o, names) for o in regions}
    per_layer = []
    for name in names:
        grid = attribute[name].shape[-2:]
        soft = regions_from_masks(regions, grid, min_coverage=None)
        binding = measure_binding(attribute[name], {o: maps[name] for o, maps in objects.items()}, soft)
        per_layer.append(replace(binding, com_distance=binding.com_distance / max(grid)))
    return _stack(per_layer, axis=1)


# --------------------------------------------------------------------------- pairs of runs


@dataclass(frozen=True)
class Pair:
    """Two runs with the same prompt and seed: ``before`` and ``after`` are run indices."""

    prompt: str
    seed: int
    before: int
    after: int


def pair_runs(before: RunFile, after: RunFile) -> list[Pair]:
    """Pair the complete runs of two files by (prompt, seed), in the before file's order.

    Runs without a partner are left out; of repeated (prompt, seed) runs the first is used.
    """
    def index(runs: RunFile) -> dict[tuple[str, int], int]:
        keys: dict[tuple[str, int], int] = {}
        for run, (prompt, seed, done) in enumerate(zip(runs.column("prompt"), runs.column("seed"), runs.complete)):
            if done:
                keys.setdefault((str(prompt), int(seed)), run)
        return keys

    after_index = index(after)
    return [Pair(p, s, run, after_index[(p, s)]) for (p, s), run in index(before).items() if (p, s) in after_index]


def known_objects(prompt: str) -> list[str]:
    """Words of ``prompt`` that are toy-world or COCO class/superclass nouns, in prompt order."""
    from attnscope.datasets import coco
    from attnscope.datasets import toy_vocabulary as toy

    nouns = set(toy.CLASSES) | set(toy.HIERARCHY) | {c for cs in coco.HIERARCHY.values() for c in cs}
    words = prompt.lower().replace(",", " ").split()
    return list(dict.fromkeys(w for w in words if w in nouns))


@dataclass(frozen=True)
class DriftStudy:
    """Binding of one attribute word in paired runs before and after an edit.

    ``before``/``after``: :class:`Binding` with arrays (pairs, steps, layers, K),
    objects in ``objects`` order; ``own``: the object the word describes;
    ``found``: (pairs, K) whether each object's region was non-empty;
    ``area``: (pairs, K) the fraction of the image each region covers (what
    a uniform map would score); ``steps``: stored step indices; ``layers``:
    layer names.
    """

    word: str
    own: str
    objects: tuple[str, ...]
    regions: str
    steps: tuple[int, ...]
    layers: tuple[str, ...]
    pairs: tuple[Pair, ...]
    before: Binding
    after: Binding
    found: np.ndarray
    area: np.ndarray

    @property
    def clusters(self) -> list[str]:
        return [p.prompt for p in self.pairs]

    def per_pair(self, quantity: str = "score") -> tuple[np.ndarray, np.ndarray]:
        """(before, after), each (pairs, K): the quantity averaged over steps and layers."""
        return _mean(getattr(self.before, quantity), (1, 2)), _mean(getattr(self.after, quantity), (1, 2))

    def layer_step(self, quantity: str = "score") -> tuple[np.ndarray, np.ndarray]:
        """(before, after), each (steps, layers, K): the quantity averaged over pairs."""
        return _mean(getattr(self.before, quantity), 0), _mean(getattr(self.after, quantity), 0)

    def intervals(self, quantity: str = "score", *, level: float = 0.95, n_resamples: int = 2000,
                  seed: int = 0) -> dict[str, PairedIntervals]:
        """Per object: pooled means before and after and their difference, with percentile
        bootstrap intervals that resample whole prompts (pairs with a NaN are left out)."""
        before, after = self.per_pair(quantity)
        clusters = np.asarray(self.clusters, dtype=object)
        out = {}
        for k, name in enumerate(self.objects):
            ok = np.isfinite(before[:, k]) & np.isfinite(after[:, k])
            out[name] = paired_cluster_bootstrap(
                before[ok, k], clusters[ok], after[ok, k], clusters[ok],
                level=level, n_resamples=n_resamples, seed=seed,
            )
        return out

    def first_wrong_steps(self, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """(before, after), each (pairs,): the first stored step at which the word's relative
        binding, averaged over layers, puts more than ``threshold`` on another object; -1 if never."""
        own = self.objects.index(self.own)
        steps = np.asarray(self.steps)

        def first(binding: Binding) -> np.ndarray:
            relative = _mean(binding.relative, 2)  # (pairs, steps, K)
            found = [first_wrong(r, own, threshold).first for r in relative]
            return np.array([-1 if f is None else int(steps[f[0]]) for f in found])

        return first(self.before), first(self.after)

    def rows(self) -> list[dict]:
        """Long table, one row per (pair, object, quantity): values averaged over steps and layers."""
        rows = []
        for quantity in self.before.quantities:
            before, after = self.per_pair(quantity)
            for i, pair in enumerate(self.pairs):
                for k, name in enumerate(self.objects):
                    rows.append(dict(
                        prompt=pair.prompt, seed=pair.seed, run_before=pair.before, run_after=pair.after,
                        object=name, region_found=bool(self.found[i, k]), region_area=float(self.area[i, k]),
                        quantity=quantity,
                        before=float(before[i, k]), after=float(after[i, k]),
                        delta=float(after[i, k] - before[i, k]),
                    ))
        return rows

    def layer_step_rows(self) -> list[dict]:
        """Long table, one row per (layer, step, object, quantity): values averaged over pairs."""
        rows = []
        for quantity in self.before.quantities:
            before, after = self.layer_step(quantity)
            for s, step in enumerate(self.steps):
                for l, layer in enumerate(self.layers):
                    for k, name in enumerate(self.objects):
                        rows.append(dict(
                            layer=layer, step=int(step), object=name, quantity=quantity,
                            before=float(before[s, l, k]), after=float(after[s, l, k]),
                            delta=float(after[s, l, k] - before[s, l, k]),
                        ))
        return rows

    def summary(self, **bootstrap) -> dict:
        """JSON-ready: settings, and per quantity and object the paired intervals (``bootstrap``
        is passed to :meth:`intervals`), plus first-wrong steps."""
        first_before, first_after = self.first_wrong_steps()
        return {
            "word": self.word,
            "own": self.own,
            "objects": list(self.objects),
            "regions": self.regions,
            "pairs": len(self.pairs),
            "prompts": len(set(self.clusters)),
            "steps": [int(s) for s in self.steps],
            "layers": list(self.layers),
            "regions_found": {o: int(self.found[:, k].sum()) for k, o in enumerate(self.objects)},
            "region_area": {o: float(self.area[:, k].mean()) for k, o in enumerate(self.objects)},
            "binding": {
                quantity: {
                    name: {part: _interval_dict(getattr(pi, part)) for part in ("a", "b", "difference")}
                    for name, pi in self.intervals(quantity, **bootstrap).items()
                }
                for quantity in self.before.quantities
            },
            "first_wrong_step": {
                "before": _first_wrong_summary(first_before),
                "after": _first_wrong_summary(first_after),
            },
        }


def _interval_dict(interval) -> dict:
    return dict(estimate=interval.estimate, low=interval.low, high=interval.high, level=interval.level, n=interval.n)


def _first_wrong_summary(first: np.ndarray) -> dict:
    hit = first[first >= 0]
    return {"share_of_pairs": float(len(hit) / len(first)) if len(first) else float("nan"),
            "median_step": float(np.median(hit)) if len(hit) else None}


def _mean(values: np.ndarray, axis) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
        return np.nanmean(values, axis=axis)


def drift_study(
    before: RunFile,
    after: RunFile,
    word: str,
    objects: Sequence[str] | None = None,
    *,
    own: str | None = None,
    regions: RegionSource = "attention",
    oracle=None,
    layers: Sequence[str] | None = None,
) -> DriftStudy:
    """Measure ``word``'s binding in every pair of runs (same prompt and seed) of two files.

    Both files must store the same steps.

    Args:
        before: the run file captured without the edit.
        after: the run file captured with it (same prompts and seeds).
        word: the attribute word, e.g. ``"wooden"``.
        objects: the object nouns (default: the known nouns of the first
            prompt, see :func:`known_objects`).
        own: the object ``word`` describes (default: parsed from the prompt,
            attribute before its noun).
        regions: object regions from the before run's ``"attention"`` maps or
            from the ``"oracle"``.
        oracle: a :class:`~attnscope.judges.toy_oracle.ToyOracle` for ``regions="oracle"``.
        layers: layer names (default: all stored).

    Returns:
        A :class:`DriftStudy`: per pair, layer and step the binding before and
        after; ``summary()``, ``intervals()`` and ``rows()`` condense it.
    """
    pairs = pair_runs(before, after)
    if not pairs:
        raise ValueError("no run of the before file has a run with the same prompt and seed in the after file")
    if list(before.steps) != list(after.steps):
        raise ValueError(f"the files store different steps: {list(before.steps)} vs {list(after.steps)}")
    objects = tuple(objects or known_objects(pairs[0].prompt))
    if not objects:
        raise ValueError(f"no known object noun in {pairs[0].prompt!r}: name the objects")
    own = own or _own_object(pairs, word, objects)
    if own not in objects:
        raise ValueError(f"{own!r} is not one of the objects {list(objects)}")
    if regions == "oracle" and oracle is None:
        raise ValueError("regions='oracle' needs an oracle")
    names = list(layers or [spec.name for spec in before.layers])

    found, area, measured_before, measured_after = [], [], [], []
    for pair in pairs:
        if regions == "attention":
            masks = attention_regions(before, pair.before, objects)
        elif regions == "oracle":
            masks = oracle_regions(before.image(pair.before), objects, oracle)
        else:
            raise ValueError(f"regions must be 'attention' or 'oracle', not {regions!r}")
        found.append([bool(masks[o].any()) for o in objects])
        area.append([float(np.mean(masks[o])) for o in objects])
        measured_before.append(run_binding(before, pair.before, word, masks, names))
        measured_after.append(run_binding(after, pair.after, word, masks, names))
    return DriftStudy(
        word=word, own=own, objects=objects, regions=regions, steps=tuple(int(s) for s in before.steps),
        layers=tuple(names), pairs=tuple(pairs), before=_stack(measured_before, 0),
        after=_stack(measured_after, 0), found=np.array(found, dtype=bool), area=np.array(area),
    )


def _own_object(pairs: Sequence[Pair], word: str, objects: Sequence[str]) -> str:
    owners = {o for p in pairs for a, o in pair_attributes(p.prompt, objects, attributes=[word])}
    if len(owners) != 1:
        raise ValueError(f"cannot tell which object {word!r} describes (found {sorted(owners)}): pass own=")
    return owners.pop()
