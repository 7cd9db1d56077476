"""``attnscope show``: the image and each chosen word's attention map over it."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("show", help="draw a run's image and per-word attention maps (PNG/PDF/SVG)")
    parser.add_argument("run_file", type=Path)
    parser.add_argument("--word", action="append", default=None,
                        help="word of the prompt to show; repeatable (default: every word)")
    parser.add_argument("--run", type=int, default=0, help="run index in the file (default 0)")
    parser.add_argument("--by-resolution", action="store_true",
                        help="one row per layer resolution instead of one aggregated row")
    parser.add_argument("--step", type=int, action="append", default=None,
                        help="only these sampling steps (default: all stored)")
    parser.add_argument("--out", type=Path, default=None,
                        help="figure path; the extension picks the format (default RUN-FILE-show.png)")
    return parser


def run(args: argparse.Namespace) -> int:
    from attnscope.figures.maps import word_map_grid
    from attnscope.figures.style import save
    from attnscope.store import RunFile

    with RunFile(args.run_file) as runs:
        words = args.word or list(dict.fromkeys(runs.words(args.run)))
        missing = [w for w in words if w not in runs.words(args.run)]
        if missing:
            raise KeyError(f"{missing} not in the prompt of run {args.run}: {runs.words(args.run)}")
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
    out = save(figure, args.out or args.run_file.with_name(args.run_file.stem + "-show.png"))
    print(f"wrote {out}")
    return 0
