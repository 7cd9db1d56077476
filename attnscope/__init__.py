"""attnscope: see what concept erasure does inside a text-to-image diffusion model.

The before/after workflow through one import (the README's; ``tests/test_front_door.py`` runs it)::

    import attnscope as at

    pipe = at.load_pipeline()                                 # the built-in toy model
    edit = at.erase_uce(pipe, ["bench"], token_choice="eos-aligned")
    jobs = [at.Job("a wooden bench and a blue bird", seed) for seed in (0, 1)]
    fast = at.SamplerSettings(steps=None, scheduler="auto")   # DPM-Solver++, 10 steps
    with at.capture(pipe, sink="before.h5") as cap:
        at.generate(pipe, jobs, fast, cap=cap)
    with edit.applied(pipe), at.capture(pipe, sink="after.h5") as cap:
        at.generate(pipe, jobs, fast, cap=cap)
    with at.RunFile("before.h5") as before, at.RunFile("after.h5") as after:
        study = at.drift_study(before, after, "wooden", ["bench", "bird"])
        before.heatmap(0, word="wooden", layers="up")        # (H, W), the layers capture(layers="up") keeps

Names are imported on first use (a module ``__getattr__``), so ``import
attnscope`` and the command line start without torch or diffusers.
"""

from attnscope._lazy import lazy_attributes
from attnscope._version import __version__

_EXPORTS = {
    "load_pipeline": "models.loading",
    "cross_attention_layers": "models.layers",
    "capture": "hooks.front",
    "RunFile": "store.reader",
    "Edit": "erasure.edit",
    "erase_uce": "erasure.uce",
    "erase_rece": "erasure.rece",
    "Job": "sampling",
    "SamplerSettings": "sampling",
    "generate": "sampling",
    "drift_study": "analyses.run_binding",
    "run_localisation": "analyses.localisation",
}

__all__ = sorted(_EXPORTS) + ["__version__"]
__getattr__ = lazy_attributes(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
