"""The README's main command on a CPU against the cost of importing its libraries, side by side.

    python benchmarks/cpu_default.py --repeats 5 --out benchmarks/results/cpu_default.md

Each repeat runs, as fresh processes and in rotating order, the import floor
``python -c "import torch, diffusers, transformers"``, the default
``attnscope capture --prompt "a wooden bench and a blue bird" --out RUN.h5`` on
the built-in model, and, for reference, the imports of the two model classes
any Stable-Diffusion-shaped pipeline needs (``UNet2DConditionModel``,
``CLIPTextModel``: diffusers and transformers import most of their model code
with them); the ratios to the floor are reported per repeat, with the median
and mean. The target (issue 10) is a capture ratio ≤ 1.5. Last, one
``python -X importtime`` run of the class imports says which packages their
extra time goes to.
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
CLASSES = [sys.executable, "-c", "import torch, diffusers, transformers; from diffusers import UNet2DConditionModel; "
           "from transformers import CLIPTextModel"]


def capture_command(out: Path) -> list[str]:
    attnscope = shutil.which("attnscope")
    head = [attnscope] if attnscope else [sys.executable, "-m", "attnscope.cli"]
    return head + ["capture", "--prompt", PROMPT, "--out", str(out), "--no-progress"]


def wall(command: list[str]) -> float:
    """Seconds one command takes from start to exit (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(repeats: int, work: Path) -> list[tuple[float, float, float]]:
    """``(floor s, capture s, classes s)`` per repeat; the order of the three rotates from repeat to repeat."""
    wall(FLOOR)  # warm the file cache once, unmeasured
    rows = []
    for repeat in range(repeats):
        commands = {"floor": FLOOR, "capture": capture_command(work / f"run{repeat}.h5"), "classes": CLASSES}
        order = list(commands)[repeat % 3:] + list(commands)[: repeat % 3]
        seconds = {name: wall(commands[name]) for name in order}
        rows.append((seconds["floor"], seconds["capture"], seconds["classes"]))
        print(f"repeat {repeat}: import {seconds['floor']:.2f} s, capture {seconds['capture']:.2f} s, "
              f"model classes {seconds['classes']:.2f} s", flush=True)
    return rows


# packages the UNet class import pulls in, with what dominates their time
HEAVY = ("diffusers.models.transformers", "diffusers.loaders.lora_base", "diffusers.loaders.single_file_utils",
         "scipy.optimize", "scipy.stats")


def import_breakdown() -> dict[str, float]:
    """Cumulative import seconds of :data:`HEAVY` in one ``-X importtime`` run of the class imports."""
    command = [CLASSES[0], "-X", "importtime", *CLASSES[1:]]
    log = subprocess.run(command, check=True, capture_output=True, text=True).stderr
    seconds = {}
    for line in log.splitlines():
        parts = [part.strip() for part in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] in HEAVY:
            seconds[parts[2]] = int(parts[1]) / 1e6
    return seconds


def report(rows: list[tuple[float, float, float]], heavy: dict[str, float]) -> str:
    ratios = [c / f for f, c, _ in rows]
    classes = [m / f for f, _, m in rows]
    table = "\n".join(f"| {i} | {f:.2f} | {c:.2f} | {c / f:.2f} | {m:.2f} | {m / f:.2f} |"
                      for i, (f, c, m) in enumerate(rows))
    median, mean = statistics.median(ratios), statistics.mean(ratios)
    breakdown = "\n".join(f"- `{name}`: {seconds:.2f} s" for name, seconds in heavy.items())
    verdict = "meets" if median <= 1.5 else "misses"
    return f"""# Default capture on a CPU vs the import floor

`python benchmarks/cpu_default.py --repeats {len(rows)}` on {platform.machine()} with {os.cpu_count()} cores,
Python {platform.python_version()}: each repeat runs `python -c "import torch, diffusers, transformers"` (the floor),
`attnscope capture --prompt "{PROMPT}" --out RUN.h5` (the README's main command: built-in model, default
sampler, every layer and step captured, written to disk) and, for reference, the import of the two model classes
every Stable-Diffusion-shaped pipeline loads (`from diffusers import UNet2DConditionModel; from transformers import
CLIPTextModel` after the floor's imports), as fresh processes, in rotating order.

| repeat | import floor (s) | capture (s) | capture ÷ floor | model classes (s) | classes ÷ floor |
|---|---:|---:|---:|---:|---:|
{table}

Ratio capture ÷ import floor: median **{median:.2f}**, mean {mean:.2f} (target ≤ 1.5: {verdict} it on the median).
Importing the two model classes alone: median {statistics.median(classes):.2f}, mean {statistics.mean(classes):.2f}
of the floor.

Where the class imports' extra time goes (`python -X importtime`, one run, cumulative seconds):
{breakdown}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="markdown report to write (default: print only)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        text = report(measure(args.repeats, Path(work)), import_breakdown())
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
