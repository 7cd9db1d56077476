"""Samplers by name: the pipeline's own scheduler swapped for another one built from its config.

Light on purpose (diffusers is imported only when a scheduler is built), so the
command line can offer the names without importing torch.

* ``"ddim"`` — DDIM, deterministic (η = 0); the built-in model's own sampler;
* ``"dpm++"`` — DPM-Solver++(2M), a second-order multistep solver: close to
  50 DDIM steps in 15–20 steps, the fast default of ``attnscope capture``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

SCHEDULERS: tuple[str, ...] = ("ddim", "dpm++")


def make_scheduler(name: str, config: dict):
    """A new scheduler ``name`` over the noise schedule, prediction type and timestep spacing of ``config``
    (a diffusers scheduler config)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "dpm++":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")


@contextmanager
def scheduler_of(pipe, name: str | None) -> Iterator[None]:
    """Sample ``pipe`` with scheduler ``name`` inside the block (None: its own); restored on exit."""
    if name is None:
        yield
        return
    original = pipe.scheduler
    pipe.scheduler = make_scheduler(name, original.config)
    try:
        yield
    finally:
        pipe.scheduler = original
