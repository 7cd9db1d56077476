"""Per-layer × per-step binding heat maps, before and after an edit, and their difference."""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

from attnscope.figures.style import DIVERGING, SEQUENTIAL, TWO_COLUMN, paper_style, plt

_BLOCK = re.compile(r"^(down|up)_blocks\.(\d+)\.attentions\.(\d+)\.transformer_blocks\.(\d+)\.attn2$")


def short_layer_name(name: str) -> str:
    """``down_blocks.1.attentions.0.transformer_blocks.0.attn2`` → ``down1.0``; ``mid_block…`` → ``mid``.

    A transformer index other than 0 is appended (``up1.0.t1``); unknown names pass through.
    """
    if name.startswith("mid_block."):
        return "mid"
    match = _BLOCK.match(name)
    if not match:
        return name
    place, block, attention, transformer = match.groups()
    return f"{place}{block}.{attention}" + (f".t{transformer}" if transformer != "0" else "")


def forward_order(layers: Sequence[str]) -> list[int]:
    """Indices that sort layer names into the UNet's forward order: down blocks, mid, up blocks."""
    place = {"down": 0, "mid": 1, "up": 2}

    def key(index: int) -> tuple:
        name = layers[index]
        parts = name.split(".")
        numbers = tuple(int(p) for p in parts if p.isdigit())
        return place.get(parts[0].split("_")[0], 3), numbers, name

    return sorted(range(len(layers)), key=key)


def binding_heatmap(
    rows: Mapping[str, tuple[np.ndarray, np.ndarray]],
    steps: Sequence[int],
    layers: Sequence[str],
    *,
    quantity: str = "binding score",
    labels: tuple[str, str] = ("before", "after"),
    resolutions: Mapping[str, tuple[int, int]] | None = None,
    title: str | None = None,
):
    """One row per entry of ``rows`` (e.g. ``"“wooden” on bench"``): (before, after), each
    (steps, layers), drawn as layer × step heat maps, then their difference after − before.

    Before/after share one sequential scale from 0; the difference uses a
    diverging scale symmetric about 0. ``resolutions``: ``{layer: (h, w)}``
    appended to the layer labels. Layers are drawn top to bottom in forward
    order (:func:`forward_order`). Returns the figure.
    """
    n = len(rows)
    order = forward_order(layers)
    layers = [layers[i] for i in order]
    names = [short_layer_name(l) + (f" {resolutions[l][0]}²" if resolutions and l in resolutions else "")
             for l in layers]
    with paper_style():
        figure, axes = plt.subplots(n, 3, figsize=(TWO_COLUMN, 0.35 + (0.9 + 0.13 * len(layers)) * n),
                                    squeeze=False, constrained_layout=True)
        for r, (label, (before, after)) in enumerate(rows.items()):
            before, after = np.asarray(before, float)[:, order], np.asarray(after, float)[:, order]
            top = np.nanmax([np.nanmax(before), np.nanmax(after), 1e-12])
            delta = after - before
            span = max(float(np.nanmax(np.abs(delta))), 1e-12)
            panels = [(before, labels[0], SEQUENTIAL, 0.0, top), (after, labels[1], SEQUENTIAL, 0.0, top),
                      (delta, f"{labels[1]} − {labels[0]}", DIVERGING, -span, span)]
            for c, (values, name, cmap, low, high) in enumerate(panels):
                axis = axes[r, c]
                image = axis.imshow(values.T, aspect="auto", cmap=cmap, vmin=low, vmax=high,
                                    interpolation="nearest", origin="upper")
                axis.set_yticks(range(len(layers)), names if c == 0 else [""] * len(layers))
                ticks = _step_ticks(len(steps))
                axis.set_xticks(ticks, [str(steps[t]) for t in ticks])
                axis.set_title(name if r == 0 else "")
                if r == n - 1:
                    axis.set_xlabel("sampling step")
                if c != 0:
                    figure.colorbar(image, ax=axis, fraction=0.06, pad=0.02)
            axes[r, 0].set_ylabel(label)
        if title:
            figure.suptitle(title)
    return figure


def _step_ticks(n: int, most: int = 6) -> list[int]:
    """At most ``most`` evenly spaced tick positions among ``n`` steps, first and last included."""
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, most))})
