"""Capturing diffusion transformers (SD3, Flux, PixArt): exactness against the module's own math, labels, restoration."""

import numpy as np
import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb

from attnscope import capture
from attnscope.hooks.dit import TransformerCapture
from attnscope.models.layers import transformer_attention_layers
from attnscope.hooks.sdpa import SDPACall, selected_probabilities
from attnscope.hooks.selection import Selection
from attnscope.models import tiny_flux_pipeline, tiny_pixart_pipeline, tiny_sana_pipeline, tiny_sd3_pipeline
from attnscope.store.tokens import align_words
from conftest import seeded

PROMPT = "a wooden bench and a bird"
SIZE = {"sd3": {}, "flux": {"max_sequence_length": 32}, "pixart": {"use_resolution_binning": False},
        "sana": {"use_resolution_binning": False, "complex_human_instruction": None, "max_sequence_length": 16}}


@pytest.fixture(scope="module")
def pipes(one_thread):
    return {"sd3": tiny_sd3_pipeline(), "flux": tiny_flux_pipeline(), "pixart": tiny_pixart_pipeline(),
            "sana": tiny_sana_pipeline()}


def sample(pipe, family, steps=2, prompts=(PROMPT,), **kwargs):
    return pipe(list(prompts), num_inference_steps=steps, generator=seeded(*range(len(prompts))), height=64,
                width=64, output_type="np", **SIZE[family], **kwargs).images


# ---------------------------------------------------------------------------- references from the module's own math


def _heads(x, attn):
    """(B, S, H·D) → (B, H, S, D)."""
    return x.unflatten(-1, (attn.heads, -1)).transpose(1, 2)


def reference(family, layer, inputs):
    """Full attention probabilities ``(B, H, queries, keys)`` rebuilt from the module's projections, QK-norms, RoPE, mask."""
    attn, kwargs = layer.module, inputs
    x, context = kwargs["hidden_states"], kwargs.get("encoder_hidden_states")
    q, k = _heads(attn.to_q(x), attn), _heads(attn.to_k(x), attn)
    bias = 0.0
    if family in ("pixart", "sana"):  # cross-attention: keys from the text, padding masked as the model masks it
        k = _heads(attn.to_k(context), attn)
        bias = kwargs["attention_mask"][:, None]  # (B, 1, 1, T) additive
    else:
        q, k = attn.norm_q(q), attn.norm_k(k)
        if context is not None:
            cq = attn.norm_added_q(_heads(attn.add_q_proj(context), attn))
            ck = attn.norm_added_k(_heads(attn.add_k_proj(context), attn))
            if family == "flux":  # [text, image]
                q, k = torch.cat([cq, q], 2), torch.cat([ck, k], 2)
            else:  # SD3: [image, text]
                q, k = torch.cat([q, cq], 2), torch.cat([k, ck], 2)
        if family == "flux":
            rope = kwargs["image_rotary_emb"]
            q, k = (apply_rotary_emb(t.transpose(1, 2), rope, sequence_dim=1).transpose(1, 2) for t in (q, k))
    scores = q.double() @ k.double().transpose(-1, -2) / q.shape[-1] ** 0.5 + bias
    return torch.softmax(scores, dim=-1).float()


def _record_inputs(pipe):
    """Forward pre-hooks that keep every attention layer's call arguments, per call."""
    seen, handles = {}, []
    for layer in transformer_attention_layers(pipe.transformer):
        def hook(module, args, kwargs, name=layer.name):
            names = ("hidden_states", "encoder_hidden_states", "attention_mask", "image_rotary_emb")
            seen.setdefault(name, []).append({**dict(zip(names, args)), **kwargs})
        handles.append(layer.module.register_forward_pre_hook(hook, with_kwargs=True))
    return seen, handles


