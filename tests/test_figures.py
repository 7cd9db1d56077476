"""Every figure builder draws from small hand-made inputs and saves as PNG, PDF and SVG."""

import numpy as np
import pytest

from attnscope.analyses.attribution import TokenAttribution
from attnscope.analyses.stats import Interval
from attnscope.figures.attribution import attribution_bars
from attnscope.figures.binding import binding_heatmap, forward_order, short_layer_name
from attnscope.figures.drift import drift_panel
from attnscope.figures.entanglement import arrow_map, movement_bars, similarity_matrices
from attnscope.figures.style import FORMATS, save_all

LAYERS = [
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2",
    "up_blocks.0.attentions.1.transformer_blocks.0.attn2",
    "mid_block.attentions.0.transformer_blocks.0.attn2",
]
CONCEPTS = ["bench", "furniture", "chair", "wooden bench", "wooden", "bird"]
RELATIONS = dict(zip(CONCEPTS, ["target", "superclass", "sibling", "variant", "attribute", "unrelated"]))


def check_saved(figure, tmp_path, name):
    paths = save_all(figure, tmp_path / name)
    assert [p.suffix for p in paths] == [f".{f}" for f in FORMATS]
    for path in paths:
        assert path.stat().st_size > 1000
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in paths[2].read_bytes()[:2000]


def test_layer_names_are_short_and_sorted_in_forward_order():
    assert [short_layer_name(n) for n in LAYERS] == ["down1.0", "up0.1", "mid"]
    assert short_layer_name("up_blocks.2.attentions.1.transformer_blocks.1.attn2") == "up2.1.t1"
    assert short_layer_name("custom") == "custom"
    assert [LAYERS[i] for i in forward_order(LAYERS)] == [LAYERS[0], LAYERS[2], LAYERS[1]]


def test_drift_panel(tmp_path):
    rng = np.random.default_rng(0)
    images = tuple(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    maps = tuple(rng.random((16, 16)) for _ in range(2))
    bench, bird = np.zeros((16, 16), bool), np.zeros((16, 16), bool)
    bench[2:6, 2:10], bird[10:14, 8:14] = True, True
    bars = {"bench": (Interval(0.4, 0.3, 0.5, 0.95, 6), Interval(0.2, 0.1, 0.3, 0.95, 6)),
            "bird": (Interval(0.1, 0.05, 0.15, 0.95, 6), Interval(0.3, 0.2, 0.4, 0.95, 6))}
    figure = drift_panel(images, maps, {"bench": bench, "bird": bird}, bars, word="wooden", title="a wooden bench")
    check_saved(figure, tmp_path, "drift")
    plain = drift_panel(images, maps, {"bench": bench}, {"bench": (0.4, 0.2)}, word="wooden")  # numbers, no CI
    check_saved(plain, tmp_path, "drift_plain")


def test_binding_heatmap(tmp_path):
    rng = np.random.default_rng(1)
    rows = {"on bench": (rng.random((5, 3)), rng.random((5, 3))), "on bird": (rng.random((5, 3)), rng.random((5, 3)))}
    figure = binding_heatmap(rows, [0, 2, 4, 6, 8], LAYERS, resolutions={LAYERS[0]: (16, 16)}, title="t")
    check_saved(figure, tmp_path, "heatmap")


def test_entanglement_figures(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(len(CONCEPTS), 8))
    y = x + 0.3 * rng.normal(size=x.shape)
    cos = lambda v: (v / np.linalg.norm(v, axis=1, keepdims=True)) @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T
    check_saved(similarity_matrices(CONCEPTS, cos(x), cos(y), relations=RELATIONS, title="t"), tmp_path, "sim")
    check_saved(arrow_map(CONCEPTS, x[:, :2], y[:, :2], relations=RELATIONS, title="PCA"), tmp_path, "map")
    rows = [dict(concept=c, relation=RELATIONS[c], displacement_k=float(i), displacement_v=float(2 * i))
            for i, c in enumerate(CONCEPTS)]
    check_saved(movement_bars(rows, title="moved"), tmp_path, "movement")


@pytest.mark.parametrize("n_panels", [1, 2])
def test_attribution_bars(tmp_path, n_panels):
    texts = ("<|startoftext|>", "a", "wood", "en", "bench", "and", "a", "bird", "<|endoftext|>")
    word_of = (-1, 0, 1, 1, 2, 3, 4, 5, -1)
    result = TokenAttribution(
        name="attention share of “wooden” in the bird region", prompt="a wooden bench and a bird", texts=texts,
        word_of=word_of, words=("a", "wooden", "bench", "and", "a", "bird"),
        values=np.array([0, 0.1, 0.2, -0.05, 0.3, 0.0, 0.01, -0.2, 0]), target=0.4, baseline=0.04, delta=0.0,
        n_steps=8,
    )
    assert result.by_word() == pytest.approx(
        {"<|startoftext|>": 0, "a": 0.1, "wooden": 0.15, "bench": 0.3, "and": 0.0, "a#2": 0.01, "bird": -0.2,
         "<|endoftext|>": 0})
    figure = attribution_bars([result] * n_panels, highlight=["wooden", "bird"], title="a wooden bench and a bird")
    check_saved(figure, tmp_path, f"bars{n_panels}")
