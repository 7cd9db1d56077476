"""The toy world's vocabulary: classes in a superclass hierarchy, sizes, colours, materials, and captions.

No rendering and no torch here (the renderer is :mod:`attnscope.datasets.toyworld`),
so the words, the ground-truth types and the caption grammar can be used
anywhere (the oracle, the SEE prompt set, the toy tokenizer)::

    caption_for([ToyObject("car", "red", "wooden", "small")], [("size", "colour", "class")])  # 'a small red car'
    parse_caption("a small red car and a bird")   # one dict per object
    word_objects("a small red car and a bird")    # [-1, 0, 0, 0, -1, -1, 1]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

HIERARCHY: dict[str, tuple[str, ...]] = {
    "vehicle": ("car", "bus", "bicycle"),
    "animal": ("bird", "cat", "dog"),
    "furniture": ("bench", "chair", "couch"),
    "food": ("pizza", "donut", "cake"),
}
CLASSES: tuple[str, ...] = tuple(c for members in HIERARCHY.values() for c in members)
SUPERCLASS_OF: dict[str, str] = {c: sup for sup, members in HIERARCHY.items() for c in members}
SIZES: tuple[str, ...] = ("small", "large")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.08, 0.08),
    "green": (0.10, 0.62, 0.16),
    "blue": (0.10, 0.24, 0.92),
    "yellow": (0.96, 0.84, 0.06),
    "purple": (0.56, 0.14, 0.76),
    "orange": (1.00, 0.50, 0.00),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
MATERIALS: tuple[str, ...] = ("wooden", "metal", "plastic")
ATTRIBUTES: tuple[str, ...] = ("size", "colour", "material")


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class ToyObject:
    """One object's ground truth: class name, colour, material and size words."""

    cls: str
    colour: str
    material: str
    size: str

    @property
    def superclass(self) -> str:
        return SUPERCLASS_OF[self.cls]


@dataclass(frozen=True)
class Scene:
    """A scene: its objects, their layout, and the caption describing them.

    ``positions[i] = (cx, cy, s, flip)``: centre in pixels, half-size ``s`` in
    pixels (the object fits in the box ``cx ± s, cy ± s``), and whether it is
    mirrored left-right. ``named[i]`` lists what the caption says about object
    ``i``: ``"class"`` or ``"superclass"`` (which noun it uses) plus any of
    ``"size"``, ``"colour"``, ``"material"``.
    """

    objects: tuple[ToyObject, ...]
    positions: tuple[tuple[float, float, float, bool], ...]
    caption: str
    named: tuple[tuple[str, ...], ...]


# --------------------------------------------------------------------------- captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption_for(objects: Sequence[ToyObject], named: Sequence[Sequence[str]]) -> str:
    """The caption naming, for each object, the fields listed in ``named``.

    >>> caption_for([ToyObject("car", "red", "wooden", "small")], [("size", "colour", "class")])
    'a small red car'
    """
    phrases = []
    for obj, fields in zip(objects, named):
        words = [getattr(obj, a) for a in ATTRIBUTES if a in fields]
        words.append(obj.superclass if "superclass" in fields else obj.cls)
        phrases.append(f"{_article(words[0])} {' '.join(words)}")
    return " and ".join(phrases)


_WORD_KIND: dict[str, str] = {
    **{w: "size" for w in SIZES},
    **{w: "colour" for w in COLOURS},
    **{w: "material" for w in MATERIALS},
    **{w: "cls" for w in CLASSES},
    **{w: "superclass" for w in HIERARCHY},
}


def parse_caption(caption: str) -> list[dict[str, str]]:
    """Parse a toy-world caption into one dict per object.

    Each dict has ``"noun"`` (the word used) and ``"superclass"``; ``"cls"``
    when the noun is a class (not a superclass word); and ``"size"``,
    ``"colour"``, ``"material"`` for the attributes named before the noun.
    Objects are separated by "and"; unknown words ("a", "picture", ...) are
    ignored and a phrase without a noun yields nothing.

    >>> parse_caption("a small red car and a bird")
    [{'size': 'small', 'colour': 'red', 'noun': 'car', 'cls': 'car', 'superclass': 'vehicle'}, \
{'noun': 'bird', 'cls': 'bird', 'superclass': 'animal'}]
    """
    objects = []
    for phrase in caption.lower().replace(",", " ").replace(".", " ").split(" and "):
        attrs: dict[str, str] = {}
        for word in phrase.split():
            kind = _WORD_KIND.get(word)
            if kind in ATTRIBUTES:
                attrs[kind] = word
            elif kind == "cls":
                objects.append({**attrs, "noun": word, "cls": word, "superclass": SUPERCLASS_OF[word]})
                attrs = {}
            elif kind == "superclass":
                objects.append({**attrs, "noun": word, "superclass": word})
                attrs = {}
    return objects


def word_kind(word: str) -> str | None:
    """What a vocabulary word names: ``"size"``, ``"colour"``, ``"material"``, ``"cls"``,
    ``"superclass"``, or None for other words ("a", "and", ...)."""
    return _WORD_KIND.get(word.lower())


def word_objects(caption: str) -> list[int]:
    """For each whitespace word of ``caption``, the index of the object it describes.

    Nouns and attribute words get their phrase's object index (phrases are
    separated by "and"); every other word ("a", "and", ...) gets -1.

    >>> word_objects("a small red car and a bird")
    [-1, 0, 0, 0, -1, -1, 1]
    """
    out, obj = [], 0
    for word in caption.lower().split():
        if word == "and":
            obj += 1
        out.append(obj if word in _WORD_KIND else -1)
    return out

