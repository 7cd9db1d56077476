"""The image followed by each word's attention map over it."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from attnscope.figures.style import HEATMAP, TWO_COLUMN, paper_style, plt


def word_map_grid(
    image: np.ndarray,
    rows: Mapping[str, Mapping[str, np.ndarray]],
    *,
    title: str | None = None,
    alpha: float = 0.6,
):
    """A grid: column 0 is ``image`` ``(H, W, 3)``; each row of ``rows`` (e.g.
    ``"all layers"`` or ``"16x16"``) maps a word to an ``(H, W)`` heat map in
    [0, 1] drawn over the image. Returns the matplotlib figure."""
    words = list(next(iter(rows.values())).keys())
    n_rows, n_cols = len(rows), len(words) + 1
    side = min(TWO_COLUMN / n_cols, 1.6)
    with paper_style():
        figure, axes = plt.subplots(n_rows, n_cols, figsize=(side * n_cols, side * n_rows + 0.3), squeeze=False)
        for r, (label, maps) in enumerate(rows.items()):
            axes[r, 0].imshow(image)
            axes[r, 0].set_ylabel(label)
            for c, word in enumerate(words, start=1):
                axes[r, c].imshow(image)
                axes[r, c].imshow(maps[word], cmap=HEATMAP, alpha=alpha, vmin=0, vmax=1,
                                  extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
                if r == 0:
                    axes[r, c].set_title(f"“{word}”")
            if r == 0:
                axes[r, 0].set_title("image")
        for axis in axes.flat:
            axis.set_xticks([])
            axis.set_yticks([])
        if title:
            figure.suptitle(title)
        figure.tight_layout()
    return figure
