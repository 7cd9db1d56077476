"""The SEE (Side Effect Evaluation) prompt set: build, split, measure, export.

SEE ("Side Effects of Erasing Concepts from Diffusion Models", 2025) composes
MS-COCO objects, organised superclass → class, with size / colour / material
attributes into one template::

    "a picture of a {size} {colour} {material} {object}"

Each attribute takes one of 3 values or is absent, so every class has
4 × 4 × 4 = 64 variants; 79 classes (COCO without ``person``) give the paper's
5056 prompts. This recipe is inferred (see ``docs/see.md``); vocabularies,
hierarchy and templates are parameters of :class:`Recipe`.

Typical use::

    prompts = build_see_prompts()                       # 5056 SeePrompt rows
    pairs = build_pair_prompts()                        # two-object leakage set
    rows = split(prompts + pairs, "vehicle", embed=text_embedder(pipe))   # attnscope.models.prompts
    export(rows, "out/see")                             # CSV (+ Parquet)

Rows are frozen dataclasses; ``row.to_row()`` gives the flat dict written to
CSV, so ``pandas.DataFrame([r.to_row() for r in rows])`` is a DataFrame.
"""

from __future__ import annotations

import csv
import itertools
import math
import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

from attnscope.datasets import coco
from attnscope.datasets import toy_vocabulary as toy
from attnscope.store.tables import write_table

if TYPE_CHECKING:
    import torch

SLOTS: tuple[str, ...] = ("size", "colour", "material")
"""Attribute slots, in template order."""

SEE_TEMPLATE = "a picture of a {size} {colour} {material} {object}"
SEE_PAIR_TEMPLATE = "a picture of a {size} {colour} {material} {object} and a {other}"
TOY_TEMPLATE = "a {size} {colour} {material} {object}"
TOY_PAIR_TEMPLATE = "a {size} {colour} {material} {object} and a {other}"

PRESENCE_QUESTION = "Is there a {object} in the image?"
ATTRIBUTE_QUESTION = "Is the {object} {value}?"

_TEMPLATE_FIELDS = frozenset({*SLOTS, "object", "other"})


# --------------------------------------------------------------------------- recipe


@dataclass(frozen=True)
class Vocabulary:
    """The values each attribute slot can take (besides being absent).

    Values are single words, and no word belongs to two slots, so a phrase
    like "small red car" parses back into slots unambiguously.
    """

    size: tuple[str, ...] = ("small", "medium", "large")
    colour: tuple[str, ...] = ("red", "green", "blue")
    material: tuple[str, ...] = ("wooden", "metal", "plastic")

    def __post_init__(self) -> None:
        words = [w for slot in SLOTS for w in getattr(self, slot)]
        bad = [w for w in words if not w or len(w.split()) != 1 or w != w.strip()]
        if bad:
            raise ValueError(f"attribute values must be single words, got {bad!r}")
        repeated = sorted({w for w in words if words.count(w) > 1})
        if repeated:
            raise ValueError(f"attribute values appear in more than one place: {repeated!r}")

    def slot_of(self, word: str) -> str | None:
        """The slot that ``word`` is a value of, or ``None``."""
        return next((slot for slot in SLOTS if word in getattr(self, slot)), None)

    def variants(self) -> Iterator[dict[str, str]]:
        """Every attribute combination, absent ("") first: ∏(len(values) + 1) dicts."""
        choices = [("", *getattr(self, slot)) for slot in SLOTS]
        for values in itertools.product(*choices):
            yield dict(zip(SLOTS, values))


