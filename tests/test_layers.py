"""One rule chooses layers: capture, the run-file reader and erasure mean the same layers by "up"."""

import numpy as np
import pytest

from attnscope import capture
from attnscope.erasure import kv_parameters
from attnscope.models.layers import cross_attention_layers, text_key_layers
from attnscope.sampling import Job, SamplerSettings, generate
from attnscope.store.layers import NoSuchLayer, select_layers

SETTINGS = SamplerSettings(steps=2, height=64, width=64)
JOB = Job("a wooden bench and a bird", 0)


def test_names_globs_and_places_choose_layers(sd):
    layers = cross_attention_layers(sd.unet)
    up = select_layers(layers, "up")
    assert up and {layer.place for layer in up} == {"up"}
    assert select_layers(layers, "up_blocks.*") == up
    chosen = select_layers(layers, [up[0].name, "mid"])  # in the model's order, whatever the pattern order
    assert chosen == [layer for layer in layers if layer.place == "mid" or layer is up[0]] and len(chosen) == 2
    assert select_layers(layers, "all") == select_layers(layers, None) == layers


def test_a_selection_of_nothing_says_what_there_is(sd):
    with pytest.raises(NoSuchLayer, match=r"(?s)no cross-attention layer matches .*mid_block"):
        select_layers(cross_attention_layers(sd.unet), "sideways")


def test_run_file_heatmap_of_up_layers_is_a_capture_of_up_layers(sd):
    with capture(sd, layers="up") as up:
        generate(sd, [JOB], SETTINGS, progress=False, cap=up)
    with capture(sd) as every:
        generate(sd, [JOB], SETTINGS, progress=False, cap=every)
    runs = every.file
    assert [spec.name for spec in runs.select_layers("up")] == [spec.name for spec in up.file.layers]
    np.testing.assert_allclose(runs.heatmap(0, word="bench", layers="up"), up.heatmap(word="bench"), atol=1e-6)
    with pytest.raises(KeyError, match="the run file stores"):
        runs.heatmap(0, word="bench", layers="sideways")


def test_erasure_edits_the_layers_capture_records(sd):
    names = [layer.name for layer in text_key_layers(sd, "up")]
    assert names == [layer.name for layer in select_layers(cross_attention_layers(sd.unet), "up")]
    assert sorted(kv_parameters(sd, "up")) == sorted(f"unet.{n}.{p}.weight" for n in names for p in ("to_k", "to_v"))
    with pytest.raises(ValueError, match="no cross-attention layer matches"):
        kv_parameters(sd, "sideways")
