"""Prompts × seeds sampled with capture into one run file, with their images beside it; resumable
(what ``attnscope capture`` does, as :func:`capture_runs`).

::

    request = CaptureRequest(["a wooden bench"], seeds=[0, 1], out=Path("run.h5"))
    done = capture_runs(pipe, request)       # run.h5, run-0.png, run-1.png
    done.written, done.images

With ``resume``, the jobs whose run is already complete (same prompt,
negative prompt, seed and guidance, with its image) in ``out`` are skipped;
the file must have been captured with the same image size, sampler, steps,
model and edit.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from attnscope.errors import UsageError
from attnscope.hooks import capture
from attnscope.hooks.selection import Selection
from attnscope.models.checks import check_image_size, check_prompt_length, size_factor
from attnscope.models.identity import pipeline_fingerprint
from attnscope import sampling
from attnscope.sampling import Job, SamplerSettings
from attnscope.schedulers import make_scheduler
from attnscope.store import RunFile
from attnscope.store.schema import CaptureSchema
from attnscope.store.writer import WriterTiming


@dataclass
class CaptureRequest:
    """What to capture: every prompt × seed (duplicates dropped) with ``negative_prompt``, sampled
    with ``settings`` in batches of ``batch_size``, recorded as ``selection`` says into ``out``
    (``storage``: lossless, quantised or raw; ``block``: the joint-attention block of SD3/Flux;
    ``concepts``: phrases whose concept maps are stored too). ``resume`` adds to an existing
    ``out``, ``overwrite`` replaces it."""

    prompts: Sequence[str]
    seeds: Sequence[int] = (0,)
    out: Path = Path("run.h5")
    negative_prompt: str = ""
    settings: SamplerSettings = field(default_factory=SamplerSettings)
    selection: Selection = field(default_factory=Selection)
    storage: str = "lossless"
    block: str = "text-to-image"
    concepts: Sequence[str] = ()
    batch_size: int = 8
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def jobs(self) -> list[Job]:
        """One job per prompt × seed, prompt-major."""
        seeds = list(dict.fromkeys(self.seeds))
        return [Job(prompt, seed, self.negative_prompt) for prompt in dict.fromkeys(self.prompts) for seed in seeds]


@dataclass
class CaptureDone:
    """What :func:`capture_runs` did: ``written`` runs sampled, ``skipped`` (complete already), the
    ``images`` saved (``{out stem}-{run}.png``), the file's ``layers`` and stored ``steps``, and the run
    writer's ``timing`` (None when nothing was sampled)."""

    written: int
    skipped: int
    images: list[Path]
    layers: int
    steps: int
    timing: WriterTiming | None = None

    def writer_note(self, worth_saying: float = 1.0) -> str | None:
        """A line for the user when the sampling waited at least ``worth_saying`` seconds for the run writer."""
        if self.timing is None or self.timing.waited < worth_saying:
            return None
        return (f"sampling waited {self.timing.waited:.1f} s for the run writer: compressing or writing the run "
                "file is slower than sampling here (--storage raw skips compression)")


def check_request(pipe, request: CaptureRequest) -> None:
    """What only the loaded model can tell: image size, prompt lengths, token selection, captured steps."""
    settings = request.settings
    check_image_size(pipe, settings.height, settings.width)
    check_prompt_length(pipe, request.prompts)
    if request.negative_prompt:
        check_prompt_length(pipe, [request.negative_prompt], "--negative-prompt")
    request.selection.check_prompts(pipe.tokenizer, request.prompts)
    steps = sampler_steps(pipe, settings)
    captured = request.selection.steps
    if captured is not None and steps is not None:
        try:
            request.selection.resolve_steps(steps)
        except ValueError:
            late = [s for s in captured if not -steps <= s < steps] if isinstance(captured, list) else captured
            raise UsageError(f"--steps-captured {late}: outside the {steps} sampling steps (0..{steps - 1})") from None


def sampler_steps(pipe, settings: SamplerSettings) -> int | None:
    """The sampling steps a call with ``settings`` makes: theirs (the fast sampler's with "auto"), else the
    pipeline's default (None when it has none)."""
    return settings.for_pipeline(pipe).steps or pipeline_default(pipe, "num_inference_steps")


def pipeline_default(pipe, argument: str):
    """The default of ``pipe.__call__``'s ``argument`` (None when it has none)."""
    parameter = inspect.signature(pipe.__call__).parameters.get(argument)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def effective_guidance(pipe, guidance: float | None) -> float | None:
    """The CFG scale a run will record: ``guidance`` or the pipeline's default (None when unknown)."""
    if guidance is not None:
        return guidance
    default = pipeline_default(pipe, "guidance_scale")
    return None if default is None else float(default)