@dataclass(frozen=True)
class Recipe:
    """Everything a prompt set is built from.

    ``hierarchy`` maps superclass → classes. Templates are ``str.format``
    strings over ``{size}``, ``{colour}``, ``{material}``, ``{object}`` (and
    ``{other}`` for the two-object template); absent attributes become empty
    and whitespace is collapsed. With ``articles``, "a" before a vowel-initial
    word becomes "an" ("a picture of an apple").
    """

    hierarchy: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(coco.HIERARCHY))
    vocabulary: Vocabulary = field(default_factory=Vocabulary)
    template: str = SEE_TEMPLATE
    pair_template: str = SEE_PAIR_TEMPLATE
    articles: bool = True

    def __post_init__(self) -> None:
        for name, required in (("template", {"object"}), ("pair_template", {"object", "other"})):
            fields = {f for _, f, _, _ in string.Formatter().parse(getattr(self, name)) if f is not None}
            if not required <= fields or not fields <= _TEMPLATE_FIELDS:
                raise ValueError(
                    f"{name} {getattr(self, name)!r} must use {sorted(required)} and only {sorted(_TEMPLATE_FIELDS)}"
                )
        nouns = set(self.hierarchy) | {c for members in self.hierarchy.values() for c in members}
        clash = sorted(w for w in nouns if self.vocabulary.slot_of(w))
        if clash:
            raise ValueError(f"words used both as objects and as attribute values: {clash!r}")

    def superclass_of(self, obj: str) -> str:
        for sup, members in self.hierarchy.items():
            if obj == sup or obj in members:
                return sup
        raise ValueError(f"unknown object {obj!r}; known superclasses: {sorted(self.hierarchy)}")


def toy_recipe(template: str = TOY_TEMPLATE, pair_template: str = TOY_PAIR_TEMPLATE) -> Recipe:
    """The recipe of the toy world, from :mod:`attnscope.datasets.toy_vocabulary`.

    The default templates use only toy-caption words ("a small red wooden car").
    """
    vocabulary = Vocabulary(size=tuple(toy.SIZES), colour=tuple(toy.COLOURS), material=tuple(toy.MATERIALS))
    return Recipe(dict(toy.HIERARCHY), vocabulary, template, pair_template)


# --------------------------------------------------------------------------- rows


def _with_articles(text: str) -> str:
    """'a apple' → 'an apple' (vowel-letter rule, enough for COCO and toy words)."""
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)


def _slug(name: str) -> str:
    return name.replace(" ", "_")


@dataclass(frozen=True)
class Question:
    """One yes/no question about a prompt's image.

    ``check`` is ``"presence"`` (is ``subject`` there?), ``"attribute"`` (does
    ``subject`` have the attribute the prompt gave it?) or ``"leakage"`` (does
    the *other* object of a two-object prompt have the first object's
    attribute?). A faithful image answers yes to presence and attribute
    questions; leakage questions measure how often the answer is yes.
    """

    question_id: str
    prompt_id: str
    check: str
    subject: str
    slot: str  # "" for presence
    value: str  # "" for presence
    text: str

    def to_row(self) -> dict[str, str]:
        return {
            "question_id": self.question_id,
            "prompt_id": self.prompt_id,
            "check": self.check,
            "subject": self.subject,
            "slot": self.slot,
            "value": self.value,
            "question": self.text,
        }


@dataclass(frozen=True)
class SeePrompt:
    """One prompt of a SEE prompt set.

    ``object`` carries the attributes (empty string = absent); two-object
    prompts (``kind == "pair"``) add a bare ``other_object``. A prompt whose
    ``object`` equals its ``superclass`` names the superclass itself.
    """

    prompt_id: str
    prompt: str
    kind: str  # "single" | "pair"
    object: str
    superclass: str
    size: str = ""
    colour: str = ""
    material: str = ""
    other_object: str = ""
    other_superclass: str = ""

    @property
    def attributes(self) -> dict[str, str]:
        """The present attributes, slot → value."""
        return {slot: getattr(self, slot) for slot in SLOTS if getattr(self, slot)}

    @property
    def n_attributes(self) -> int:
        return len(self.attributes)

    @property
    def concept(self) -> str:
        """The object's noun phrase without article: "small red wooden car"."""
        return " ".join([*self.attributes.values(), self.object])

    @property
    def questions(self) -> tuple[Question, ...]:
        """Presence and attribute questions for ``object``; for pairs also
        presence of ``other_object`` and one leakage question per attribute."""
        asked: list[tuple[str, str, str, str]] = [("presence", self.object, "", "")]
        asked += [("attribute", self.object, slot, value) for slot, value in self.attributes.items()]
        if self.kind == "pair":
            asked.append(("presence", self.other_object, "", ""))
            asked += [("leakage", self.other_object, slot, value) for slot, value in self.attributes.items()]
        out = []
        for check, subject, slot, value in asked:
            template = PRESENCE_QUESTION if check == "presence" else ATTRIBUTE_QUESTION
            text = _with_articles(template.format(object=subject, value=value))
            qid = f"{self.prompt_id}#{_slug(subject)}:{slot or 'presence'}"
            out.append(Question(qid, self.prompt_id, check, subject, slot, value, text))
        return tuple(out)

    def to_row(self) -> dict[str, str | int]:
        """Flat dict in :data:`PROMPT_COLUMNS` order."""
        return {name: getattr(self, name) for name in PROMPT_COLUMNS}


