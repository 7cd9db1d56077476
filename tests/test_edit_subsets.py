"""Parts of an edit for an ablation: by layer, place, resolution and keys/values."""

import pytest
import torch

from attnscope.erasure import Edit, edit_subsets, erase_uce
from attnscope.erasure.edit import tensor_layer, tensor_place, tensor_projection
from attnscope.models import tiny_sd_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd_pipeline(seed=3)


@pytest.fixture(scope="module")
def edit(pipe):
    return erase_uce(pipe, ["bench"])


def test_tensor_names_give_layer_place_and_projection():
    name = "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v.weight"
    assert tensor_layer(name) == "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
    assert tensor_place(name) == "up"
    assert tensor_projection(name) == "to_v"
    assert tensor_place("unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight") == "mid"


def test_restrict_keeps_only_matching_tensors_and_says_so(edit):
    keys = edit.restrict(kv="k")
    assert keys.tensors and all(n.endswith("to_k.weight") for n in keys.tensors)
    assert len(keys.tensors) == len(edit.tensors) // 2
    assert keys.meta["subset"] == {"layers": [], "places": [], "kv": "k", "label": "k",
                                   "tensors": len(edit.tensors) // 2, "of": len(edit.tensors)}
    up_values = edit.restrict(places="up", kv="v")
    assert all(tensor_place(n) == "up" and n.endswith("to_v.weight") for n in up_values.tensors)
    glob = edit.restrict(layers="down_blocks.*")
    assert {tensor_place(n) for n in glob.tensors} == {"down"}
    assert all(torch.equal(glob.tensors[n], edit.tensors[n]) for n in glob.tensors)
    assert "stages" not in keys.meta and keys.artifacts == {}
    with pytest.raises(ValueError, match="no tensor"):
        edit.restrict(layers="nowhere.*")
    with pytest.raises(ValueError, match="kv must be"):
        edit.restrict(kv="q")


def test_applying_a_part_changes_only_its_tensors(pipe, edit):
    part = edit.restrict(places="mid")
    base = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    with part.applied(pipe):
        changed = {f"unet.{n}" for n, p in pipe.unet.named_parameters() if not torch.equal(p, base[n])}
    assert changed == set(part.tensors) and changed
    assert all(tensor_place(n) == "mid" for n in changed)


def test_subsets_partition_the_edit(pipe, edit):
    for kind in ("layers", "places", "kv", "resolutions"):
        parts = edit_subsets(edit, kind, pipe)
        names = [n for part in parts for n in part.edit.tensors]
        assert sorted(names) == sorted(edit.tensors), kind  # every tensor in exactly one part
    layers = edit_subsets(edit, "layers")
    assert [p.label for p in layers] == list(dict.fromkeys(tensor_layer(n) for n in edit.tensors))
    assert [p.label for p in edit_subsets(edit, "places")] == ["down", "mid", "up"]
    grids = [p.label for p in edit_subsets(edit, "resolutions", pipe)]
    assert grids == sorted(grids, key=lambda g: -int(g.split("x")[0])) and len(grids) >= 2
    with pytest.raises(ValueError, match="needs the pipeline"):
        edit_subsets(edit, "resolutions")


def test_a_part_survives_a_file_round_trip(edit, tmp_path):
    part = edit_subsets(edit, "kv")[1]
    loaded = Edit.load(part.edit.save(tmp_path / "v.edit"))
    assert loaded.meta["subset"]["label"] == "v" and loaded.tensors.keys() == part.edit.tensors.keys()
