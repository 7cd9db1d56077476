"""The toy world's text-to-image pipeline: a small pixel-space Stable Diffusion.

Components are the ones Stable Diffusion has, minus the VAE:

- ``unet``: a diffusers ``UNet2DConditionModel`` with cross-attention at
  16×16 and 8×8 (and in the mid block),
- ``text_encoder``: a small transformers ``CLIPTextModel``,
- ``tokenizer``: the word-level toy tokenizer (:mod:`.tokenizer`),
- ``scheduler``: DDIM by default.

Instead of a VAE the pipeline uses a fixed, lossless 2×2 space-to-depth
"latent": an image (B, 3, 64, 64) in [-1, 1] becomes ``pixel_unshuffle(x, 2)``
of shape (B, 12, 32, 32), and decoding is ``pixel_shuffle``. So
``vae_scale_factor`` is 2, and the UNet's 16×16 cross-attention maps cover
4×4-pixel patches of the image.

``__call__`` follows ``StableDiffusionPipeline.__call__`` (same argument names,
``[uncond, cond]`` order of the classifier-free-guidance batch, an
``encode_prompt`` method, ``callback_on_step_end``), so code written for SD
runs unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from attnscope.models.toy.tokenizer import build_tokenizer

PATCH = 2  # space-to-depth factor of the "latent"
DEFAULT_GUIDANCE_SCALE = 4.0


@dataclass(frozen=True)
class ToyModelConfig:
    """Architecture of a toy pipeline; :func:`build_toy_pipeline` builds it.

    ``heads`` is the number of attention heads per UNet block (diffusers'
    misnamed ``attention_head_dim``); the shipped model uses 32-dim heads.
    """

    block_out_channels: tuple[int, ...] = (64, 128, 192)
    layers_per_block: int = 1
    heads: tuple[int, ...] = (2, 4, 6)
    norm_num_groups: int = 32
    text_hidden: int = 192
    text_layers: int = 4
    text_heads: int = 4
    prediction_type: str = "v_prediction"
    image_size: int = 64

    @classmethod
    def tiny(cls) -> "ToyModelConfig":
        """A few-hundred-kB model for tests and smoke runs."""
        return cls(block_out_channels=(16, 32, 32), heads=(1, 2, 2), norm_num_groups=8, text_hidden=32, text_layers=1,
                   text_heads=2)


def build_unet(config: ToyModelConfig) -> UNet2DConditionModel:
    """A randomly initialised UNet on (B, 12, image_size/2, image_size/2) latents."""
    channels = 3 * PATCH * PATCH
    return UNet2DConditionModel(
        sample_size=config.image_size // PATCH,
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(config.block_out_channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(config.block_out_channels) - 1) + ("UpBlock2D",),
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        attention_head_dim=config.heads,
        cross_attention_dim=config.text_hidden,
        norm_num_groups=config.norm_num_groups,
    )


def build_text_encoder(config: ToyModelConfig, tokenizer: PreTrainedTokenizerFast) -> CLIPTextModel:
    """A randomly initialised CLIP text encoder over the tokenizer's vocabulary."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.text_hidden,
            intermediate_size=4 * config.text_hidden,
            projection_dim=config.text_hidden,
            num_hidden_layers=config.text_layers,
            num_attention_heads=config.text_heads,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_scheduler(prediction_type: str = "v_prediction") -> DDIMScheduler:
    """DDIM over the cosine (``squaredcos_cap_v2``) schedule used in training.

    ``trailing`` spacing starts sampling at t = 999, where the cosine schedule
    leaves almost no signal, so samples start from pure noise as in training.
    """
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        clip_sample=False,  # clipping the x0 estimate breaks guided v-prediction sampling here (measured)
        set_alpha_to_one=True,
        timestep_spacing="trailing",
    )


def build_toy_pipeline(config: ToyModelConfig | None = None, seed: int = 0) -> "ToyWorldPipeline":
    """A randomly initialised :class:`ToyWorldPipeline` (float32, CPU)."""
    config = config or ToyModelConfig()
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    pipe = ToyWorldPipeline(
        unet=build_unet(config),
        text_encoder=build_text_encoder(config, tokenizer),
        tokenizer=tokenizer,
        scheduler=build_scheduler(config.prediction_type),
    )
    return pipe


