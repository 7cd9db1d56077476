"""Samplers by name: the pipeline's own scheduler swapped for another one built from its config.

Light on purpose (diffusers is imported only when a scheduler is built), so the
command line can offer the names without importing torch.

* ``"ddim"`` — DDIM, deterministic (η = 0); the built-in model's own sampler;
* ``"dpm++"`` — DPM-Solver++(2M), a second-order multistep solver: close to
  50 DDIM steps in 10–20 steps;
* ``"auto"`` — DPM-Solver++(2M) in :data:`FAST_STEPS` steps where the model's
  scheduler admits it (DDPM-family models: the built-in one, SD 1.x/2.x, SDXL,
  PixArt), else the model's own scheduler and step count (flow-matching
  models: SD3, Flux); the default of ``attnscope capture``.

A scheduler is swapped in only where diffusers lists it as compatible with the
model's own (``scheduler.compatibles``): the same noise schedule, prediction
type and timestep spacing then carry over.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

SCHEDULERS: tuple[str, ...] = ("ddim", "dpm++")
FAST, FAST_STEPS = "dpm++", 10
_CLASSES = {"ddim": "DDIMScheduler", "dpm++": "DPMSolverMultistepScheduler"}


def fits(name: str, scheduler) -> bool:
    """Whether scheduler ``name`` can replace ``scheduler`` (diffusers lists it as compatible)."""
    return _CLASSES[name] in {cls.__name__ for cls in scheduler.compatibles} | {type(scheduler).__name__}


def resolve(name: str | None, scheduler) -> str | None:
    """The scheduler to swap in for ``name`` given the model's ``scheduler``: None keeps the model's own."""
    if name in (None, "model"):
        return None
    if name == "auto":
        return FAST if fits(FAST, scheduler) else None
    if name not in _CLASSES:
        raise ValueError(f"unknown scheduler {name!r}; choose from auto, model, {', '.join(SCHEDULERS)}")
    if not fits(name, scheduler):
        raise ValueError(f"scheduler {name!r} does not fit this model's {type(scheduler).__name__} "
                         "(another noise schedule or prediction target); use --scheduler model")
    return name


def make_scheduler(name: str, scheduler):
    """A new scheduler ``name`` (not "auto") over the noise schedule, prediction type and spacing of ``scheduler``."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    name = resolve(name, scheduler)
    if name == "ddim":
        return DDIMScheduler.from_config(scheduler.config)
    if name == "dpm++":
        return DPMSolverMultistepScheduler.from_config(scheduler.config, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"make_scheduler needs a scheduler name, not {name!r}")


@contextmanager
def scheduler_of(pipe, name: str | None) -> Iterator[None]:
    """Sample ``pipe`` with scheduler ``name`` inside the block (None, "model", or "auto" where nothing
    fits: its own); the pipeline's own scheduler is restored on exit."""
    name = resolve(name, pipe.scheduler)
    if name is None:
        yield
        return
    original = pipe.scheduler
    pipe.scheduler = make_scheduler(name, original)
    try:
        yield
    finally:
        pipe.scheduler = original
