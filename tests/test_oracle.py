"""The toy oracle: segmentation, crops, save/load, the judge interface, and (if shipped) accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnscope.datasets import toyworld as tw
from attnscope.judges.base import Judge
from attnscope.judges.toy_oracle import (
    CROP,
    Detection,
    OracleNet,
    ToyOracle,
    background_colour,
    crop_objects,
    default_oracle_path,
    segment,
)
from attnscope.judges.train_toy_oracle import degrade, evaluate_oracle, match, train_oracle


@pytest.fixture(scope="module")
def scenes_and_renders():
    scenes = tw.sample_scenes(200, seed=21, p_two=0.5)
    images, masks = tw.render(scenes)
    return scenes, images, masks


@pytest.fixture(scope="module")
def quick_oracle():
    return train_oracle(steps=6, batch=16, width=8, device="cpu", log_every=100)


@pytest.mark.parametrize("degraded", [False, True])
def test_segmentation_finds_each_object(scenes_and_renders, degraded):
    scenes, images, masks = scenes_and_renders
    if degraded:
        images = degrade(images, torch.Generator().manual_seed(0))
    found = segment(images)
    right = 0
    for scene, objs, m in zip(scenes, found, masks.numpy()):
        right += len(objs) == len(scene.objects)
        if len(objs) == len(scene.objects):
            dets = [Detection("car", "red", "metal", "small", (0, 0, 1, 1), o, {}) for o in objs]
            assert None not in match(dets, m[: len(scene.objects)], min_iou=0.3 if degraded else 0.6)
    assert right / len(scenes) >= 0.98


def test_crops_are_centred_and_isolated(scenes_and_renders):
    scenes, images, masks = scenes_and_renders
    i = next(k for k, s in enumerate(scenes) if len(s.objects) == 2)
    crops = crop_objects(images[i:i + 1].expand(2, -1, -1, -1), masks[i], torch.tensor([0, 1]),
                         background_colour(images[i:i + 1].expand(2, -1, -1, -1)))
    assert crops.shape == (2, 4, CROP, CROP)
    for j in range(2):
        assert crops[j, 3].sum() == masks[i, j].sum()  # the whole object fits in the window
        ys, xs = torch.nonzero(crops[j, 3], as_tuple=True)
        assert abs((ys.min() + ys.max()) / 2 - CROP / 2) <= 1 and abs((xs.min() + xs.max()) / 2 - CROP / 2) <= 1
        outside = crops[j, :3].abs().sum(0)[~(torch.nn.functional.max_pool2d(crops[j, 3:], 3, 1, 1)[0] > 0)]
        assert outside.max() < 1e-6  # the other object is painted out


def test_oracle_net_is_small():
    net = OracleNet()
    assert sum(p.numel() for p in net.parameters()) * 2 < 5e6  # fp16 bytes
    out = net(torch.zeros(3, 4, CROP, CROP))
    assert out["cls"].shape == (3, 12) and out["colour"].shape == (3, 6)


def test_save_load_round_trip(quick_oracle, scenes_and_renders, tmp_path):
    _, images, _ = scenes_and_renders
    path = tmp_path / "oracle.safetensors"
    quick_oracle.save(path, {"note": "test"})
    loaded = ToyOracle.load(path)
    assert loaded.meta["note"] == "test"
    a, b = quick_oracle.describe(images[:8]), loaded.describe(images[:8])
    for da, db in zip(a, b):
        assert [d.cls for d in da] == [d.cls for d in db]
        for x, y in zip(da, db):
            assert abs(x.probs["colour"][x.colour] - y.probs["colour"][x.colour]) < 1e-2  # fp16 weights


def test_describe_accepts_pil_uint8_and_tensors(quick_oracle, scenes_and_renders):
    _, images, _ = scenes_and_renders
    arrays = (images[:3].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    from PIL import Image

    pil = [Image.fromarray(a) for a in arrays]
    for form in (pil, list(arrays), images[:3], list(images[:3])):
        dets = quick_oracle.describe(form)
        assert len(dets) == 3 and all(len(d) >= 1 for d in dets)
        d = dets[0][0]
        assert d.cls in tw.CLASSES and abs(sum(d.probs["cls"].values()) - 1) < 1e-4
        assert d.mask.shape == (64, 64) and d.mask.sum() > 0


def _fake(cls="bird", colour="blue", material="wooden", size="large", p=0.9):
    def probs(field, names, label):
        rest = (1 - p) / (len(names) - 1)
        return {n: (p if n == label else rest) for n in names}

    return Detection(cls, colour, material, size, (0, 0, 1, 1), np.ones((64, 64), bool), {
        "cls": probs("cls", tw.CLASSES, cls), "colour": probs("colour", tw.COLOUR_NAMES, colour),
        "material": probs("material", tw.MATERIALS, material), "size": probs("size", tw.SIZES, size)})


def test_judge_questions(quick_oracle, monkeypatch):
    assert isinstance(quick_oracle, Judge)
    scene = [_fake("bird", "blue", "wooden"), _fake("bench", "red", "metal")]
    monkeypatch.setattr(quick_oracle, "describe", lambda images: [scene for _ in images])
    questions = ["Is there a bird in the image?", "Is there an animal in the image?", "Is there a cat in the image?",
                 "Is there a vehicle in the image?", "Is the bird wooden?", "Is the bird red?",
                 "Is the bench red?", "Is the bench large?", "Is the cat blue?"]
    answers = quick_oracle.answer([None] * len(questions), questions)
    assert [a.yes for a in answers] == [True, True, False, False, True, False, True, True, False]
    assert answers[1].score == pytest.approx(0.9 + 2 * 0.1 / 11)  # bird + cat + dog
    with pytest.raises(ValueError):
        quick_oracle.answer([None], ["What colour is the bird?"])
    with pytest.raises(ValueError):
        quick_oracle.answer([None], ["Is there a zebra in the image?"])


def test_quick_oracle_evaluates(quick_oracle):
    acc = evaluate_oracle(quick_oracle, n=20)
    assert acc["detected"] >= 0.95 and set(acc) >= {"cls", "colour", "material", "size", "spurious"}


@pytest.mark.skipif(not default_oracle_path().exists(), reason="the trained oracle is not in attnscope/assets yet")
def test_shipped_oracle_meets_accuracy_targets():
    oracle = ToyOracle.load()
    acc = evaluate_oracle(oracle, n=300, seed=4242)
    assert acc["cls"] >= 0.98 and acc["colour"] >= 0.98 and acc["material"] >= 0.95 and acc["size"] >= 0.95, acc
    answers = oracle.answer(*zip(*[(img, f"Is there a {s.objects[0].cls} in the image?") for s, img in
                                   zip(tw.sample_scenes(20, seed=9), tw.render(tw.sample_scenes(20, seed=9))[0])]))
    assert sum(a.yes for a in answers) >= 19


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_oracle_trains_on_gpu():
    oracle = train_oracle(steps=300, batch=128, width=16, device="cuda", log_every=100)
    assert evaluate_oracle(oracle, n=200)["colour"] >= 0.9
