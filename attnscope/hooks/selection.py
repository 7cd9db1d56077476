"""What to capture: parsing and resolving the user's selection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from attnscope.errors import UsageError
from attnscope.models.prompts import padded_ids, token_texts
from attnscope.store.tokens import clean, group_words, is_special

StepSelection = None | int | slice | Sequence[int]
TokenSelection = str | Sequence[int] | Sequence[str]


@dataclass(frozen=True)
class Selection:
    """A capture's settings.

    * ``layers``: ``"all"``, a place (``"down"``/``"mid"``/``"up"``), a layer
      name, a glob, or a list of those;
    * ``steps``: ``None`` (all), an index, a slice or a list of indices
      (negative counts from the end);
    * ``tokens``: ``"prompt"`` (the prompt's real tokens including the start
      and end tokens), ``"all"`` (every position), a list of positions, or a
      list of words (every token of each word);
    * ``heads``: ``"mean"`` (average over heads on the device) or ``"all"``;
    * ``branch``: ``"cond"`` (the conditional CFG branch) or ``"both"``;
    * ``dtype``: storage dtype, ``torch.float16`` or ``torch.float32``.
    """

    layers: str | Sequence[str] = "all"
    steps: StepSelection = None
    tokens: TokenSelection = "prompt"
    heads: str = "mean"
    branch: str = "cond"
    dtype: torch.dtype = torch.float16

    def __post_init__(self) -> None:
        if self.heads not in ("mean", "all"):
            raise ValueError(f"heads must be 'mean' or 'all', not {self.heads!r}")
        if self.branch not in ("cond", "both"):
            raise ValueError(f"branch must be 'cond' or 'both', not {self.branch!r}")
        if self.dtype not in (torch.float16, torch.float32):
            raise ValueError(f"dtype must be torch.float16 or torch.float32, not {self.dtype}")

    def resolve_steps(self, n_steps: int) -> list[int]:
        """Sorted step indices in ``[0, n_steps)``."""
        if self.steps is None:
            return list(range(n_steps))
        if isinstance(self.steps, slice):
            return list(range(n_steps))[self.steps]
        wanted = [self.steps] if isinstance(self.steps, int) else list(self.steps)
        resolved = sorted({s + n_steps if s < 0 else s for s in wanted})
        if any(not 0 <= s < n_steps for s in resolved):
            raise ValueError(f"steps {wanted} out of range for {n_steps} sampling steps")
        return resolved

    def resolve_tokens(
        self, ids: list[int], texts: list[str], eos_id: int | None, required: bool = True
    ) -> list[tuple[int, str, int]]:
        """``(position, text, word)`` of the tokens to keep from one prompt.

        ``ids``/``texts``: the prompt's padded token ids and strings. An explicit
        selection that keeps nothing of a ``required`` prompt raises ``UsageError``
        (the negative prompt of ``branch="both"`` is not required to match).
        """
        end = _end_position(ids, texts, eos_id)
        word_of, words = group_words(texts[: end + 1])
        word_of += [-1] * (len(texts) - len(word_of))
        if self.tokens == "all":
            positions = range(len(ids))
        elif self.tokens == "prompt":
            positions = range(end + 1)
        elif all(isinstance(t, int) for t in self.tokens):
            positions = [p for p in self.tokens if p < len(ids)]
        else:
            wanted = set(self.tokens)
            positions = [
                p for p in range(end + 1)
                if (word_of[p] >= 0 and words[word_of[p]] in wanted) or clean(texts[p]) in wanted
            ]
        if required and not positions:
            raise UsageError(f"tokens {list(self.tokens)} select no token of the prompt with words {words}")
        return [(p, texts[p], word_of[p]) for p in positions]

    def check_prompts(self, tokenizer, prompts: Sequence[str], option: str = "--tokens") -> None:
        """Refuse a token selection that does not match ``prompts``: a word in none of them (e.g. a
        capitalised word the tokenizer lower-cased), a position past the padded length, or a prompt
        of which nothing would be stored."""
        if isinstance(self.tokens, str):
            return
        length = int(tokenizer.model_max_length)
        eos = getattr(tokenizer, "eos_token_id", None)
        named = ", ".join(map(str, self.tokens))
        if all(isinstance(t, int) for t in self.tokens):
            late = [p for p in self.tokens if not 0 <= p < length]
            if late:
                raise UsageError(f"{option} {named}: positions {late} are outside 0..{length - 1}")
            return
        words_of, names_of = {}, {}
        for prompt, row in zip(prompts, padded_ids(tokenizer, prompts, length)):
            ids = row.tolist()
            texts = token_texts(tokenizer, ids)
            end = _end_position(ids, texts, eos)
            words_of[prompt] = group_words(texts[: end + 1])[1]
            names_of[prompt] = set(words_of[prompt]) | {clean(t) for t in texts[: end + 1]}
        every = sorted({w for words in words_of.values() for w in words})
        for word in self.tokens:
            if not any(word in names for names in names_of.values()):
                hint = f"; the tokenizer lower-cases words: use {option} {word.lower()}" if word.lower() in every else ""
                raise UsageError(f"{option} {word!r} is not a word of the prompt(s) (words: {', '.join(every)}){hint}")
        for prompt, names in names_of.items():
            if not set(self.tokens) & names:
                words = ", ".join(words_of[prompt])
                raise UsageError(f"{option} {named} selects no token of prompt {prompt!r} (words: {words})")


def _end_position(ids: list[int], texts: list[str], eos_id: int | None) -> int:
    """Index of the end-of-text token (the last real token).

    T5 has no start token, so an empty prompt's EOS is at position 0;
    without an EOS id, position 0 is the start token and the search starts at 1.
    """
    if eos_id is not None:
        return ids.index(eos_id) if eos_id in ids else len(ids) - 1
    for position in range(1, len(ids)):
        if is_special(texts[position]):
            return position
    return len(ids) - 1
