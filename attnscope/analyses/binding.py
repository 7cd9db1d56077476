"""Where does an attribute token's attention go? Binding scores and their drift.

For "a wooden bench and a bird" the attribute token "wooden" should attend
to the bench. Given its attention maps and the objects' regions (or maps),
this module measures, for every object k:

* **binding score** ``score[..., k] = Σ_{cells in region k} p / Σ_{all cells} p``:
  the share of the attribute's attention mass inside object k's region
  (a uniform map gives the region's area share);
* **relative binding** ``relative[..., k] = score[..., k] / Σ_j score[..., j]``:
  the share of the *in-region* mass that lands on object k;
* **IoU** ``|A ∩ O_k| / |A ∪ O_k|`` and **IoA** ``|A ∩ O_k| / |A|`` of the
  Otsu-thresholded attribute map A and object map O_k (IoA: how much of the
  attribute's hot area lies in the object's);
* **Jensen–Shannon divergence** between the attribute map and object k's map,
  both normalised to distributions; in bits by default, so 0 for identical
  and 1 for disjoint maps;
* **centre-of-mass distance** in cells (divide by the map side for a
  resolution-free number).

Every function is vectorised over leading axes: a (steps, layers, H, W)
stack gives (steps, layers) numbers, with a trailing K axis for objects.
Maps of layers with different resolutions must first be brought to one grid
(:func:`attnscope.analyses.regions.resize`) or measured layer by layer.

:func:`drift` compares two runs with the same prompt and seed (before/after
an edit); :func:`pair_attributes` finds which object each attribute word
describes.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, fields, replace
from typing import Mapping, Sequence

import numpy as np
from scipy.special import rel_entr

from attnscope.analyses.regions import otsu_mask, regions_from_attention

# --------------------------------------------------------------------------- elementary metrics


def _stack(regions: Mapping[str, np.ndarray]) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and a float (K, H, W) stack of bool or soft regions."""
    names = tuple(regions)
    return names, np.stack([np.asarray(regions[n], dtype=float) for n in names])


