"""Side-effect metrics of concept erasure (SEE-style), as tables with bootstrap intervals.

Input: long-format *records*, one per judged yes/no question about one
generated image. A record is a SEE prompt row with its split columns
(:meth:`attnscope.datasets.see.SplitRow.to_row`) merged with the question's
row (:meth:`~attnscope.datasets.see.Question.to_row`) and four run columns:

==================  ========  ==================================================
key                 type      meaning
==================  ========  ==================================================
``method``          str       the model that made the image: ``"base"`` for the
                              unedited model, else the edit's name (``"uce"``,
                              ``"rece"``, ``"uce-progressive"``, ...)
``erased``          str       the erased concept whose split the row belongs to;
                              base-model rows are repeated once per erased
                              concept, with that split's columns
``prompt_id``       str       the prompt — the bootstrap's resampling unit
``seed``            int       the sampling seed (several per prompt)
``judged_yes``      bool      the judge's answer
``check``           str       ``"presence"``, ``"attribute"`` or ``"leakage"``
``subject``         str       the object the question is about
``object``          str       the prompt's (first) object, carrying the attributes
``role``            str       ``"target"`` / ``"retain"``: is ``object`` covered
                              by the erased concept
``other_object``    str       a pair prompt's second object (``""`` for singles)
``other_role``      str       its role (``""`` for singles)
``relation``        str       for targets: ``"concept"``, ``"subclass"`` or
                              ``"variant"`` (evasion table only)
``evasion``         bool      a subclass or variant of an erased superclass
                              (evasion table only)
``attr_distance``   int       optional grouping columns for retain curves, about
``text_similarity`` float     ``object``; bin floats with :func:`bin_by`
==================  ========  ==================================================

A question's *subject role* is ``role`` when it asks about ``object`` and
``other_role`` when it asks about ``other_object``. Metrics (each a fraction
of "yes" answers, pooled over images):

* **target accuracy** — presence questions whose subject role is target
  (the concept, its subclasses and compositional variants; lower is better);
* **evasion** — presence questions about ``object`` where ``evasion`` is
  true, one row per ``relation`` (subclass, variant);
* **retain accuracy** — presence questions whose subject role is retain;
  grouped by a distance column it uses questions about ``object`` only,
  since the distances describe ``object``;
* **attribute leakage** — leakage questions ("is the bird wooden?") in pair
  prompts whose ``object`` is a target and whose ``other_object`` is retained.

Every table row holds ``method``, ``erased`` (plus any grouping column),
``n_prompts``, ``n_answers``, ``estimate``, ``low``, ``high`` (95 % cluster
bootstrap over prompts, seeds nested) and, for edited methods when base rows
exist, ``delta``, ``delta_low``, ``delta_high``: method − base on the same
prompts, from a paired bootstrap. Tables are lists of dicts;
:func:`attnscope.store.tables.write_table` writes them (CSV, Parquet) and
:func:`to_markdown` formats them.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

from attnscope.analyses.stats import cluster_bootstrap_ci, paired_cluster_bootstrap

Record = Mapping[str, Any]
Row = dict[str, Any]

CHECKS = ("presence", "attribute", "leakage")
ROLES = ("target", "retain")
REQUIRED = ("method", "erased", "prompt_id", "seed", "judged_yes", "check", "subject", "object", "role")


def _truthy(value: Any) -> bool:
    """Booleans as written by Python or read back from CSV ("True", "1", "yes")."""
    return value.strip().lower() in ("1", "true", "yes") if isinstance(value, str) else bool(value)


def subject_role(record: Record) -> str:
    """Role of the object a question asks about: ``role`` for ``object``, else ``other_role``."""
    return record["role"] if record["subject"] == record["object"] else record.get("other_role", "")


def _check(records: Sequence[Record]) -> None:
    for i, r in enumerate(records):
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            raise ValueError(f"record {i} lacks {missing}: {dict(r)}")
        if r["check"] not in CHECKS:
            raise ValueError(f"record {i}: check {r['check']!r} is not one of {CHECKS}")
        if r["role"] not in ROLES:
            raise ValueError(f"record {i}: role {r['role']!r} is not one of {ROLES}")


def accuracy_table(
    records: Sequence[Record],
    select: Callable[[Record], bool],
    *,
    by: Sequence[str] = (),
    base: str = "base",
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> list[Row]:
    """Fraction of yes answers per (method, erased, *by) among the records ``select`` keeps.

    The building block of the named metrics below; see the module docstring
    for the row layout.
    """
    _check(records)
    groups: dict[tuple, list[Record]] = {}
    for r in records:
        if select(r):
            key = (r["method"], r["erased"], *(r.get(c) for c in by))
            groups.setdefault(key, []).append(r)

    def answers(rows: list[Record]) -> tuple[list[float], list[Any]]:
        return [float(_truthy(r["judged_yes"])) for r in rows], [r["prompt_id"] for r in rows]

    table = []
    for key in sorted(groups, key=lambda k: tuple(map(str, k))):
        values, prompts = answers(groups[key])
        ci = cluster_bootstrap_ci(values, prompts, level=level, n_resamples=n_resamples, seed=seed)
        row: Row = dict(zip(("method", "erased", *by), key))
        row.update(n_prompts=ci.n, n_answers=len(values), estimate=ci.estimate, low=ci.low, high=ci.high)
        base_key = (base, *key[1:])
        if key[0] != base and base_key in groups:
            paired = paired_cluster_bootstrap(
                *answers(groups[base_key]), values, prompts, level=level, n_resamples=n_resamples, seed=seed
            )
            d = paired.difference
            row.update(delta=d.estimate, delta_low=d.low, delta_high=d.high)
        table.append(row)
    return table


def target_accuracy(records: Sequence[Record], **options: Any) -> list[Row]:
    """How often the judge still finds an erased concept (itself, subclasses, variants)."""
    return accuracy_table(records, lambda r: r["check"] == "presence" and subject_role(r) == "target", **options)


def evasion(records: Sequence[Record], **options: Any) -> list[Row]:
    """Target accuracy on subclasses and variants of an erased superclass, one row per ``relation``."""

    def select(r: Record) -> bool:
        return r["check"] == "presence" and r["subject"] == r["object"] and _truthy(r.get("evasion", False))

    return accuracy_table(records, select, by=("relation",), **options)


def retain_accuracy(records: Sequence[Record], by: str | None = None, **options: Any) -> list[Row]:
    """How often concepts that should survive are still found.

    ``by`` names a distance column of ``object`` (``"attr_distance"``, or a
    bin label from :func:`bin_by`); rows are then grouped by it, and only
    questions about ``object`` count.
    """

    def select(r: Record) -> bool:
        keep = r["check"] == "presence" and subject_role(r) == "retain"
        return keep and (by is None or (r["subject"] == r["object"] and r.get(by) not in (None, "")))

    return accuracy_table(records, select, by=(by,) if by else (), **options)


def attribute_leakage(records: Sequence[Record], **options: Any) -> list[Row]:
    """How often a retained object is judged to carry the erased object's attribute."""

    def select(r: Record) -> bool:
        return r["check"] == "leakage" and r["role"] == "target" and r.get("other_role") == "retain"

    return accuracy_table(records, select, **options)


