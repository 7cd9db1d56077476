"""Entanglement: K/V images of concepts before/after a synthetic rank-1 edit."""

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from attnscope.analyses.entanglement import KVImages, compare, cross_attention_projections, kv_images, map_2d
from attnscope.models import tiny_sd_pipeline

# "Bench" tokenises exactly like "bench" (CLIP lower-cases), so it is a second copy of the target.
CONCEPTS = ["bench", "Bench", "bird", "car", "wooden bench"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd_pipeline()


@pytest.fixture(scope="module")
def before(pipe):
    return kv_images(pipe, CONCEPTS)


@contextmanager
def rank_one_edit(pipe, direction: np.ndarray):
    """W ← W + u dᵀ on every cross-attention to_k / to_v (u random per matrix); restored on exit."""
    d = torch.as_tensor(direction, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    originals = {}
    for to_k, to_v in cross_attention_projections(pipe.unet).values():
        for proj in (to_k, to_v):
            originals[proj] = proj.weight.detach().clone()
            u = torch.randn(proj.weight.shape[0], generator=generator)
            proj.weight.data += torch.outer(u, d)
    try:
        yield
    finally:
        for proj, weight in originals.items():
            proj.weight.data.copy_(weight)


def text_vector(kv: KVImages, concept: str) -> np.ndarray:
    return kv.vectors["last"]["text"][kv.concepts.index(concept)]


def test_kv_images_cover_the_text_space_and_every_layers_k_and_v(before):
    assert len(before.spaces) == 1 + 2 * 16  # text + 16 cross-attention layers of SD 1.x
    assert before.spaces[0] == "text" and before.spaces[1].endswith("attn2.to_k")
    assert before.vectors["eos"]["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v"].shape == (5, 32)
    # "wooden" is 6 character tokens in the tiny tokenizer, then "bench"
    j = CONCEPTS.index("wooden bench")
    assert len(before.tokens[j]) == 7 and before.tokens[j][-1] == "bench</w>"
    assert before.vectors["last"]["text"][j] == pytest.approx(before.token_vectors[j][-1])
    assert before.vectors["mean"]["text"][j] == pytest.approx(before.token_vectors[j].mean(0), abs=1e-6)


def test_a_concept_identical_to_the_target_moves_exactly_as_the_target(pipe, before):
    with rank_one_edit(pipe, text_vector(before, "bench") / np.linalg.norm(text_vector(before, "bench"))):
        after = kv_images(pipe, CONCEPTS)
    result = compare(before, after, target="bench")
    t, twin = CONCEPTS.index("bench"), CONCEPTS.index("Bench")
    assert result.displacement[1:, t].min() > 0.1  # the target moved in every K/V space
    assert result.displacement[:, twin] == pytest.approx(result.displacement[:, t])
    assert result.similarity_after[:, twin, t] == pytest.approx(1.0)
    assert result.closeness[twin] == pytest.approx(1.0) and result.closeness[t] == 0.0
    assert result.displacement[0] == pytest.approx(0.0)  # the text encoder was not edited


def test_an_orthogonal_direction_is_unaffected_by_a_rank_one_edit(pipe, before):
    bench, bird = text_vector(before, "bench"), text_vector(before, "bird")
    direction = bench - (bench @ bird) / (bird @ bird) * bird  # dᵀ e_bird = 0, dᵀ e_bench ≠ 0
    with rank_one_edit(pipe, direction / np.linalg.norm(direction)):
        after = kv_images(pipe, CONCEPTS)
    result = compare(before, after, target="bench")
    assert result.displacement[:, CONCEPTS.index("bird")] == pytest.approx(0.0, abs=1e-5)
    assert result.displacement[1:, CONCEPTS.index("bench")].min() > 0.1
    assert result.collateral.shape == (33,) and np.isfinite(result.collateral[1:]).all()
    rows = result.rows()
    assert rows[-1]["concept"] == "bird" and rows[-1]["displacement_k"] == pytest.approx(0.0, abs=1e-5)


def test_collateral_score_on_hand_made_vectors():
    # target t, a neighbour n at 45°, an orthogonal o, a copy c of t's direction
    text = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [2.0, 0.0]])
    k_after = np.array([[2.0, 0.0], [1.5, 1.5], [0.0, 3.0], [2.0, 2.0]])
    before = KVImages(("t", "n", "o", "c"), {"last": {"text": text, "L.to_k": text}})
    after = KVImages(("t", "n", "o", "c"), {"last": {"text": text, "L.to_k": k_after}})
    r = compare(before, after, target="t")
    assert r.closeness == pytest.approx([0.0, np.sqrt(0.5), 0.0, 1.0])
    assert r.displacement[1] == pytest.approx([1.0, 0.5, 2.0, 1.0])
    # o moved most but is not close to t: Σ w d / Σ w over n and c only
    assert r.collateral[1] == pytest.approx((np.sqrt(0.5) * 0.5 + 1.0 * 1.0) / (np.sqrt(0.5) + 1.0))
    assert r.delta_to_target[1] == pytest.approx([0.0, 0.0, 0.0, np.sqrt(0.5) - 1.0])


def test_maps_share_one_fit_so_unmoved_concepts_keep_their_place(pipe, before):
    bench, bird = text_vector(before, "bench"), text_vector(before, "bird")
    direction = bench - (bench @ bird) / (bird @ bird) * bird
    with rank_one_edit(pipe, direction / np.linalg.norm(direction)):
        after = kv_images(pipe, CONCEPTS)
    space = before.spaces[1]
    pca = map_2d(before, after, space, method="pca")
    j = CONCEPTS.index("bird")
    assert pca.before.shape == pca.after.shape == (5, 2)
    assert pca.after[j] == pytest.approx(pca.before[j], abs=1e-5)
    assert np.linalg.norm(pca.after[0] - pca.before[0]) > 1e-3
    umap_xy = map_2d(before, after, space, method="umap", random_state=0)
    assert umap_xy.before.shape == (5, 2) and np.isfinite(umap_xy.after).all()
