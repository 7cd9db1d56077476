"""Before/after drift panel: the two images, the attribute word's map on each, binding bars."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib import patheffects

from attnscope.analyses.regions import resize
from attnscope.analyses.stats import Interval
from attnscope.figures.style import HEATMAP, PALETTE, TWO_COLUMN, paper_style, plt

STATE_COLOURS = (PALETTE[0], PALETTE[3])  # before: blue, after: vermillion
OBJECT_COLOURS = (PALETTE[2], PALETTE[5], PALETTE[4], PALETTE[6])  # region outlines, one per object

Bar = float | Interval


def drift_panel(
    images: tuple[np.ndarray, np.ndarray],
    maps: tuple[np.ndarray, np.ndarray],
    regions: Mapping[str, np.ndarray],
    bars: Mapping[str, tuple[Bar, Bar]],
    *,
    word: str,
    labels: tuple[str, str] = ("before", "after"),
    bar_label: str = "binding score",
    bar_note: str | None = None,
    title: str | None = None,
    alpha: float = 0.65,
):
    """One row: image before, image after, the word's map on each, and grouped bars.

    ``images``: (H, W, 3) uint8 each; ``maps``: the word's heat maps (h, w)
    in [0, 1] (any resolution; drawn over the image); ``regions``:
    ``{object: bool (h', w')}`` outlined on the maps; ``bars``: per object
    (before, after) as numbers or :class:`~attnscope.analyses.stats.Interval`
    (drawn with error bars). Returns the figure.
    """
    height, width = images[0].shape[:2]
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    with paper_style():
        figure = plt.figure(figsize=(TWO_COLUMN, 1.75), constrained_layout=True)
        grid = figure.add_gridspec(1, 5, width_ratios=[1, 1, 1, 1, 1.5])
        for c in range(4):
            axis = figure.add_subplot(grid[0, c])
            state = c % 2
            axis.imshow(images[state])
            if c >= 2:
                axis.imshow(maps[state], cmap=HEATMAP, alpha=alpha, vmin=0, vmax=1, extent=extent)
                _outline(axis, regions, (height, width))
            axis.set_title(f"{labels[state]}" if c < 2 else f"“{word}”, {labels[state]}")
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_color(STATE_COLOURS[state])
                spine.set_linewidth(1.5)
        _bars(figure.add_subplot(grid[0, 4]), bars, labels, bar_label, bar_note)
        if title:
            figure.suptitle(title)
    return figure


def _outline(axis, regions: Mapping[str, np.ndarray], size: tuple[int, int]) -> None:
    """Draw each region's boundary at image resolution (nearest-cell upsampling)."""
    for k, (name, region) in enumerate(regions.items()):
        mask = resize(np.asarray(region, float), size, method="area") >= 0.5
        if mask.any() and not mask.all():
            contour = axis.contour(mask.astype(float), levels=[0.5], linewidths=1.0,
                                   colors=[OBJECT_COLOURS[k % len(OBJECT_COLOURS)]])
            contour.set(path_effects=[patheffects.withStroke(linewidth=2.2, foreground="white")])
    handles = [plt.Line2D([], [], color=OBJECT_COLOURS[k % len(OBJECT_COLOURS)], lw=1.0, label=name)
               for k, name in enumerate(regions)]
    if handles:
        axis.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, -0.32), ncol=len(handles),
                    frameon=False, handlelength=1.0, columnspacing=0.8, fontsize=6)


def _value(bar: Bar) -> float:
    return bar.estimate if isinstance(bar, Interval) else float(bar)


def _bars(axis, bars: Mapping[str, tuple[Bar, Bar]], labels: Sequence[str], ylabel: str, note: str | None) -> None:
    """Grouped bars: one group per object, before and after side by side, with interval whiskers."""
    names = list(bars)
    x = np.arange(len(names))
    width = 0.38
    for state in (0, 1):
        values = [_value(bars[n][state]) for n in names]
        error = None
        if all(isinstance(bars[n][state], Interval) for n in names):
            error = np.array([[v - bars[n][state].low, bars[n][state].high - v] for n, v in zip(names, values)]).T
        axis.bar(x + (state - 0.5) * width, values, width, yerr=error, color=STATE_COLOURS[state],
                 label=labels[state], capsize=2, error_kw={"elinewidth": 0.8})
    axis.set_xticks(x, [f"on {n}" for n in names])
    for tick, k in zip(axis.get_xticklabels(), range(len(names))):
        tick.set_color(OBJECT_COLOURS[k % len(OBJECT_COLOURS)])
    axis.set_ylabel(ylabel)
    axis.set_xlim(-0.8, len(names) - 0.2)
    axis.set_ylim(0, axis.get_ylim()[1] * 1.3)  # headroom for the legend
    axis.spines[["top", "right"]].set_visible(False)
    axis.legend(frameon=False, loc="upper left", ncol=2)
    if note:
        axis.set_title(note, fontsize=6)
