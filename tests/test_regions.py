"""Regions: resizing, Otsu, regions from attention maps and from masks."""

import numpy as np
import pytest

from attnscope.analyses.regions import (
    aggregate,
    otsu_mask,
    otsu_threshold,
    regions_from_attention,
    regions_from_masks,
    resize,
)


def test_otsu_splits_a_two_level_image_in_the_middle_of_its_gap():
    image = np.full((8, 8), 0.2)
    image[2:5, 3:7] = 0.8
    assert otsu_threshold(image) == pytest.approx(0.5)
    assert (otsu_mask(image) == (image == 0.8)).all()


def test_otsu_separates_two_noisy_clusters_and_is_vectorised():
    rng = np.random.default_rng(0)
    truth = rng.uniform(size=(3, 16, 16)) < 0.3
    maps = np.where(truth, rng.normal(5, 0.5, truth.shape), rng.normal(1, 0.5, truth.shape))
    thresholds = otsu_threshold(maps)
    assert thresholds.shape == (3,)
    assert ((thresholds > 2) & (thresholds < 4)).all()
    assert (otsu_mask(maps) == truth).all()


def test_otsu_of_a_constant_map_has_empty_foreground():
    assert not otsu_mask(np.ones((4, 4))).any()


def test_otsu_of_a_one_cell_map_has_empty_foreground():
    maps = np.array([[[0.3]], [[0.0]]])  # two 1×1 maps
    assert otsu_threshold(maps) == pytest.approx([0.3, 0.0])
    assert not otsu_mask(maps).any()


def test_resize_area_averages_blocks_and_keeps_constants():
    x = np.arange(16.0).reshape(4, 4)
    assert resize(x, (2, 2)) == pytest.approx(np.array([[2.5, 4.5], [10.5, 12.5]]))
    assert resize(np.full((2, 3, 3), 7.0), (8, 5)) == pytest.approx(np.full((2, 8, 5), 7.0))


def test_resize_bilinear_matches_half_pixel_interpolation():
    # centres of 2 input cells at 0 and 1; 4 output cells sample at -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    x = np.array([[0.0, 1.0]])
    assert resize(x, (1, 4), method="bilinear")[0] == pytest.approx([0.0, 0.25, 0.75, 1.0])


def test_aggregate_weighs_every_map_equally_across_resolutions():
    coarse = np.full((2, 2), 10.0)  # uniform, large raw mass, coarse layer
    fine = np.zeros((4, 4))
    fine[3, 3] = 1.0  # a delta on the fine grid
    agg = aggregate([coarse, fine])  # -> the largest grid, 4x4
    expected = np.full((4, 4), 0.5 / 16)
    expected[3, 3] += 0.5
    assert agg == pytest.approx(expected)


def test_regions_from_attention_finds_each_objects_blob_without_overlap():
    maps = {"bench": np.zeros((5, 3, 8, 8)), "bird": np.zeros((5, 3, 8, 8))}  # (steps, layers, H, W)
    maps["bench"][..., 1:4, 1:4] = 1.0
    maps["bird"][..., 4:7, 4:7] = 1.0
    maps["bird"][..., 3, 3] = 0.9  # the bird also claims a bench cell, more weakly
    regions = regions_from_attention(maps)
    expected_bench = np.zeros((8, 8), bool)
    expected_bench[1:4, 1:4] = True
    assert (regions["bench"] == expected_bench).all()
    assert regions["bird"][4:7, 4:7].all() and regions["bird"].sum() == 9
    assert not (regions["bench"] & regions["bird"]).any()


def test_regions_from_masks_resizes_ground_truth_to_the_map_grid():
    mask = np.zeros((64, 64), bool)
    mask[0:32, 0:16] = True  # left-top quarter-width strip
    hard = regions_from_masks({"car": mask}, (4, 4))["car"]
    assert hard.dtype == bool
    assert (hard == np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], bool)).all()
    soft = regions_from_masks({"car": mask}, (2, 2), min_coverage=None)["car"]
    assert soft == pytest.approx(np.array([[0.5, 0.0], [0.0, 0.0]]))
