"""What a side-effect benchmark samples: split prompts × seeds, with sampler settings.

::

    prompts = build_toy_prompts() + build_pair_prompts(toy_recipe())
    rows = split(prompts, "bench", embed=text_embedder(pipe))   # attnscope.models.prompts
    plan = Plan(tuple(rows), seeds=(0, 1, 2, 3), settings=SamplerSettings(steps=50), erased=("bench",))
    small = plan.reduced(Reduction())      # a stratified, seeded sample of the prompts
    small.jobs()                           # one Job per prompt × seed, prompt-major

A job's ``extra`` holds ``prompt_id``, ``role`` and ``kind``, so every run
file written by the runner can be searched with ``RunFile.find(prompt_id=...)``.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from itertools import chain, zip_longest
from typing import Callable, Hashable, Sequence

from attnscope.datasets.see import (
    Recipe,
    SeePrompt,
    SplitRow,
    build_pair_prompts,
    build_see_prompts,
    parse_concept,
    toy_recipe,
)
from attnscope.sampling import Job, SamplerSettings

Key = tuple[str, int]  # (prompt_id, seed): one run of one model state


def job_key(job: Job) -> Key:
    return job.extra["prompt_id"], int(job.seed)


def benchmark_prompts(kind: str, erased: Sequence[str]) -> list[SeePrompt]:
    """A benchmark's prompt set: ``"toy"`` (the toy world) or ``"see"`` (SEE's COCO set).

    Every single-object variant of every class plus the two-object leakage
    prompts (:func:`~attnscope.datasets.see.build_pair_prompts`); when an
    erased concept is a superclass, the superclass word's own variants too
    ("a furniture"), so that target accuracy covers the word itself while
    evasion covers its classes.
    """
    recipe = {"toy": toy_recipe, "see": Recipe}[kind]()
    singles = build_see_prompts(recipe)
    if any(parse_concept(concept, singles).is_superclass for concept in erased):
        singles = build_see_prompts(recipe, include_superclasses=True)
    return singles + build_pair_prompts(recipe)


@dataclass(frozen=True)
class Reduction:
    """A stratified, seeded sample of a split prompt set, small enough for a CPU.

    * ``targets`` single-object prompts of the erased concept(s); those that
      name exactly the concept (or a class of an erased superclass) first,
      then variants spread over the number of attributes;
    * ``retain_per_class`` single-object prompts of every retained class, or
      ``neighbours_per_class`` for classes that share a superclass with an
      erased concept (the side effects are expected there);
    * ``leakage_pairs`` two-object prompts whose first object is erased and
      carries one attribute while the second is retained, spread over the
      attribute slots (size, colour, material);
    * ``other_pairs`` of the remaining two-object prompts.
    """

    targets: int = 6
    retain_per_class: int = 1
    neighbours_per_class: int = 2
    leakage_pairs: int = 9
    other_pairs: int = 0
    seed: int = 0

    def describe(self) -> str:
        return (
            f"{self.targets} target prompts, {self.retain_per_class} retain prompt(s) per class "
            f"({self.neighbours_per_class} for classes sharing a superclass with the erased concept), "
            f"{self.leakage_pairs} leakage pairs, {self.other_pairs} other pairs (sample seed {self.seed})"
        )


def _spread(
    rows: Sequence[SplitRow], k: int, key: Callable[[SplitRow], Hashable], rng: random.Random
) -> list[SplitRow]:
    """``k`` rows, taken round-robin from the groups of ``key`` (groups and their members shuffled by ``rng``)."""
    groups: dict[Hashable, list[SplitRow]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    for members in groups.values():
        rng.shuffle(members)
    ordered = [groups[g] for g in sorted(groups, key=str)]
    rng.shuffle(ordered)
    return [r for r in chain.from_iterable(zip_longest(*ordered)) if r is not None][:k]


def reduce_rows(rows: Sequence[SplitRow], erased_superclasses: set[str], reduction: Reduction) -> list[SplitRow]:
    """The rows :class:`Reduction` keeps, in their original order."""
    rng = random.Random(reduction.seed)
    singles = [r for r in rows if r.prompt.kind == "single"]
    pairs = [r for r in rows if r.prompt.kind == "pair"]
    targets = [r for r in singles if r.role == "target"]
    exact = [r for r in targets if r.relation in ("concept", "subclass")]
    chosen = exact[: reduction.targets]
    chosen += _spread([r for r in targets if r not in chosen], reduction.targets - len(chosen),
                      lambda r: r.prompt.n_attributes, rng)
    by_class: dict[str, list[SplitRow]] = {}
    for row in singles:
        if row.role == "retain":
            by_class.setdefault(row.prompt.object, []).append(row)
    for obj, members in sorted(by_class.items()):
        near = members[0].prompt.superclass in erased_superclasses
        k = reduction.neighbours_per_class if near else reduction.retain_per_class
        chosen += _spread(members, k, lambda r: r.prompt.n_attributes, rng)
    leakage = [r for r in pairs if r.role == "target" and r.other_role == "retain"]
    chosen += _spread(leakage, reduction.leakage_pairs, lambda r: tuple(r.prompt.attributes), rng)
    others = [r for r in pairs if r not in leakage]
    chosen += _spread(others, reduction.other_pairs, lambda r: r.prompt.object, rng)
    keep = {id(r) for r in chosen}
    return [r for r in rows if id(r) in keep]


@dataclass(frozen=True)
class Plan:
    """Every prompt × seed to sample for each model state, and how.

    ``rows``: the prompts with their target/retain split for ``erased``;
    ``note``: how the set was reduced from the full one ("" when it was not).
    """

    rows: tuple[SplitRow, ...]
    seeds: tuple[int, ...]
    settings: SamplerSettings
    erased: tuple[str, ...]
    note: str = ""

    def __post_init__(self) -> None:
        ids = [r.prompt.prompt_id for r in self.rows]
        if len(set(ids)) != len(ids):
            raise ValueError("a plan's prompt ids must be unique")
        if not self.seeds:
            raise ValueError("a plan needs at least one seed")

    @property
    def label(self) -> str:
        """The records' ``erased`` column: the erased concepts joined by ``+``."""
        return "+".join(self.erased)

    def by_id(self) -> dict[str, SplitRow]:
        return {r.prompt.prompt_id: r for r in self.rows}

    def jobs(self) -> list[Job]:
        """One job per prompt × seed, prompt-major (the order batches are cut from)."""
        return [
            Job(r.prompt.prompt, seed, extra={"prompt_id": r.prompt.prompt_id, "role": r.role, "kind": r.prompt.kind})
            for r in self.rows
            for seed in self.seeds
        ]

    def reduced(self, reduction: Reduction) -> "Plan":
        """The plan on :func:`reduce_rows`' sample of the prompts."""
        superclasses = {r.prompt.superclass for r in self.rows if r.role == "target" and r.prompt.kind == "single"}
        rows = reduce_rows(self.rows, superclasses, reduction)
        return replace(self, rows=tuple(rows), note=f"{len(rows)} of {len(self.rows)} prompts: {reduction.describe()}")

    def summary(self) -> dict:
        """JSON-ready description (plan.json, metrics.json, the report)."""
        kinds = {k: sum(r.prompt.kind == k for r in self.rows) for k in ("single", "pair")}
        roles = {k: sum(r.role == k for r in self.rows) for k in ("target", "retain")}
        return {
            "erased": list(self.erased),
            "prompts": len(self.rows),
            "kinds": kinds,
            "roles": roles,
            "seeds": list(self.seeds),
            "images_per_state": len(self.rows) * len(self.seeds),
            "settings": asdict(self.settings),
            "reduced": self.note,
            "prompt_ids": [r.prompt.prompt_id for r in self.rows],
        }
