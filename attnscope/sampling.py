"""The sampling loop: prompts × seeds in batches, deterministic, optionally captured.

Every run draws its initial noise from its own CPU ``torch.Generator`` seeded
with the run's seed, so an image depends only on (model, edit, prompt, seed,
settings) — not on the batch it landed in or on the device.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from attnscope.hooks.capture import Capture
from attnscope.schedulers import FAST, FAST_STEPS, resolve, scheduler_of


@dataclass(frozen=True)
class Job:
    """One run to sample: a prompt, a seed and free-form metadata.

    Args:
        prompt: the text prompt.
        seed: seeds the run's own noise generator.
        negative_prompt: the CFG negative prompt (``""``: the pipeline's default).
        extra: JSON metadata stored with the run (e.g. the runner's ``prompt_id``).
    """

    prompt: str
    seed: int
    negative_prompt: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SamplerSettings:
    """How runs are sampled; ``None`` fields take the pipeline's own default.

    Args:
        steps: sampling steps (with ``scheduler="auto"`` and ``None``: the fast
            sampler's step count).
        guidance_scale: CFG scale.
        height, width: image size in pixels.
        scheduler: a name of :mod:`attnscope.schedulers` ("auto", "ddim", "dpm++");
            ``None`` keeps the pipeline's own.
    """

    steps: int | None = 50
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None
    scheduler: str | None = None

    def for_pipeline(self, pipe) -> "SamplerSettings":
        """These settings made concrete for ``pipe``: the scheduler to swap in (None: its own) and the
        step count ("auto" without steps: :data:`~attnscope.schedulers.FAST_STEPS` when the fast sampler fits)."""
        from dataclasses import replace

        name = resolve(self.scheduler, pipe.scheduler)
        steps = self.steps if self.steps is not None or name != FAST or self.scheduler != "auto" else FAST_STEPS
        return replace(self, scheduler=name, steps=steps)

    def pipeline_kwargs(self) -> dict:
        kwargs = {}
        for name, value in (("num_inference_steps", self.steps), ("guidance_scale", self.guidance_scale),
                            ("height", self.height), ("width", self.width)):
            if value is not None:
                kwargs[name] = value
        return kwargs


def batches(jobs: Sequence[Job], batch_size: int) -> Iterator[list[Job]]:
    for start in range(0, len(jobs), batch_size):
        yield list(jobs[start : start + batch_size])


def to_uint8(images) -> np.ndarray:
    """Pipeline output (PIL list or float array in [0, 1]) → ``(N, H, W, 3)`` uint8."""
    array = np.stack([np.asarray(image) for image in images])
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    return array


def sample_batch(pipe, jobs: Sequence[Job], settings: SamplerSettings, cap: Capture | None = None) -> np.ndarray:
    """Sample one batch; returns ``(len(jobs), H, W, 3)`` uint8 images.

    With ``cap`` the runs are labelled (prompt, seed, extra) and their images
    stored next to their maps.
    """
    if cap is not None:
        cap.label_next(
            [job.prompt for job in jobs],
            [job.seed for job in jobs],
            [job.negative_prompt for job in jobs],
            [job.extra for job in jobs],
        )
    generators = [torch.Generator("cpu").manual_seed(job.seed) for job in jobs]
    negative = [job.negative_prompt for job in jobs]
    settings = settings.for_pipeline(pipe)
    kwargs = settings.pipeline_kwargs()
    if (settings.height or settings.width) and "use_resolution_binning" in inspect.signature(pipe.__call__).parameters:
        kwargs["use_resolution_binning"] = False  # PixArt/Sana: sample the size asked, not a bin resized back to it
    if any(negative):  # else the pipeline's own default (None for SD, "" for PixArt, which rejects None)
        kwargs["negative_prompt"] = negative
    with scheduler_of(pipe, settings.scheduler):
        output = pipe([job.prompt for job in jobs], generator=generators, output_type="np", **kwargs)
    images = to_uint8(output.images)
    if cap is not None:
        cap.add_images(images)
    return images


def generate(
    pipe,
    jobs: Sequence[Job],
    settings: SamplerSettings = SamplerSettings(),
    *,
    batch_size: int = 8,
    cap: Capture | None = None,
    progress: bool = True,
    description: str = "sampling",
) -> np.ndarray:
    """Sample every job in batches; returns ``(len(jobs), H, W, 3)`` uint8 images.

    Each run draws its noise from its own generator seeded with ``job.seed``, so an
    image does not depend on the batch it landed in.

    Args:
        pipe: the pipeline (:func:`attnscope.load_pipeline`), with any edit applied.
        jobs: one :class:`Job` (prompt, seed, negative prompt, metadata) per image.
        settings: steps, guidance scale, size and scheduler (:class:`SamplerSettings`;
            default: the model's own scheduler, 50 steps).
        batch_size: images per pipeline call.
        cap: an open :func:`~attnscope.hooks.front.capture`; runs are labelled
            with their prompt, seed and metadata and their images stored with the maps.
        progress: show a progress bar.
        description: the progress bar's label.
    """
    images = []
    with tqdm(total=len(jobs), desc=description, unit="img", disable=not progress) as bar:
        for batch in batches(jobs, batch_size):
            images.append(sample_batch(pipe, batch, settings, cap))
            bar.update(len(batch))
    return np.concatenate(images) if images else np.zeros((0, 0, 0, 3), np.uint8)
