"""Checks of user input against a loaded pipeline: image size, prompt length, vocabulary.

Each raises :class:`~attnscope.errors.UsageError` with one line naming the
option, the value and the fix, before anything is sampled or computed.
"""

from __future__ import annotations

from typing import Sequence

from attnscope.errors import UsageError
from attnscope.models.prompts import token_ids


def size_factor(pipe) -> int:
    """Pixels per latent cell (the VAE's downscaling): image height and width must be multiples of it."""
    return int(getattr(pipe, "vae_scale_factor", 1) or 1)


def check_image_size(pipe, height: int | None, width: int | None) -> None:
    """Refuse a height/width the pipeline would silently round down (or reject deep inside)."""
    factor = size_factor(pipe)
    for option, value in (("--height", height), ("--width", width)):
        if value is not None and value % factor:
            low = max(factor, value // factor * factor)
            raise UsageError(
                f"{option} {value} is not a multiple of {factor} (the model's latent factor): use {low} or {low + factor}"
            )


def check_prompt_length(pipe, prompts: Sequence[str], option: str = "--prompt") -> None:
    """Refuse prompts longer than the text encoder reads (the tokenizer would cut them silently)."""
    tokenizer = pipe.tokenizer
    limit = int(tokenizer.model_max_length)
    for prompt in prompts:
        n = len(token_ids(tokenizer, prompt))  # with the start and end tokens, not truncated
        if n > limit:
            raise UsageError(
                f"{option} {prompt!r} is {n} tokens with start/end, the model reads at most {limit}: shorten it"
            )


def check_vocabulary(pipe, texts: Sequence[str], option: str, *, allow_empty: bool = False) -> None:
    """Refuse empty texts (unless ``allow_empty``: the empty prompt is a valid guide) and texts with
    words the tokenizer does not know (they would become ``<unk>``)."""
    tokenizer = pipe.tokenizer
    unk = getattr(tokenizer, "unk_token_id", None)
    for text in texts:
        if not text.strip():
            if allow_empty:
                continue
            raise UsageError(f"{option} {text!r} is empty: name a concept, e.g. {option} bench")
        if unk is None:
            continue
        ids = token_ids(tokenizer, text, special=False)
        unknown = [word for word in text.split() if unk in token_ids(tokenizer, word, special=False)]
        if unk in ids:
            raise UsageError(
                f"{option} {text!r}: {', '.join(map(repr, unknown)) or 'a word'} not in the model's vocabulary "
                "(it would become <unk>); use words the model knows"
            )
