"""The toy-world renderer: determinism, masks consistent with attributes, captions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnscope.datasets import toyworld as tw


@pytest.fixture(scope="module")
def rendered():
    scenes = tw.sample_scenes(96, seed=7)
    images, masks = tw.render(scenes)
    return scenes, images, masks


def test_same_seed_same_scenes_and_pixels():
    a, b = tw.sample_scenes(20, seed=3), tw.sample_scenes(20, seed=3)
    assert a == b
    ia, ma = tw.render(a)
    ib, mb = tw.render(b)
    assert torch.equal(ia, ib) and torch.equal(ma, mb)
    assert tw.sample_scenes(20, seed=4) != a


def test_shapes_and_range(rendered):
    scenes, images, masks = rendered
    assert images.shape == (96, 3, 64, 64) and images.dtype == torch.float32
    assert masks.shape == (96, 2, 64, 64) and masks.dtype == torch.bool
    assert images.min() >= 0 and images.max() <= 1


def test_background_is_plain(rendered):
    _, images, masks = rendered
    background = images.permute(0, 2, 3, 1)[~masks.any(1)]
    assert torch.allclose(background, torch.tensor(tw.BACKGROUND), atol=1e-6)


def test_masks_match_objects(rendered):
    scenes, _, masks = rendered
    for scene, m in zip(scenes, masks):
        for j in range(tw.MAX_OBJECTS):
            if j < len(scene.objects):
                assert m[j].sum() > 20, scene
            else:
                assert not m[j].any()
        assert not (m[0] & m[1]).any(), "objects overlap"


def _chromaticity(rgb: np.ndarray) -> np.ndarray:
    return rgb / np.linalg.norm(rgb, axis=-1, keepdims=True)


def test_masked_pixels_have_the_objects_colour(rendered):
    scenes, images, masks = rendered
    palette = _chromaticity(np.array(list(tw.COLOURS.values())))
    for scene, image, m in zip(scenes, images, masks):
        for j, obj in enumerate(scene.objects):
            median = image.permute(1, 2, 0)[m[j]].median(0).values.numpy()
            nearest = tw.COLOUR_NAMES[int(np.argmax(palette @ _chromaticity(median)))]
            assert nearest == obj.colour, (scene.caption, obj)


def test_extent_matches_size(rendered):
    scenes, _, masks = rendered
    for scene, m in zip(scenes, masks):
        for j, obj in enumerate(scene.objects):
            ys, xs = torch.nonzero(m[j], as_tuple=True)
            extent = max(int(xs.max() - xs.min()), int(ys.max() - ys.min())) + 1
            assert (extent <= 21) if obj.size == "small" else (extent >= 23), (obj, extent)


def test_two_large_objects_fit():
    scenes = tw.sample_scenes(300, seed=0, p_two=1.0)
    _, masks = tw.render(scenes)
    assert all(len(s.objects) == 2 for s in scenes)
    assert (masks.flatten(2).sum(-1) > 0).all()
    assert len({s.objects[0].cls for s in scenes if s.objects[0].cls == s.objects[1].cls}) == 0


def test_materials_have_distinct_textures():
    objs = [tw.ToyObject("bus", "blue", m, "large") for m in tw.MATERIALS]
    scenes = [tw.Scene((o,), ((32.0, 32.0, 15.0, False),), "", (("class",),)) for o in objs]
    images, masks = tw.render(scenes)
    spread = [images[i].permute(1, 2, 0)[masks[i, 0]].std(0).sum().item() for i in range(3)]
    wooden, metal, plastic = spread
    assert wooden > 0.05 and metal > 0.05
    brightest = [images[i].permute(1, 2, 0)[masks[i, 0]].sum(-1).max().item() for i in range(3)]
    assert brightest[1] > brightest[0] + 0.3 and brightest[1] > brightest[2] + 0.3  # metal sheen


def test_captions_parse_back_to_named_attributes():
    scenes = tw.sample_scenes(400, seed=1)
    kinds = set()
    for scene in scenes:
        parsed = tw.parse_caption(scene.caption)
        assert len(parsed) == len(scene.objects)
        for p, obj, named in zip(parsed, scene.objects, scene.named):
            assert p["superclass"] == obj.superclass
            assert p.get("cls") == (obj.cls if "class" in named else None)
            for attr in tw.ATTRIBUTES:
                assert p.get(attr) == (getattr(obj, attr) if attr in named else None)
            kinds.add("superclass" if "cls" not in p else ("full" if len(p) == 6 else "partial"))
    assert kinds == {"superclass", "full", "partial"}
    assert any(" and " in s.caption for s in scenes)


def test_parse_caption_examples():
    assert tw.parse_caption("a vehicle") == [{"noun": "vehicle", "superclass": "vehicle"}]
    assert tw.parse_caption("A picture of a small red wooden car and a blue bird.") == [
        {"size": "small", "colour": "red", "material": "wooden", "noun": "car", "cls": "car", "superclass": "vehicle"},
        {"colour": "blue", "noun": "bird", "cls": "bird", "superclass": "animal"},
    ]
    assert tw.caption_for([tw.ToyObject("cat", "orange", "metal", "large")], [("colour", "superclass")]) == "an orange animal"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_render_matches_cpu():
    scenes = tw.sample_scenes(64, seed=5)
    ci, cm = tw.render(scenes)
    gi, gm = tw.render(scenes, device="cuda")
    assert (gm.cpu() != cm).float().mean() < 1e-3
    assert (gi.cpu() - ci).abs().mean() < 1e-3
