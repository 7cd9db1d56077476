"""``attnscope tradeoff``: what erasing more costs — target, retain and leakage over edits of growing strength.

    attnscope tradeoff --concept bench --concept chair --concept couch --concept car --counts 1 2 3 4 --out tradeoff/
    attnscope tradeoff --sweeps --concept bench --out tradeoff/          # UCE λ / scales, RECE epochs / λ_r

Erases the first n listed concepts for each ``--counts`` n, one-shot and
progressively (UCE), and with ``--sweeps`` one-at-a-time sweeps of UCE's λ,
erase and preserve scales and RECE's epochs and λ_r on the first concept.
The base model and every edit sample one prompt set (every class, and
two-object prompts of the listed concepts), the judge answers, and the
metrics are computed with each edit's own erased set. Before sampling, each
edit's movement of the retained concepts' keys and values is measured; the
report says how well it ranks the edits by their measured retain loss
(Spearman's ρ with an interval). Writes ``tradeoff.html``, ``tables/``,
``figures/`` (PNG + PDF), and per edit ``*.edit``, ``*.point.json``,
``*.answers.csv``; a re-run resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attnscope.commands.common import DTYPES, torch_dtype


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "tradeoff", help="target/retain/leakage over more erased concepts and hyper-parameter sweeps",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--concept", action="append", default=[],
                        help="concept to erase, in ladder order; repeatable (default: bench, chair, couch, car, bird, "
                             "pizza, bus, cat)")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 3, 4, 8],
                        help="erase the first n concepts for each n (default 1 2 3 4 8)")
    parser.add_argument("--sweeps", action="store_true", help="also sweep UCE and RECE hyper-parameters")
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 per prompt (default 2)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    parser.add_argument("--singles", type=int, default=4, help="single-object prompts per class (default 4)")
    parser.add_argument("--pairs", type=int, default=4, help="two-object prompts per listed concept (default 4)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per pipeline call (default 16)")
    parser.add_argument("--model", default="toy", help="'toy' (built-in, default) or a toy-world diffusers folder")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if present), 'cpu', 'cuda:1', ...")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="model dtype")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--out", type=Path, default=Path("tradeoff"), help="output folder (default tradeoff/)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


LADDER = ("bench", "chair", "couch", "car", "bird", "pizza", "bus", "cat")


def main(args: argparse.Namespace) -> int:
    from attnscope.datasets.toy_vocabulary import CLASSES
    from attnscope.judges import ToyOracle
    from attnscope.models import load_pipeline
    from attnscope.report.inside import tradeoff_study, write_tradeoff_page
    from attnscope.runner.tradeoff import concept_ladder, hyper_sweeps, run_tradeoff, tradeoff_plan
    from attnscope.sampling import SamplerSettings

    concepts = args.concept or list(LADDER)
    counts = [n for n in args.counts if n <= len(concepts)]
    pipe = load_pipeline(args.model, device=args.device, dtype=torch_dtype(args.dtype))
    judge = ToyOracle.load(device=pipe.device)
    points = concept_ladder(concepts, counts) if counts else []
    if args.sweeps:
        points += hyper_sweeps(concepts[0], preserve=[c for c in concepts[1:]])
    if not points:
        raise ValueError("nothing to do: give --counts up to the number of --concept s, or --sweeps")
    plan = tradeoff_plan(concepts, range(args.seeds), SamplerSettings(steps=args.steps), singles=args.singles,
                         pairs=args.pairs)
    known = list(dict.fromkeys([*concepts, *CLASSES]))  # the predictor's concepts: every class, erased or not
    run_tradeoff(pipe, points, plan, args.out, judge=judge, concepts=known, batch_size=args.batch_size,
                 progress=not args.no_progress)
    rows, rho = tradeoff_study(args.out, plan, [p.name for p in points], n_resamples=args.resamples)
    path = write_tradeoff_page(args.out, rows, rho, f"What erasing more costs: {', '.join(concepts)}")
    print(f"{len(points)} edits; retain drop vs K/V movement: Spearman ρ {rho}")
    print(f"wrote {path} (+ tables/, figures/)")
    return 0
