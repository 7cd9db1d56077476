"""Time UCE and RECE on a Stable Diffusion 1.4-architecture pipeline, against one sampled image.

The pipeline has SD 1.4's UNet, CLIP ViT-L/14's text encoder and SD's VAE,
with random weights (nothing is downloaded); erasure cost depends on shapes,
not values. Each operation is CUDA-synchronised, warmed up once, and
reported as the median of ``--repeats`` runs, next to one 50-step 512×512
image sampled with plain diffusers (guidance 7.5) as the yardstick.

    python benchmarks/erasure_timing.py --out benchmarks/results/erasure_timing.md
    python benchmarks/erasure_timing.py --smoke --out /tmp/timing.md     # tiny sizes, CPU, seconds

RECE's paper reports ~3.4 s for 5 epochs; attnscope aims far under a second for 3.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import diffusers
import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from attnscope.erasure import erase_rece, erase_uce
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
# --smoke: the same topology at toy widths, so the script is checked on a CPU
SMOKE = {
    "unet": dict(block_out_channels=(32, 32, 64, 64), cross_attention_dim=32, norm_num_groups=8, sample_size=8),
    "text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32),
    "vae": dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=64),
    "image": 64,
    "steps": 5,
}


def build_pipeline(device: torch.device, dtype: torch.dtype, smoke: bool) -> StableDiffusionPipeline:
    """An SD 1.4-architecture pipeline with random weights on ``device`` in ``dtype``."""
    tokenizer = tiny_clip_tokenizer()
    unet_config = {**SD14_UNET, **(SMOKE["unet"] if smoke else {})}
    text_config = {**CLIP_L_TEXT, **(SMOKE["text"] if smoke else {})}
    vae_config = {**SD_VAE, **(SMOKE["vae"] if smoke else {})}
    torch.manual_seed(0)
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
    return pipe


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """(median, min) wall time of ``fn`` over ``repeats`` runs after one warm-up, device-synchronised."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--device", default=None, help="default: cuda if available (cpu with --smoke)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU: checks the script, not the speed")
    parser.add_argument("--concept", default="nudity")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda"))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    size, steps = (SMOKE["image"], SMOKE["steps"]) if args.smoke else (512, 50)
    pipe = build_pipeline(device, dtype, args.smoke)
    concepts = [args.concept]

    def sample():
        generator = torch.Generator(device).manual_seed(0)
        pipe("a photo", height=size, width=size, num_inference_steps=steps, guidance_scale=7.5,
             generator=generator, output_type="np")

    uce = erase_uce(pipe, concepts)
    operations: list[tuple[str, Callable[[], object]]] = [
        ("UCE, 1 concept, last token", lambda: erase_uce(pipe, concepts)),
        ("UCE, 1 concept, eos-aligned", lambda: erase_uce(pipe, concepts, token_choice="eos-aligned")),
        ("RECE, 3 epochs, last token", lambda: erase_rece(pipe, concepts, epochs=3)),
        ("RECE, 3 epochs, eos-aligned", lambda: erase_rece(pipe, concepts, epochs=3, token_choice="eos-aligned")),
        ("RECE, 5 epochs, eos-aligned", lambda: erase_rece(pipe, concepts, epochs=5, token_choice="eos-aligned")),
        ("apply + revert an edit", lambda: (uce.apply(pipe), uce.revert(pipe))),
    ]
    yardstick, yardstick_min = median_seconds(sample, device, max(1, args.repeats // 2))
    rows = [(name, *median_seconds(fn, device, args.repeats)) for name, fn in operations]

    finite = all(torch.isfinite(t).all() for t in erase_rece(pipe, concepts, epochs=3).tensors.values())
    matrices = len(uce.tensors)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    lines = [
        f"# Erasure timing{' (smoke: tiny sizes)' if args.smoke else ''}",
        "",
        f"- device: {gpu}; torch {torch.__version__}, diffusers {diffusers.__version__}; dtype {dtype}",
        f"- model: SD 1.4 architecture, random weights; {matrices} K/V matrices edited "
        f"(width {pipe.unet.config.cross_attention_dim}); edits finite: {finite}",
        f"- yardstick: one {size}×{size} image, {steps} PNDM steps, CFG 7.5, plain diffusers (VAE decode included): "
        f"median {yardstick:.3f} s (min {yardstick_min:.3f} s)",
        f"- median of {args.repeats} runs after one warm-up, synchronised; the edit times include text encoding "
        "and building the Edit (not applying it)",
        "",
        f"| operation | median (s) | min (s) | × one {steps}-step image |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {name} | {med:.4f} | {low:.4f} | {med / yardstick:.4f} |" for name, med, low in rows],
        "",
    ]
    table = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
