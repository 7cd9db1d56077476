"""``attnscope inspect``: say what a run file holds."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("inspect", help="describe a run file: model, layers, steps, runs")
    parser.add_argument("run_file", type=Path)
    return parser


def main(args: argparse.Namespace) -> int:
    from attnscope.store import RunFile

    with RunFile(args.run_file) as runs:
        print(f"{args.run_file}")
        print(runs.summary())
        print("versions: " + ", ".join(f"{k} {v}" for k, v in runs.versions.items()))
    return 0
