"""The full SEE-style side-effect benchmark on the built-in toy model (GPU).

Every toy prompt (single-object variants of every class, the erased
superclass's own variants, and the two-object leakage prompts) × 4 seeds ×
50 DDIM steps, for the base model and its UCE and RECE edits of ``--erase``
(default "furniture": a superclass, so evasion is measured too). Per model
state, in one process and interleaved so drift hits both alike:

* **with capture** — the runner as ``attnscope leakage-report --full`` runs
  it: all cross-attention maps of every step written to ``{state}.h5``, then
  every question answered by the toy oracle;
* **without capture** — the same jobs and batches sampled with nothing
  recorded (images/s of plain sampling).

Writes the Markdown summary (wall time, images/s with and without capture
and their ratio, target / retain / evasion / leakage per method with 95 %
intervals) to ``--out``, the self-contained HTML report beside it (``.html``),
and the report's CSVs, figures and the run files to ``--work``.

    python benchmarks/see_toy.py --out benchmarks/results/see_toy.md
    python benchmarks/see_toy.py --smoke --out /tmp/see_toy.md     # tiny random model on the CPU: checks the script
"""

from __future__ import annotations

import argparse
import platform
import shutil
import time
from pathlib import Path

import torch

from attnscope.analyses.side_effects import to_markdown
from attnscope.datasets.see import split
from attnscope.judges import ToyOracle
from attnscope.models.toy.pipeline import DEFAULT_GUIDANCE_SCALE
from attnscope.report import ReportInputs, StateInfo, side_effect_metrics, write_leakage_report
from attnscope.runner import BASE, Plan, Reduction, StateRun, benchmark_prompts, edited_states, read_ledgers, run_state
from attnscope.sampling import SamplerSettings, sample_batch

SMOKE_NOTE = "SMOKE RUN (random tiny model, reduced prompts): checks the script, numbers mean nothing. "
METRICS = ("target", "evasion", "retain", "retain_attributes", "leakage", "retain_by_distance")


def load(args):
    """The pipeline (the shipped toy model, or a random tiny one with ``--smoke``) and the oracle."""
    if args.smoke:
        from attnscope.models.toy import ToyModelConfig, build_toy_pipeline

        pipe = build_toy_pipeline(ToyModelConfig.tiny()).to(args.device)
        pipe.set_progress_bar_config(disable=True)
    else:
        from attnscope.models import load_pipeline

        pipe = load_pipeline("toy", device=args.device)
    return pipe, ToyOracle.load(device=pipe.device)


def gigabytes(path: Path) -> float:
    return path.stat().st_size / 1e9 if path.exists() else 0.0


