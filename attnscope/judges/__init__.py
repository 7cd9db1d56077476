"""Judges answer yes/no questions about images (:class:`Judge`).

VQA models through transformers live in :mod:`.vqa`; their model classes are
imported only when a judge is loaded. The toy world's oracle
(:class:`~attnscope.models.toy.oracle.ToyOracle`) is exported here too, imported
on first use.
"""

from attnscope.judges.base import Answer, ImageLike, Judge
from attnscope.judges.vqa import BlipVQAJudge, Florence2Judge, QwenVLJudge, VQAJudge, parse_yes_no, resolve_device

__all__ = [
    "Answer",
    "BlipVQAJudge",
    "Florence2Judge",
    "ImageLike",
    "Judge",
    "QwenVLJudge",
    "ToyOracle",
    "VQAJudge",
    "parse_yes_no",
    "resolve_device",
]


def __getattr__(name: str):
    if name == "ToyOracle":  # lazy: the oracle module imports this package's base module
        from attnscope.models.toy.oracle import ToyOracle

        return ToyOracle
    raise AttributeError(f"module 'attnscope.judges' has no attribute {name!r}")
