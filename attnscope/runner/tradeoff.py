"""The edits of a trade-off study: growing concept sets and hyper-parameter sweeps, as runner states.

::

    points = concept_ladder(["bench", "chair", "couch", "car", ...], counts=(1, 2, 3, 4, 8))
    points += hyper_sweeps("bench", preserve=["chair", "couch"])
    states = point_states(pipe, points, folder, retained=toy_classes)   # edits + predictors, saved
    prompts = tradeoff_prompts(["bench", "chair", ...])                  # one prompt set for every point

Every point is sampled on the same prompts and seeds as the base model
(:func:`attnscope.runner.passes.sample_state`), and its records are relabelled with
its own erased set for the metrics (:func:`attnscope.analyses.tradeoff.tradeoff_rows`).
Beside each edit (``{name}.edit``) goes ``{name}.point.json``: the point's
description and its *pre-sampling predictor*, the mean relative movement of
the retained concepts' keys and values under the edit (entanglement module,
token ``last``), computed without sampling an image.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from attnscope.datasets.see import SeePrompt, build_pair_prompts, build_see_prompts, toy_recipe
from attnscope.erasure.edit import Edit
from attnscope.runner.states import State

TOKEN_CHOICE = "eos-aligned"  # as the runner's states erase on the toy model (states.py)
UCE_SWEEPS = {"lam": (0.1, 0.5, 2.0), "erase_scale": (0.5, 1.0, 2.0), "preserve_scale": (0.1, 1.0, 10.0)}
RECE_SWEEPS = {"epochs": (1, 2, 3, 5), "lam_r": (1e-4, 1e-3, 1e-2)}


@dataclass(frozen=True)
class Point:
    """One edit of a trade-off study.

    ``sweep``: ``"concepts"`` (the concept ladder) or the swept
    hyper-parameter; ``value``: the number of concepts or the parameter's
    value; ``options``: keyword arguments of the erasure function.
    """

    name: str
    sweep: str
    method: str
    mode: str
    erased: tuple[str, ...]
    value: float
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "erased": list(self.erased), "state": self.name, "n_concepts": len(self.erased)}


def _slug(value: float) -> str:
    return f"{value:g}".replace(".", "p").replace("-", "m")


def concept_ladder(concepts: Sequence[str], counts: Sequence[int] = (1, 2, 3, 4, 8), *, method: str = "uce",
                   modes: Sequence[str] = ("one-shot", "progressive")) -> list[Point]:
    """Erase the first n of ``concepts`` for each n in ``counts``, one-shot and progressively."""
    if max(counts) > len(concepts):
        raise ValueError(f"counts go up to {max(counts)} but only {len(concepts)} concepts are listed")
    return [Point(f"{method}-{'prog' if mode == 'progressive' else 'once'}-n{n}", "concepts", method, mode,
                  tuple(concepts[:n]), n, {"progressive": mode == "progressive"})
            for mode in modes for n in counts]


def hyper_sweeps(concept: str, preserve: Sequence[str] = (), *, uce: dict[str, Sequence[float]] | None = None,
                 rece: dict[str, Sequence[float]] | None = None) -> list[Point]:
    """One-at-a-time sweeps around the defaults: UCE λ, erase and preserve scales (preserving ``preserve``);
    RECE epochs and λ_r. ``uce``/``rece``: ``{parameter: values}`` (default :data:`UCE_SWEEPS`, :data:`RECE_SWEEPS`)."""
    points = []
    for method, sweeps in (("uce", UCE_SWEEPS if uce is None else uce), ("rece", RECE_SWEEPS if rece is None else rece)):
        for parameter, values in sweeps.items():
            for value in values:
                options = {parameter: value}
                if parameter == "preserve_scale":
                    options["preserve"] = list(preserve)
                points.append(Point(f"{method}-{parameter}-{_slug(value)}", parameter, method, "one-shot",
                                    (concept,), value, options))
    return points


def point_edit(pipe, point: Point) -> Edit:
    """Compute the point's edit (UCE or RECE, ``eos-aligned`` keys) on ``pipe``'s current weights."""
    from attnscope.erasure import erase_rece, erase_uce

    options = dict(point.options)
    if point.method == "uce":
        return erase_uce(pipe, list(point.erased), token_choice=TOKEN_CHOICE, keep_stages=False, **options)
    if point.method == "rece":
        if "epochs" in options:
            options["epochs"] = int(options["epochs"])
        return erase_rece(pipe, list(point.erased), token_choice=TOKEN_CHOICE, keep_stages=False, **options)
    raise ValueError(f"unknown method {point.method!r} (uce or rece)")


def kv_movement(before, after, retained: Sequence[str]) -> float:
    """Mean relative displacement ‖x' − x‖/‖x‖ of the ``retained`` concepts over every K and V space.

    ``before``/``after``: :class:`~attnscope.analyses.entanglement.KVImages` of
    the same concepts without and with the edit. NaN without retained concepts.
    """
    rows = [before.concepts.index(c) for c in retained]
    if not rows:
        return float("nan")
    moved = []
    for space in before.spaces:
        if space.endswith((".to_k", ".to_v")):
            x, y = before.vectors["last"][space][rows], after.vectors["last"][space][rows]
            moved.append(np.linalg.norm(y - x, axis=-1) / np.linalg.norm(x, axis=-1))
    return float(np.mean(moved))


def point_states(pipe, points: Sequence[Point], folder: Path, *, concepts: Sequence[str]) -> list[State]:
    """A :class:`State` per point with its edit, computed (or loaded from ``folder/{name}.edit``) and its
    ``{name}.point.json`` written with the predictor over ``concepts`` that the point does not erase."""
    from attnscope.analyses.entanglement import kv_images

    folder.mkdir(parents=True, exist_ok=True)
    base_images = None
    states = []
    for point in points:
        path, info = folder / f"{point.name}.edit", folder / f"{point.name}.point.json"
        edit = Edit.load(path, device=pipe.device) if path.exists() else point_edit(pipe, point)
        if not path.exists():
            edit.save(path)
        if not info.exists():
            base_images = base_images or kv_images(pipe, concepts)
            with edit.applied(pipe):
                edited = kv_images(pipe, concepts)
            retained = [c for c in concepts if c not in point.erased]
            info.write_text(json.dumps({**point.describe(), "predictor": kv_movement(base_images, edited, retained)},
                                       indent=1))
        states.append(State(point.name, point.name, edit))
    return states


def read_points(folder: Path, names: Sequence[str]) -> list[dict[str, Any]]:
    """The ``{name}.point.json`` descriptions (with predictors) written by :func:`point_states`."""
    return [json.loads((folder / f"{name}.point.json").read_text()) for name in names]


def tradeoff_prompts(concepts: Sequence[str], *, singles: int = 4, pairs: int = 4, seed: int = 0) -> list[SeePrompt]:
    """One toy prompt set for every point: per class ``singles`` single-object prompts (the bare class
    first, then one per attribute count) and, per class in ``concepts``, ``pairs`` two-object prompts with
    one attribute on it and a partner from another superclass (seeded choice)."""
    recipe = toy_recipe()
    rng = random.Random(seed)
    chosen: list[SeePrompt] = []
    by_class: dict[str, list[SeePrompt]] = {}
    for prompt in build_see_prompts(recipe):
        by_class.setdefault(prompt.object, []).append(prompt)
    for members in by_class.values():
        by_count: dict[int, list[SeePrompt]] = {}
        for prompt in members:
            by_count.setdefault(prompt.n_attributes, []).append(prompt)
        picks = [rng.choice(by_count[n]) for n in sorted(by_count)]
        chosen += picks[:singles] + rng.sample([p for p in members if p not in picks], max(0, singles - len(picks)))
    pair_prompts = build_pair_prompts(recipe)
    for concept in concepts:
        own = [p for p in pair_prompts if p.object == concept]
        chosen += rng.sample(own, min(pairs, len(own)))
    return chosen


def tradeoff_plan(concepts: Sequence[str], seeds: Sequence[int], settings, *, singles: int = 4, pairs: int = 4,
                  seed: int = 0):
    """The :class:`~attnscope.runner.plan.Plan` every point samples: :func:`tradeoff_prompts`, split for the
    first concept (the records are relabelled per point when measured)."""
    from attnscope.datasets.see import split
    from attnscope.runner.plan import Plan

    prompts = tradeoff_prompts(concepts, singles=singles, pairs=pairs, seed=seed)
    return Plan(tuple(split(prompts, [concepts[0]])), tuple(seeds), settings, (concepts[0],),
                note=f"trade-off set: {singles} single-object prompts per class, {pairs} two-object prompts per "
                     f"laddered concept (sample seed {seed})")


def tradeoff_records(folder: Path, names: Sequence[str]) -> dict[str, list[dict]]:
    """``{state: judged records}`` read from ``folder/{state}.answers.csv``."""
    from attnscope.runner.records import read_ledgers

    return {name: read_ledgers([folder / f"{name}.answers.csv"]) for name in names}


def run_tradeoff(pipe, points: Sequence[Point], plan, folder: Path, *, judge, concepts: Sequence[str],
                 batch_size: int = 16, only: Sequence[str] | None = None, progress: bool = True) -> list[str]:
    """Sample and judge the base model and every point on ``plan`` (no capture); resumable.

    ``only``: state names to run (the others are skipped: a share of the work
    for one process). Returns the names of the states run.
    """
    from attnscope.runner.passes import check_plan, sample_state
    from attnscope.runner.shard import Shard
    from attnscope.runner.states import BASE

    check_plan(folder, {"plan": plan.summary(), "judge": getattr(judge, "name", None), "capture": False,
                        "processes": 1}, Shard())
    chosen = [p for p in points if only is None or p.name in only]
    states = ([BASE] if only is None or BASE.name in only else []) + point_states(pipe, chosen, folder,
                                                                                   concepts=concepts)
    for state in states:
        sample_state(pipe, state, plan, folder, judge=judge, capture_maps=False, batch_size=batch_size,
                     progress=progress)
    return [s.name for s in states]
