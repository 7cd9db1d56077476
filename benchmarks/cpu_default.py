"""The README's main command on a CPU against the cost of importing its libraries, side by side.

    python benchmarks/cpu_default.py --repeats 5 --out benchmarks/results/cpu_default.md

Each repeat runs, as fresh processes and in alternating order, the import floor
``python -c "import torch, diffusers, transformers"`` and the default
``attnscope capture --prompt "a wooden bench and a blue bird" --out RUN.h5`` on
the built-in model; the ratio of their wall times is reported per repeat, with
the median and mean. The target (issue 10) is a ratio ≤ 1.5.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "a wooden bench and a blue bird"
FLOOR = [sys.executable, "-c", "import torch, diffusers, transformers"]


def capture_command(out: Path) -> list[str]:
    attnscope = shutil.which("attnscope")
    head = [attnscope] if attnscope else [sys.executable, "-m", "attnscope.cli"]
    return head + ["capture", "--prompt", PROMPT, "--out", str(out), "--no-progress"]


def wall(command: list[str]) -> float:
    """Seconds one command takes from start to exit (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(repeats: int, work: Path) -> list[tuple[float, float]]:
    """``(floor s, capture s)`` per repeat, alternating which of the two runs first."""
    wall(FLOOR)  # warm the file cache once, unmeasured
    pairs = []
    for repeat in range(repeats):
        run = lambda: wall(capture_command(work / f"run{repeat}.h5"))  # noqa: E731
        if repeat % 2 == 0:
            floor, capture = wall(FLOOR), run()
        else:
            capture, floor = run(), wall(FLOOR)
        pairs.append((floor, capture))
        print(f"repeat {repeat}: import {floor:.2f} s, capture {capture:.2f} s, ratio {capture / floor:.2f}", flush=True)
    return pairs


def report(pairs: list[tuple[float, float]]) -> str:
    ratios = [c / f for f, c in pairs]
    rows = "\n".join(f"| {i} | {f:.2f} | {c:.2f} | {c / f:.2f} |" for i, (f, c) in enumerate(pairs))
    median, mean = statistics.median(ratios), statistics.mean(ratios)
    verdict = "meets" if median <= 1.5 else "misses"
    return f"""# Default capture on a CPU vs the import floor

`python benchmarks/cpu_default.py --repeats {len(pairs)}` on {platform.machine()} with {os.cpu_count()} cores,
Python {platform.python_version()}: each repeat runs `python -c "import torch, diffusers, transformers"`
and `attnscope capture --prompt "{PROMPT}" --out RUN.h5` (the README's main command: built-in model, default
sampler, every layer and step captured, written to disk) as fresh processes, in alternating order.

| repeat | import floor (s) | capture (s) | ratio |
|---|---:|---:|---:|
{rows}

Ratio capture ÷ import floor: median **{median:.2f}**, mean {mean:.2f} (target ≤ 1.5: {verdict} it on the median).
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="markdown report to write (default: print only)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        text = report(measure(args.repeats, Path(work)))
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