def timing_table(captured: list[StateRun], plain: list[StateRun], work: Path) -> list[str]:
    lines = ["| state | images | with capture: s | img/s | without: s | img/s | ratio | judge s | run file GB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c, p in zip(captured, plain):
        lines.append(f"| {c.state} | {c.sampled} | {c.sample_seconds:.1f} | {c.images_per_second:.1f} "
                     f"| {p.sample_seconds:.1f} | {p.images_per_second:.1f} "
                     f"| {c.images_per_second / p.images_per_second:.3f} | {c.judge_seconds:.1f} "
                     f"| {gigabytes(work / f'{c.state}.h5'):.2f} |")
    c_n, c_s = sum(r.sampled for r in captured), sum(r.sample_seconds for r in captured)
    p_n, p_s = sum(r.sampled for r in plain), sum(r.sample_seconds for r in plain)
    lines.append(f"| **all** | {c_n} | {c_s:.1f} | {c_n / c_s:.1f} | {p_s:.1f} | {p_n / p_s:.1f} "
                 f"| {(c_n / c_s) / (p_n / p_s):.3f} | {sum(r.judge_seconds for r in captured):.1f} "
                 f"| {sum(gigabytes(work / f'{r.state}.h5') for r in captured):.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="Markdown summary to write")
    parser.add_argument("--work", type=Path, default=Path("/tmp/attnscope-see-toy"),
                        help="run files, answers and the HTML report (about 1 MB per image with capture)")
    parser.add_argument("--erase", action="append", default=None, help="concept(s) to erase (default furniture)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="RECE epochs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fresh", action="store_true", help="delete --work first (default: resume what is there)")
    parser.add_argument("--smoke", action="store_true",
                        help="random tiny model on the CPU, a few prompts, 1 seed, 2 steps: checks the script")
    args = parser.parse_args(argv)
    erased = args.erase or ["furniture"]
    if args.smoke:
        args.seeds, args.steps, args.batch_size, args.device = 1, 2, 8, "cpu"
        torch.set_num_threads(1)
    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)

    started = time.perf_counter()
    pipe, oracle = load(args)
    rows = split(benchmark_prompts("toy", erased), erased, encoder=(pipe.tokenizer, pipe.text_encoder))
    plan = Plan(tuple(rows), tuple(range(args.seeds)), SamplerSettings(steps=args.steps), tuple(erased))
    if args.smoke:
        plan = plan.reduced(Reduction(targets=3, retain_per_class=0, neighbours_per_class=1, leakage_pairs=3))
    states = [BASE, *edited_states(pipe, ["uce", "rece"], erased, args.work, epochs=args.epochs)]
    sample_batch(pipe, plan.jobs()[: args.batch_size], plan.settings)  # warm-up: kernels, allocator
    print(f"{len(plan.rows)} prompts x {len(plan.seeds)} seeds = {len(plan.jobs())} images per state, "
          f"{len(states)} states, {args.steps} steps, batch {args.batch_size}, on {pipe.device}", flush=True)

    captured, plain = [], []
    for state in states:
        captured.append(run_state(pipe, state, plan, args.work, judge=oracle, batch_size=args.batch_size))
        plain.append(run_state(pipe, state, plan, args.work, judge=None, capture_maps=False,
                               batch_size=args.batch_size))
        c, p = captured[-1], plain[-1]
        print(f"{state.name}: with capture {c.sampled} images in {c.sample_seconds:.1f} s "
              f"({c.images_per_second:.1f}/s), judged in {c.judge_seconds:.1f} s; without capture "
              f"{p.images_per_second:.1f}/s", flush=True)

    records = read_ledgers([args.work / f"{s.name}.answers.csv" for s in states])
    tables = side_effect_metrics(records)
    wall = time.perf_counter() - started
    device = torch.cuda.get_device_name(pipe.device) if pipe.device.type == "cuda" else platform.processor() or "CPU"
    label = "+".join(erased)
    lines = [
        f"# SEE-style side effects on the toy model: erasing “{label}” with UCE and RECE",
        "",
        f"- {SMOKE_NOTE if args.smoke else ''}"
        f"{len(plan.rows)} prompts ({plan.summary()['kinds']['single']} single-object, "
        f"{plan.summary()['kinds']['pair']} two-object) × seeds {list(plan.seeds)} = {len(plan.jobs())} images per "
        f"model state; base + UCE + RECE ({args.epochs} epochs), library default hyper-parameters",
        f"- {args.steps} DDIM steps, CFG {DEFAULT_GUIDANCE_SCALE} (the toy model's default), batch {args.batch_size}; "
        f"judge: toy oracle; device: {device}; torch {torch.__version__}",
        f"- wall time {wall:.0f} s (model load, edits, sampling with and without capture, judging, metrics)",
        "- capture: every cross-attention layer, every step, the prompt's tokens, heads averaged, float16, "
        "written to disk by the writer thread (its drain at the end is included)",
        *([f"- RESUMED: part of the images were made by an earlier session; the with-capture timings cover only "
           f"the {sum(c.sampled for c in captured)} images sampled in this one"]
          if any(c.sampled < c.jobs for c in captured) else []),
        "",
        "## Throughput: images/s with capture vs without (same process, same batches, interleaved per state)",
        "",
        *timing_table(captured, plain, args.work),
        "",
        "## Metrics (rate of yes answers, 95% cluster-bootstrap interval over prompts; Δ vs base, paired)",
        "",
    ]
    for name in METRICS:
        if tables.get(name):
            group = ("method", "erased", "relation") if name == "evasion" else (
                ("method", "erased", "attr_distance") if name == "retain_by_distance" else ("method", "erased"))
            lines += [f"### {name.replace('_', ' ')}", "", to_markdown(tables[name], group)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))

    inputs = ReportInputs(
        erased=label, records=records,
        states=[StateInfo(s.name, s.method, args.work / f"{s.name}.h5", s.edit.meta if s.edit else None,
                          {"sampled": c.sampled, "sample_seconds": round(c.sample_seconds, 2),
                           "images_per_second": round(c.images_per_second, 2),
                           "plain_images_per_second": round(p.images_per_second, 2)})
                for s, c, p in zip(states, captured, plain)],
        settings={"benchmark": "benchmarks/see_toy.py", "model": "toy (smoke: random tiny)" if args.smoke else "toy",
                  "judge": oracle.name, "device": device, "batch_size": args.batch_size},
        plan=plan.summary(), wall_seconds=wall,
    )
    report = write_leakage_report(args.work, inputs)
    shutil.copy(report, args.out.with_suffix(".html"))  # self-contained: figures are inlined
    print(f"wrote {args.out}, {args.out.with_suffix('.html')} and the report's files in {args.work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