def binding_score(maps: np.ndarray, regions: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
    """Share of each map's mass inside each region.

    ``maps``: (..., H, W) non-negative; ``regions``: (K, H, W) bool or soft
    (cell weights in [0, 1]), or a mapping of K such arrays. Returns
    (..., K); NaN for an all-zero map.
    """
    if isinstance(regions, Mapping):
        regions = _stack(regions)[1]
    p = np.asarray(maps, dtype=float)
    inside = np.einsum("...hw,khw->...k", p, np.asarray(regions, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return inside / p.sum(axis=(-2, -1))[..., None]


def relative_binding(scores: np.ndarray) -> np.ndarray:
    """Binding scores (..., K) renormalised over objects: share of the in-region mass; NaN if none."""
    s = np.asarray(scores, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / s.sum(axis=-1, keepdims=True)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boolean masks (..., H, W) → (...); NaN when both are empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a & b).sum(axis=(-2, -1)) / (a | b).sum(axis=(-2, -1))


def ioa(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the area of ``a``: the fraction of mask ``a`` inside ``b``; NaN when ``a`` is empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a & b).sum(axis=(-2, -1)) / a.sum(axis=(-2, -1))


def js_divergence(p: np.ndarray, q: np.ndarray, base: float = 2.0) -> np.ndarray:
    """Jensen–Shannon divergence of maps (..., H, W), each normalised to sum 1 → (...).

    ``½ KL(p‖m) + ½ KL(q‖m)`` with ``m = (p + q)/2``, in units of ``log(base)``:
    bits by default (range [0, 1]); ``base=np.e`` gives nats (range [0, ln 2]).
    """
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    p = p / p.sum(axis=(-2, -1), keepdims=True)
    q = q / q.sum(axis=(-2, -1), keepdims=True)
    m = (p + q) / 2
    kl = rel_entr(p, m).sum(axis=(-2, -1)) + rel_entr(q, m).sum(axis=(-2, -1))
    return kl / 2 / np.log(base)


def center_of_mass(maps: np.ndarray) -> np.ndarray:
    """Centre of mass (row, col) of maps (..., H, W) → (..., 2), in cell indices (cell centres at integers)."""
    p = np.asarray(maps, dtype=float)
    total = p.sum(axis=(-2, -1))
    rows = np.einsum("...hw,h->...", p, np.arange(p.shape[-2], dtype=float))
    cols = np.einsum("...hw,w->...", p, np.arange(p.shape[-1], dtype=float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([rows / total, cols / total], axis=-1)


def com_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Euclidean distance (in cells) between the centres of mass of maps ``p`` and ``q`` (..., H, W) → (...)."""
    return np.linalg.norm(center_of_mass(p) - center_of_mass(q), axis=-1)


# --------------------------------------------------------------------------- one attribute against its objects


@dataclass(frozen=True)
class Binding:
    """How one attribute token's maps relate to each object; every array is (..., K).

    ``objects[k]`` names the k-th entry of the last axis; the leading axes
    are those of the maps measured (e.g. steps, layers).
    """

    objects: tuple[str, ...]
    score: np.ndarray
    relative: np.ndarray
    iou: np.ndarray
    ioa: np.ndarray
    js: np.ndarray
    com_distance: np.ndarray

    @property
    def quantities(self) -> tuple[str, ...]:
        """Names of the array fields, in order."""
        return tuple(f.name for f in fields(self) if f.name != "objects")

    def of(self, name: str) -> dict[str, np.ndarray]:
        """Every quantity for one object: ``{quantity: (...)}``."""
        k = self.objects.index(name)
        return {q: getattr(self, q)[..., k] for q in self.quantities}

    def mean(self, axis: int | tuple[int, ...]) -> Binding:
        """Average every quantity over leading ``axis`` (NaN-aware), e.g. ``mean(0)`` over steps."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
            return replace(self, **{q: np.nanmean(getattr(self, q), axis=axis) for q in self.quantities})


def measure_binding(
    attribute_maps: np.ndarray,
    object_maps: Mapping[str, np.ndarray],
    regions: Mapping[str, np.ndarray] | None = None,
) -> Binding:
    """Measure an attribute token's maps against every object.

    ``attribute_maps`` and each ``object_maps[name]``: (..., H, W) on one
    grid. ``regions``: ``{name: (H, W)}`` bool or soft — ground truth, user
    masks, or by default :func:`~attnscope.analyses.regions.regions_from_attention`
    of ``object_maps`` (aggregated over all leading axes, exclusive).
    Scores use ``regions``; IoU/IoA compare the Otsu masks of the attribute's
    and the object's map at the same step and layer; JS and centre-of-mass
    distance compare the maps themselves.
    """
    attr = np.asarray(attribute_maps, dtype=float)
    if regions is None:
        regions = regions_from_attention(object_maps, size=attr.shape[-2:])
    names = tuple(object_maps)
    objs = np.stack([np.asarray(object_maps[n], dtype=float) for n in names], axis=-3)  # (..., K, H, W)
    attr_k = attr[..., None, :, :]  # (..., 1, H, W), broadcasts against objs
    attr_mask, obj_masks = otsu_mask(attr_k), otsu_mask(objs)
    score = binding_score(attr, _stack({n: regions[n] for n in names})[1])
    return Binding(
        objects=names,
        score=score,
        relative=relative_binding(score),
        iou=iou(attr_mask, obj_masks),
        ioa=ioa(attr_mask, obj_masks),
        js=js_divergence(attr_k, objs),
        com_distance=com_distance(attr_k, objs),
    )


# --------------------------------------------------------------------------- drift between two runs


@dataclass(frozen=True)
class FirstWrong:
    """Where the attribute first lands mostly on a wrong object.

    ``wrong``: bool (steps, ...) — at each step (and layer), more than the
    threshold of the in-region mass lies on one object other than its own.
    ``first``: index (step, layer, ...) of the earliest such entry, steps
    first then layers; None if never. ``step``: (...) the first step per
    layer, -1 if never.
    """

    wrong: np.ndarray
    first: tuple[int, ...] | None
    step: np.ndarray


def first_wrong(relative: np.ndarray, own: int, threshold: float = 0.5) -> FirstWrong:
    """Locate the first step/layer at which a wrong object takes > ``threshold`` of the in-region mass.

    ``relative``: (steps, ..., K) relative binding (:func:`relative_binding`),
    steps on axis 0; ``own``: index of the attribute's own object.
    """
    r = np.asarray(relative, dtype=float)
    others = np.delete(r, own, axis=-1)
    with np.errstate(invalid="ignore"):
        wrong = (others > threshold).any(axis=-1) if others.shape[-1] else np.zeros(r.shape[:-1], bool)
    hits = np.argwhere(wrong)
    first = tuple(int(i) for i in hits[0]) if len(hits) else None
    step = np.where(wrong.any(axis=0), wrong.argmax(axis=0), -1)
    return FirstWrong(wrong=wrong, first=first, step=step)


@dataclass(frozen=True)
class Drift:
    """Change of an attribute's binding between two runs (same prompt and seed).

    ``delta[q]`` = after − before for every :class:`Binding` quantity, (..., K);
    ``own`` is the attribute's own object; ``before_wrong`` / ``after_wrong``
    locate where it first lands mostly on another object in each run.
    """

    objects: tuple[str, ...]
    own: str
    delta: dict[str, np.ndarray]
    before_wrong: FirstWrong
    after_wrong: FirstWrong


def drift(before: Binding, after: Binding, own: str, threshold: float = 0.5) -> Drift:
    """Compare :class:`Binding` of the same attribute in two runs; ``own`` names its object.

    The first-wrong search treats axis 0 as steps (see :func:`first_wrong`).
    """
    if before.objects != after.objects:
        raise ValueError(f"object lists differ: {before.objects} vs {after.objects}")
    k = before.objects.index(own)
    return Drift(
        objects=before.objects,
        own=own,
        delta={q: getattr(after, q) - getattr(before, q) for q in before.quantities},
        before_wrong=first_wrong(before.relative, k, threshold),
        after_wrong=first_wrong(after.relative, k, threshold),
    )


# --------------------------------------------------------------------------- attribute → object pairing

# Words that end a noun phrase when reading backwards from its noun.
_BOUNDARIES = frozenset(
    "a an the and or , of with without on in at to near next by beside behind under above below over from".split()
)


def pair_attributes(
    prompt: str,
    objects: Sequence[str],
    *,
    attributes: Sequence[str] | None = None,
    pairs: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """(attribute, object) pairs of a prompt whose attribute words precede their noun.

    ``objects``: the object nouns to look for (multi-word ones like
    "hot dog" allowed). Reading backwards from each noun, every word up to
    the previous article, conjunction, preposition, comma or object is an
    attribute of that noun — restricted to ``attributes`` if given. So
    "a picture of a small red wooden car and a bird" gives
    ``[("small", "car"), ("red", "car"), ("wooden", "car")]``.
    ``pairs`` are explicit pairs for free text; they replace parsed pairs
    with the same attribute. Returned in prompt order, explicit pairs last.
    """
    words = re.findall(r"[\w'-]+|,", prompt.lower())
    nouns = sorted((tuple(o.lower().split()) for o in objects), key=len, reverse=True)
    vocabulary = None if attributes is None else {a.lower() for a in attributes}

    parsed: list[tuple[str, str]] = []
    phrase: list[str] = []
    i = 0
    while i < len(words):
        noun = next((n for n in nouns if tuple(words[i : i + len(n)]) == n), None)
        if noun is not None:
            parsed += [(w, " ".join(noun)) for w in phrase if vocabulary is None or w in vocabulary]
            phrase, i = [], i + len(noun)
            continue
        phrase = [] if words[i] in _BOUNDARIES else phrase + [words[i]]
        i += 1
    explicit = {a for a, _ in pairs}
    return [p for p in parsed if p[0] not in explicit] + list(pairs)
