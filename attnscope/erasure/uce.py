"""UCE: Unified Concept Editing (Gandikota et al., WACV 2024), closed form.

For every cross-attention key/value matrix ``W0`` (``(out, d)``), UCE solves

    min_W  λ‖W − W0‖² + η_e Σ_i ‖W c_i − v*_i‖² + η_p Σ_j ‖W c_j − W0 c_j‖²

with erased rows ``c_i``, targets ``v*_i = W0 g_i`` (``g_i`` the paired guide
row, by default from the empty prompt) and preserved rows ``c_j``:

    W = (λ W0 + η_e Σ v*_i c_iᵀ + η_p Σ W0 c_j c_jᵀ) (λI + η_e Σ c_i c_iᵀ + η_p Σ c_j c_jᵀ)⁻¹.

Because every target is ``W0`` times a text row, the numerator is ``W0 R``
with ``R = λI + η_e Σ g_i c_iᵀ + η_p Σ c_j c_jᵀ``, so the edit of *every*
layer is the same right-multiplication ``W = W0 M`` with the ``(d, d)``
matrix ``M = R A⁻¹`` (``A`` the bracket on the right). attnscope computes
``M`` once (``torch.linalg.solve`` of the transposed system, no inverse),
multiplies the stacked K/V weights by it and writes the result back in the
model's dtype. Gram sums and solves run in float64 (text rows and weights
are cast up): RECE's solves have condition numbers near 1e6.

η_p left unset (``preserve_scale=None``) is the reference script's default,
``max(0.1, 1 / len(retain_texts))`` with ``retain_texts = [""] + preserved``
(``train-scripts/train_erase.py`` of rohitgandikota/unified-concept-editing);
the edit's metadata records the value and whether it was given or defaulted.

Erasing a list of concepts is one-shot (all rows in one solve) or
progressive (one solve per concept, each on the weights the previous left,
with targets from those weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from attnscope.erasure.edit import Edit, edit_meta
from attnscope.erasure.embeddings import EraseKeys, TokenChoice, erasure_rows
from attnscope.erasure.layers import KVStack, kv_parameters
from attnscope.models.layers import text_key_layers


def uce_matrix(
    keys: torch.Tensor,
    guide_keys: torch.Tensor,
    preserve: torch.Tensor | None,
    *,
    lam: float,
    erase_scale: float,
    preserve_scale: float,
) -> torch.Tensor:
    """The ``(d, d)`` matrix ``M`` such that UCE's solution is ``W = W0 @ M`` for every layer.

    ``keys``, ``guide_keys``: ``(n, d)`` erased rows and their guide rows
    (paired by index); ``preserve``: ``(m, d)`` or ``None``. Computed in the
    inputs' dtype (erase_uce/erase_rece pass float64).
    """
    d = keys.shape[1]
    eye = torch.eye(d, dtype=keys.dtype, device=keys.device)
    lhs = lam * eye + erase_scale * keys.T @ keys  # A = λI + η_e Σ c cᵀ + η_p Σ c_j c_jᵀ
    rhs = lam * eye + erase_scale * guide_keys.T @ keys  # R = λI + η_e Σ g cᵀ + η_p Σ c_j c_jᵀ
    if preserve is not None and preserve.numel():
        preserved = preserve_scale * preserve.T @ preserve
        lhs = lhs + preserved
        rhs = rhs + preserved
    # M A = R  ⇔  A Mᵀ = Rᵀ  (A is symmetric)
    return torch.linalg.solve(lhs, rhs.T).T


def normalise_guides(concepts: Sequence[str], guides: str | Sequence[str] | None) -> list[str]:
    """One guide per concept: ``None`` → the empty prompt; a single guide is shared."""
    if guides is None:
        guides = [""]
    elif isinstance(guides, str):
        guides = [guides]
    guides = list(guides)
    if len(guides) == 1:
        guides = guides * len(concepts)
    if len(guides) != len(concepts):
        raise ValueError(f"{len(concepts)} concepts need one guide or one guide each, got {len(guides)}")
    return guides


DEFAULT_PRESERVE_SCALE = "UCE reference default max(0.1, 1/len(['', *preserve]))"


def default_preserve_scale(preserved: Sequence[str]) -> float:
    """UCE's reference η_p: ``max(0.1, 1 / len([""] + preserved))`` (the empty prompt is always retained)."""
    return max(0.1, 1.0 / len(dict.fromkeys(["", *preserved])))


