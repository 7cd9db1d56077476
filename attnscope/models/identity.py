"""A cheap, stable fingerprint of a pipeline's weights.

Run files and edits record which weights they came from. Hashing every byte of
Stable Diffusion (~2 GB) would cost seconds per command, so tensors above
``full_below`` elements contribute a fixed strided sample of their elements
plus their shape. Values are rounded to float16 first, so one model loaded
in float32 on a CPU and in float16 on a GPU has one fingerprint (and an edit
made on either applies to both). Any edit that touches a whole matrix (UCE,
RECE, fine-tuning, LoRA merges) changes the sample.
"""

from __future__ import annotations

import hashlib

import torch


def _tensor_bytes(tensor: torch.Tensor, full_below: int, samples: int) -> bytes:
    flat = tensor.detach().reshape(-1)
    if flat.numel() > full_below:
        stride = max(1, flat.numel() // samples)
        flat = flat[::stride]
    return flat.to("cpu", torch.float16).contiguous().numpy().tobytes()


def model_fingerprint(
    modules: dict[str, torch.nn.Module], full_below: int = 1 << 16, samples: int = 4096
) -> str:
    """Hex digest over the named modules' state dicts (names, shapes, float16-rounded values).

    ``modules`` maps a component name ("unet", "text_encoder") to its module;
    the digest depends on the component names, so pass them consistently.
    """
    digest = hashlib.blake2b(digest_size=16)
    for component in sorted(modules):
        for name, tensor in sorted(modules[component].state_dict().items()):
            digest.update(f"{component}.{name}:{tuple(tensor.shape)}".encode())
            digest.update(_tensor_bytes(tensor, full_below, samples))
    return digest.hexdigest()


def pipeline_fingerprint(pipe) -> str:
    """Fingerprint of the denoiser (UNet or transformer) and text encoder(s) of a diffusers pipeline."""
    names = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
    modules = {n: getattr(pipe, n) for n in names if getattr(pipe, n, None) is not None}
    return model_fingerprint(modules)
