"""Prompt tokens and text embeddings of a pipeline: the one place prompts are tokenised and encoded.

* :func:`token_ids`, :func:`padded_ids`, :func:`token_texts` — a tokenizer's
  ids of a text (unpadded), of texts padded to the encoder's length, and the
  token strings of ids;
* :func:`tokenize` — a prompt's token ids as the pipeline pads them, with
  token strings and word labels (:class:`Tokens`);
* :func:`encode` — the text encoder's output for token ids (one-encoder pipelines);
* :func:`encode_prompts` — prompts encoded exactly as the pipeline conditions
  on them (SDXL's two encoders concatenated; PixArt's T5 with its padding
  mask), with each prompt's last word token (:class:`EncodedPrompt`);
* :func:`embed_texts`, :func:`text_embedder` — pooled, L2-normalised text
  embeddings (the distance of a prompt's concept to an erased one);
* :func:`text_streams` — which tokenizers and text encoders fill the text keys.

Every call of a tokenizer on text in the package is here (tests/test_import_graph.py checks it).

The denoiser attends to the text encoders' outputs in *streams*: a UNet or
PixArt/Sana has one (``"text"``); SD3 has CLIP (77 positions; CLIP-L and
CLIP-G share the positions, their features are concatenated) then T5; Flux
has T5 only (its CLIP gives the pooled vector).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from attnscope.models.layers import backbone
from attnscope.store.tokens import group_words


@dataclass(frozen=True)
class Tokens:
    """A prompt tokenised as the pipeline does: ``ids`` (1, L) padded to the encoder's length.

    ``texts``: the token strings of positions ``0 … end`` (start token, the
    prompt's tokens, end token); ``word_of[p]``: index into ``words`` of the
    word position ``p`` belongs to, -1 for special tokens.
    """

    ids: torch.Tensor
    texts: tuple[str, ...]
    word_of: tuple[int, ...]
    words: tuple[str, ...]

    def positions(self, word: str) -> list[int]:
        """Positions of every token of every occurrence of ``word``."""
        if word not in self.words:
            raise KeyError(f"word {word!r} is not in the prompt's words {list(self.words)}")
        return [p for p, w in enumerate(self.word_of) if w >= 0 and self.words[w] == word]


def token_ids(tokenizer, text: str, *, special: bool = True, truncate: bool = False) -> list[int]:
    """Ids of ``text``, unpadded: with the start and end tokens unless ``special`` is false; cut to the
    tokenizer's ``model_max_length`` only with ``truncate``."""
    return tokenizer(text, truncation=truncate, add_special_tokens=special).input_ids


def padded_ids(tokenizer, texts: Sequence[str], length: int | None = None) -> torch.Tensor:
    """Ids ``(len(texts), length)`` of ``texts`` padded and truncated to ``length`` (default the
    tokenizer's ``model_max_length``), as a pipeline pads its prompts; ``[""] * n`` gives the ids of
    the empty negative prompt."""
    length = tokenizer.model_max_length if length is None else length
    return tokenizer(list(texts), padding="max_length", max_length=length, truncation=True,
                     return_tensors="pt").input_ids


def token_texts(tokenizer, ids: Sequence[int] | torch.Tensor) -> list[str]:
    """The token strings of one row of ids ``(L,)``."""
    return tokenizer.convert_ids_to_tokens(ids.tolist() if isinstance(ids, torch.Tensor) else list(ids))


def tokenize(pipe, prompt: str) -> Tokens:
    """Token ids of ``prompt`` padded to ``pipe.tokenizer.model_max_length``, with word labels."""
    tokenizer = pipe.tokenizer
    ids = padded_ids(tokenizer, [prompt])
    n_real = len(token_ids(tokenizer, prompt, truncate=True))  # start, words, end
    texts = token_texts(tokenizer, ids[0, :n_real])
    word_of, words = group_words(texts)
    return Tokens(ids, tuple(texts), tuple(word_of), tuple(words))


def single_text_encoder(pipe):
    """``pipe.text_encoder`` of a pipeline with one text encoder (SD 1.x/2.x, the toy model); SDXL raises."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        raise ValueError("token attribution supports pipelines with one text encoder (SD 1.x/2.x, toy), not SDXL")
    return pipe.text_encoder


def encode(pipe, ids: torch.Tensor) -> torch.Tensor:
    """The text encoder's last hidden state (B, L, d) for ids (B, L): the UNet's conditioning."""
    encoder = single_text_encoder(pipe)
    return encoder(ids.to(encoder.device))[0]


@dataclass(frozen=True)
class EncodedPrompt:
    """One prompt's text embedding ``(L, d)`` (float32) and its last word token's index."""

    text: str
    embedding: torch.Tensor
    last_word: int


def _text_device(pipe) -> torch.device:
    return next(pipe.text_encoder.parameters()).device


def last_word_index(input_ids: Sequence[int], tokenizer) -> int:
    """Index of the last word token: the token before the first EOS (0 if none precedes it).

    Without an EOS token id, the end is the first padding position (or ``L``).
    """
    ids = list(input_ids)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if eos is not None and eos in ids:
        end = ids.index(eos)
    elif pad is not None and pad in ids:
        end = ids.index(pad)
    else:
        end = len(ids)
    return max(end - 1, 0)


@torch.no_grad()
def encode_prompts(pipe, prompts: Sequence[str]) -> list[EncodedPrompt]:
    """Encode ``prompts`` as the pipeline conditions on them (no CFG, one image each)."""
    prompts = list(prompts)
    if type(pipe).__name__.startswith("Sana"):
        raise NotImplementedError(
            "Sana conditions on Gemma states of the prompt after its complex human instruction (a causal encoder), "
            "so a concept's rows depend on that instruction; closed-form edits of Sana are not supported yet"
        )
    tokenizer = pipe.tokenizer
    tokens = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    device = _text_device(pipe)
    if getattr(pipe, "text_encoder_2", None) is not None:
        embeddings = pipe.encode_prompt(
            prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )[0]
    else:
        config = pipe.text_encoder.config
        # PixArt and Sana pass the padding mask to their T5/Gemma encoder; the toy model says so in its config
        use_mask = getattr(config, "use_attention_mask", False) or config.model_type in ("t5", "umt5", "gemma2")
        mask = tokens.attention_mask.to(device) if use_mask else None
        embeddings = pipe.text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]
    return [
        EncodedPrompt(p, e.float(), last_word_index(ids.tolist(), tokenizer))
        for p, e, ids in zip(prompts, embeddings, tokens.input_ids)
    ]


@torch.no_grad()
def embed_texts(
    texts: Sequence[str], encoder: tuple[object, torch.nn.Module], *, batch_size: int = 64
) -> torch.Tensor:
    """Pooled text embeddings, L2-normalised: float32 (len(texts), hidden) on CPU.

    The pooled embedding is the encoder's last hidden state at each text's
    last real token (the EOS token for CLIP, i.e. CLIP's ``pooler_output``).
    ``encoder`` is a ``(tokenizer, text_encoder)`` pair; texts are run in
    batches of ``batch_size`` on the encoder's device.
    """
    tokenizer, text_encoder = encoder
    device = next(text_encoder.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True, return_tensors="pt")
        mask = batch["attention_mask"].to(device)
        hidden = text_encoder(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
        last = mask.sum(dim=1) - 1  # (B,) index of the last real token
        pooled = hidden[torch.arange(hidden.shape[0], device=device), last]
        out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
    if not out:
        raise ValueError("no texts to embed")
    return torch.cat(out)


def text_embedder(pipe, *, batch_size: int = 64) -> Callable[[Sequence[str]], torch.Tensor]:
    """:func:`embed_texts` with ``pipe``'s tokenizer and text encoder: texts → (len(texts), hidden), e.g. the
    ``embed`` of :func:`attnscope.datasets.see.split`."""
    encoder = (pipe.tokenizer, pipe.text_encoder)
    return lambda texts: embed_texts(texts, encoder, batch_size=batch_size)


@dataclass(frozen=True)
class TextStream:
    """A tokenizer's ids that fill part of the text key sequence.

    ``encoder``/``tokenizer``: the pipeline attributes; the stream's tokens
    occupy the text keys from ``offset`` (its length is its ids' length).
    """

    name: str
    encoder: str
    tokenizer: str


def text_streams(pipe) -> list[TextStream]:
    """The streams whose tokens the denoiser attends to, in key order."""
    kind = type(backbone(pipe)[1]).__name__
    if kind.startswith("SD3"):
        return [TextStream("clip", "text_encoder", "tokenizer"), TextStream("t5", "text_encoder_3", "tokenizer_3")]
    if kind.startswith("Flux"):
        return [TextStream("t5", "text_encoder_2", "tokenizer_2")]
    return [TextStream("text", "text_encoder", "tokenizer")]
