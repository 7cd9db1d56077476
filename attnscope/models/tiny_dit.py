"""Tiny random diffusion-transformer pipelines: SD3, Flux, PixArt and Sana at small widths.

Each uses diffusers' own transformer class and pipeline with a small config,
tiny random CLIP/T5 text encoders and tokenizers built offline, so every code
path (joint attention with QK-norm, Flux's rotary embedding and single-stream
blocks, PixArt's masked T5 cross-attention) runs on a CPU in about a second.
The T5 tokenizer is a SentencePiece-style unigram over single letters plus a
few whole words, so multi-piece words ("▁w" "o" "o" "d" "e" "n") appear as
they do with the real T5; the Gemma tokenizer (Sana) is a byte-pair model
over letters that, like Gemma's, starts with ``<bos>``, marks later words with
``▁`` and ends without an EOS token.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderDC,
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
    SanaPipeline,
    SanaTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    Gemma2Config,
    Gemma2Model,
    GemmaTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from attnscope.models.tiny import _text_config, _WHOLE_WORDS, tiny_clip_tokenizer


def tiny_t5_tokenizer(max_length: int = 32) -> T5Tokenizer:
    """A unigram (SentencePiece-style) tokenizer: a few whole words, else one piece per letter."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + word, -1.0) for word in _WHOLE_WORDS if len(word) > 1]
    pieces += [("▁", -2.0)] + [("▁" + c, -3.0) for c in letters] + [(c, -3.0) for c in letters]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def _tiny_t5(tokenizer: T5Tokenizer, width: int, seed: int) -> T5EncoderModel:
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=width, d_kv=8, d_ff=2 * width, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config)


def _tiny_vae(latent_channels: int, seed: int, **scaling) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, latent_channels=latent_channels,
        norm_num_groups=8, sample_size=64, **scaling,
    )


def _finish(pipe):
    pipe.set_progress_bar_config(disable=True)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.eval()
    return pipe


def tiny_sd3_pipeline(seed: int = 0) -> StableDiffusion3Pipeline:
    """SD3.5-shaped: 3 joint blocks (QK RMS-norm, the first a dual-attention block), CLIP-L/G + T5 streams."""
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8, num_attention_heads=4,
        joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64, out_channels=4,
        pos_embed_max_size=16, dual_attention_layers=(0,), qk_norm="rms_norm",
    )
    clip_tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModelWithProjection(_text_config(clip_tokenizer))
    torch.manual_seed(seed + 2)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(clip_tokenizer))
    t5_tokenizer = tiny_t5_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_tiny_vae(4, seed + 3, shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=text_encoder, tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=tiny_clip_tokenizer(),
        text_encoder_3=_tiny_t5(t5_tokenizer, 64, seed + 4), tokenizer_3=t5_tokenizer,
    )
    return _finish(pipe)


def tiny_flux_pipeline(seed: int = 0) -> FluxPipeline:
    """Flux.1-shaped: 2 double-stream and 2 single-stream blocks, 3-axis RoPE, T5 stream (+ pooled CLIP)."""
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(2, 2, 4),
    )
    clip_tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModel(_text_config(clip_tokenizer))
    t5_tokenizer = tiny_t5_tokenizer()
    pipe = FluxPipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_tiny_vae(4, seed + 2, shift_factor=0.1159, scaling_factor=0.3611),
        text_encoder=text_encoder, tokenizer=clip_tokenizer,
        text_encoder_2=_tiny_t5(t5_tokenizer, 32, seed + 3), tokenizer_2=t5_tokenizer,
    )
    return _finish(pipe)


def tiny_pixart_pipeline(seed: int = 0) -> PixArtAlphaPipeline:
    """PixArt-α-shaped: 2 blocks with T5 cross-attention (``attn2``, padding masked), adaLN-single.

    ``sample_size=32`` is the smallest PixArt's resolution binning knows
    (256² images); pass ``use_resolution_binning=False`` for other sizes.
    """
    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=32, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=4,
        caption_channels=32, in_channels=4, cross_attention_dim=32, out_channels=8,
        attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    )
    tokenizer = tiny_t5_tokenizer()
    pipe = PixArtAlphaPipeline(
        tokenizer=tokenizer, text_encoder=_tiny_t5(tokenizer, 32, seed + 1),
        vae=_tiny_vae(4, seed + 2), transformer=transformer, scheduler=DPMSolverMultistepScheduler(),
    )
    return _finish(pipe)


def tiny_gemma_tokenizer() -> GemmaTokenizer:
    """Letters merged after ``▁``; ``<bos>`` first, right padding, no EOS (as Gemma's)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "▁"] + list(letters) + ["▁" + c for c in letters]
    tokenizer = GemmaTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[("▁", c) for c in letters],
                               add_bos_token=True)
    tokenizer.padding_side = "right"
    return tokenizer


def tiny_sana_pipeline(seed: int = 0) -> SanaPipeline:
    """Sana-shaped: 2 blocks of linear self-attention + Gemma-2 cross-attention (``attn2``), DC-AE.

    Sample with ``complex_human_instruction=None`` (the default instruction is
    hundreds of tokens) and ``use_resolution_binning=False`` for small sizes.
    """
    torch.manual_seed(seed)
    transformer = SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=2, num_attention_heads=2, attention_head_dim=4,
        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=32,
        sample_size=32,
    )
    tokenizer = tiny_gemma_tokenizer()
    torch.manual_seed(seed + 1)
    text_encoder = Gemma2Model(Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    ))
    torch.manual_seed(seed + 2)
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2, encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1), downsample_block_type="conv",
        upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    pipe = SanaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    return _finish(pipe)
