"""Load a pipeline: the built-in toy model, a local diffusers folder, a hub id
from the offline cache, or a tiny random SD/DiT-shaped model for tests."""

from attnscope.models.identity import model_fingerprint
from attnscope.models.loading import ModelNotFoundError, load_pipeline, resolve_device
from attnscope.models.tiny import tiny_sd2_pipeline, tiny_sd_pipeline, tiny_sdxl_pipeline
from attnscope.models.tiny_dit import tiny_flux_pipeline, tiny_pixart_pipeline, tiny_sana_pipeline, tiny_sd3_pipeline

__all__ = [
    "ModelNotFoundError",
    "load_pipeline",
    "model_fingerprint",
    "resolve_device",
    "tiny_flux_pipeline",
    "tiny_pixart_pipeline",
    "tiny_sana_pipeline",
    "tiny_sd3_pipeline",
    "tiny_sd2_pipeline",
    "tiny_sd_pipeline",
    "tiny_sdxl_pipeline",
]
