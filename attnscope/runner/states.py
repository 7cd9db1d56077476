"""The model states a benchmark compares: the base model and one edit per erasure method.

Edits are computed once (on rank 0) and saved beside the results as
``{method}-{concepts}.edit``; a re-run recomputes the edit and checks that it
matches the saved one, so resumed runs keep sampling the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from attnscope.erasure.edit import Edit
from attnscope.erasure.methods import METHODS
from attnscope.runner.shard import Shard


@dataclass(frozen=True)
class State:
    """A model to sample: the base (``edit is None``) or the base with ``edit`` applied in place.

    ``name`` is the stem of its files (``base.h5``, ``uce-bench.answers.csv``);
    ``method`` is the records' ``method`` column.
    """

    name: str
    method: str
    edit: Edit | None = None


BASE = State("base", "base")


def _eraser(method: str, epochs: int) -> Callable[[object, Sequence[str]], Edit]:
    from attnscope.erasure import erase_rece, erase_uce

    # Keys from the concept's last word token through EOS and padding: on the toy model the
    # last-word-token choice leaves "bird" fully present (benchmarks/results/erasure.md).
    tokens = "eos-aligned"
    progressive = method.endswith("-progressive")
    name = method.removesuffix("-progressive")
    if name == "uce":
        return lambda pipe, concepts: erase_uce(pipe, concepts, progressive=progressive, token_choice=tokens)
    if name == "rece":
        return lambda pipe, concepts: erase_rece(
            pipe, concepts, epochs=epochs, progressive=progressive, token_choice=tokens
        )
    raise ValueError(f"unknown erasure method {method!r}; choose from {', '.join(METHODS)}")



def state_name(method: str, concepts: Sequence[str]) -> str:
    """``uce-bench``, ``rece-bird+car``, ``uce-small_blue_couch``."""
    return f"{method}-" + "+".join(c.replace(" ", "_") for c in concepts)


def _same_tensors(a: Edit, b: Edit) -> bool:
    return a.tensors.keys() == b.tensors.keys() and all(
        torch.allclose(a.tensors[n].float().cpu(), b.tensors[n].float().cpu(), rtol=1e-3, atol=1e-5) for n in a.tensors
    )


def edited_states(
    pipe,
    methods: Sequence[str],
    concepts: Sequence[str],
    folder: Path,
    *,
    epochs: int = 3,
    shard: Shard = Shard(),
) -> list[State]:
    """One :class:`State` per method, its edit computed by rank 0 and saved as ``folder/{name}.edit``.

    An existing edit file is reused when the recomputed edit matches it
    (otherwise the folder belongs to another setting: ``ValueError``).
    Every rank returns the edits loaded from the files.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = [state_name(m, concepts) for m in methods]
    if shard.is_main:
        for method, name in zip(methods, names):
            edit = _eraser(method, epochs)(pipe, list(concepts))
            path = folder / f"{name}.edit"
            if path.exists() and not _same_tensors(edit, Edit.load(path)):
                raise ValueError(f"{path} holds another edit than {method} of {list(concepts)} now gives "
                                 "(other hyper-parameters or model?): use another output folder")
            if not path.exists():
                edit.save(path)
    shard.barrier()
    return [State(name, method, Edit.load(folder / f"{name}.edit")) for method, name in zip(methods, names)]


def ablation_states(pipe, states: Sequence[State], kind: str) -> list[State]:
    """One state per part of each edited state's edit (:func:`~attnscope.erasure.subsets.edit_subsets`).

    Names and methods get ``@{part}`` (``uce-bench@up``, method ``uce@up``),
    the records' convention of :mod:`attnscope.analyses.ablation`.
    """
    from attnscope.analyses.ablation import part_method
    from attnscope.erasure.subsets import edit_subsets

    return [
        State(part_method(state.name, part.label), part_method(state.method, part.label), part.edit)
        for state in states if state.edit is not None
        for part in edit_subsets(state.edit, kind, pipe)
    ]