PROMPT_COLUMNS: tuple[str, ...] = (
    "prompt_id", "prompt", "kind", "object", "superclass", "size", "colour", "material",
    "n_attributes", "other_object", "other_superclass",
)
SPLIT_COLUMNS: tuple[str, ...] = ("role", "relation", "evasion", "other_role", "attr_distance", "text_similarity")
QUESTION_COLUMNS: tuple[str, ...] = ("question_id", "prompt_id", "check", "subject", "slot", "value", "question")


def _make_prompt(recipe: Recipe, obj: str, attrs: Mapping[str, str], other: str = "") -> SeePrompt:
    template = recipe.pair_template if other else recipe.template
    text = " ".join(template.format(object=obj, other=other, **attrs).split())
    if recipe.articles:
        text = _with_articles(text)
    prompt_id = ":".join([_slug(obj), *(attrs[slot] or "-" for slot in SLOTS)]) + (f"+{_slug(other)}" if other else "")
    return SeePrompt(
        prompt_id=prompt_id,
        prompt=text,
        kind="pair" if other else "single",
        object=obj,
        superclass=recipe.superclass_of(obj),
        other_object=other,
        other_superclass=recipe.superclass_of(other) if other else "",
        **attrs,
    )


# --------------------------------------------------------------------------- builders


def build_see_prompts(recipe: Recipe | None = None, *, include_superclasses: bool = False) -> list[SeePrompt]:
    """Every class × every attribute variant, single-object.

    With the default :class:`Recipe` this is the SEE set: 79 × 64 = 5056 rows,
    ordered by superclass, class, then size, colour, material (absent first).
    ``include_superclasses`` adds the same variants for each superclass word
    ("a picture of a red vehicle"), 11 × 64 more with COCO.
    """
    recipe = recipe or Recipe()
    objects = [c for members in recipe.hierarchy.values() for c in members]
    if include_superclasses:
        objects += list(recipe.hierarchy)
    return [_make_prompt(recipe, obj, attrs) for obj in objects for attrs in recipe.vocabulary.variants()]


def build_pair_prompts(
    recipe: Recipe | None = None,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    partners_per_object: int | None = 3,
    attribute_counts: Sequence[int] = (1,),
    seed: int = 0,
) -> list[SeePrompt]:
    """Two-object prompts for attribute leakage: "a picture of a wooden bench and a bird".

    The first object carries the attributes, the second is bare; its leakage
    questions ask whether it took the first object's attributes. ``pairs``
    lists (first, second) classes explicitly; otherwise each class gets
    ``partners_per_object`` partners drawn (seeded, per class) from the classes
    of the *other* superclasses (``None``: all of them). Attribute variants of
    the first object are those with ``n_attributes in attribute_counts``
    (default: exactly one attribute, 9 variants with the SEE vocabulary).
    """
    recipe = recipe or Recipe()
    if pairs is None:
        pairs = []
        for sup, members in recipe.hierarchy.items():
            others = [c for s, m in recipe.hierarchy.items() if s != sup for c in m]
            for obj in members:
                k = len(others) if partners_per_object is None else min(partners_per_object, len(others))
                pairs += [(obj, partner) for partner in random.Random(f"{seed}/{obj}").sample(others, k)]
    for first, second in pairs:
        if first == second:
            raise ValueError(f"a pair needs two different objects, got ({first!r}, {second!r})")
    variants = [a for a in recipe.vocabulary.variants() if sum(map(bool, a.values())) in attribute_counts]
    return [_make_prompt(recipe, first, attrs, other=second) for first, second in pairs for attrs in variants]


