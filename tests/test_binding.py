"""Binding metrics on hand-made maps whose answers are known."""

import numpy as np
import pytest

from attnscope.analyses.binding import (
    binding_score,
    center_of_mass,
    com_distance,
    drift,
    first_wrong,
    ioa,
    iou,
    js_divergence,
    measure_binding,
    pair_attributes,
    relative_binding,
)

H = W = 8


def box(r0, r1, c0, c1, value=1.0):
    m = np.zeros((H, W))
    m[r0:r1, c0:c1] = value
    return m


BENCH = box(0, 4, 0, 4).astype(bool)  # 16 cells, top-left
BIRD = box(4, 8, 4, 8).astype(bool)  # 16 cells, bottom-right
REGIONS = {"bench": BENCH, "bird": BIRD}


def test_a_map_entirely_inside_object_a_binds_1_to_a_and_0_to_b():
    assert binding_score(box(1, 3, 1, 3), REGIONS) == pytest.approx([1.0, 0.0])


def test_a_uniform_map_gives_the_area_share():
    assert binding_score(np.ones((H, W)), REGIONS) == pytest.approx([16 / 64, 16 / 64])


def test_soft_regions_weight_cells():
    half_bench = BENCH * 0.5
    assert binding_score(np.ones((H, W)), np.stack([half_bench])) == pytest.approx([8 / 64])


def test_relative_binding_is_the_share_of_in_region_mass():
    m = box(0, 4, 0, 4, 3.0) + box(4, 8, 4, 8, 1.0) + box(0, 4, 4, 8, 5.0)  # plus mass outside both
    assert relative_binding(binding_score(m, REGIONS)) == pytest.approx([0.75, 0.25])


def test_scores_are_vectorised_over_steps_and_layers():
    maps = np.zeros((3, 2, H, W))  # (steps, layers, H, W)
    maps[..., 0, 0] = 1.0  # in the bench
    maps[2, 1] = box(6, 7, 6, 7)  # last step, second layer: in the bird
    scores = binding_score(maps, REGIONS)
    assert scores.shape == (3, 2, 2)
    assert scores[0, 0] == pytest.approx([1, 0]) and scores[2, 1] == pytest.approx([0, 1])


def test_iou_and_ioa_of_masks():
    assert iou(BENCH, BENCH) == 1.0
    assert iou(BENCH, BIRD) == 0.0
    quarter = box(0, 2, 0, 2).astype(bool)  # 4 cells inside the bench's 16
    assert iou(quarter, BENCH) == pytest.approx(4 / 16)
    assert ioa(quarter, BENCH) == 1.0  # all of `quarter` lies in the bench
    assert ioa(BENCH, quarter) == pytest.approx(4 / 16)
    assert np.isnan(ioa(np.zeros((H, W), bool), BENCH))


def test_js_is_0_for_identical_maps_and_1_bit_for_disjoint_maps():
    a, b = box(0, 4, 0, 4), box(4, 8, 4, 8)
    assert js_divergence(a, 3 * a) == pytest.approx(0.0)  # normalised first: scale does not matter
    assert js_divergence(a, b) == pytest.approx(1.0)  # bits
    assert js_divergence(a, b, base=np.e) == pytest.approx(np.log(2))  # nats
    # half overlap: p uniform on cells {1,2}, q on {2,3}: JS = 0.5 bit
    p, q = np.zeros((1, 4)), np.zeros((1, 4))
    p[0, [1, 2]] = 1
    q[0, [2, 3]] = 1
    assert js_divergence(p, q) == pytest.approx(0.5)


def test_centre_of_mass_of_a_delta_and_a_symmetric_pair():
    delta = np.zeros((H, W))
    delta[2, 5] = 1.0
    assert center_of_mass(delta) == pytest.approx([2.0, 5.0])
    assert center_of_mass(box(0, 4, 0, 4)) == pytest.approx([1.5, 1.5])
    other = np.zeros((H, W))
    other[5, 1] = 4.0
    assert com_distance(delta, other) == pytest.approx(5.0)  # a 3-4-5 triangle