@pytest.mark.parametrize("family", ["sd3", "flux", "pixart", "sana"])
def test_probabilities_equal_the_modules_own_attention(pipes, family):
    """Every layer, head, step and CFG branch: the captured block equals softmax over the whole key sequence."""
    pipe = pipes[family]
    branch = "cond" if family == "flux" else "both"
    seen, handles = _record_inputs(pipe)
    try:
        with capture(pipe, heads="all", branch=branch, dtype=torch.float32) as cap:
            sample(pipe, family, negative_prompt=None if family == "flux" else ["blurry"])
    finally:
        for handle in handles:
            handle.remove()
    run = cap.run_ids[-1]
    rows = {"cond": 1, "uncond": 0} if branch == "both" else {"cond": 0}
    for layer in transformer_attention_layers(pipe.transformer):
        spec = next(s for s in cap.file.layers if s.name == layer.name)
        n = spec.height * spec.width
        for step, inputs in enumerate(seen[layer.name]):
            probs = reference(family, layer, inputs)
            text = probs.shape[-1] - n if layer.joint else probs.shape[-1]
            queries = slice(text, None) if layer.text_first else slice(0, n)
            keys = 0 if layer.text_first or not layer.joint else n
            for branch_name, row in rows.items():
                positions = [t.position for t in cap.file.tokens(run, branch=branch_name)]
                expected = probs[row, :, queries][..., [keys + p for p in positions]].permute(2, 0, 1)  # (tokens, H, n)
                got = torch.from_numpy(cap.maps(layer.name, branch=branch_name)[step]).reshape(expected.shape)
                assert torch.allclose(got, expected, atol=1e-4), (layer.name, step, branch_name)


def test_recomputed_normaliser_equals_the_kernels(pipes):
    pipe = pipes["sd3"]
    maps = []
    for kernel_lse in (True, False):
        cap = TransformerCapture(pipe, Selection(heads="all", dtype=torch.float32), kernel_lse=kernel_lse)
        with cap:
            sample(pipe, "sd3")
        assert cap.lse_sources == {"kernel" if kernel_lse else "recomputed"}
        maps.append(cap.maps("transformer_blocks.2.attn"))
    assert np.allclose(*maps, atol=1e-5)


@pytest.mark.parametrize("family", ["sd3", "flux", "pixart", "sana"])
def test_images_bit_identical_and_processors_restored_after_exit_and_error(pipes, family):
    pipe = pipes[family]
    before = dict(pipe.transformer.attn_processors)
    plain = sample(pipe, family)
    with capture(pipe, heads="all", branch="cond") as cap:
        captured = sample(pipe, family)
        assert any(type(p).__name__ == "TransformerCaptureProcessor" for p in pipe.transformer.attn_processors.values())
    assert np.array_equal(plain, captured)
    assert len(cap.file.layers) == len(transformer_attention_layers(pipe.transformer))
    assert all(pipe.transformer.attn_processors[name] is proc for name, proc in before.items())

    def boom(module, args, output):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with capture(pipe):
            handle = pipe.transformer.register_forward_hook(boom)
            try:
                sample(pipe, family)
            finally:
                handle.remove()
    assert all(pipe.transformer.attn_processors[name] is proc for name, proc in before.items())
    assert not pipe.transformer._forward_pre_hooks and not pipe.transformer._forward_hooks


def test_sd3_tokens_come_from_the_clip_and_t5_streams(pipes):
    pipe = pipes["sd3"]
    with capture(pipe, dtype=torch.float32) as cap:
        sample(pipe, "sd3")
    tokens = cap.file.tokens(cap.run_ids[-1])
    clip = [t for t in tokens if t.position < 77]
    t5 = [t for t in tokens if t.position >= 77]
    assert clip[0].text == "<|startoftext|>" and clip[-1].text == "<|endoftext|>"
    assert t5[0].position == 77 and t5[0].text == "▁a" and t5[-1].text == "</s>"
    assert cap[0].words == ["a", "wooden", "bench", "and", "a", "bird"]
    wooden = [t for t in tokens if t.word == 1]
    assert [t.text for t in wooden] == ["w", "o", "o", "d", "e", "n</w>", "▁w", "o", "o", "d", "e", "n"]
    layer = "transformer_blocks.1.attn"
    every = cap.maps(layer)
    assert np.allclose(cap.maps(layer, word="wooden"), every[:, [t.word == 1 for t in tokens]].sum(1), atol=1e-6)
    # joint softmax: text tokens take part of each image query's mass, the image keys the rest
    assert (every.sum(1) < 1).all() and (every.sum(1) > 0).all()


def test_flux_layers_are_named_and_placed_by_stream(pipes):
    pipe = pipes["flux"]
    with capture(pipe, layers=["single"], tokens=["bird"], steps=[-1]) as cap:
        sample(pipe, "flux", steps=3)
    assert [(s.name, s.place) for s in cap.file.layers] == [
        ("single_transformer_blocks.0.attn", "single"), ("single_transformer_blocks.1.attn", "single")]
    assert [t.text for t in cap.file.tokens(cap.run_ids[-1])] == ["▁bird"]
    assert cap.maps("single_transformer_blocks.1.attn", word="bird").shape == (1, 1, 4, 4)