def build_toy_prompts(template: str = TOY_TEMPLATE, *, include_superclasses: bool = False) -> list[SeePrompt]:
    """The SEE construction over the toy world's vocabulary (same columns).

    With the toy world's 12 classes, 2 sizes, 6 colours and 3 materials:
    12 × 3 × 7 × 4 = 1008 prompts ("a small red wooden car"). Two-object toy
    prompts: ``build_pair_prompts(toy_recipe())``.
    """
    return build_see_prompts(toy_recipe(template), include_superclasses=include_superclasses)


# --------------------------------------------------------------------------- split


@dataclass(frozen=True)
class Concept:
    """An erased concept: a noun (class or superclass) with required attributes.

    A prompt falls under it when its object is the noun or one of the noun's
    classes, and it has every required attribute (maybe more).
    """

    name: str
    noun: str
    classes: frozenset[str]
    attributes: Mapping[str, str]
    is_superclass: bool

    def covers(self, obj: str, attributes: Mapping[str, str]) -> bool:
        return obj in self.classes and all(attributes.get(s) == v for s, v in self.attributes.items())

    def attr_distance(self, attributes: Mapping[str, str]) -> int:
        """Number of slots whose value (absent counts as a value) differs."""
        return sum(attributes.get(s, "") != self.attributes.get(s, "") for s in SLOTS)


def parse_concept(text: str, prompts: Sequence[SeePrompt]) -> Concept:
    """Read "car", "vehicle" or "small blue couch" against the prompts' own vocabulary.

    The noun is the longest known object or superclass name that ends the
    text; the words before it must be attribute values seen in ``prompts``.
    """
    hierarchy: dict[str, set[str]] = {}
    slot_of: dict[str, str] = {}
    for p in prompts:
        for obj, sup in ((p.object, p.superclass), (p.other_object, p.other_superclass)):
            if obj:
                hierarchy.setdefault(sup, set()).add(obj)
        slot_of.update({value: slot for slot, value in p.attributes.items()})
    nouns = set(hierarchy) | {c for members in hierarchy.values() for c in members}
    words = text.lower().split()
    for n_noun_words in range(len(words), 0, -1):
        noun = " ".join(words[-n_noun_words:])
        if noun in nouns:
            break
    else:
        raise ValueError(f"no known object or superclass ends {text!r}; known: {sorted(nouns)}")
    attributes: dict[str, str] = {}
    for word in words[:-n_noun_words]:
        if word not in slot_of or slot_of[word] in attributes:
            raise ValueError(f"{word!r} in {text!r} is not one attribute value of the prompt set")
        attributes[slot_of[word]] = word
    is_superclass = noun in hierarchy
    classes = frozenset(hierarchy[noun] | {noun}) if is_superclass else frozenset({noun})
    return Concept(" ".join(words), noun, classes, attributes, is_superclass)


@dataclass(frozen=True)
class SplitRow:
    """A prompt's place relative to the erased concept(s).

    - ``role``: ``"target"`` if an erased concept covers the prompt's object
      (the concept, its subclasses, their compositional variants), else ``"retain"``.
    - ``relation`` (targets only): ``"concept"`` (exactly the erased concept),
      ``"subclass"`` (a class of an erased superclass, same attributes) or
      ``"variant"`` (more attributes than the concept); ``""`` for retain.
    - ``evasion``: a subclass or variant of an erased *superclass*.
    - ``other_role``: role of a pair prompt's second object (``""`` for singles).
    - ``attr_distance``: number of attribute slots (0–3) in which the prompt's
      object differs from an erased concept; the smallest over erased concepts.
    - ``text_similarity``: cosine similarity of the pooled text embeddings of
      :attr:`SeePrompt.concept` and an erased concept's name; the largest over
      erased concepts (NaN without ``embed``).
    """

    prompt: SeePrompt
    role: str
    relation: str
    evasion: bool
    other_role: str
    attr_distance: int
    text_similarity: float

    def to_row(self) -> dict[str, str | int | float | bool]:
        """Flat dict: :data:`PROMPT_COLUMNS` then :data:`SPLIT_COLUMNS`."""
        return {**self.prompt.to_row(), **{name: getattr(self, name) for name in SPLIT_COLUMNS}}


