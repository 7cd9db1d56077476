"""Token strings → prompt words.

Tokenizers mark word boundaries differently: CLIP's BPE ends a word's last
piece with ``</w>``, GPT-2-style byte BPE starts a word with ``Ġ``,
SentencePiece with ``▁``; a word-level tokenizer has one token per word.
"""

from __future__ import annotations

SPECIAL_PREFIXES = ("<|", "<s", "</s", "<pad", "<bos", "<eos", "[")
CONCEPT_PREFIX = "<concept:"


def concept_label(name: str) -> str:
    """The token text a concept map is stored under (``"<concept:bench>"``; position < 0, word -1)."""
    return f"{CONCEPT_PREFIX}{name}>"


def is_special(token: str) -> bool:
    """Start/end/padding tokens such as ``<|startoftext|>`` or ``<pad>``."""
    return token.startswith(SPECIAL_PREFIXES) and token.endswith((">", "]"))


def clean(token: str) -> str:
    """The visible text of one token (``"bench</w>"`` → ``"bench"``)."""
    return token.removesuffix("</w>").lstrip("Ġ▁")


def group_words(tokens: list[str]) -> tuple[list[int], list[str]]:
    """Assign each token the index of its word; specials get -1.

    Returns ``(word_of_token, words)``: e.g. CLIP tokens
    ``["<|startoftext|>", "a</w>", "wood", "en</w>", "bench</w>", "<|endoftext|>"]``
    give ``[-1, 0, 1, 1, 2, -1]`` and ``["a", "wooden", "bench"]``.
    """
    end_marked = any(t.endswith("</w>") for t in tokens)
    start_marked = not end_marked and any(t.startswith(("Ġ", "▁")) for t in tokens)
    word_of, words = [], []
    open_word = False
    for token in tokens:
        if is_special(token):
            word_of.append(-1)
            open_word = False
            continue
        starts = not open_word or (start_marked and token.startswith(("Ġ", "▁"))) or not (end_marked or start_marked)
        if starts:
            words.append(clean(token))
        else:
            words[-1] += clean(token)
        word_of.append(len(words) - 1)
        open_word = end_marked and not token.endswith("</w>") or start_marked
    return word_of, words


def _normal(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalnum())


def align_words(primary: list[str], secondary: list[str]) -> list[int]:
    """Index into ``primary`` of each word of ``secondary`` (the same prompt from another tokenizer).

    Words match by their lower-cased letters and digits, in order; a word of
    ``secondary`` with no match further on gets a new index after the
    primary's (``len(primary)``, ``len(primary) + 1``, ...). E.g. CLIP's
    ``["a", "wooden", "bench", ","]`` and T5's ``["a", "wooden", "bench,"]``
    give ``[0, 1, 2]``.
    """
    indices, cursor, extra = [], 0, len(primary)
    normal = [_normal(w) for w in primary]
    for word in secondary:
        key = _normal(word)
        found = next((i for i in range(cursor, len(normal)) if normal[i] == key), None)
        if found is None:
            indices.append(extra)
            extra += 1
        else:
            indices.append(found)
            cursor = found + 1
    return indices
