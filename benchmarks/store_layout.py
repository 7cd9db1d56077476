"""Bytes per image, write speed and read-pattern timings of the run-file storage modes (CPU).

Maps are SD 1.4-shaped (16 cross-attention layers: 64², 32², 16², 8²; 17
prompt tokens, heads averaged, float16) and synthetic: per token a Gaussian
blob plus a smooth random field, drifting over the steps, with per-pixel
noise, softmaxed together with a start token (the sink) and 60 padding
positions — or taken from an existing run file (``--maps-from run.h5``, e.g.
real SD maps).

1. Size and write speed: ``--runs`` images × ``--steps`` steps written through
   :class:`~attnscope.store.writer.RunWriter` in each mode; bytes per image,
   raw MB/s through the writer, maximum absolute error.
2. Read patterns on a file of ``--read-runs`` runs (``--read-steps`` stored
   steps, to keep it small): the format-1 layout (raw, one token row per chunk)
   against lossless and quantised at several chunk widths: (a) one run's
   maps, every layer; (b) one layer × one word across every run, one read per
   run, for a 64² and the 8² layer. The ``maps`` dataset is read directly
   (decoded), without ``RunFile``'s label lookups, so the table shows what the
   chunks cost. Warm page cache: this times decoding and HDF5, not the disk.

    python benchmarks/store_layout.py --out benchmarks/results/store_layout.md
    python benchmarks/store_layout.py --runs 1 --steps 2 --read-runs 4 --out /tmp/s.md   # a quick check
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from attnscope.store import RunFile, compression
from attnscope.store.schema import CaptureSchema, RunRecord, layout
from attnscope.store.writer import RunWriter

# SD 1.4's cross-attention layers in module order (down, up, mid) and their map sizes at 512²
SD14_LAYERS = [
    *[(f"down_blocks.{b}.attentions.{a}.transformer_blocks.0.attn2", "down", r) for b, r in enumerate((64, 32, 16))
      for a in range(2)],
    *[(f"up_blocks.{b}.attentions.{a}.transformer_blocks.0.attn2", "up", r) for b, r in ((1, 16), (2, 32), (3, 64))
      for a in range(3)],
    ("mid_block.attentions.0.transformer_blocks.0.attn2", "mid", 8),
]
TOKENS = 17  # "a photo of ..." prompts of the SEE set: start + 15 words + end
PADDING = 60  # positions not stored that still take attention mass


def schema_for(steps: int, layers=SD14_LAYERS) -> CaptureSchema:
    specs = layout([(name, place, r, r, 1) for name, place, r in layers])
    return CaptureSchema(512, 512, 64, 64, tuple(specs), tuple(range(steps)), tuple(range(steps)), "mean", "cond",
                         "float16")


def synthetic_run(steps: int, generator: torch.Generator) -> np.ndarray:
    """One image's maps ``(tokens, steps, L)`` float16: softmax of smooth drifting logits plus pixel noise."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    centre = torch.rand(TOKENS, 2, generator=generator) * 48 + 8
    width = torch.rand(TOKENS, generator=generator) * 10 + 6
    amplitude = torch.rand(TOKENS, generator=generator) * 3
    distance = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
    blob = amplitude[:, None, None] * torch.exp(-distance / (2 * width[:, None, None] ** 2))
    smooth = F.interpolate(torch.randn(2 * TOKENS, 1, 8, 8, generator=generator), size=(64, 64), mode="bicubic",
                           align_corners=False).view(2, TOKENS, 64, 64)
    out = np.empty((TOKENS, steps, sum(r * r for _, _, r in SD14_LAYERS)), np.float16)
    for step in range(steps):
        a = step / max(steps - 1, 1)
        logits = (0.3 + 0.7 * a) * blob + smooth[0] * (1 - a) + smooth[1] * a
        logits[0] += 4.0  # the start token takes most of the mass
        offset = 0
        for _, _, r in SD14_LAYERS:
            pooled = F.adaptive_avg_pool2d(logits[None], r)[0] + 0.5 * torch.randn(TOKENS, r, r, generator=generator)
            padding = np.log(PADDING) + 0.3 * torch.randn(1, r, r, generator=generator)
            probabilities = torch.softmax(torch.cat([pooled, padding]), 0)[:TOKENS]
            out[:, step, offset : offset + r * r] = probabilities.reshape(TOKENS, -1).half().numpy()
            offset += r * r
    return out


def record(index: int) -> RunRecord:
    return RunRecord(f"prompt {index}", "", index, 7.5, [(i, f"w{i}</w>", i - 1 if 0 < i < TOKENS - 1 else -1)
                                                         for i in range(TOKENS)])


def write(path: Path, schema: CaptureSchema, runs: list[np.ndarray], storage, batch: int = 8,
          records: list[RunRecord] | None = None) -> float:
    """Write ``runs`` (each ``(tokens, steps, L)``) in batches; returns seconds (the writer's drain included)."""
    records = records or [record(i) for i in range(len(runs))]
    started = time.perf_counter()
    with RunWriter(path, storage=storage) as writer:
        writer.open(schema)
        for first in range(0, len(runs), batch):
            chunk = runs[first : first + batch]
            writer.submit(torch.from_numpy(np.stack(chunk)), None, records[first : first + len(chunk)],
                          writer.reserve(len(chunk)))
    return time.perf_counter() - started


def format1(path: Path, schema: CaptureSchema, runs: list[np.ndarray]) -> float:
    """The format-1 layout: raw maps, one token row (all steps, all of L) per chunk."""
    return write(path, schema, runs, compression.Storage("raw", chunk_width=schema.width_l))


