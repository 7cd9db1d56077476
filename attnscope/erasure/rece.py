"""RECE: Reliable and Efficient Concept Erasure (Gong et al., ECCV 2024), closed form.

RECE starts from a UCE edit and alternates two closed-form steps per epoch:

1. *Derive the adversarial embedding*: the rows ``c'`` the edited model maps
   closest to what the original model mapped the erased rows ``c`` to, jointly
   over every edited key and value matrix (``W_l`` original, ``W'_l`` current):

       c' = argmin Σ_l ‖W'_l c' − W_l c‖² + λ_r ‖c'‖²
          = (λ_r I + Σ_l W'_lᵀ W'_l)⁻¹ (Σ_l W'_lᵀ W_l) c.

   The ``(d, d)`` matrix in front of ``c`` is shared by all rows; the sums are
   two Gram products of the stacked K/V weights.
2. *Erase it*: the UCE solve on the current weights with ``c'`` as erased rows,
   targets ``W'_l g`` from the current weights and preserved rows kept at
   ``W'_l c_j`` (see :mod:`attnscope.erasure.uce`).

The ``c'`` are the attack the edit has not closed yet; every epoch's weights
and ``c'`` are kept in the :class:`~attnscope.erasure.Edit`
(``edit.stage(i)``, :func:`adversarial_embeddings`). Both steps run in
float64 (:func:`rece_epoch`): the Gram matrix of step 1 has condition numbers
near 1e6, where float32 is percents off; weights are written back in the
model's dtype.

How rows pair with the guide. The released RECE code
(``erase_methods/uce.py:edit_model_adversarial`` of CharlesGong12/RECE)
derives ``c'`` for all 77 positions of the concept's embedding and pairs
position ``p`` of ``c'`` with position ``p`` of the guide's embedding (the
empty prompt ``" "`` by default: BOS, then EOS and padding), for every ``p``
— no alignment at the last word; it preserves all 77 positions of ``" "``.
attnscope's ``token_choice="eos-aligned"`` (the UCE paper-era pairing, see
:mod:`attnscope.erasure.embeddings`) instead keeps the concept's rows from its
last word token on and pairs them with the guide's rows from the guide's last
word token on (BOS for the empty guide), so row ``i + k`` of the concept
(``i`` its last word) meets guide row ``j + k``: for a one-word concept the
word meets the guide's BOS and the concept's EOS the guide's EOS, where the
released code pairs the word with the guide's EOS and the concept's BOS with
BOS. The two differ by that shift of ``i − j`` positions and by the concept's
rows before its last word, which RECE also edits; the empty prompt (all
positions) is preserved in both.
"""

from __future__ import annotations

from typing import Sequence

import torch

from attnscope.erasure.edit import Edit
from attnscope.erasure.embeddings import TokenChoice
from attnscope.erasure.layers import KVStack
from attnscope.erasure.uce import edit_from_stages, erasure_problem, stack_rows, uce_matrix


def adversarial_matrix(current: torch.Tensor, original: torch.Tensor, lam_r: float) -> torch.Tensor:
    """The ``(d, d)`` matrix ``N`` with ``c' = N c`` (see module docstring), in the inputs' dtype.

    ``current``, ``original``: the stacked K/V weights ``(Σ out_l, d)`` after
    and before the edit, so that ``currentᵀ current = Σ_l W'_lᵀ W'_l``.
    """
    d = current.shape[1]
    gram = current.T @ current + lam_r * torch.eye(d, dtype=current.dtype, device=current.device)
    return torch.linalg.solve(gram, current.T @ original)


