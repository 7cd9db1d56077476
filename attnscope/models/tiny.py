"""Tiny random pipelines with the real Stable Diffusion architectures.

Layer names, block structure and the text-conditioning path match SD 1.x
(16 cross-attention layers), SD 2.x (linear projections, per-block head
counts, v-prediction) and SDXL (two text encoders, ``text_time`` added
conditioning, several transformer layers per block); only widths are small.
They run a 50-step sample on a CPU in about a second and are what the tests
and the GPU benchmarks build when no real weights are at hand.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
from tokenizers.pre_tokenizers import ByteLevel

# Words that become one BPE token in the tiny tokenizer; every other word is
# split into characters, so tests see real multi-token words ("wooden").
_WHOLE_WORDS = ("a", "and", "bench", "bird", "blue", "red", "car", "cat", "dog", "of", "the")


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer over single bytes plus a few whole words (77 positions)."""
    chars = sorted(ByteLevel.alphabet())
    vocab: list[str] = chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    for word in _WHOLE_WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            if pieces[0] not in vocab:
                vocab.append(pieces[0])
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(vocab)}, merges=merges, model_max_length=77
    )


def _text_config(tokenizer: CLIPTokenizer, hidden: int = 32, projection: int = 32) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=projection,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def _sd_components(unet: UNet2DConditionModel, seed: int) -> dict:
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    torch.manual_seed(seed + 2)
    vae = _tiny_vae()
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)


def _finish(pipe):
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if module is not None:
            module.eval()
    return pipe


def _tiny_sd_unet(**heads) -> UNet2DConditionModel:
    """The SD 1.x/2.x UNet layout at tiny widths; ``heads``: how the two versions lay out attention heads."""
    return UNet2DConditionModel(
        sample_size=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=2,
        cross_attention_dim=32,
        norm_num_groups=8,
        **heads,
    )


def _sd_pipeline(unet: UNet2DConditionModel, scheduler, seed: int) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline(
        **_sd_components(unet, seed), scheduler=scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    return _finish(pipe)


def tiny_sd_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """SD 1.x architecture: 4 down / 4 up blocks, 16 ``attn2`` layers, 8 heads, PNDM."""
    torch.manual_seed(seed)
    unet = _tiny_sd_unet(attention_head_dim=8)
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
        steps_offset=1, set_alpha_to_one=False,
    )
    return _sd_pipeline(unet, scheduler, seed)


def tiny_sd2_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """SD 2.x architecture: linear projections, per-block head counts, v-prediction."""
    torch.manual_seed(seed)
    unet = _tiny_sd_unet(attention_head_dim=(2, 2, 4, 4), use_linear_projection=True)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction", steps_offset=1, set_alpha_to_one=False, clip_sample=False,
    )
    return _sd_pipeline(unet, scheduler, seed)


def tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """SDXL architecture: two text encoders, ``text_time`` conditioning, 1/2 transformer layers per block."""
    torch.manual_seed(seed)
    text_hidden, projection, time_dim = 32, 32, 8
    unet = UNet2DConditionModel(
        sample_size=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=2,
        transformer_layers_per_block=(1, 1, 2),
        cross_attention_dim=2 * text_hidden,
        attention_head_dim=(2, 4, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + projection,
        norm_num_groups=8,
    )
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModel(_text_config(tokenizer, text_hidden))
    torch.manual_seed(seed + 2)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer, text_hidden, projection))
    torch.manual_seed(seed + 3)
    vae = _tiny_vae()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tiny_clip_tokenizer(), unet=unet, scheduler=scheduler,
    )
    return _finish(pipe)