def timed(function, repeats: int = 3) -> float:
    """Best of ``repeats`` calls, seconds."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def read_one_run(path: Path, run: int) -> None:
    """Every layer of one run: its token rows, all of ``L`` (what ``RunFile.maps`` reads per layer, at once)."""
    with h5py.File(path, "r") as f:
        compression.read(f["maps"], slice(run * TOKENS, (run + 1) * TOKENS))


def read_layer_word(path: Path, spec) -> None:
    """One layer of one word (token row 3) in every run, one read per run (as ``RunFile.maps`` does)."""
    with h5py.File(path, "r") as f:
        maps, columns = f["maps"], slice(spec.offset, spec.offset + spec.size)
        for run in range(maps.shape[0] // TOKENS):
            compression.read(maps, slice(run * TOKENS + 3, run * TOKENS + 4), columns)


def size_table(args, folder: Path) -> tuple[list[str], dict]:
    generator = torch.Generator().manual_seed(0)
    if args.maps_from:
        with RunFile(args.maps_from) as source:
            schema = source.schema
            chosen = range(min(args.runs, len(source)))
            runs = [compression.read(source.file["maps"], source.rows(run)).astype(np.float16) for run in chosen]
            records = [source.record(run) for run in chosen]
        label = f"maps from {args.maps_from} ({len(runs)} runs, {len(schema.layers)} layers, {len(schema.steps)} steps)"
    else:
        schema = schema_for(args.steps)
        runs = [synthetic_run(args.steps, generator) for _ in range(args.runs)]
        records = None
        label = f"synthetic SD 1.4-shaped maps ({len(runs)} runs, 16 layers, {args.steps} steps, {TOKENS} tokens)"
    raw_bytes = sum(r.nbytes for r in runs)
    lines = [f"### Size and write speed: {label}", "",
             "| storage | codec | bytes/image | vs raw | writer MB/s (raw bytes) | max abs error |",
             "|---|---|---|---|---|---|"]
    sizes = {}
    for mode in compression.MODES:
        path = folder / f"size-{mode}.h5"
        batch = 1 if args.maps_from else 8  # the runs of a captured file differ in token count
        seconds = write(path, schema, runs, mode, batch, records)
        with RunFile(path) as back:
            kept = back.storage()
            stored, codec = kept.maps_bytes, kept.codec
            error = max(float(np.abs(compression.read(back.file["maps"], back.rows(i)).astype(np.float32)
                                     - runs[i].astype(np.float32)).max()) for i in range(len(runs)))
        sizes[mode] = stored / len(runs)
        lines.append(f"| {mode} | {codec} | {stored / len(runs) / 1e6:.2f} MB | {stored / raw_bytes:.3f} | "
                     f"{raw_bytes / seconds / 1e6:.0f} | {error:.2e} |")
        path.unlink()
    return lines, sizes


def read_table(args, folder: Path) -> list[str]:
    generator = torch.Generator().manual_seed(1)
    schema = schema_for(args.read_steps)
    unique = [synthetic_run(args.read_steps, generator) for _ in range(min(8, args.read_runs))]
    order = np.random.default_rng(0)
    runs = [unique[i % len(unique)][order.permutation(TOKENS)] for i in range(args.read_runs)]  # rows reshuffled
    layouts = {"format 1 (raw, chunk = one token row)": lambda p: format1(p, schema, runs)}
    for mode in ("lossless", "quantised"):
        for width in args.chunk_width:
            for step_block in (None, args.read_steps):  # the default steps per chunk, and all steps in one
                storage = compression.Storage(mode, width, step_block)
                _, steps, chunk = storage.chunk(args.read_steps, schema.width_l)
                layouts[f"{mode}, chunks of {chunk} values × {steps} steps"] = (
                    lambda p, s=storage: write(p, schema, runs, s))
    big, mid = schema.layers[-2], schema.layers[-1]  # up_blocks.3 (64²) and the mid block (8²)
    lines = [f"### Read patterns: {args.read_runs} runs × {TOKENS} tokens × {args.read_steps} steps, SD 1.4 layers "
             "(best of 5, warm page cache; maps dataset read directly, no label lookups)", "",
             "| layout | file MB | one run, all 16 layers | one 64² layer × word, all runs | "
             "the 8² layer × word, all runs |", "|---|---|---|---|---|"]
    for name, build in layouts.items():
        path = folder / "read.h5"
        build(path)
        one = timed(lambda: read_one_run(path, args.read_runs // 2), repeats=5)
        across_big = timed(lambda: read_layer_word(path, big), repeats=5)
        across_mid = timed(lambda: read_layer_word(path, mid), repeats=5)
        lines.append(f"| {name} | {path.stat().st_size / 1e6:.0f} | {one * 1e3:.0f} ms | {across_big * 1e3:.0f} ms | "
                     f"{across_mid * 1e3:.0f} ms |")
        path.unlink()
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4, help="images for the size table")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--maps-from", type=Path, help="take the size table's maps from this run file")
    parser.add_argument("--read-runs", type=int, default=256, help="runs of the read-pattern file")
    parser.add_argument("--read-steps", type=int, default=10)
    parser.add_argument("--chunk-width", type=int, action="append",
                        help="chunk widths along L to compare (repeatable; default 26944 4096 1024)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    whole_row = sum(r * r for _, _, r in SD14_LAYERS)
    args.chunk_width = args.chunk_width or [whole_row, compression.DEFAULT_CHUNK_WIDTH, 1024]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.work) as scratch:
        folder = Path(scratch)
        write(folder / "warm-up.h5", schema_for(1), [np.zeros((TOKENS, 1, schema_for(1).width_l), np.float16)],
              "lossless")  # the first file imports diffusers for its version record
        sizes, _ = size_table(args, folder)
        reads = read_table(args, folder) if args.read_runs else []
    text = "\n".join(["## Run-file storage", "", *sizes, "", *reads, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