def rece_epoch(
    current: torch.Tensor,
    original: torch.Tensor,
    keys: torch.Tensor,
    guide_keys: torch.Tensor,
    preserve: torch.Tensor | None,
    *,
    lam: float,
    lam_r: float,
    erase_scale: float,
    preserve_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One RECE epoch in float64: ``(new weights (Σ out_l, d), c' (n, d))``.

    ``current``/``original``: stacked K/V weights ``(Σ out_l, d)`` now and
    before the edit; ``keys``: the erased rows ``c`` ``(n, d)``;
    ``guide_keys``: their guide rows ``(n, d)``; ``preserve``: ``(m, d)`` or
    None. Step 1 gives ``c' = N c``; step 2 is the UCE solve on ``current``
    with ``c'`` as erased rows.
    """
    wide = [None if t is None else t.to(torch.float64) for t in (current, original, keys, guide_keys, preserve)]
    current, original, keys, guide_keys, preserve = wide
    adversarial = keys @ adversarial_matrix(current, original, lam_r).T
    matrix = uce_matrix(adversarial, guide_keys, preserve, lam=lam, erase_scale=erase_scale,
                        preserve_scale=preserve_scale)
    return current @ matrix, adversarial


@torch.no_grad()
def erase_rece(
    pipe,
    concepts: Sequence[str],
    guides: str | Sequence[str] | None = None,
    preserve: Sequence[str] = (),
    *,
    epochs: int = 3,
    lam: float = 0.1,
    erase_scale: float = 1.0,
    preserve_scale: float | None = None,
    lam_r: float = 1e-3,
    uce_lam: float | None = None,
    token_choice: TokenChoice = "last",
    layers: str | Sequence[str] = "all",
    progressive: bool = False,
    start: Edit | None = None,
    keep_stages: bool = True,
) -> Edit:
    """RECE-erase ``concepts``: a UCE edit, then ``epochs`` adversarial epochs; returns the Edit (not applied).

    Stages are labelled ``"uce"``, ``"rece epoch 1"``, ... (prefixed
    ``"<concept>: "`` when progressive); artifacts ``keys/<k>`` hold concept
    ``k``'s erased rows ``(n, d)`` and ``adversarial/<stage>/<k>`` its ``c'``
    after that stage.

    Args:
        pipe: the pipeline to edit (a UNet or a cross-attention DiT such as PixArt).
        concepts: the phrases to erase, e.g. ``["bench"]``.
        guides: what each concept should look like instead: one per concept or
            one for all (default ``""``).
        preserve: concepts whose keys/values should not move.
        epochs: adversarial epochs after the UCE edit.
        lam, erase_scale, preserve_scale: the UCE solve's λ, η_e, η_p (the RECE
            scripts' defaults 0.1, 1, 0.1).
        lam_r: the regulariser of the adversarial embedding.
        uce_lam: λ of the initial UCE edit (default ``lam``).
        token_choice: ``"last"`` or ``"eos-aligned"`` (see :func:`~attnscope.erasure.uce.erase_uce`).
        layers: which cross-attention layers to edit (``"all"``, names, globs, places).
        progressive: UCE + epochs for one concept at a time, each step's
            adversarial embedding derived against the weights that step started from.
        start: an existing edit of the same K/V weights (e.g. a released UCE
            checkpoint through :func:`~attnscope.erasure.loaders.edit_from_unet_state_dict`)
            to start from instead of computing UCE; one-shot only.
        keep_stages: save the intermediate weights as artifacts.

    Returns:
        The :class:`~attnscope.erasure.edit.Edit`, not applied.
    """
    if start is not None and progressive:
        raise ValueError("start= is for one-shot RECE; progressive RECE computes its own UCE per concept")
    preserve_scale_from = "given" if preserve_scale is not None else "RECE scripts' default 0.1"
    preserve_scale = 0.1 if preserve_scale is None else preserve_scale
    problem = erasure_problem(pipe, concepts, guides, preserve, token_choice, layers)
    uce_lam = lam if uce_lam is None else uce_lam
    solve = dict(erase_scale=erase_scale, preserve_scale=preserve_scale)
    stack = problem.base
    device = stack.weight.device

    indexed = list(enumerate(problem.erase))
    steps = [[item] for item in indexed] if progressive else [indexed]
    stages: list[tuple[str, KVStack]] = []
    artifacts = {f"keys/{k}": e.keys for k, e in indexed}
    for step in steps:
        prefix = f"{step[0][1].concept}: " if progressive else ""
        keys, guide_rows = stack_rows([e for _, e in step], device)
        original = stack
        if start is None:
            stack = stack.matmul(uce_matrix(keys, guide_rows, problem.preserve, lam=uce_lam, **solve))
            stages.append((prefix + "uce", stack))
        else:
            missing = sorted(set(stack.names) - set(start.tensors))
            if missing:
                raise ValueError(f"start edit lacks {len(missing)} of the K/V weights, e.g. {missing[0]}")
            stack = KVStack.from_tensors({n: start.tensors[n].to(device) for n in stack.names})  # float64
            stages.append(("start", stack))
        for epoch in range(1, epochs + 1):
            weight, adversarial = rece_epoch(stack.weight, original.weight, keys, guide_rows, problem.preserve,
                                             lam=lam, lam_r=lam_r, **solve)
            stack = KVStack(stack.names, stack.sizes, weight)
            stages.append((f"{prefix}rece epoch {epoch}", stack))
            per_concept = adversarial.float().split([e.keys.shape[0] for _, e in step])
            artifacts.update({f"adversarial/{len(stages) - 1}/{k}": a for (k, _), a in zip(step, per_concept)})
    extra = {"start": start.meta} if start is not None else {}
    return edit_from_stages(
        pipe,
        "rece",
        stages,
        problem.dtype,
        keep_stages,
        artifacts,
        **problem.meta,
        hyper={"lam": lam, "uce_lam": uce_lam, "erase_scale": erase_scale, "preserve_scale": preserve_scale,
               "lam_r": lam_r},
        preserve_scale_from=preserve_scale_from,
        epochs=epochs,
        token_choice=token_choice,
        progressive=progressive,
        **extra,
    )


def adversarial_embeddings(edit: Edit) -> dict[str, list[torch.Tensor]]:
    """``{concept: [c' after epoch 1, after epoch 2, ...]}``, each ``(n, d)``, from a RECE edit."""
    concepts = edit.meta["concepts"]
    found: dict[str, list[tuple[int, torch.Tensor]]] = {c: [] for c in concepts}
    for name, tensor in edit.artifacts.items():
        kind, _, rest = name.partition("/")
        if kind == "adversarial":
            stage, k = map(int, rest.split("/"))
            found[concepts[k]].append((stage, tensor))
    return {c: [t for _, t in sorted(rows, key=lambda row: row[0])] for c, rows in found.items()}
