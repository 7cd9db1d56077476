"""Judges answer yes/no questions about images (:class:`Judge`).

VQA models through transformers live in :mod:`.vqa`; their model classes are
imported only when a judge is loaded. The toy world's oracle is
:class:`~attnscope.judges.toy_oracle.ToyOracle` (trained by
:mod:`.train_toy_oracle`).
"""

from attnscope.judges.base import Answer, ImageLike, Judge
from attnscope.judges.toy_oracle import ToyOracle
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