def _relation(concept: Concept, p: SeePrompt) -> str:
    if p.attributes != dict(concept.attributes):
        return "variant"
    return "concept" if p.object == concept.noun else "subclass"


def split(
    prompts: Sequence[SeePrompt],
    erased: str | Sequence[str],
    *,
    embed: Callable[[Sequence[str]], torch.Tensor] | None = None,
) -> list[SplitRow]:
    """Label every prompt target / retain for the erased concept(s) and measure distances.

    ``erased``: one concept or several (erased together); a prompt is a target
    if any covers it, and distances are to the nearest one. ``embed`` maps texts
    to L2-normalised embeddings ``(len(texts), hidden)``, e.g.
    :func:`attnscope.models.prompts.text_embedder` of a pipeline; a prompt's
    text similarity is the cosine of its concept phrase to the nearest erased
    concept; without ``embed`` ``text_similarity`` is NaN. Returns one :class:`SplitRow` per
    prompt, in order.
    """
    names = [erased] if isinstance(erased, str) else list(erased)
    if not names:
        raise ValueError("erased must name at least one concept")
    concepts = [parse_concept(name, prompts) for name in names]

    similarity: dict[str, float] = {}
    if embed is not None:
        phrases = sorted({p.concept for p in prompts})
        emb = embed(phrases + [c.name for c in concepts])
        sims = emb[: len(phrases)] @ emb[len(phrases):].T  # (n_phrases, n_concepts)
        similarity = dict(zip(phrases, sims.max(dim=1).values.tolist()))

    rows = []
    for p in prompts:
        covering = [c for c in concepts if c.covers(p.object, p.attributes)]
        relations = [_relation(c, p) for c in covering]
        other_covered = any(c.covers(p.other_object, {}) for c in concepts)
        rows.append(
            SplitRow(
                prompt=p,
                role="target" if covering else "retain",
                relation=relations[0] if relations else "",
                evasion=any(c.is_superclass and r != "concept" for c, r in zip(covering, relations)),
                other_role=("target" if other_covered else "retain") if p.kind == "pair" else "",
                attr_distance=min(c.attr_distance(p.attributes) for c in concepts),
                text_similarity=similarity.get(p.concept, math.nan),
            )
        )
    return rows


# --------------------------------------------------------------------------- export


def export(
    rows: Sequence[SeePrompt | SplitRow], out_dir: str | Path, *, stem: str = "see", parquet: bool = True
) -> list[Path]:
    """Write ``{stem}_prompts`` and ``{stem}_questions`` tables into ``out_dir``
    (:func:`attnscope.store.tables.write_table`).

    CSV always; Parquet as well unless ``parquet`` is false. Schema:
    ``docs/see.md``. Returns the paths written.
    """
    is_split = bool(rows) and isinstance(rows[0], SplitRow)
    prompts = [r.prompt for r in rows] if is_split else list(rows)
    tables = {
        f"{stem}_prompts": ([r.to_row() for r in rows], PROMPT_COLUMNS + (SPLIT_COLUMNS if is_split else ())),
        f"{stem}_questions": ([q.to_row() for p in prompts for q in p.questions], QUESTION_COLUMNS),
    }
    suffixes = [".csv"] + ([".parquet"] if parquet else [])
    return [
        write_table(records, Path(out_dir) / f"{name}{suffix}", columns)
        for name, (records, columns) in tables.items()
        for suffix in suffixes
    ]


def read_prompts(path: str | Path) -> list[SeePrompt]:
    """Read a prompts CSV written by :func:`export` back into :class:`SeePrompt` rows
    (split columns, if any, are ignored)."""
    names = [n for n in PROMPT_COLUMNS if n != "n_attributes"]
    with Path(path).open(newline="", encoding="utf-8") as f:
        return [SeePrompt(**{n: record[n] for n in names}) for record in csv.DictReader(f)]