def test_flux_true_cfg_is_refused_with_a_reason(pipes):
    pipe = pipes["flux"]
    with pytest.raises(NotImplementedError, match="true CFG"):
        with capture(pipe):
            sample(pipe, "flux", negative_prompt=["blurry"], true_cfg_scale=2.0)


def test_selected_probabilities_on_hand_made_queries_and_keys():
    """Two keys, one masked out: the kept key takes all the mass; without the mask, the logistic of the score gap."""
    query = torch.tensor([[[[1.0, 0.0]]]])  # (B=1, H=1, Sq=1, D=2)
    key = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]]])  # scores·scale: √2, 0
    call = SDPACall(query, key, None, 2 ** -0.5, None)
    both = selected_probabilities(call, slice(0, 1), torch.tensor([[0, 1]]), mean_heads=True)
    expected = torch.softmax(torch.tensor([2 ** 0.5, 0.0]), 0)
    assert torch.allclose(both[0, 0, 0], expected)
    masked = SDPACall(query, key, torch.tensor([[[[True, False]]]]), 2 ** -0.5, None)
    assert torch.allclose(selected_probabilities(masked, slice(0, 1), torch.tensor([[0, 1]]), mean_heads=True)[0, 0, 0],
                          torch.tensor([1.0, 0.0]))


def test_words_of_two_tokenizers_are_aligned():
    assert align_words(["a", "wooden", "bench", ","], ["a", "wooden", "bench,"]) == [0, 1, 2]
    assert align_words(["a", "bird"], ["the", "a", "bird", "x"]) == [2, 0, 1, 3]


