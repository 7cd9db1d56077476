"""The judge interface: yes/no questions about images.

A judge answers natural-language yes/no questions ("Is there a bird in the
image?", "Is the bird wooden?") about images. Benchmarks only talk to judges
through :class:`Judge`, so the toy world's oracle and a VQA model are
interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

ImageLike = Image.Image | np.ndarray  # PIL image, or uint8 array of shape (H, W, 3)


@dataclass(frozen=True)
class Answer:
    """One judged question.

    ``score`` is the judge's probability (or a monotone proxy) that the answer
    is yes, in [0, 1]; ``yes`` is ``score >= 0.5`` unless the judge decides
    otherwise (e.g. a VQA model that emits the literal word).
    """

    yes: bool
    score: float


@runtime_checkable
class Judge(Protocol):
    """Answers yes/no questions; ``images[i]`` is asked ``questions[i]``."""

    name: str

    def answer(self, images: Sequence[ImageLike], questions: Sequence[str]) -> list[Answer]:
        ...
