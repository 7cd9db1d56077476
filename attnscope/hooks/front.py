"""``capture(pipe, ...)``: the entry point of attention capture, for UNets and diffusion transformers.

It picks :class:`~attnscope.hooks.capture.Capture` for a UNet pipeline and
:class:`~attnscope.hooks.dit.TransformerCapture` for a transformer one; the
transformer module is imported only when such a pipeline is captured, so a
UNet capture (``attnscope capture``'s default) does not load it.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from attnscope.hooks.capture import Capture
from attnscope.hooks.selection import Selection
from attnscope.models.layers import is_transformer_pipeline


def capture(
    pipe,
    *,
    layers: str | Sequence[str] = "all",
    steps=None,
    tokens="prompt",
    heads: str = "mean",
    branch: str = "cond",
    dtype: torch.dtype = torch.float16,
    sink: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    storage: str = "lossless",
    block: str = "text-to-image",
    concepts: Sequence[str] = (),
) -> Capture:
    """Capture cross-attention maps of ``pipe`` inside a ``with`` block::

        with capture(pipe, layers="up", sink="run.h5") as cap:
            pipe("a wooden bench and a blue bird")
        cap.heatmap(word="wooden")                      # (H, W)

    A diffusion-transformer pipeline (SD3, Flux, PixArt, Sana) gets a
    :class:`~attnscope.hooks.dit.TransformerCapture`: the same selection,
    run file and reader, on its text→image attention.

    Args:
        pipe: a diffusers pipeline (:func:`attnscope.load_pipeline`); only this
            instance's attention processors are replaced, and restored on exit.
        layers: ``"all"``, layer names, globs (``"up_blocks.*"``) or places
            (``"down"``, ``"mid"``, ``"up"``; ``"cross"``, ``"joint"``, ...), the rule
            of :mod:`attnscope.store.layers` that ``RunFile`` reads with too.
        steps, tokens, heads, branch, dtype: what to keep of each map; see
            :class:`~attnscope.hooks.selection.Selection` (default: every step,
            the prompt's real tokens, heads averaged, conditional branch, float16).
        sink: the run file to write (``None``: in memory), locked against other
            writers while the capture is open.
        resume: append to an existing run file with the same settings.
        overwrite: replace an existing run file (anything else at ``sink`` is
            never overwritten).
        storage: how the file keeps the maps — "lossless" (Zstandard, default),
            "quantised" (8-bit, absolute error ≤ 1.96e-3, read back as float32) or
            "raw" (uncompressed); see :mod:`attnscope.store.compression`.
        block: ``"image-to-text"`` stores a joint-attention transformer's other
            block (text queries on image keys).
        concepts: phrases whose ConceptAttention-style maps are stored beside
            the attention maps (joint-attention transformers only).

    Returns:
        The :class:`~attnscope.hooks.capture.Capture`; after the block,
        ``cap.maps(...)``, ``cap.heatmap(...)`` and ``cap.file`` (a ``RunFile``) read it.
    """
    selection = Selection(layers=layers, steps=steps, tokens=tokens, heads=heads, branch=branch, dtype=dtype)
    if is_transformer_pipeline(pipe):
        from attnscope.hooks.dit import TransformerCapture  # start-up speed: UNet captures never load it

        return TransformerCapture(pipe, selection, sink, resume=resume, overwrite=overwrite, storage=storage,
                                  block=block, concepts=concepts)
    if concepts or block != "text-to-image":
        raise ValueError("concept maps and the image-to-text block need a joint-attention transformer (SD3, Flux); "
                         "this pipeline has a UNet")
    return Capture(pipe, selection, sink, resume=resume, overwrite=overwrite, storage=storage)