def test_overhead_benchmark_runs_in_smoke_mode(tmp_path, one_thread):
    from conftest import benchmark

    out = tmp_path / "overhead.md"
    script = benchmark("capture_overhead_dit")
    assert script.main(["--smoke", "--model", "flux", "--batch", "1", "--repeats", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "## Flux.1-dev-shaped" in text and "| 1 |" in text and "| True (True) | kernel |" in text
    section = "## Flux.1-dev-shaped\n\nreplaced\n"
    assert script.merge(out, "flux", section).count("## Flux.1-dev-shaped") == 1
    assert "replaced" in script.merge(out, "flux", section)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["flash", "cudnn", "efficient"])
@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_cuda_bf16_maps_equal_the_reference_and_images_stay_identical(family, backend):
    """On the GPU the normaliser comes from the flash or cuDNN kernel (recomputed after the memory-efficient
    one, which has none); whichever SDPA kernel ran, the maps equal the explicit softmax and the image is kept."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
              "efficient": SDPBackend.EFFICIENT_ATTENTION}[backend]
    from transformers import PreTrainedModel

    build = {"sd3": tiny_sd3_pipeline, "flux": tiny_flux_pipeline}[family]
    pipe = build().to("cuda", torch.bfloat16)
    for encoder in pipe.components.values():  # their padding masks rule out fused kernels: only the transformer's
        if isinstance(encoder, PreTrainedModel):  # attention runs under the chosen SDPA backend
            encoder.set_attn_implementation("eager")
    with sdpa_kernel(chosen):
        try:
            plain = sample(pipe, family)
        except RuntimeError as error:
            if "No available kernel" in str(error):
                pytest.skip(f"{backend} attention does not run these shapes on this GPU")
            raise
        seen, handles = _record_inputs(pipe)
        try:
            with capture(pipe, heads="all", dtype=torch.float32) as cap:
                captured = sample(pipe, family)
        finally:
            for handle in handles:
                handle.remove()
    assert np.array_equal(plain, captured)
    assert cap.lse_sources == ({"recomputed"} if backend == "efficient" else {"kernel"})
    run = cap.run_ids[-1]
    positions = [t.position for t in cap.file.tokens(run)]
    row = 1 if family == "sd3" else 0  # SD3 runs [uncond, cond]
    for layer in transformer_attention_layers(pipe.transformer):
        spec = next(s for s in cap.file.layers if s.name == layer.name)
        n = spec.height * spec.width
        for step, inputs in enumerate(seen[layer.name]):
            probs = reference(family, layer, inputs)
            text = probs.shape[-1] - n
            queries = slice(text, None) if layer.text_first else slice(0, n)
            keys = 0 if layer.text_first else n
            expected = probs[row, :, queries][..., [keys + p for p in positions]].permute(2, 0, 1).cpu()
            got = torch.from_numpy(cap.maps(layer.name)[step]).reshape(expected.shape)
            assert torch.allclose(got, expected, atol=2e-3), (layer.name, step)


def test_sana_tokens_start_with_bos_and_end_at_the_first_padding(pipes):
    pipe = pipes["sana"]
    with capture(pipe) as cap:
        sample(pipe, "sana", prompts=("a bird and a bench",))
    tokens = cap.file.tokens(cap.run_ids[-1])
    assert tokens[0].text == "<bos>" and tokens[-1].text == "<pad>" and tokens[-1].word == -1
    assert cap[0].words == ["a", "bird", "and", "a", "bench"]
    with pytest.raises(RuntimeError, match="complex_human_instruction=None"):
        with capture(pipe):
            pipe("a bird", num_inference_steps=1, height=32, width=32, use_resolution_binning=False)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_image_to_text_block_equals_the_text_queries_rows(pipes, family):
    """The other block of the joint attention: each text token's query on the image keys, joint softmax."""
    pipe = pipes[family]
    seen, handles = _record_inputs(pipe)
    try:
        with capture(pipe, block="image-to-text", heads="all", dtype=torch.float32) as cap:
            sample(pipe, family)
    finally:
        for handle in handles:
            handle.remove()
    assert cap.file.schema.model["block"] == "image-to-text"
    positions = [t.position for t in cap.file.tokens(cap.run_ids[-1])]
    row = 1 if family == "sd3" else 0
    for layer in transformer_attention_layers(pipe.transformer):
        spec = next(s for s in cap.file.layers if s.name == layer.name)
        n = spec.height * spec.width
        for step, inputs in enumerate(seen[layer.name]):
            probs = reference(family, layer, inputs)
            text_start, image = (0, slice(probs.shape[-1] - n, None)) if layer.text_first else (n, slice(0, n))
            expected = probs[row][:, [text_start + p for p in positions]][..., image].transpose(0, 1)  # (tokens, H, n)
            got = torch.from_numpy(cap.maps(layer.name)[step]).reshape(expected.shape)
            assert torch.allclose(got, expected, atol=1e-4), (layer.name, step)
    with pytest.raises(ValueError, match="joint attention only"):
        capture(pipes["pixart"], block="image-to-text")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_one_kernel_head_mean_equals_the_pytorch_ops(dtype):
    """The Triton kernel (hooks/fused.py) against the PyTorch path it replaces, on Flux-like shapes: keys
    gathered per batch row, a slice of image queries, the normaliser of every query over all keys."""
    from attnscope.hooks import sdpa
    from attnscope.hooks.fused import head_mean_probabilities

    generator = torch.Generator("cuda").manual_seed(0)
    batch, heads, text, image, dim = 2, 24, 40, 1024, 128
    query = torch.randn(batch, heads, text + image, dim, device="cuda", dtype=dtype, generator=generator)
    key = torch.randn(batch, heads, text + image, dim, device="cuda", dtype=dtype, generator=generator)
    scale = dim ** -0.5
    lse = torch.logsumexp((query.float() @ key.float().transpose(-1, -2)) * scale, dim=-1)
    key_index = torch.stack([torch.arange(3, 20, device="cuda"), torch.arange(1, 35, 2, device="cuda")])
    call = SDPACall(query, key, None, scale, lse)
    image_rows = slice(text, text + image)
    fused = head_mean_probabilities(query[:, :, image_rows], key, key_index, lse[:, :, image_rows], scale)
    reference = sdpa.selected_probabilities(SDPACall(query, key, None, scale, None), image_rows, key_index,
                                            mean_heads=True)  # recomputed normaliser: the unfused path
    assert sdpa._fusable(query[:, :, image_rows], key, key_index)
    assert not sdpa._fusable(query[:, :, image_rows], key[:, :1], key_index)  # one key head: the PyTorch path
    assert fused.shape == reference.shape == (batch, 1, image, 17)
    assert torch.allclose(fused, reference, atol=1e-5, rtol=1e-3)
    through_capture = sdpa.selected_probabilities(call, image_rows, key_index, mean_heads=True)  # takes the kernel
    assert torch.equal(through_capture, fused)
