"""Concept entanglement: how an edit of the cross-attention K/V weights moves concepts.

An erasure edits every cross-attention layer's ``to_k`` / ``to_v`` so that
the erased concept's text embedding maps somewhere else. Any concept whose
embedding shares directions with it moves too. This module measures that
without generating a single image::

    before = kv_images(pipe, concepts)
    with edit.applied(pipe):
        after = kv_images(pipe, concepts)
    result = compare(before, after, target="bench")
    result.rows()                    # which concepts moved most
    xy = map_2d(before, after, space=result.spaces[1], method="umap")

**Spaces.** ``"text"`` (the text encoder's output, what the UNet receives)
and, per cross-attention layer ``L``, ``"L.to_k"`` and ``"L.to_v"``: the
images ``W e (+ b)`` of the text vectors under that layer's projections.

**Token representations** (``rep``) of a concept's prompt, e.g. "wooden bench":
``"last"`` — its last word token ("bench"; the token UCE edits);
``"eos"`` — the end-of-text token (CLIP's pooled output);
``"mean"`` — the mean over its word tokens.

**Formulas** (per space; C concepts, t the target, x_j before, x'_j after):

* similarity matrices ``S[i, j] = cos(x_i, x_j)`` before and ``S'`` after;
* change of similarity to the target ``Δsim_j = cos(x'_j, x'_t) − cos(x_j, x_t)``;
* relative displacement ``d_j = ‖x'_j − x_j‖ / ‖x_j‖``;
* closeness to the target, measured in the text space before the edit so it
  is the same for every layer: ``w_j = max(0, cos(e_j, e_t))``;
* collateral score ``Σ_{j≠t} w_j d_j / Σ_{j≠t} w_j``: the displacement of
  non-target concepts, averaged with weights favouring the target's
  neighbours (NaN when no non-target concept has positive closeness).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Sequence

import numpy as np
import torch

from attnscope.models.layers import cross_attention_layers
from attnscope.models.prompts import tokenize

TEXT = "text"
REPS = ("last", "eos", "mean")


@dataclass(frozen=True)
class KVImages:
    """Text vectors of concepts and their images under every layer's K and V projections.

    ``vectors[rep][space]``: float32 (C, d_space) with rows in ``concepts``
    order; spaces are ``"text"`` then ``"<layer>.to_k"``, ``"<layer>.to_v"``
    per cross-attention layer, in module order. ``token_vectors[c]``:
    (n_tokens_c, d_text), the text vectors of concept c's word tokens,
    whose strings are ``tokens[c]``.
    """

    concepts: tuple[str, ...]
    vectors: dict[str, dict[str, np.ndarray]]
    tokens: tuple[tuple[str, ...], ...] = ()
    token_vectors: tuple[np.ndarray, ...] = field(default=(), repr=False)

    @property
    def spaces(self) -> tuple[str, ...]:
        return tuple(next(iter(self.vectors.values())))


def cross_attention_projections(unet: torch.nn.Module) -> dict[str, tuple[torch.nn.Linear, torch.nn.Linear]]:
    """``{layer name: (to_k, to_v)}`` for every cross-attention layer
    (:func:`~attnscope.models.layers.cross_attention_layers`), in forward order."""
    return {layer.name: (layer.module.to_k, layer.module.to_v) for layer in cross_attention_layers(unet)}


@torch.no_grad()
def kv_images(pipe, concepts: Sequence[str]) -> KVImages:
    """Encode ``concepts`` with ``pipe``'s text encoder(s) and project through every K/V layer.

    Uses ``pipe.encode_prompt`` so the vectors are exactly the conditioning
    the UNet sees (SD 1.x/2.x; SDXL's two encoders concatenated). Token
    positions come from :func:`~attnscope.models.prompts.tokenize`: BOS, the word tokens, then EOS.
    Call it once on the base pipeline and once inside ``edit.applied(pipe)``.
    """
    concepts = tuple(concepts)
    device = getattr(pipe, "device", torch.device("cpu"))
    encoded = pipe.encode_prompt(
        prompt=list(concepts), device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )[0]  # (C, 77, d_text)
    words = [tokenize(pipe, c).texts[1:-1] for c in concepts]  # the word tokens, without start and end
    n_words = torch.tensor([max(len(w), 1) for w in words], device=encoded.device)
    rows = torch.arange(len(concepts), device=encoded.device)
    positions = torch.arange(encoded.shape[1], device=encoded.device)
    in_word = (positions[None, :] >= 1) & (positions[None, :] <= n_words[:, None])  # (C, 77)
    text = {
        "last": encoded[rows, n_words],
        "eos": encoded[rows, n_words + 1],
        "mean": (encoded * in_word[..., None]).sum(1) / n_words[:, None],
    }

    vectors: dict[str, dict[str, np.ndarray]] = {rep: {TEXT: _numpy(e)} for rep, e in text.items()}
    for layer, (to_k, to_v) in cross_attention_projections(pipe.unet).items():
        for suffix, proj in (("to_k", to_k), ("to_v", to_v)):
            for rep, e in text.items():
                vectors[rep][f"{layer}.{suffix}"] = _numpy(proj(e.to(proj.weight.dtype)))
    return KVImages(
        concepts=concepts,
        vectors=vectors,
        tokens=tuple(tuple(w) for w in words),
        token_vectors=tuple(_numpy(encoded[c, 1 : 1 + len(w)]) for c, w in enumerate(words)),
    )


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def cosine_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarities of rows: a (n, d), b (m, d) (default a) → (n, m)."""
    b = a if b is None else b
    an = a / np.linalg.norm(a, axis=-1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return an @ bn.T


@dataclass(frozen=True)
class EntanglementResult:
    """Before/after similarity structure per space; S spaces, C concepts.

    ``similarity_before`` / ``similarity_after``: (S, C, C);
    ``delta_to_target``: (S, C) change of cosine similarity to the target;
    ``displacement``: (S, C) relative displacement; ``closeness``: (C,)
    weights w_j (0 for the target itself); ``collateral``: (S,).
    See the module docstring for the formulas.
    """

    concepts: tuple[str, ...]
    target: str
    rep: str
    spaces: tuple[str, ...]
    similarity_before: np.ndarray
    similarity_after: np.ndarray
    delta_to_target: np.ndarray
    displacement: np.ndarray
    closeness: np.ndarray
    collateral: np.ndarray

    def rows(self) -> list[dict]:
        """One row per concept, most displaced first: closeness, mean displacement
        and mean Δsim to the target over the K spaces and over the V spaces."""
        k = np.array([s.endswith(".to_k") for s in self.spaces])
        v = np.array([s.endswith(".to_v") for s in self.spaces])
        rows = [
            dict(
                concept=c,
                is_target=c == self.target,
                closeness=float(self.closeness[j]),
                displacement_k=float(self.displacement[k, j].mean()),
                displacement_v=float(self.displacement[v, j].mean()),
                delta_sim_k=float(self.delta_to_target[k, j].mean()),
                delta_sim_v=float(self.delta_to_target[v, j].mean()),
            )
            for j, c in enumerate(self.concepts)
        ]
        return sorted(rows, key=lambda r: -(r["displacement_k"] + r["displacement_v"]))


def compare(
    before: KVImages, after: KVImages, target: str, *, rep: str = "last", weights: np.ndarray | None = None
) -> EntanglementResult:
    """Compare two :class:`KVImages` of the same concepts; ``target`` is the erased concept.

    ``weights`` (C,) overrides the closeness weights w_j of the collateral
    score (the target's own weight is always ignored).
    """
    if before.concepts != after.concepts or before.spaces != after.spaces:
        raise ValueError("before and after must hold the same concepts and spaces")
    t = before.concepts.index(target)
    spaces = before.spaces
    xb = [before.vectors[rep][s] for s in spaces]
    xa = [after.vectors[rep][s] for s in spaces]

    sim_b = np.stack([cosine_matrix(x) for x in xb])
    sim_a = np.stack([cosine_matrix(x) for x in xa])
    displacement = np.stack(
        [np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1) for a, b in zip(xa, xb)]
    )
    if weights is None:
        weights = np.clip(cosine_matrix(before.vectors[rep][TEXT])[:, t], 0.0, None)
    closeness = np.asarray(weights, dtype=float).copy()
    closeness[t] = 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        collateral = displacement @ closeness / closeness.sum()
    return EntanglementResult(
        concepts=before.concepts,
        target=target,
        rep=rep,
        spaces=spaces,
        similarity_before=sim_b,
        similarity_after=sim_a,
        delta_to_target=sim_a[:, :, t] - sim_b[:, :, t],
        displacement=displacement,
        closeness=closeness,
        collateral=collateral,
    )


@dataclass(frozen=True)
class Map2D:
    """2-D positions of every concept before and after, from one fit: (C, 2) each."""

    concepts: tuple[str, ...]
    space: str
    method: str
    before: np.ndarray
    after: np.ndarray


def map_2d(
    before: KVImages,
    after: KVImages,
    space: str,
    *,
    rep: str = "last",
    method: Literal["pca", "umap"] = "pca",
    normalize: bool = True,
    random_state: int = 0,
) -> Map2D:
    """Lay out the concepts of one space in 2-D, before and after, in comparable positions.

    The 2C vectors (before and after stacked) are fitted once, so an arrow
    from ``before[j]`` to ``after[j]`` shows concept j's movement. With
    ``normalize`` (default) vectors are scaled to unit length first, so the
    picture shows cosine geometry. UMAP uses the cosine metric,
    ``n_neighbors = min(15, 2C − 1)`` (at least 2) and a spectral-free
    random init for tiny sets; both methods are deterministic for a fixed
    ``random_state``.
    """
    x = np.concatenate([before.vectors[rep][space], after.vectors[rep][space]]).astype(float)
    if normalize:
        x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    if method == "pca":
        from sklearn.decomposition import PCA

        xy = PCA(n_components=2, random_state=random_state).fit_transform(x)
    elif method == "umap":
        from umap import UMAP

        n = len(x)
        xy = UMAP(
            n_components=2,
            n_neighbors=max(2, min(15, n - 1)),
            metric="cosine",
            init="random" if n < 20 else "spectral",
            random_state=random_state,
            n_jobs=1,
        ).fit_transform(x)
    else:
        raise ValueError(f"method must be 'pca' or 'umap', not {method!r}")
    c = len(before.concepts)
    return Map2D(before.concepts, space, method, xy[:c], xy[c:])


def centred(kv: KVImages) -> KVImages:
    """``kv`` minus its own mean over the concept set, per representation and space.

    Text embeddings share a large common component (every toy-world concept
    has cosine > 0.9 with every other), and an erasure shifts every concept
    along much the same direction. Centring each state on its own mean
    removes both: cosines become correlations over the concept set, and a
    displacement says how a concept moved *relative to the set*. The
    numbers depend on the concept set.
    """
    vectors = {rep: {space: v - v.mean(axis=0) for space, v in spaces.items()} for rep, spaces in kv.vectors.items()}
    return replace(kv, vectors=vectors)


def edit_entanglement(pipe, edit, concepts: Sequence[str], target: str, *, rep: str = "last",
                      centre: bool = False) -> tuple[EntanglementResult, KVImages, KVImages]:
    """``(result, before, after)``: the concepts' K/V images with the base weights and with ``edit``
    applied (:func:`centred` with ``centre``) and their :func:`compare` result."""
    before = kv_images(pipe, concepts)
    with edit.applied(pipe):
        after = kv_images(pipe, concepts)
    if centre:
        before, after = centred(before), centred(after)
    return compare(before, after, target, rep=rep), before, after
