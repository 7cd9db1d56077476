"""Localisation metrics on constructed maps whose answers are known."""

import numpy as np
import pytest

from attnscope.analyses.localisation import (
    heatmap_iou,
    mass_by_kind,
    mass_ratio,
    own_share,
    token_heatmaps,
    token_mass,
)
from attnscope.runner.toy_evaluation import localisation_scores, token_roles


def _square(top: int, left: int, side: int, size: int = 8) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_iou_of_a_map_on_its_object_is_one_and_of_a_shifted_one_known():
    mask = _square(0, 0, 4)
    assert heatmap_iou(mask.astype(float), mask) == 1.0
    shifted = _square(0, 2, 4)  # overlaps half: 8 cells of 24 in the union
    assert heatmap_iou(shifted.astype(float), mask) == pytest.approx(8 / 24)


def test_iou_thresholds_the_normalised_map_at_daam_0_4():
    heat = np.zeros((8, 8))
    heat[:4, :4] = 1.0
    heat[:4, 4:] = 0.39  # below 0.4 of the peak after scaling to [0, 1]: not in the region
    assert heatmap_iou(heat, _square(0, 0, 4)) == 1.0
    heat[:4, 4:] = 0.41
    assert heatmap_iou(heat, _square(0, 0, 4)) == pytest.approx(0.5)


def test_iou_of_an_empty_mask_is_nan():
    assert np.isnan(heatmap_iou(np.ones((8, 8)), np.zeros((8, 8), bool)))


def test_mass_ratio_uniform_is_one_and_concentrated_is_inverse_area():
    mask = _square(0, 0, 4)  # a quarter of the image
    assert mass_ratio(np.ones((8, 8)), mask) == pytest.approx(1.0)
    assert mass_ratio(mask.astype(float), mask) == pytest.approx(4.0)
    avoiding = (~mask).astype(float)
    assert mass_ratio(avoiding, mask) == 0.0


def test_own_share_counts_only_mass_on_the_two_objects():
    own, other = _square(0, 0, 2), _square(6, 6, 2)
    heat = np.ones((8, 8))
    heat[own] = 3.0
    assert own_share(heat, own, other) == pytest.approx(3 / 4)  # 12 on own, 4 on other
    assert np.isnan(own_share(np.zeros((8, 8)), own, other))


def test_token_heatmaps_sum_layers_steps_and_heads_after_upsampling():
    coarse = np.zeros((2, 3, 1, 2, 2))  # (steps, tokens, heads, h, w)
    coarse[:, 1, 0, 0, 0] = 1.0  # token 1 on the top-left cell at both steps
    fine = np.zeros((2, 3, 1, 4, 4))
    fine[0, 1, 0, :2, :2] = 0.5
    heat = token_heatmaps({"coarse": coarse, "fine": fine}, (4, 4))
    assert heat.shape == (3, 4, 4)
    assert heat[0].sum() == 0 and heat[2].sum() == 0
    assert heat[1].sum() == pytest.approx(2 * 4 + 0.5 * 4)  # bilinear upsampling keeps the mass here
    assert heat[1, :2, :2].min() > heat[1, 2:, 2:].max()


def test_token_mass_averages_cells_steps_heads_then_layers():
    a = np.zeros((1, 2, 1, 2, 2))
    a[:, 0] = 1.0  # every query of layer a attends to token 0
    b = np.zeros((1, 2, 1, 4, 4))
    b[:, 0], b[:, 1] = 0.5, 0.5
    assert token_mass({"a": a, "b": b}) == pytest.approx([0.75, 0.25])
    assert mass_by_kind(np.array([0.5, 0.2, 0.3]), ["start", "word", "start"]) == pytest.approx(
        {"start": 0.8, "word": 0.2})
    with pytest.raises(ValueError):
        mass_by_kind(np.ones(2), ["start"])


def test_token_roles_of_a_toy_prompt():
    roles = token_roles("a small red car and a bird", 10)
    assert roles == [("start", -1), ("function", -1), ("size", 0), ("colour", 0), ("noun", 0),
                     ("function", -1), ("function", -1), ("noun", 1), ("end", -1), ("padding", -1)]


def test_localisation_scores_of_one_two_object_image():
    class Found:  # what the oracle's Detection offers here: a mask
        def __init__(self, mask):
            self.mask = mask

    prompt = "a red car and a bird"
    roles = token_roles(prompt, 10)  # start, 6 words, end, 2 padding
    own, other = _square(0, 0, 4), _square(4, 4, 4)
    heat = np.zeros((10, 8, 8))
    heat[roles.index(("colour", 0))][own] = 1.0  # "red" all on the car
    heat[roles.index(("noun", 1))][own] = 1.0  # "bird" on the wrong object
    mass = np.full(10, 1 / 10)
    scores = localisation_scores("two", prompt, heat, mass, [Found(own), Found(other)])
    assert scores["loc/two_colour_own_share"] == [1.0]
    assert scores["loc/two_attribute_own_share"] == [1.0]
    assert scores["loc/two_noun_own_share"] == [0.0]  # "car" has no mass: NaN, dropped; "bird" 0
    assert scores["mass/start"] == [pytest.approx(0.1)] and scores["mass/padding"] == [pytest.approx(0.2)]
    assert scores["mass/function"] == [pytest.approx(0.3)]


def test_run_localisation_reads_a_run_file():
    import torch

    from attnscope.analyses.localisation import run_localisation
    from attnscope.hooks import capture
    from attnscope.models.toy.pipeline import ToyModelConfig, build_toy_pipeline

    pipe = build_toy_pipeline(ToyModelConfig.tiny())
    pipe.set_progress_bar_config(disable=True)
    with capture(pipe) as cap:
        pipe("a red car", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    everywhere = np.ones((64, 64), dtype=bool)
    result = run_localisation(cap.file, cap.run_ids[0], {"red": everywhere, "car": _square(0, 0, 32, 64)})
    # with the whole image as mask, mass ratio is 1 and IoU the area of DAAM's thresholded region
    region = cap.heatmap(run=0, word="red") >= 0.4
    assert result["red"] == {"iou": pytest.approx(region.mean(), abs=1e-3), "mass_ratio": pytest.approx(1.0)}
    assert 0 <= result["car"]["iou"] <= 1 and result["car"]["mass_ratio"] > 0
