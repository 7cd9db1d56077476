"""Choosing layers by name: the one rule of capture, erasure and the run-file reader.

A selection is ``"all"`` (or ``None``), or one or several of: exact layer
names, globs (``"up_blocks.*"``) and places (``"down"``, ``"mid"``, ``"up"``
in a UNet; ``"cross"``, ``"joint"``, ``"double"``, ``"single"`` in a
transformer). Any layer with ``name`` and ``place`` attributes can be chosen:
the modules of a pipeline (:mod:`attnscope.models.layers`) and the layers a
run file stores (:class:`~attnscope.store.schema.LayerSpec`), so
``capture(pipe, layers="up")`` and ``RunFile.heatmap(run, layers="up")`` mean
the same layers.
"""

from __future__ import annotations

import fnmatch
from typing import Sequence, TypeVar

from attnscope.errors import UserError

Layer = TypeVar("Layer")  # anything with ``name: str`` and ``place: str``


class NoSuchLayer(UserError, KeyError, ValueError):
    """A layer selection that matches none of the layers (a ``KeyError`` for readers, a
    ``ValueError`` for capture and erasure arguments)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def select_layers(layers: Sequence[Layer], pattern: str | Sequence[str] | None = "all", *,
                  known_as: str = "the model has") -> list[Layer]:
    """The ``layers`` chosen by ``pattern`` (see the module docstring), in their order.

    Raises :class:`NoSuchLayer`, listing the layers (``known_as`` says whose they are),
    when nothing matches.
    """
    patterns = ["all"] if pattern is None else [pattern] if isinstance(pattern, str) else list(pattern)
    if "all" in patterns:
        return list(layers)
    chosen = [
        layer for layer in layers
        if any(p == layer.place or fnmatch.fnmatchcase(layer.name, p) for p in patterns)
    ]
    if not chosen:
        known = "\n  ".join(layer.name for layer in layers)
        raise NoSuchLayer(f"no cross-attention layer matches {patterns}; {known_as}:\n  {known}")
    return chosen
