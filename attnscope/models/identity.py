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

import numpy as np
import torch


def _sample(tensor: torch.Tensor, full_below: int, samples: int) -> torch.Tensor:
    """The elements of ``tensor`` that enter the fingerprint, as float16 on its own device."""
    flat = tensor.detach().reshape(-1)
    if flat.numel() > full_below:
        stride = max(1, flat.numel() // samples)
        flat = flat[::stride]
    return flat.to(torch.float16)


def model_fingerprint(
    modules: dict[str, torch.nn.Module], full_below: int = 1 << 16, samples: int = 4096
) -> str:
    """Hex digest over the named modules' state dicts (names, shapes, float16-rounded values).

    ``modules`` maps a component name ("unet", "text_encoder") to its module;
    the digest depends on the component names, so pass them consistently.
    The samples of each device travel to the host in one copy (one wait for a
    GPU, not one per tensor).
    """
    entries = [(f"{component}.{name}:{tuple(tensor.shape)}", _sample(tensor, full_below, samples))
               for component in sorted(modules) for name, tensor in sorted(modules[component].state_dict().items())]
    on_host: dict[int, bytes] = {}
    for device in {values.device for _, values in entries}:
        mine = [i for i, (_, values) in enumerate(entries) if values.device == device]
        joined = torch.cat([entries[i][1] for i in mine]).cpu().numpy()
        offsets = np.cumsum([0] + [entries[i][1].numel() for i in mine])
        on_host.update({i: joined[offsets[k] : offsets[k + 1]].tobytes() for k, i in enumerate(mine)})
    digest = hashlib.blake2b(digest_size=16)
    for index, (label, _) in enumerate(entries):
        digest.update(label.encode())
        digest.update(on_host[index])
    return digest.hexdigest()


def pipeline_fingerprint(pipe) -> str:
    """Fingerprint of the denoiser (UNet or transformer) and text encoder(s) of a diffusers pipeline."""
    names = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
    modules = {n: getattr(pipe, n) for n in names if getattr(pipe, n, None) is not None}
    return model_fingerprint(modules)
