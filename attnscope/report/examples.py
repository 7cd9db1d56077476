"""Example image pairs for the report: where did the erased object's attribute leak?

:func:`find_leaks` pairs every leakage answer of an edited model ("is the
bird wooden?" about "a wooden bench and a bird") with the base model's answer
for the same prompt and seed, and ranks them: answers that flipped from no to
yes first, then by how much the judge's score rose. :func:`render_side` draws
both images with the attention of the attribute word and of both object words
over them, and measures where the attribute's attention went
(:func:`attnscope.analyses.run_binding.run_binding` against the objects'
regions in the base model's run, :func:`leak_regions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from attnscope.analyses.run_binding import attention_regions, run_binding
from attnscope.figures.maps import word_map_grid
from attnscope.store import RunFile


@dataclass(frozen=True)
class Leak:
    """One leakage question answered by the base model and by an edited one (same prompt and seed)."""

    method: str
    state: str  # the edited model's run-file stem
    base_state: str
    prompt_id: str
    prompt: str
    seed: int
    object: str  # carries the attribute (the erased object)
    other_object: str  # retained; asked whether it took the attribute
    value: str  # the attribute word, e.g. "wooden"
    before_yes: bool
    before_score: float
    after_yes: bool
    after_score: float

    @property
    def flipped(self) -> bool:
        return self.after_yes and not self.before_yes

    def to_row(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def find_leaks(
    records: Sequence[Mapping[str, Any]], per_method: int = 3, base: str = "base", min_rise: float = 0.1
) -> list[Leak]:
    """Up to ``per_method`` leakage answers per edited method whose score rose by at least
    ``min_rise`` (or flipped to yes), most telling first (see module docstring).

    ``records``: typed side-effect records (``judged_yes`` bool, ``score``
    float or numeric text), as the runner's ledgers give them. Only questions
    of the leakage table count: pairs whose ``object`` is a target and whose
    ``other_object`` is retained.
    """
    leakage = [r for r in records
               if r["check"] == "leakage" and r["role"] == "target" and r.get("other_role") == "retain"]
    before = {(r["question_id"], int(r["seed"])): r for r in leakage if r["method"] == base}
    found: dict[str, list[Leak]] = {}
    for r in leakage:
        b = before.get((r["question_id"], int(r["seed"])))
        if r["method"] == base or b is None:
            continue
        leak = Leak(
            r["method"], r["state"], b["state"], r["prompt_id"], r["prompt"], int(r["seed"]), r["object"],
            r["other_object"], r["value"], bool(b["judged_yes"]), float(b["score"]),
            bool(r["judged_yes"]), float(r["score"]),
        )
        if leak.flipped or leak.after_score - leak.before_score >= min_rise:
            found.setdefault(r["method"], []).append(leak)
    chosen = []
    for leaks in found.values():
        leaks.sort(key=lambda k: (not k.flipped, -(k.after_score - k.before_score), k.prompt_id, k.seed))
        chosen += leaks[:per_method]
    return chosen


@dataclass
class LeakView:
    """One side (before or after) of a rendered leak: the figure and where the attribute's attention went.

    ``binding[obj]``: share of the attribute's in-region attention that lands
    on object ``obj`` (relative binding, averaged over layers and steps);
    empty without regions.
    """

    figure: Any
    binding: dict[str, float] = field(default_factory=dict)


def _object_words(leak: Leak) -> list[str]:
    return [leak.object.split()[-1], leak.other_object.split()[-1]]


def leak_regions(runs: RunFile, run: int, leak: Leak) -> dict[str, np.ndarray] | None:
    """Both objects' regions ``{word: (H, W) bool}`` from their own maps in ``run`` (the base model's:
    the edit disturbs the erased noun's attention, so both sides are measured against the base regions)."""
    words = _object_words(leak)
    if not set(words) <= set(runs.words(run)):
        return None
    return attention_regions(runs, run, words)


def render_side(runs: RunFile, run: int, leak: Leak, label: str,
                regions: Mapping[str, np.ndarray] | None = None) -> LeakView:
    """The run's image and the maps of the attribute and both object words, with binding shares."""
    present = set(runs.words(run))
    words = [w for w in [leak.value, *_object_words(leak)] if w in present]
    maps = {w: runs.heatmap(run, word=w) for w in words}  # (H, W) over all layers and steps
    figure = word_map_grid(runs.image(run), {label: maps}) if maps else None
    binding: dict[str, float] = {}
    if regions and leak.value in present:
        shares = run_binding(runs, run, leak.value, regions).mean(axis=(0, 1)).relative  # (K,)
        binding = {obj: float(share) for obj, share in zip(regions, shares)}
    return LeakView(figure, binding)
