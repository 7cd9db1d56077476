"""From concept phrases to the text embeddings closed-form erasure works on.

A prompt is encoded exactly as the pipeline conditions on it: a ``(L, d)``
matrix, one row per token position (``L`` = the tokenizer's
``model_max_length``: 77 for CLIP, 16 for the toy model). Which rows an edit
uses is the *token choice*, the two used in the literature:

``"last"``
    One row per concept: the concept's last word token (the newer UCE code).
    A guide contributes its own last word token; the empty prompt has no word,
    so its "last word token" is the start token (BOS), as in the reference code.
``"eos-aligned"``
    The rows from the concept's last word token to the end of the sequence
    (EOS and padding carry the whole phrase through the causal encoder),
    paired position by position with the guide's rows from the guide's last
    word token on; the longer tail is cut so both have the same length (the
    UCE paper's code). Preserved concepts contribute every position and the
    empty prompt is always preserved.

For SDXL the embedding is the concatenation of both text encoders' outputs
(``pipe.encode_prompt``); token positions come from the first tokenizer.
PixArt's T5 encoder sees the padding mask, as in its pipeline; its padding
keys are masked in the cross-attention, so with ``"eos-aligned"`` only the
rows up to EOS matter at sampling time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from attnscope.erasure.methods import TOKEN_CHOICES
from attnscope.models.prompts import EncodedPrompt, encode_prompts

TokenChoice = Literal["last", "eos-aligned"]


@dataclass(frozen=True)
class EraseKeys:
    """The rows of one erased concept and the guide rows they are mapped onto.

    ``keys`` and ``guide_keys`` are both ``(n, d)``; row ``i`` of ``keys``
    (token ``positions[i]`` of the concept) should, after the edit, produce
    the keys/values the unedited layer produced for row ``i`` of ``guide_keys``.
    """

    concept: str
    guide: str
    keys: torch.Tensor
    guide_keys: torch.Tensor
    positions: tuple[int, ...]


def pair_rows(concept: EncodedPrompt, guide: EncodedPrompt, token_choice: TokenChoice) -> EraseKeys:
    """The concept rows and guide rows paired for erasure (see module docstring)."""
    i, j = concept.last_word, guide.last_word
    if token_choice == "last":
        length = 1
    elif token_choice == "eos-aligned":
        length = concept.embedding.shape[0] - max(i, j)
    else:
        raise ValueError(f"token_choice must be one of {TOKEN_CHOICES}, got {token_choice!r}")
    return EraseKeys(
        concept.text,
        guide.text,
        concept.embedding[i : i + length],
        guide.embedding[j : j + length],
        tuple(range(i, i + length)),
    )


@dataclass(frozen=True)
class ErasureRows:
    """Everything a closed-form edit needs from the text side.

    ``erase[i]``: concept ``i``'s rows and its guide's rows; ``preserve``: the
    preserved rows stacked ``(m, d)``, or ``None`` when nothing is preserved.
    """

    erase: list[EraseKeys]
    preserve: torch.Tensor | None


def erasure_rows(
    pipe,
    concepts: Sequence[str],
    guides: Sequence[str],
    preserved: Sequence[str],
    token_choice: TokenChoice,
) -> ErasureRows:
    """Encode every distinct text once and pick the rows ``token_choice`` says (see module docstring).

    ``guides[i]`` guides ``concepts[i]``. Preserved concepts contribute their
    last word token (``"last"``) or every position, with the empty prompt
    always among them (``"eos-aligned"``).
    """
    if token_choice not in TOKEN_CHOICES:
        raise ValueError(f"token_choice must be one of {TOKEN_CHOICES}, got {token_choice!r}")
    if len(guides) != len(concepts):
        raise ValueError(f"{len(concepts)} concepts but {len(guides)} guides")
    preserved = list(dict.fromkeys(preserved))
    if token_choice == "eos-aligned" and "" not in preserved:
        preserved.append("")
    texts = list(dict.fromkeys([*concepts, *guides, *preserved]))
    encoded = dict(zip(texts, encode_prompts(pipe, texts)))
    erase = [pair_rows(encoded[c], encoded[g], token_choice) for c, g in zip(concepts, guides)]
    kept = [encoded[p] for p in preserved]
    if not kept:
        return ErasureRows(erase, None)
    if token_choice == "last":
        return ErasureRows(erase, torch.stack([e.embedding[e.last_word] for e in kept]))
    return ErasureRows(erase, torch.cat([e.embedding for e in kept]))
