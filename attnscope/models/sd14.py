"""A Stable Diffusion 1.4-architecture pipeline with random weights.

The configs are SD 1.4's (UNet, VAE, PNDM scheduler) and CLIP ViT-L/14's text
encoder, written out so nothing is downloaded. Costs of capture and erasure
depend on shapes, not on weight values, so benchmarks use this model.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from attnscope.models.tiny import tiny_clip_tokenizer

# CompVis/stable-diffusion-v1-4 unet/config.json
SD14_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    center_input_sample=False,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    mid_block_scale_factor=1,
)
# openai/clip-vit-large-patch14 text_config (vocab size set from the tokenizer)
CLIP_L_TEXT = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=768,
)
# CompVis/stable-diffusion-v1-4 vae/config.json
SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=512,
)
# CompVis/stable-diffusion-v1-4 scheduler/scheduler_config.json
SD14_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    skip_prk_steps=True,
    steps_offset=1,
    set_alpha_to_one=False,
)
# smoke=True: the same topology at toy widths, so scripts can be checked on a CPU
SMOKE = {
    "unet": dict(block_out_channels=(32, 32, 64, 64), cross_attention_dim=32, norm_num_groups=8, sample_size=8),
    "text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32),
    "vae": dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=64),
}


def random_sd14_pipeline(
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, smoke: bool = False, seed: int = 0
) -> StableDiffusionPipeline:
    """SD 1.4's architecture with random weights on ``device`` in ``dtype``.

    The tokenizer is the tiny byte-level one (536 tokens); the text encoder's
    vocabulary is sized to it, everything else is CLIP ViT-L/14.
    """
    tokenizer = tiny_clip_tokenizer()
    unet_config = {**SD14_UNET, **(SMOKE["unet"] if smoke else {})}
    text_config = {**CLIP_L_TEXT, **(SMOKE["text"] if smoke else {})}
    vae_config = {**SD_VAE, **(SMOKE["vae"] if smoke else {})}
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **text_config,
            )
        )
        vae = AutoencoderKL(**vae_config)
    pipe = StableDiffusionPipeline(
        unet=unet, text_encoder=text_encoder, vae=vae, tokenizer=tokenizer,
        scheduler=PNDMScheduler(**SD14_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    for module in (unet, text_encoder, vae):
        module.eval()
    return pipe