def side_effect_tables(records: Sequence[Record], by: str | None = None, **options: Any) -> dict[str, list[Row]]:
    """All metrics at once: ``{"target", "evasion", "retain", "leakage"}``, plus
    ``"retain_by_distance"`` grouped by column ``by`` when given."""
    tables = {
        "target": target_accuracy(records, **options),
        "evasion": evasion(records, **options),
        "retain": retain_accuracy(records, **options),
        "leakage": attribute_leakage(records, **options),
    }
    if by is not None:
        tables["retain_by_distance"] = retain_accuracy(records, by=by, **options)
    return tables


# --------------------------------------------------------------------------- helpers


def bin_by(
    records: Sequence[Record], edges: Sequence[float], column: str = "text_similarity", into: str = "similarity_bin"
) -> list[Row]:
    """Copies of ``records`` with ``into`` set to the label of ``column``'s bin.

    Bins are ``[edges[i], edges[i+1])`` (the last one closed), labelled
    ``"0.20-0.40"``; values outside the edges or missing get ``None``.
    """
    labels = [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(edges[:-1], edges[1:])]
    out = []
    for r in records:
        x = r.get(column)
        label = None
        if x is not None and not (isinstance(x, float) and math.isnan(x)):
            for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
                if lo <= x < hi or (i == len(labels) - 1 and x == hi):
                    label = labels[i]
                    break
        out.append({**r, into: label})
    return out


def to_markdown(rows: Sequence[Row], group: Sequence[str] = ("method", "erased")) -> str:
    """A Markdown table: the ``group`` columns, n, ``estimate [low, high]`` and the delta vs base if present."""
    has_delta = any("delta" in r for r in rows)
    header = [*group, "prompts", "answers", "rate [95% CI]"] + (["Δ vs base [95% CI]"] if has_delta else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [str(r.get(c, "")) for c in group]
        cells += [str(r["n_prompts"]), str(r["n_answers"]), f"{r['estimate']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"]
        if has_delta:
            cells.append(f"{r['delta']:+.3f} [{r['delta_low']:+.3f}, {r['delta_high']:+.3f}]" if "delta" in r else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
