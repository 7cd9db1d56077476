"""The SEE scale sheet: images/s with and without capture, bytes per image per storage mode, projections.

An SD 1.4-architecture pipeline with random weights (fp16, 512², 50 PNDM
steps, CFG 7.5) samples a slice of the real SEE prompt plan (the 5,056
single-object prompts, every ``5056 // --prompts``-th one, seed 0) in batches
of ``--batch-size``, in interleaved passes: plain, then with capture (all 16
layers, every step, heads averaged, the prompt's tokens, float16) into a run
file in each storage mode (one capture context per pass, the writer's drain
included). From the medians it projects, per model state of the full protocol
(5,056 prompts × 4 seeds = 20,224 images), GPU-hours and disk on 1, 2 and 8
GPUs (linear scaling assumed: the shards share nothing but the final merge).

Cost depends on shapes, not weights; the random model's own tokenizer is
byte-level (a SEE prompt becomes ~30 tokens), so the pipeline gets a
word-level tokenizer over the SEE vocabulary instead: one token per word plus
start and end, what SD's CLIP tokenizer makes of these common words.

    python benchmarks/see_scale.py --out benchmarks/results/see_scale.md                # H200: about 6 minutes
    python benchmarks/see_scale.py --smoke --out /tmp/see_scale.md                      # CPU: checks the script
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import diffusers
import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from attnscope.datasets.see import build_see_prompts
from attnscope.hooks import capture
from attnscope.models.sd14 import random_sd14_pipeline
from attnscope.runner.timing import device_name, timed
from attnscope.sampling import Job, SamplerSettings, batches, sample_batch
from attnscope.store import RunFile, compression

PROTOCOL_IMAGES = 5056 * 4  # SEE: every prompt × 4 seeds, per model state
GPU_COUNTS = (1, 2, 8)
BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<unk>"


def word_tokenizer(prompts: Sequence[str], max_length: int = 77) -> PreTrainedTokenizerFast:
    """CLIP-like word-level tokenizer over the words of ``prompts``: start, one token per word, end, padding."""
    words = sorted({word for prompt in prompts for word in prompt.lower().split()})
    vocab = {token: i for i, token in enumerate([BOS, EOS, UNK, *words])}
    core = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                                   pad_token=EOS, model_max_length=max_length)


def see_slice(n: int) -> list[Job]:
    """``n`` prompts spread evenly over the SEE set (every ``5056 // n``-th), seed 0."""
    prompts = build_see_prompts()
    stride = max(1, len(prompts) // n)
    return [Job(p.prompt, 0, extra={"prompt_id": p.prompt_id}) for p in prompts[::stride][:n]]


def plain_pass(pipe, chosen: list[list[Job]], settings: SamplerSettings) -> dict:
    for batch in chosen:
        sample_batch(pipe, batch, settings)
    return {}


def capture_pass(pipe, chosen: list[list[Job]], settings: SamplerSettings, sink: Path, storage: str) -> dict:
    """The batches in one capture context (as the runner samples a state); returns the file's sizes."""
    with capture(pipe, sink=sink, storage=storage) as cap:
        for batch in chosen:
            sample_batch(pipe, batch, settings, cap)
    with RunFile(sink) as runs:
        info = dataclasses.asdict(runs.storage())
    sink.unlink()
    return info


def measure(pipe, jobs: list[Job], settings: SamplerSettings, args, folder: Path) -> dict:
    """``{mode: {"seconds": [...], **sizes}}`` over ``args.repeats`` interleaved passes after one warm-up batch each."""
    device = pipe.unet.device
    chosen = list(batches(jobs, args.batch_size))
    modes: dict[str, Callable[[list], dict]] = {"plain": lambda c: plain_pass(pipe, c, settings)}
    for storage in args.storage:
        modes[storage] = lambda c, s=storage: capture_pass(pipe, c, settings, folder / f"{s}.h5", s)
    for mode, run in modes.items():  # warm-up: kernels, allocator, pinned buffers, imports
        run(chosen[:1])
    results = {mode: {"seconds": []} for mode in modes}
    for _ in range(args.repeats):
        for mode, run in modes.items():
            measured = timed(lambda: run(chosen), device)
            results[mode]["seconds"].append(measured.seconds)
            results[mode].update(measured.result)
    return results


def projection(images_per_second: float, bytes_per_image: float | None) -> list[str]:
    cells = []
    for gpus in GPU_COUNTS:
        hours = PROTOCOL_IMAGES / images_per_second / 3600 / gpus
        cells.append(f"{hours:.4g} h wall ({hours * gpus:.4g} GPU-h)")  # 4 significant digits: smoke runs are tiny
    disk = "–" if bytes_per_image is None else f"{bytes_per_image * PROTOCOL_IMAGES / 1e9:.0f} GB"
    return cells + [disk]


def report(results: dict, jobs: list[Job], settings: SamplerSettings, args, device: torch.device,
           seconds_total: float) -> str:
    name = device_name(device)
    plugin = "missing (gzip fallback)" if compression.hdf5plugin is None else compression.hdf5plugin.version
    n = len(jobs)
    plain = results["plain"]["seconds"]
    lines = [
        "# SEE scale sheet",
        "",
        *(["**SMOKE RUN** (tiny SD 1.4-topology model on the CPU): checks the script, numbers mean nothing.", ""]
          if args.smoke else []),
        f"SD 1.4 architecture, random weights, {args.dtype}, {settings.height}×{settings.width}, {settings.steps} "
        f"PNDM steps, CFG 7.5, batch {args.batch_size}; device: {name}; torch {torch.__version__}, diffusers "
        f"{diffusers.__version__}, hdf5plugin {plugin}. "
        f"{n} prompts of the SEE set (every {5056 // n}-th of 5,056; seed 0), word-level tokens "
        f"(mean {sum(len(j.prompt.split()) + 2 for j in jobs) / n:.1f} per prompt with start and end). "
        f"Each pass samples all {n} images; {args.repeats} interleaved passes per mode after one warm-up batch, "
        f"all in one process; capture passes include the writer's drain. Whole run: {seconds_total / 60:.1f} min.",
        "",
        "## Throughput and bytes",
        "",
        "| mode | images/s (median) | images/s (mean) | time vs plain (median / mean of paired ratios) "
        "| maps MB/image | file MB/image | codec |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r in results.items():
        seconds = r["seconds"]
        ratios = [s / p for s, p in zip(seconds, plain)]
        size = (f"{r['maps_bytes'] / r['runs'] / 1e6:.4g} | {r['file_bytes'] / r['runs'] / 1e6:.4g} | {r['codec']}"
                if "maps_bytes" in r else "– | – | –")
        lines.append(f"| {mode if mode == 'plain' else 'capture, ' + mode} | {n / statistics.median(seconds):.3f} | "
                     f"{n / statistics.mean(seconds):.3f} | {statistics.median(ratios):.3f} / "
                     f"{statistics.mean(ratios):.3f} | {size} |")
    lines += [
        "",
        f"## Projection per model state: {PROTOCOL_IMAGES:,} images (5,056 prompts × 4 seeds)",
        "",
        "Wall time on N GPUs assumes linear scaling (each rank samples its own batches; the merge copies no maps). "
        "Disk: the run file (maps + images) per state.",
        "",
        "| mode | " + " | ".join(f"{g} GPU{'s' if g > 1 else ''}" for g in GPU_COUNTS) + " | disk per state |",
        "|---|" + "---|" * (len(GPU_COUNTS) + 1),
    ]
    for mode, r in results.items():
        rate = n / statistics.median(r["seconds"])
        per_image = r["file_bytes"] / r["runs"] if "file_bytes" in r else None
        label = mode if mode == "plain" else "capture, " + mode
        lines.append(f"| {label} | " + " | ".join(projection(rate, per_image)) + " |")
    lines += ["", "Raw pass seconds: " + "; ".join(
        f"{mode}: " + ", ".join(f"{s:.2f}" for s in r["seconds"]) for mode, r in results.items()), ""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="SEE prompts in the slice (default 16)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=6, help="interleaved passes per mode (default 6)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    parser.add_argument("--storage", action="append", choices=compression.MODES,
                        help="storage modes to measure (repeatable; default all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder for run files (default: temporary)")
    parser.add_argument("--out", type=Path, required=True, help="Markdown sheet to write")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny SD 1.4-topology model on the CPU, 2 prompts, 2 steps, 64², 1 repeat")
    args = parser.parse_args(argv)
    args.storage = list(dict.fromkeys(args.storage or compression.MODES))
    if args.smoke:
        args.prompts, args.batch_size, args.repeats, args.steps, args.size = 2, 2, 1, 2, 64
        args.device, args.dtype = "cpu", "float32"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    device = torch.device(args.device)
    jobs = see_slice(args.prompts)
    pipe = random_sd14_pipeline(device, getattr(torch, args.dtype), smoke=args.smoke)
    pipe.tokenizer = word_tokenizer([p.prompt for p in build_see_prompts()])
    assert len(pipe.tokenizer) <= pipe.text_encoder.config.vocab_size, "word ids must fit the text encoder"
    settings = SamplerSettings(steps=args.steps, guidance_scale=7.5, height=args.size, width=args.size)
    with tempfile.TemporaryDirectory(dir=args.work) as scratch:
        results = measure(pipe, jobs, settings, args, Path(scratch))
    text = report(results, jobs, settings, args, device, time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
