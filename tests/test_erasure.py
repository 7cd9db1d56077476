"""UCE and RECE: the closed forms solve their objectives; the pipeline-level edits behave."""

import pytest
import torch

from attnscope.erasure import (
    Edit,
    adversarial_embeddings,
    adversarial_matrix,
    erase_rece,
    erase_uce,
    kv_parameters,
    uce_matrix,
)
from attnscope.erasure.embeddings import erasure_rows
from attnscope.erasure.layers import KVStack
from attnscope.models import tiny_sd_pipeline
from attnscope.models.prompts import encode_prompts
from attnscope.models.toy import ToyModelConfig, build_toy_pipeline
from conftest import benchmark


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd_pipeline(seed=3)


def _random_problem(d=16, n=3, m=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    return rand(24, d), rand(n, d), rand(n, d), rand(m, d)


# ---------------------------------------------------------------------------- closed forms


def test_uce_solution_zeroes_the_objective_gradient():
    w0, keys, guides, kept = _random_problem()
    lam, eta_e, eta_p = 0.3, 1.0, 0.7
    w = w0 @ uce_matrix(keys, guides, kept, lam=lam, erase_scale=eta_e, preserve_scale=eta_p)
    # ½∇ of λ‖W−W0‖² + η_e Σ‖W c − W0 g‖² + η_p Σ‖W c_j − W0 c_j‖²
    terms = [
        lam * (w - w0),
        eta_e * (w @ keys.T - w0 @ guides.T) @ keys,
        eta_p * (w @ kept.T - w0 @ kept.T) @ kept,
    ]
    gradient = sum(terms)
    assert gradient.norm() / sum(t.norm() for t in terms) < 1e-5


def test_uce_matrix_equals_the_published_formula():
    w0, keys, guides, kept = _random_problem(seed=1)
    lam, eta_e, eta_p = 0.5, 1.0, 0.1
    eye = torch.eye(w0.shape[1], dtype=w0.dtype)
    numerator = lam * w0 + eta_e * (w0 @ guides.T) @ keys + eta_p * w0 @ kept.T @ kept
    denominator = lam * eye + eta_e * keys.T @ keys + eta_p * kept.T @ kept
    expected = numerator @ torch.linalg.inv(denominator)
    got = w0 @ uce_matrix(keys, guides, kept, lam=lam, erase_scale=eta_e, preserve_scale=eta_p)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_rece_adversarial_embedding_minimises_its_objective():
    g = torch.Generator().manual_seed(2)
    d, lam_r = 16, 1e-2
    originals = [torch.randn(out, d, generator=g, dtype=torch.float64) for out in (8, 12, 20)]
    currents = [w @ (torch.eye(d, dtype=w.dtype) + 0.3 * torch.randn(d, d, generator=g, dtype=w.dtype)) for w in originals]
    c = torch.randn(d, generator=g, dtype=torch.float64)
    c_adv = adversarial_matrix(torch.cat(currents), torch.cat(originals), lam_r) @ c

    def objective(x):
        return sum(((wc @ x - wo @ c) ** 2).sum() for wc, wo in zip(currents, originals)) + lam_r * (x**2).sum()

    terms = [wc.T @ (wc @ c_adv - wo @ c) for wc, wo in zip(currents, originals)] + [lam_r * c_adv]
    assert sum(terms).norm() / sum(t.norm() for t in terms) < 1e-5
    for _ in range(5):  # convex: any step away costs
        assert objective(c_adv + 1e-3 * torch.randn(d, generator=g, dtype=c.dtype)) > objective(c_adv)


# ---------------------------------------------------------------------------- token choices


def test_token_choices_pick_the_documented_rows(pipe):
    bench, empty, wooden = encode_prompts(pipe, ["bench", "", "a wooden bench"])
    assert empty.last_word == 0  # BOS: the empty prompt has no word
    assert bench.last_word == 1
    length = pipe.tokenizer.model_max_length
    (last,) = erasure_rows(pipe, ["a wooden bench"], [""], [], "last").erase
    assert last.positions == (wooden.last_word,)
    torch.testing.assert_close(last.keys[0], wooden.embedding[wooden.last_word])
    torch.testing.assert_close(last.guide_keys[0], empty.embedding[0])
    aligned = erasure_rows(pipe, ["a wooden bench"], ["bench"], ["car"], "eos-aligned")
    i = wooden.last_word
    assert aligned.erase[0].positions == tuple(range(i, length))
    torch.testing.assert_close(aligned.erase[0].guide_keys, bench.embedding[1 : 1 + length - i])
    # every position of "car" and of the always-preserved ""
    assert aligned.preserve.shape == (2 * length, bench.embedding.shape[1])
    assert erasure_rows(pipe, ["bench"], [""], [], "last").preserve is None


# ---------------------------------------------------------------------------- pipeline edits


def _rows_change(pipe, edit, rows):
    """Σ over layers of ‖(W_new − W_old) rows‖ (rows: (n, d))."""
    params = kv_parameters(pipe)
    return sum(((edit.tensors[n].float() - p.detach().float()) @ rows.T).norm() for n, p in params.items())


def test_preserved_concept_moves_ten_times_less_than_the_erased_one(pipe):
    edit = erase_uce(pipe, ["bench"], preserve=["car"], lam=0.1, preserve_scale=1.0)
    text = erasure_rows(pipe, ["bench"], [""], ["car"], "last")
    erased, kept = text.erase[0].keys, text.preserve
    assert _rows_change(pipe, edit, kept) * 10 <= _rows_change(pipe, edit, erased)


def test_uce_maps_the_erased_key_onto_the_guide(pipe):
    edit = erase_uce(pipe, ["bench"], guides="car", lam=1e-4, erase_scale=1e3)
    (keys,) = erasure_rows(pipe, ["bench"], ["car"], [], "last").erase
    for name, w0 in kv_parameters(pipe).items():
        torch.testing.assert_close(
            edit.tensors[name] @ keys.keys[0], w0.detach() @ keys.guide_keys[0], rtol=1e-3, atol=1e-3
        )


def test_edits_do_not_touch_the_pipeline_and_keep_dtype(pipe):
    before = {n: p.detach().clone() for n, p in kv_parameters(pipe).items()}
    edit = erase_rece(pipe, ["bench"], epochs=1)
    assert all(torch.equal(p, before[n]) for n, p in kv_parameters(pipe).items())
    assert set(edit.tensors) == set(before)
    assert all(t.dtype == before[n].dtype for n, t in edit.tensors.items())


def test_progressive_with_one_concept_is_one_shot_and_with_two_is_not(pipe):
    one_shot = erase_uce(pipe, ["bench"])
    progressive = erase_uce(pipe, ["bench"], progressive=True)
    assert all(torch.equal(one_shot.tensors[n], progressive.tensors[n]) for n in one_shot.tensors)
    both = erase_uce(pipe, ["bench", "bird"])
    steps = erase_uce(pipe, ["bench", "bird"], progressive=True)
    assert steps.stages == ["bench: uce", "bird: uce"] and both.stages == ["uce"]
    assert not all(torch.allclose(both.tensors[n], steps.tensors[n]) for n in both.tensors)
    first = erase_uce(pipe, ["bench"])
    assert all(torch.equal(steps.stage(0).tensors[n], first.tensors[n]) for n in first.tensors)


def test_rece_keeps_every_epoch_and_its_adversarial_embeddings(pipe):
    epochs = 3
    edit = erase_rece(pipe, ["bench", "bird"], epochs=epochs, token_choice="eos-aligned", uce_lam=0.5)
    assert edit.stages == ["uce", "rece epoch 1", "rece epoch 2", "rece epoch 3"]
    assert edit.meta["epochs"] == epochs and edit.meta["hyper"]["uce_lam"] == 0.5
    uce = erase_uce(pipe, ["bench", "bird"], lam=0.5, preserve_scale=0.1, token_choice="eos-aligned")
    assert all(torch.equal(edit.stage(0).tensors[n], uce.tensors[n]) for n in uce.tensors)
    assert all(torch.equal(edit.stage(-1).tensors[n], edit.tensors[n]) for n in edit.tensors)
    adversarial = adversarial_embeddings(edit)
    assert list(adversarial) == ["bench", "bird"]
    assert len(adversarial["bench"]) == epochs
    assert adversarial["bench"][0].shape == edit.artifacts["keys/0"].shape
    # each epoch changes the weights again
    for i in range(epochs):
        a, b = edit.stage(i).tensors, edit.stage(i + 1).tensors
        assert not all(torch.equal(a[n], b[n]) for n in a)


def test_rece_epoch_matches_the_closed_form_by_hand(pipe):
    edit = erase_rece(pipe, ["bench"], epochs=1, lam=0.1, lam_r=1e-3, erase_scale=1.0, preserve_scale=0.1)
    original = KVStack.from_tensors(kv_parameters(pipe))
    uce = KVStack.from_tensors(edit.stage(0).tensors)
    (keys,) = erasure_rows(pipe, ["bench"], [""], [], "last").erase
    c_adv = keys.keys.double() @ adversarial_matrix(uce.weight, original.weight, 1e-3).T
    torch.testing.assert_close(adversarial_embeddings(edit)["bench"][0], c_adv.float())
    expected = uce.matmul(uce_matrix(c_adv, keys.guide_keys.double(), None, lam=0.1, erase_scale=1.0,
                                     preserve_scale=0.1))
    for name, tensor in expected.split(torch.float32).items():
        torch.testing.assert_close(edit.tensors[name], tensor)


def test_rece_can_start_from_a_given_edit(pipe):
    start = erase_uce(pipe, ["bench"], lam=0.3)
    edit = erase_rece(pipe, ["bench"], epochs=2, start=start)
    assert edit.stages[0] == "start" and edit.meta["start"]["method"] == "uce"
    assert all(torch.equal(edit.stage(0).tensors[n], start.tensors[n]) for n in start.tensors)
    with pytest.raises(ValueError, match="one-shot"):
        erase_rece(pipe, ["bench"], start=start, progressive=True)


def test_layer_selection_and_errors(pipe):
    edit = erase_uce(pipe, ["bench"], layers=["mid_block.*"])
    assert sorted(edit.tensors) == [
        "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight",
    ]
    assert edit.meta["layers"] == ["mid_block.attentions.0.transformer_blocks.0.attn2"]
    with pytest.raises(ValueError, match="no cross-attention layer matches"):
        erase_uce(pipe, ["bench"], layers=["nowhere.*"])
    assert all(".up_blocks." in n for n in erase_uce(pipe, ["bench"], layers="up").tensors)
    with pytest.raises(ValueError, match="guide"):
        erase_uce(pipe, ["bench", "bird", "car"], guides=["a", "b"])
    with pytest.raises(ValueError, match="token_choice"):
        erase_uce(pipe, ["bench"], token_choice="first")


@pytest.mark.parametrize("builder", ["sd2", "sdxl", "toy"])
def test_other_architectures_erase_apply_and_sample(builder, request):
    pipe = build_toy_pipeline(ToyModelConfig.tiny()) if builder == "toy" else request.getfixturevalue(builder)
    concept = "bird" if builder == "toy" else "bench"
    edit = erase_rece(pipe, [concept], epochs=1, token_choice="eos-aligned")
    assert edit.tensors and all(n.endswith(("to_k.weight", "to_v.weight")) for n in edit.tensors)
    with edit.applied(pipe):
        out = pipe(f"a {concept}", num_inference_steps=2, output_type="np").images
    assert out.shape[0] == 1


def test_cli_writes_a_loadable_edit(tmp_path, capsys):
    from attnscope.cli import main

    out = tmp_path / "bench.edit"
    assert main(["erase", "--method", "rece", "--concept", "bench", "--preserve", "car", "--epochs", "2",
                 "--model", "tiny-sd", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rece edit of tiny-sd" in printed and "32 tensors changed" in printed and "mid_block" in printed
    edit = Edit.load(out)
    assert edit.meta["epochs"] == 2 and edit.meta["preserved"] == ["car"] and len(edit.stages) == 3

    assert main(["erase", "--preset", "rece-object", "--concept", "bench", "--epochs", "1",
                 "--model", "tiny-sd", "--device", "cpu", "--out", str(out), "--overwrite"]) == 0
    meta = Edit.load(out).meta
    assert meta["token_choice"] == "eos-aligned" and meta["hyper"]["lam_r"] == 1e-3 and meta["epochs"] == 1
    capsys.readouterr()
    assert main(["erase", "--method", "uce", "--concept", "bench", "--epochs", "2",
                 "--model", "tiny-sd", "--device", "cpu", "--out", str(out), "--overwrite"]) == 2
    assert "RECE" in capsys.readouterr().err


def test_timing_benchmark_runs_in_smoke_mode(tmp_path):
    out = tmp_path / "timing.md"
    assert benchmark("erasure_timing").main(["--smoke", "--repeats", "1", "--out", str(out)]) == 0
    table = out.read_text()
    assert "| RECE, 3 epochs, last token |" in table and "edits finite: True" in table