def images_to_latents(images: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] → latents (B, 12, H/2, W/2) in [-1, 1]."""
    return F.pixel_unshuffle(images * 2 - 1, PATCH)


def latents_to_images(latents: torch.Tensor) -> torch.Tensor:
    """Latents (B, 12, h, w) → images (B, 3, 2h, 2w) in [0, 1] (clamped)."""
    return (F.pixel_shuffle(latents, PATCH) / 2 + 0.5).clamp(0, 1)


class ToyWorldPipeline(DiffusionPipeline):
    """Text-to-image pipeline of the toy world (see module docstring)."""

    model_cpu_offload_seq = "text_encoder->unet"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        tokenizer: PreTrainedTokenizerFast,
        scheduler: SchedulerMixin,
    ):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        self.vae_scale_factor = PATCH

    # SD-compatible properties -------------------------------------------------------

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1

    @property
    def cross_attention_kwargs(self) -> dict[str, Any] | None:
        return self._cross_attention_kwargs

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    # prompt encoding ----------------------------------------------------------------

    def _embed(self, texts: list[str], device: torch.device) -> torch.Tensor:
        """Text-encoder hidden states (len(texts), 16, hidden) of padded prompts."""
        ids = self.tokenizer(
            texts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder(ids.to(device))[0]

    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        device: torch.device,
        num_images_per_prompt: int,
        do_classifier_free_guidance: bool,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encode prompts, then negative prompts, like ``StableDiffusionPipeline.encode_prompt``.

        Returns ``(prompt_embeds, negative_prompt_embeds)``, each
        (B · num_images_per_prompt, 16, hidden); the second is None without
        classifier-free guidance. The negative prompt defaults to "".
        """
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds = self._embed(prompts, device)
        batch = prompt_embeds.shape[0]
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negative = negative_prompt if negative_prompt is not None else ""
            negatives = [negative] * batch if isinstance(negative, str) else list(negative)
            if len(negatives) != batch:
                raise ValueError(f"{len(negatives)} negative prompts for {batch} prompts")
            negative_prompt_embeds = self._embed(negatives, device)
        prompt_embeds = prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
        if negative_prompt_embeds is not None:
            negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
        return prompt_embeds, negative_prompt_embeds

    # sampling -----------------------------------------------------------------------

    def prepare_latents(
        self,
        batch: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Initial noise (batch, 12, height/2, width/2), scaled for the scheduler."""
        shape = (batch, self.unet.config.in_channels, height // PATCH, width // PATCH)
        if latents is None:
            if isinstance(generator, list):
                if len(generator) != batch:
                    raise ValueError(f"{len(generator)} generators for a batch of {batch}")
                latents = torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=dtype) for g in generator])
            else:
                latents = torch.randn(shape, generator=generator, dtype=dtype)
        elif latents.shape != shape:
            raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
        return latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable[["ToyWorldPipeline", int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Generate images from prompts.

        ``output_type``: ``"pil"`` (list of PIL images), ``"np"`` (float array
        (B, H, W, 3) in [0, 1]), ``"pt"`` (tensor (B, 3, H, W) in [0, 1]) or
        ``"latent"`` (B, 12, H/2, W/2). With ``guidance_scale > 1`` the UNet
        sees the batch ``[uncond, cond]``: the conditional half is second.
        """
        height = height or self.unet.config.sample_size * PATCH
        width = width or self.unet.config.sample_size * PATCH
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        self._guidance_scale = guidance_scale
        self._cross_attention_kwargs = cross_attention_kwargs
        self._interrupt = False
        device = self._execution_device
        dtype = self.unet.dtype

        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, device, num_images_per_prompt, self.do_classifier_free_guidance, negative_prompt,
            prompt_embeds, negative_prompt_embeds,
        )
        batch = prompt_embeds.shape[0]
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        latents = self.prepare_latents(batch, height, width, dtype, device, generator, latents)
        step_kwargs = {"eta": eta, "generator": generator} if isinstance(self.scheduler, DDIMScheduler) else {}
        if isinstance(generator, list):
            step_kwargs.pop("generator", None)

        with self.progress_bar(total=len(timesteps)) as progress:
            for i, t in enumerate(timesteps):
                if self._interrupt:
                    continue
                embeds = prompt_embeds
                model_input = latents
                if self.do_classifier_free_guidance:
                    embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
                    model_input = torch.cat([latents, latents])
                model_input = self.scheduler.scale_model_input(model_input, t)
                pred = self.unet(
                    model_input, t, encoder_hidden_states=embeds.to(dtype),
                    cross_attention_kwargs=cross_attention_kwargs, return_dict=False,
                )[0]
                if self.do_classifier_free_guidance:
                    uncond, cond = pred.chunk(2)
                    pred = uncond + guidance_scale * (cond - uncond)
                latents = self.scheduler.step(pred, t, latents, **step_kwargs, return_dict=False)[0]

                if callback_on_step_end is not None:
                    local = {"latents": latents, "prompt_embeds": prompt_embeds,
                             "negative_prompt_embeds": negative_prompt_embeds}
                    out = callback_on_step_end(self, i, t, {k: local[k] for k in tensor_inputs})
                    latents = out.pop("latents", latents)
                    prompt_embeds = out.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = out.pop("negative_prompt_embeds", negative_prompt_embeds)
                progress.update()

        self.maybe_free_model_hooks()
        images = self._postprocess(latents, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _postprocess(self, latents: torch.Tensor, output_type: str) -> Any:
        if output_type == "latent":
            return latents
        images = latents_to_images(latents.float())
        if output_type == "pt":
            return images
        array = images.permute(0, 2, 3, 1).cpu().numpy()
        if output_type == "np":
            return array
        if output_type == "pil":
            return self.numpy_to_pil(array)
        raise ValueError(f"unknown output_type {output_type!r}")