def test_measure_binding_with_given_regions():
    attribute = box(1, 3, 1, 3)  # "wooden" sits on the bench
    objects = {"bench": box(0, 4, 0, 4), "bird": box(4, 8, 4, 8)}
    b = measure_binding(attribute, objects, REGIONS)
    assert b.objects == ("bench", "bird")
    assert b.score == pytest.approx([1, 0]) and b.relative == pytest.approx([1, 0])
    assert b.ioa == pytest.approx([1, 0]) and b.iou == pytest.approx([4 / 16, 0])
    assert b.js[1] == pytest.approx(1.0)
    assert b.com_distance == pytest.approx([0.0, np.hypot(4, 4)])
    assert b.of("bird")["score"] == 0.0


def test_measure_binding_derives_regions_from_object_maps_by_default():
    steps_layers = (4, 2)
    objects = {
        "bench": np.broadcast_to(box(0, 4, 0, 4), (*steps_layers, H, W)),
        "bird": np.broadcast_to(box(4, 8, 4, 8), (*steps_layers, H, W)),
    }
    attribute = np.broadcast_to(np.ones((H, W)), (*steps_layers, H, W))
    b = measure_binding(attribute, objects)
    assert b.score.shape == (4, 2, 2)
    assert b.score == pytest.approx(np.full((4, 2, 2), 0.25))
    assert b.mean(axis=(0, 1)).score == pytest.approx([0.25, 0.25])


def test_drift_finds_the_first_step_and_layer_on_the_wrong_object():
    steps, layers = 4, 3
    objects = {
        "bench": np.broadcast_to(box(0, 4, 0, 4), (steps, layers, H, W)),
        "bird": np.broadcast_to(box(4, 8, 4, 8), (steps, layers, H, W)),
    }
    before = np.broadcast_to(box(0, 4, 0, 4), (steps, layers, H, W)).copy()  # on the bench throughout
    after = before.copy()
    after[2:, 1] = box(4, 8, 4, 8)  # from step 2, layer 1 moves to the bird
    after[3, 0] = box(0, 4, 0, 4) + 2 * box(4, 8, 4, 8)  # step 3, layer 0: 2/3 on the bird
    b0 = measure_binding(before, objects, REGIONS)
    b1 = measure_binding(after, objects, REGIONS)
    d = drift(b0, b1, own="bench")
    assert d.before_wrong.first is None
    assert d.after_wrong.first == (2, 1)
    assert list(d.after_wrong.step) == [3, 2, -1]
    assert d.delta["score"][2, 1] == pytest.approx([-1.0, 1.0])
    assert d.delta["score"][0] == pytest.approx(np.zeros((layers, 2)))


def test_first_wrong_ignores_an_even_split_and_maps_without_in_region_mass():
    relative = np.array([[0.5, 0.5], [np.nan, np.nan], [0.4, 0.6]])  # (steps, K)
    fw = first_wrong(relative, own=0)
    assert fw.first == (2,) and int(fw.step) == 2


def test_pairing_follows_each_attribute_to_the_noun_after_it():
    assert pair_attributes("a wooden bench and a bird", ["bench", "bird"]) == [("wooden", "bench")]
    assert pair_attributes("A picture of a small red wooden car, and a blue bird.", ["car", "bird"]) == [
        ("small", "car"), ("red", "car"), ("wooden", "car"), ("blue", "bird"),
    ]


def test_pairing_with_multiword_objects_vocabulary_and_explicit_pairs():
    pairs = pair_attributes("a very tasty hot dog next to a red car", ["hot dog", "car"], attributes=["tasty", "red"])
    assert pairs == [("tasty", "hot dog"), ("red", "car")]
    free_text = pair_attributes("a bench that is wooden", ["bench"], pairs=[("wooden", "bench")])
    assert free_text == [("wooden", "bench")]
    override = pair_attributes("a red car and a bird", ["car", "bird"], pairs=[("red", "bird")])
    assert override == [("red", "bird")]
