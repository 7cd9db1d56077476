"""A word-level tokenizer over the toy world's vocabulary.

It behaves like Stable Diffusion's CLIP tokenizer where callers can tell:
``<|startoftext|> words... <|endoftext|>``, padded with ``<|endoftext|>`` to
``model_max_length`` (16) by ``padding="max_length"``, lower-cased, and saved
as a ``tokenizer/`` folder that ``PreTrainedTokenizerFast.from_pretrained``
loads. Words outside the vocabulary become ``<unk>``.
"""

from __future__ import annotations

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from attnscope.datasets.toy_vocabulary import CLASSES, COLOURS, HIERARCHY, MATERIALS, SIZES

BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<unk>"
FUNCTION_WORDS: tuple[str, ...] = ("a", "an", "and", "the", "picture", "photo", "of")
MODEL_MAX_LENGTH = 16


def vocabulary() -> list[str]:
    """All tokens in id order: specials (BOS=0, EOS=1, UNK=2), then words."""
    words = [*FUNCTION_WORDS, *SIZES, *COLOURS, *MATERIALS, *CLASSES, *HIERARCHY]
    return [BOS, EOS, UNK, *words]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The toy-world tokenizer (see module docstring)."""
    vocab = {tok: i for i, tok in enumerate(vocabulary())}
    core = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B {EOS}",
        special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=EOS,
        model_max_length=MODEL_MAX_LENGTH,
    )