def timestep_count(scheduler, steps: int) -> int:
    """How many timesteps ``scheduler`` samples for ``steps`` (PNDM: one more). Only the count: flow-matching
    pipelines shift the values by image size inside ``__call__``, and Flux's scheduler needs that shift (``mu``)
    to set its timesteps at all, so without it ``steps`` is the count."""
    try:
        scheduler.set_timesteps(steps)
    except (TypeError, ValueError):
        return steps
    return len(scheduler.timesteps)


def settings_differ(pipe, settings: SamplerSettings, schema: CaptureSchema) -> list[str]:
    """What of the file's capture schema differs from this capture's settings: image size, sampler, steps,
    model, edit."""
    sample = getattr(pipe, "default_sample_size", None)  # SDXL, SD3, Flux: what their __call__ falls back to
    if sample is None:
        sample = (getattr(pipe, "unet", None) or pipe.transformer).config.sample_size
    sample_h, sample_w = (sample, sample) if isinstance(sample, int) else sample
    size = (settings.height or sample_h * size_factor(pipe), settings.width or sample_w * size_factor(pipe))
    concrete = settings.for_pipeline(pipe)
    scheduler = make_scheduler(concrete.scheduler, pipe.scheduler) if concrete.scheduler else pipe.scheduler
    steps = timestep_count(scheduler, sampler_steps(pipe, settings))
    edits = [dict(applied.edit.meta) for applied in getattr(pipe, "attnscope_edits", None) or []]
    found = {
        "image size": (schema.height, schema.width) != size,
        "sampler": schema.sampler.get("scheduler") != type(scheduler).__name__,
        "number of steps": len(schema.timesteps) != steps,
        "model": schema.model.get("fingerprint") != pipeline_fingerprint(pipe),
        "edit": (schema.edit or {}).get("edits", []) != json.loads(json.dumps(edits, sort_keys=True, default=str)),
    }
    return [name for name, differs in found.items() if differs]


def completed_jobs(pipe, request: CaptureRequest, jobs: Sequence[Job]) -> dict[int, int]:
    """``{job index: run}`` of the jobs whose run (same prompt, negative prompt, seed and guidance) is
    complete with its image in ``request.out``, whose capture settings must be this capture's."""
    guidance = effective_guidance(pipe, request.settings.guidance_scale)
    with RunFile(request.out) as runs:
        if differ := settings_differ(pipe, request.settings, runs.schema):
            raise UsageError(f"--resume {request.out}: its runs were captured with another {', '.join(differ)}; "
                             "resume with the same settings, or choose another --out")
        usable = runs.complete & runs.has_image
        keys = {}
        columns = zip(runs.column("prompt"), runs.column("negative_prompt"), runs.column("seed"),
                      runs.column("guidance_scale"))
        for run, (prompt, negative, seed, scale) in enumerate(columns):
            if usable[run]:
                keys.setdefault((str(prompt), str(negative), int(seed)), []).append((run, float(scale)))
    done = {}
    for index, job in enumerate(jobs):
        for run, scale in keys.get((job.prompt, job.negative_prompt, job.seed), []):
            if guidance is None or np.isclose(scale, guidance, rtol=1e-6):
                done[index] = run
    return done


def capture_runs(pipe, request: CaptureRequest) -> CaptureDone:
    """Check ``request`` against ``pipe``, sample the jobs not yet complete in ``request.out`` with
    capture, and save each new run's image as ``{out stem}-{run}.png`` beside the file."""
    check_request(pipe, request)
    jobs = request.jobs()
    done = completed_jobs(pipe, request, jobs) if request.resume else {}
    todo = [job for index, job in enumerate(jobs) if index not in done]
    written, timing = [], None
    if todo:
        selection = request.selection
        with capture(pipe, layers=selection.layers, steps=selection.steps, tokens=selection.tokens,
                     heads=selection.heads, branch=selection.branch, dtype=selection.dtype, sink=request.out,
                     resume=request.resume, overwrite=request.overwrite, storage=request.storage,
                     block=request.block, concepts=list(request.concepts)) as cap:
            images = sampling.generate(pipe, todo, request.settings, batch_size=request.batch_size, cap=cap,
                                       progress=request.progress)
        timing = cap.writer_timing
        stem = request.out.with_suffix("")
        for run, image in zip(cap.run_ids, images):  # named by run index: a resumed capture adds new names
            path = stem.parent / f"{stem.name}-{run}.png"
            Image.fromarray(image).save(path)
            written.append(path)
    with RunFile(request.out) as runs:
        n_layers, n_steps = len(runs.layers), len(runs.steps)
    return CaptureDone(len(todo), len(done), written, n_layers, n_steps, timing)
