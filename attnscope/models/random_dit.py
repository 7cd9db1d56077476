"""Full-size diffusion transformers with random weights, for GPU cost measurements.

The transformer has the published shape (Flux.1-dev: 19 double- + 38
single-stream blocks, 24 heads × 128; SD3.5-medium: 24 joint blocks, 24
heads × 64, QK RMS-norm, 13 dual-attention blocks); text encoders and VAE
are tiny random stand-ins with the right output widths, because only the
transformer's cost is measured (prompt lengths are the real ones: Flux 512
T5 positions, SD3 77 CLIP + 256 T5). ``blocks`` keeps the first blocks only,
for a machine or time limit that cannot hold the full depth.
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, SD3Transformer2DModel, StableDiffusion3Pipeline
from diffusers import FluxTransformer2DModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from attnscope.models.tiny import _text_config, tiny_clip_tokenizer
from attnscope.models.tiny_dit import _tiny_t5, _tiny_vae, tiny_t5_tokenizer

FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56))
SD35_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                   num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                   pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
                   dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")


def _on_device(build, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Initialise on ``device`` (random init of billions of weights is slow on a CPU), then cast."""
    with torch.device(device):
        module = build()
    return module.to(dtype=dtype).eval()


def random_flux_pipeline(device: torch.device, dtype: torch.dtype, blocks: tuple[int, int] | None = None) -> FluxPipeline:
    """Flux.1-dev-shaped transformer (``blocks``: (double, single) kept), tiny CLIP/T5/VAE."""
    config = dict(FLUX_DEV)
    if blocks:
        config.update(num_layers=blocks[0], num_single_layers=blocks[1])
    torch.manual_seed(0)
    transformer = _on_device(lambda: FluxTransformer2DModel(**config), device, dtype)
    clip = tiny_clip_tokenizer()
    t5 = tiny_t5_tokenizer(max_length=512)
    pipe = FluxPipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
        vae=_tiny_vae(16, 1), text_encoder=CLIPTextModel(_text_config(clip, hidden=768, projection=768)),
        tokenizer=clip, text_encoder_2=_tiny_t5(t5, 4096, 2), tokenizer_2=t5,
    )
    return pipe.to(device, dtype)


def random_sd35_pipeline(device: torch.device, dtype: torch.dtype, blocks: int | None = None) -> StableDiffusion3Pipeline:
    """SD3.5-medium-shaped transformer (``blocks``: joint blocks kept), tiny CLIP-L/G, T5 and VAE."""
    config = dict(SD35_MEDIUM)
    if blocks:
        config.update(num_layers=blocks, dual_attention_layers=tuple(range(min(13, blocks))))
    torch.manual_seed(0)
    transformer = _on_device(lambda: SD3Transformer2DModel(**config), device, dtype)
    clip = tiny_clip_tokenizer()
    t5 = tiny_t5_tokenizer(max_length=256)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_tiny_vae(16, 1, shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=CLIPTextModelWithProjection(_text_config(clip, hidden=768, projection=768)), tokenizer=clip,
        text_encoder_2=CLIPTextModelWithProjection(_text_config(clip, hidden=1280, projection=1280)),
        tokenizer_2=tiny_clip_tokenizer(), text_encoder_3=_tiny_t5(t5, 4096, 3), tokenizer_3=t5,
    )
    return pipe.to(device, dtype)
