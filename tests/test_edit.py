"""The Edit type: in-place apply, exact revert, LIFO stacking, files, base checks."""

import pytest
import torch
from safetensors import safe_open

from attnscope.erasure import Edit, EditBaseMismatch, applied_edits, base_fingerprint, erase_rece, erase_uce
from attnscope.models import tiny_sd_pipeline


def _weights(pipe) -> dict[str, torch.Tensor]:
    return {
        f"{c}.{n}": p.detach().clone()
        for c in ("unet", "text_encoder")
        for n, p in getattr(pipe, c).named_parameters()
    }


def _identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


@pytest.fixture(scope="module", params=[torch.float32, torch.float16], ids=["fp32", "fp16"])
def pipe(request):
    return tiny_sd_pipeline(seed=5).to(dtype=request.param)


@pytest.fixture(scope="module")
def edits(pipe):
    return erase_uce(pipe, ["bench"]), erase_rece(pipe, ["bird"], epochs=2)


def test_apply_writes_in_place_and_revert_is_bit_exact(pipe, edits):
    edit, _ = edits
    before = _weights(pipe)
    params = {n: p for n, p in pipe.unet.named_parameters()}
    pointers = {n: p.data_ptr() for n, p in params.items()}
    edit.apply(pipe)
    after = _weights(pipe)
    for name, tensor in edit.tensors.items():
        assert torch.equal(after[name], tensor)
    assert sum(not torch.equal(before[n], after[n]) for n in before) == len(edit.tensors)
    # same Parameter objects, same storage: hooks and optimisers stay attached
    assert all(p is params[n] and p.data_ptr() == pointers[n] for n, p in pipe.unet.named_parameters())
    edit.revert(pipe)
    assert _identical(_weights(pipe), before)
    assert applied_edits(pipe) == []


def test_save_load_apply_is_bit_identical(pipe, edits, tmp_path):
    _, rece = edits
    path = rece.save(tmp_path / "bird.edit")
    loaded = Edit.load(path)
    assert loaded.meta == rece.meta
    assert loaded.artifacts.keys() == rece.artifacts.keys()
    assert all(torch.equal(loaded.artifacts[n], rece.artifacts[n].cpu()) for n in rece.artifacts)
    with rece.applied(pipe):
        direct = _weights(pipe)
    with loaded.applied(pipe):
        assert _identical(_weights(pipe), direct)
    assert _identical(loaded.stage(1).tensors, {n: t.cpu() for n, t in rece.stage(1).tensors.items()})
    with safe_open(str(path), framework="pt") as f:  # plain safetensors, documented header
        assert f.metadata()["format"] == "attnscope.edit/1"


def test_meta_records_provenance(pipe, edits):
    _, rece = edits
    meta = rece.meta
    assert meta["method"] == "rece" and meta["concepts"] == ["bird"] and meta["guides"] == [""]
    assert meta["base_fingerprint"] == base_fingerprint(pipe)
    for key in ("base_model", "attnscope_version", "created", "hyper", "token_choice", "layers", "stages"):
        assert key in meta


def test_wrong_base_names_both_fingerprints(pipe, edits):
    edit, _ = edits
    other = tiny_sd_pipeline(seed=6).to(dtype=pipe.unet.dtype)
    with pytest.raises(EditBaseMismatch) as error:
        edit.apply(other)
    message = str(error.value)
    assert edit.meta["base_fingerprint"] in message and base_fingerprint(other) in message
    assert applied_edits(other) == []


def test_stacked_edits_check_the_base_and_revert_lifo(pipe, edits):
    first, second = edits
    before = _weights(pipe)
    first.apply(pipe)
    second.apply(pipe)  # checked against the unedited base, not against `first`'s weights
    assert applied_edits(pipe) == [first, second]
    with pytest.raises(RuntimeError, match="LIFO"):
        first.revert(pipe)
    second.revert(pipe)
    first.revert(pipe)
    assert _identical(_weights(pipe), before)


def test_applied_reverts_on_error_and_compose_equals_sequence(pipe, edits):
    first, second = edits
    before = _weights(pipe)
    with pytest.raises(ZeroDivisionError):
        with first.applied(pipe):
            1 / 0
    assert _identical(_weights(pipe), before)
    with first.applied(pipe), second.applied(pipe):
        sequential = _weights(pipe)
    composed = Edit.compose([first, second])
    assert composed.meta["method"] == "compose" and len(composed.meta["parts"]) == 2
    with composed.applied(pipe):
        assert _identical(_weights(pipe), sequential)
    assert _identical(_weights(pipe), before)


def test_an_edit_computed_on_top_of_another_records_it(pipe, edits):
    first, _ = edits
    with first.applied(pipe):
        on_top = erase_uce(pipe, ["car"])
    assert on_top.meta["on_top_of"][0]["concepts"] == ["bench"]
    assert on_top.meta["base_fingerprint"] == first.meta["base_fingerprint"]


def test_base_fingerprint_is_cached_and_refreshed_only_without_edits(pipe, edits):
    first, _ = edits
    cached = base_fingerprint(pipe)
    with first.applied(pipe):
        assert base_fingerprint(pipe) == cached
        with pytest.raises(RuntimeError, match="while edits are applied"):
            base_fingerprint(pipe, refresh=True)
    assert base_fingerprint(pipe, refresh=True) == cached


def test_bad_edits_fail_before_writing(pipe):
    before = _weights(pipe)
    name = "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    fingerprint = base_fingerprint(pipe)
    wrong_shape = Edit({name: torch.zeros(3, 3)}, {"base_fingerprint": fingerprint})
    with pytest.raises(ValueError, match="shape"):
        wrong_shape.apply(pipe)
    unknown = Edit({"unet.nowhere.weight": torch.zeros(1)}, {"base_fingerprint": fingerprint})
    with pytest.raises(KeyError, match="nowhere"):
        unknown.apply(pipe)
    assert _identical(_weights(pipe), before) and applied_edits(pipe) == []


@pytest.mark.gpu
def test_cuda_fp16_round_trip(tmp_path):
    pipe = tiny_sd_pipeline(seed=5).to("cuda", torch.float16)
    before = _weights(pipe)
    edit = erase_rece(pipe, ["bench"], epochs=2, token_choice="eos-aligned")
    assert all(t.is_cuda and t.dtype == torch.float16 and torch.isfinite(t).all() for t in edit.tensors.values())
    loaded = Edit.load(edit.save(tmp_path / "bench.edit"), device="cuda")
    with edit.applied(pipe):
        direct = _weights(pipe)
    with loaded.applied(pipe):
        assert _identical(_weights(pipe), direct)
    assert _identical(_weights(pipe), before)
