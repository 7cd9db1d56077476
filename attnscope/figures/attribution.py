"""Per-token attribution bars, one panel per target."""

from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np

from attnscope.analyses.attribution import TokenAttribution
from attnscope.figures.style import ONE_COLUMN, PALETTE, TWO_COLUMN, paper_style, plt
from attnscope.store.tokens import is_special

POSITIVE, NEGATIVE = PALETTE[0], PALETTE[1]  # blue raises the target, orange lowers it


def attribution_bars(
    attributions: Sequence[TokenAttribution],
    *,
    highlight: Sequence[str] = (),
    special: bool = False,
    title: str | None = None,
):
    """Bars of each attribution's per-word values (:meth:`TokenAttribution.by_word`).

    One panel per attribution, side by side (one column for one, two for
    more); positive bars raise the target, negative bars lower it. Words in
    ``highlight`` get bold labels; start/end tokens are left out unless
    ``special``. Each panel's title notes ``Σ`` of the attributions and
    ``F(prompt) − F(∅)`` (equal up to the quadrature error). Returns the figure.
    """
    n = len(attributions)
    width = ONE_COLUMN if n == 1 else TWO_COLUMN
    with paper_style():
        figure, axes = plt.subplots(1, n, figsize=(width, 2.3), squeeze=False, constrained_layout=True)
        for axis, attribution in zip(axes[0], attributions):
            words = attribution.by_word()
            if not special:
                words = {w: v for w, v in words.items() if not is_special(w)}
            values = np.array(list(words.values()))
            exponent = _exponent(values)
            x = np.arange(len(words))
            axis.bar(x, values / 10.0**exponent, color=[POSITIVE if v >= 0 else NEGATIVE for v in values], width=0.7)
            axis.set_ylabel("attribution" + (f" (×10$^{{{exponent}}}$)" if exponent else ""))
            axis.axhline(0, color="k", lw=0.6)
            axis.set_xticks(x, [w.split("#")[0] for w in words], rotation=45, ha="right")
            for tick in axis.get_xticklabels():
                if tick.get_text() in highlight:
                    tick.set_fontweight("bold")
            axis.set_title(
                "\n".join(textwrap.wrap(attribution.name, 38)) + "\n"
                f"Σ = {attribution.values.sum():.3g}, F(x) − F(∅) = {attribution.target - attribution.baseline:.3g}",
                fontsize=6.5,
            )
            axis.spines[["top", "right"]].set_visible(False)
        if title:
            figure.suptitle(title)
    return figure


def _exponent(values: np.ndarray) -> int:
    """Power of ten to factor out of the axis: 0 for magnitudes in [0.01, 1000), else that of the largest."""
    largest = float(np.abs(values).max()) if len(values) else 0.0
    if largest == 0 or 1e-2 <= largest < 1e3:
        return 0
    return int(np.floor(np.log10(largest)))