def stack_rows(erase: Sequence[EraseKeys], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """All erased rows and all guide rows of ``erase``, each ``(Σ n_i, d)`` float64 on ``device``."""
    keys = torch.cat([e.keys for e in erase]).to(device, torch.float64)
    guides = torch.cat([e.guide_keys for e in erase]).to(device, torch.float64)
    return keys, guides


@dataclass(frozen=True)
class ErasureProblem:
    """What UCE and RECE read from the pipeline: the K/V weights and the text rows.

    ``base``: the selected K/V weights stacked in float64; ``preserve``: the
    preserved rows ``(m, d)`` (float64) on the weights' device, or ``None``.
    """

    concepts: list[str]
    guides: list[str]
    preserved: list[str]
    layers: list[str]
    dtype: torch.dtype
    base: KVStack
    erase: list[EraseKeys]
    preserve: torch.Tensor | None

    @property
    def meta(self) -> dict[str, Any]:
        return {"concepts": self.concepts, "guides": self.guides, "preserved": self.preserved, "layers": self.layers}


def erasure_problem(
    pipe,
    concepts: Sequence[str],
    guides: str | Sequence[str] | None,
    preserve: Sequence[str],
    token_choice: TokenChoice,
    layers: str | Sequence[str],
) -> ErasureProblem:
    """Read the K/V weights of the selected ``layers`` and encode the texts once."""
    concepts = list(concepts)
    guides = normalise_guides(concepts, guides)
    params = kv_parameters(pipe, layers)
    base = KVStack.from_tensors(params)
    text = erasure_rows(pipe, concepts, guides, preserve, token_choice)
    kept = None if text.preserve is None else text.preserve.to(base.weight.device, torch.float64)
    return ErasureProblem(
        concepts, guides, list(preserve), [layer.name for layer in text_key_layers(pipe, layers)],
        next(iter(params.values())).dtype, base, text.erase, kept,
    )


def edit_from_stages(
    pipe,
    method: str,
    stages: Sequence[tuple[str, KVStack]],
    dtype: torch.dtype,
    keep_stages: bool,
    artifacts: dict[str, torch.Tensor] | None = None,
    **meta: Any,
) -> Edit:
    """An :class:`Edit` whose tensors are the last stage's weights in ``dtype``.

    Earlier stages are kept as artifacts ``stage/<i>/<name>`` when ``keep_stages``.
    """
    artifacts = dict(artifacts or {})
    if keep_stages:
        for index, (_, stack) in enumerate(stages[:-1]):
            artifacts.update({f"stage/{index}/{n}": t for n, t in stack.split(dtype).items()})
    labels = [label for label, _ in stages]
    meta = edit_meta(pipe, method, **meta, stages=labels, stages_kept=keep_stages)
    return Edit(stages[-1][1].split(dtype), meta, artifacts)


@torch.no_grad()
def erase_uce(
    pipe,
    concepts: Sequence[str],
    guides: str | Sequence[str] | None = None,
    preserve: Sequence[str] = (),
    *,
    lam: float = 0.5,
    erase_scale: float = 1.0,
    preserve_scale: float | None = None,
    token_choice: TokenChoice = "last",
    layers: str | Sequence[str] = "all",
    progressive: bool = False,
    keep_stages: bool = True,
) -> Edit:
    """UCE-erase ``concepts`` from ``pipe``'s cross-attention K/V; returns the :class:`Edit` (not applied).

    The pipeline's current weights (including any applied edit) are the starting point.

    Args:
        pipe: the pipeline to edit (a UNet or a cross-attention DiT such as PixArt).
        concepts: the phrases to erase, e.g. ``["bench"]``.
        guides: what each concept should look like instead: one per concept or
            one for all (default ``""``, the empty prompt).
        preserve: concepts whose keys/values should not move.
        lam: λ, the pull toward the original weights.
        erase_scale: η_e, the weight of the erase term.
        preserve_scale: η_p (``None``: the reference default, see the module docstring).
        token_choice: ``"last"`` (the concept's last word token) or
            ``"eos-aligned"`` (also EOS and padding, aligned with the guide's).
        layers: which cross-attention layers to edit: ``"all"``, names, globs or
            places, the rule of :mod:`attnscope.store.layers`.
        progressive: one solve per concept in order (the edit keeps each step as a stage).
        keep_stages: save the intermediate weights as artifacts ``stage/<i>/<name>``.

    Returns:
        The :class:`~attnscope.erasure.edit.Edit`; ``with edit.applied(pipe): ...``
        samples with it and reverts it exactly.
    """
    preserve_scale_from = "given" if preserve_scale is not None else DEFAULT_PRESERVE_SCALE
    if preserve_scale is None:
        preserve_scale = default_preserve_scale(preserve)
    problem = erasure_problem(pipe, concepts, guides, preserve, token_choice, layers)
    stack = problem.base
    steps = [[e] for e in problem.erase] if progressive else [problem.erase]
    stages = []
    for step in steps:
        keys, guide_rows = stack_rows(step, stack.weight.device)
        matrix = uce_matrix(
            keys, guide_rows, problem.preserve, lam=lam, erase_scale=erase_scale, preserve_scale=preserve_scale
        )
        stack = stack.matmul(matrix)
        stages.append((f"{step[0].concept}: uce" if progressive else "uce", stack))
    return edit_from_stages(
        pipe,
        "uce",
        stages,
        problem.dtype,
        keep_stages,
        **problem.meta,
        hyper={"lam": lam, "erase_scale": erase_scale, "preserve_scale": preserve_scale},
        preserve_scale_from=preserve_scale_from,
        token_choice=token_choice,
        progressive=progressive,
    )
