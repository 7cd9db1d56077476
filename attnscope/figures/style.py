"""One style for every attnscope figure: sizes for papers, colour-blind-safe colours."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ONE_COLUMN = 3.5  # inches, a one-column figure in a two-column paper
TWO_COLUMN = 7.0
# Okabe–Ito: distinguishable under the common colour-vision deficiencies
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
HEATMAP = "inferno"  # perceptually uniform, readable in greyscale
SEQUENTIAL = "viridis"  # values that are not drawn over images (scores, similarities)
DIVERGING = "RdBu_r"

RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,
    "svg.fonttype": "none",
}


@contextmanager
def paper_style():
    with plt.rc_context(RC):
        yield


def save(figure, path: str | Path) -> Path:
    """Save by extension (.png, .pdf, .svg) and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with paper_style():  # savefig reads dpi and bbox from the rc parameters at save time
        figure.savefig(path)
    plt.close(figure)
    return path


FORMATS = ("png", "pdf", "svg")


def save_all(figure, stem: str | Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Save ``figure`` as ``stem.png``, ``stem.pdf``, ``stem.svg`` (or ``formats``) and close it."""
    paths = []
    for ext in formats:
        path = Path(f"{stem}.{ext}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with paper_style():
            figure.savefig(path)
        paths.append(path)
    plt.close(figure)
    return paths
