"""``attnscope show``: the image and each chosen word's attention map over it."""

from __future__ import annotations

import argparse
from pathlib import Path

from attnscope.commands.common import non_negative_int, refuse_overwrite
from attnscope.errors import UsageError

FORMATS = (".png", ".pdf", ".svg")


def _figure_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in FORMATS:
        raise argparse.ArgumentTypeError(f"{text}: the extension picks the format, one of {', '.join(FORMATS)}")
    return path


def _is_figure(path: Path) -> bool:
    """A PNG, PDF or SVG file by content (what a previous `show` wrote), not a run file or notes."""
    with open(path, "rb") as file:
        head = file.read(256)
    return head.startswith((b"\x89PNG", b"%PDF")) or b"<svg" in head or head.startswith(b"<?xml")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("show", help="draw a run's image and per-word attention maps (PNG/PDF/SVG)")
    parser.add_argument("run_file", type=Path)
    parser.add_argument("--word", action="append", default=None,
                        help="word of the prompt to show; repeatable (default: every word)")
    parser.add_argument("--run", type=non_negative_int, default=0, help="run index in the file (default 0)")
    parser.add_argument("--by-resolution", action="store_true",
                        help="one row per layer resolution instead of one aggregated row")
    parser.add_argument("--step", type=int, action="append", default=None,
                        help="only these sampling steps (default: all stored)")
    parser.add_argument("--out", type=_figure_path, default=None,
                        help="figure path; the extension picks the format (default RUN-FILE-show.png)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing figure at --out")
    return parser


def main(args: argparse.Namespace) -> int:
    from attnscope.figures.maps import word_map_grid
    from attnscope.figures.style import save
    from attnscope.store import RunFile

    out = args.out or args.run_file.with_name(args.run_file.stem + "-show.png")
    refuse_overwrite(out, "--out", overwrite=args.overwrite, kind="a figure", is_kind=_is_figure)
    with RunFile(args.run_file) as runs:
        runs.record(args.run)  # one line naming the file when the run is not there
        words = args.word or list(dict.fromkeys(runs.words(args.run)))
        missing = [w for w in words if w not in runs.words(args.run)]
        if missing:
            raise UsageError(f"--word {', '.join(missing)}: not in the prompt of run {args.run} "
                             f"(words: {', '.join(runs.words(args.run))})")
        groups = {"all layers": None}
        if args.by_resolution:
            groups = {}
            for layer in runs.layers:
                groups.setdefault(f"{layer.height}x{layer.width}", []).append(layer.name)
        rows = {
            label: {w: runs.heatmap(args.run, word=w, layers=names, step=args.step) for w in words}
            for label, names in groups.items()
        }
        image = runs.image(args.run)
        figure = word_map_grid(image, rows, title=runs.record(args.run).prompt)
    out = save(figure, out)
    print(f"wrote {out}")
    return 0
