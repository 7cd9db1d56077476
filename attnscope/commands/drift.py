"""``attnscope drift``: where an attribute word's attention goes before and after an edit.

    attnscope capture --prompt "a wooden bench and a red bird" --seed 0 --seed 1 --out before.h5
    attnscope capture --prompt "a wooden bench and a red bird" --seed 0 --seed 1 --edit bench.edit --out after.h5
    attnscope drift before.h5 after.h5 --word wooden --object bench --object bird --out drift/

Runs are paired by prompt and seed. For every pair, layer and step the
binding of the word to each object is measured (share of its attention in
the object's region, IoU/IoA, JS divergence, centre-of-mass distance; see
``attnscope.analyses.binding``), with regions from the before run. Writes

* ``drift.json`` — settings, per object and quantity the mean before and
  after and their difference with 95 % bootstrap intervals clustered by
  prompt, and the step at which the word first lands mostly on another object;
* ``drift_pairs.csv`` — one row per pair, object and quantity (averaged over
  layers and steps); ``drift_layers_steps.csv`` — one row per layer, step,
  object and quantity (averaged over pairs);
* ``drift_panel.{png,pdf,svg}`` — one pair's images and word maps, and the
  binding bars over all pairs; ``binding_heatmap.{png,pdf,svg}`` — binding
  per layer × step, before, after and the difference;
* ``dispersal.json``, ``dispersal.csv``, ``dispersal_layers_steps.csv``,
  ``dispersal.{png,pdf}`` — concentration and dispersal (entropy, top-10%
  share, spread, in-object share) of the word and of each object word,
  before vs after with paired intervals, and per layer and step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attnscope.commands.common import non_negative_int, positive_int
from attnscope.errors import UsageError


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``drift`` on the CLI's sub-parsers."""
    parser = subparsers.add_parser(
        "drift", help="binding of an attribute word before vs after an edit (paired run files)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("before", type=Path, help="run file captured without the edit")
    parser.add_argument("after", type=Path, help="run file captured with the edit (same prompts and seeds)")
    parser.add_argument("--word", required=True, help="the attribute word, e.g. wooden")
    parser.add_argument("--object", action="append", default=None,
                        help="object noun of the prompts; repeatable (default: known nouns of the first prompt)")
    parser.add_argument("--own", default=None, help="the object the word describes (default: parsed from the prompt)")
    parser.add_argument("--regions", choices=("attention", "oracle"), default="attention",
                        help="object regions from the before run's object maps (default) or the toy oracle")
    parser.add_argument("--layers", action="append", default=None, help="layer names, globs or places (down, mid, up); repeatable (default all)")
    parser.add_argument("--example", type=non_negative_int, default=None,
                        help="pair shown in the panel (default: the pair with the median change on the own object)")
    parser.add_argument("--resamples", type=positive_int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--out", type=Path, default=Path("drift"), help="output folder (default ./drift)")
    return parser


def main(args: argparse.Namespace) -> int:
    from attnscope.report.drift import drift_report, drift_text
    from attnscope.store import RunFile

    oracle = _oracle() if args.regions == "oracle" else None
    with RunFile(args.before) as before, RunFile(args.after) as after:
        check_pair(before, args.before)
        layers = [spec.name for spec in before.select_layers(args.layers)] if args.layers else None
        study, written = drift_report(before, after, args.out, args.word, args.object, own=args.own,
                                      regions=args.regions, oracle=oracle, layers=layers, example=args.example,
                                      n_resamples=args.resamples)
    print(drift_text(study, n_resamples=args.resamples))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def check_pair(before, before_path: Path) -> None:
    """Refuse a "before" file captured with an edit (the arguments are likely swapped)."""
    from attnscope.store.reader import describe_edits

    if before.schema.edit:
        raise UsageError(f"{before_path} was captured with an edit ({describe_edits(before.schema.edit)}): "
                         "give the run file captured without --edit first, then the edited one")


def _oracle():
    from attnscope.judges.toy_oracle import ToyOracle

    return ToyOracle.load()
