"""Concept sets around an erased concept, and each concept's relation to it.

A concept is a phrase whose last word(s) name an object ("wooden bench") or
which names only attributes ("wooden"). Relative to an erased ``target``
class, a concept is one of :data:`RELATIONS`:

* ``target`` — the target itself; ``variant`` — the target with attributes
  ("wooden bench");
* ``superclass`` — the target's superclass ("furniture");
* ``sibling`` — another class of the same superclass ("chair");
  ``sibling variant`` — a sibling with attributes ("wooden chair");
* ``attribute`` — attribute words only ("wooden");
* ``unrelated`` — a class or superclass of another branch ("bird", "animal");
* ``other`` — anything the hierarchy does not know.

The hierarchy is the toy world's, extended by COCO's for nouns the toy world
does not have (where both know a noun, the toy world wins: "bench" is
furniture there, "outdoor" in COCO).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from attnscope.datasets import coco
from attnscope.datasets import toy_vocabulary as toy

RELATIONS = ("target", "variant", "superclass", "sibling", "sibling variant", "attribute", "unrelated", "other")
ATTRIBUTES = frozenset((*toy.SIZES, *toy.COLOURS, *toy.MATERIALS))


def default_hierarchy() -> dict[str, tuple[str, ...]]:
    """``{superclass: classes}``: COCO's, then the toy world's on top (members moved, not duplicated)."""
    toy_classes = set(toy.CLASSES)
    merged = {sup: tuple(c for c in members if c not in toy_classes) for sup, members in coco.HIERARCHY.items()}
    for sup, members in toy.HIERARCHY.items():
        merged[sup] = tuple(dict.fromkeys((*members, *merged.get(sup, ()))))
    return merged


def _noun(words: Sequence[str], nouns: set[str]) -> str | None:
    """The longest known noun the phrase ends with ("hot dog" before "dog")."""
    for start in range(len(words)):
        candidate = " ".join(words[start:])
        if candidate in nouns:
            return candidate
    return None


def relation(concept: str, target: str, hierarchy: Mapping[str, Sequence[str]] | None = None) -> str:
    """How ``concept`` relates to the erased class ``target`` (one of :data:`RELATIONS`)."""
    hierarchy = hierarchy or default_hierarchy()
    superclass_of = {c: sup for sup, members in hierarchy.items() for c in members}
    nouns = set(superclass_of) | set(hierarchy)
    words = concept.lower().split()
    noun = _noun(words, nouns)
    has_attributes = noun is not None and len(noun.split()) < len(words)
    if concept.lower() == target.lower():
        return "target"
    if noun is None:
        return "attribute" if words and all(w in ATTRIBUTES for w in words) else "other"
    if noun == target:
        return "variant"
    if noun == superclass_of.get(target):
        return "superclass"
    if superclass_of.get(noun) is not None and superclass_of.get(noun) == superclass_of.get(target):
        return "sibling variant" if has_attributes else "sibling"
    return "unrelated"


def toy_concepts(target: str) -> list[str]:
    """A concept set around a toy-world class: the target, its superclass and siblings,
    compositional variants of it (every material, two colours, both sizes) and of its siblings,
    attribute words alone, and every class of the other superclasses."""
    superclass = toy.SUPERCLASS_OF[target]
    siblings = [c for c in toy.HIERARCHY[superclass] if c != target]
    variants = [f"{m} {target}" for m in toy.MATERIALS] + [f"{c} {target}" for c in ("red", "blue")]
    variants += [f"{s} {target}" for s in toy.SIZES]
    sibling_variants = [f"wooden {s}" for s in siblings]
    attributes = ["wooden", "metal", "red", "small"]
    unrelated = [c for c in toy.CLASSES if toy.SUPERCLASS_OF[c] != superclass]
    return [target, superclass, *siblings, *variants, *sibling_variants, *attributes, *unrelated]
