"""Load a pipeline: the built-in toy model, a local diffusers folder, a hub id
from the offline cache, or a tiny random SD/DiT-shaped model for tests.

The tiny builders are imported on first use: they pull in diffusers' VAE and
transformer classes, which the built-in model does not need, and the
command line's start-up time is measured (``benchmarks/cpu_default.py``).
"""

from attnscope._lazy import lazy_attributes
from attnscope.models.identity import model_fingerprint
from attnscope.models.loading import ModelNotFoundError, load_pipeline, resolve_device

_BUILDERS = {
    "tiny_sd_pipeline": "tiny",
    "tiny_sd2_pipeline": "tiny",
    "tiny_sdxl_pipeline": "tiny",
    "tiny_flux_pipeline": "tiny_dit",
    "tiny_pixart_pipeline": "tiny_dit",
    "tiny_sana_pipeline": "tiny_dit",
    "tiny_sd3_pipeline": "tiny_dit",
}

__all__ = ["ModelNotFoundError", "load_pipeline", "model_fingerprint", "resolve_device", *_BUILDERS]
__getattr__ = lazy_attributes(__name__, _BUILDERS)
