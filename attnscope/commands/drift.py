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
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

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
    parser.add_argument("--layers", action="append", default=None, help="layer names or globs (default all)")
    parser.add_argument("--example", type=non_negative_int, default=None,
                        help="pair shown in the panel (default: the pair with the median change on the own object)")
    parser.add_argument("--resamples", type=positive_int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--out", type=Path, default=Path("drift"), help="output folder (default ./drift)")
    return parser


def run(args: argparse.Namespace) -> int:
    from attnscope.analyses.run_binding import drift_study
    from attnscope.store import RunFile

    oracle = _oracle() if args.regions == "oracle" else None
    with RunFile(args.before) as before, RunFile(args.after) as after:
        check_pair(before, args.before)
        layers = [spec.name for spec in before.select_layers(args.layers)] if args.layers else None
        study = drift_study(before, after, args.word, args.object, own=args.own, regions=args.regions,
                            oracle=oracle, layers=layers)
        if len(set(study.clusters)) < 2:
            print(f"attnscope drift: warning: all {len(study.pairs)} pairs share one prompt; intervals resample "
                  "prompts, so they are left undefined (nan): capture 2 or more prompts for intervals",
                  file=sys.stderr)
        example = args.example if args.example is not None else median_pair(study)
        written = write_outputs(study, before, after, args.out, example=example, oracle=oracle,
                                n_resamples=args.resamples)
        written += _dispersal(study, before, after, args, layers)
    print(report(study, n_resamples=args.resamples))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def check_pair(before, before_path: Path) -> None:
    """Refuse a "before" file captured with an edit (the arguments are likely swapped)."""
    from attnscope.store.reader import describe_edits

    if before.schema.edit:
        raise UsageError(f"{before_path} was captured with an edit ({describe_edits(before.schema.edit)}): "
                         "give the run file captured without --edit first, then the edited one")


def _dispersal(study, before, after, args: argparse.Namespace, layers) -> list[Path]:
    """Concentration and dispersal of the word and the objects before vs after (``dispersal.*`` files)."""
    from attnscope.analyses.dispersal import dispersal_study
    from attnscope.report.inside import write_dispersal

    regions = {study.word: study.own, **{o: o for o in study.objects}}
    found = dispersal_study(before, after, [study.word, *study.objects], layers=layers, regions=regions)
    return write_dispersal(found, args.out, n_resamples=args.resamples)


def _oracle():
    from attnscope.models.toy.oracle import ToyOracle

    return ToyOracle.load()


def median_pair(study) -> int:
    """Index of the pair whose change of binding score on the own object is the median one."""
    before, after = study.per_pair("score")
    change = after[:, study.objects.index(study.own)] - before[:, study.objects.index(study.own)]
    finite = np.where(np.isfinite(change))[0]
    if not len(finite):
        return 0
    order = finite[np.argsort(change[finite], kind="stable")]
    return int(order[(len(order) - 1) // 2])


def write_outputs(study, before, after, out: Path, *, example: int = 0, oracle=None, n_resamples: int = 2000,
                  figures: bool = True) -> list[Path]:
    """Write the JSON, CSVs and (with ``figures``) figures of a
    :class:`~attnscope.analyses.run_binding.DriftStudy` into ``out``.

    ``before``/``after``: the open run files (for the example pair's images and maps).
    """
    from attnscope.datasets.see import write_table

    out.mkdir(parents=True, exist_ok=True)
    summary = study.summary(n_resamples=n_resamples)
    summary["example_pair"] = {"index": example, **asdict(study.pairs[example])}
    summary["files"] = {"before": str(getattr(before.file, "filename", "")),
                        "after": str(getattr(after.file, "filename", ""))}
    (out / "drift.json").write_text(json.dumps(summary, indent=1, default=float))
    pairs_rows, layer_rows = study.rows(), study.layer_step_rows()
    written = [
        out / "drift.json",
        write_table(pairs_rows, list(pairs_rows[0]), out / "drift_pairs.csv"),
        write_table(layer_rows, list(layer_rows[0]), out / "drift_layers_steps.csv"),
    ]
    if figures:
        written += drift_figures(study, before, after, out, example=example, oracle=oracle, n_resamples=n_resamples)
    return written


def drift_figures(study, before, after, out: Path, *, example: int = 0, oracle=None, n_resamples: int = 2000,
                  formats: tuple[str, ...] = ("png", "pdf", "svg")) -> list[Path]:
    """The drift panel (pair ``example`` + bars over all pairs) and the layer × step heat map."""
    from attnscope.analyses.run_binding import attention_regions, oracle_regions
    from attnscope.figures.binding import binding_heatmap
    from attnscope.figures.drift import drift_panel
    from attnscope.figures.style import save_all

    pair = study.pairs[example]
    if study.regions == "oracle":
        regions = oracle_regions(before.image(pair.before), study.objects, oracle)
    else:
        regions = attention_regions(before, pair.before, study.objects)
    intervals = study.intervals("score", n_resamples=n_resamples)
    bars = {name: (pi.a, pi.b) for name, pi in intervals.items()}
    layers = list(study.layers)
    panel = drift_panel(
        (before.image(pair.before), after.image(pair.after)),
        (before.heatmap(pair.before, word=study.word, layers=layers),
         after.heatmap(pair.after, word=study.word, layers=layers)),
        regions, bars, word=study.word,
        bar_note=f"mean over {len(study.pairs)} pairs, 95% CI",
        title=f"{pair.prompt} (seed {pair.seed})",
    )
    written = save_all(panel, out / "drift_panel", formats)

    score_before, score_after = study.layer_step("score")
    rows = {f"“{study.word}” on {name}": (score_before[..., k], score_after[..., k])
            for k, name in enumerate(study.objects)}
    specs = {spec.name: (spec.height, spec.width) for spec in before.layers}
    heatmap = binding_heatmap(rows, study.steps, layers, resolutions=specs,
                              title=f"binding score per layer and step, mean over {len(study.pairs)} pairs")
    written += save_all(heatmap, out / "binding_heatmap", formats)
    return written


def report(study, n_resamples: int = 2000) -> str:
    """A few lines: per object, the binding score before → after with intervals."""
    lines = [f"“{study.word}” (describes {study.own}) in {len(study.pairs)} pairs of "
             f"{len(set(study.clusters))} prompts; regions from the before run's {study.regions}",
             f"{'binding score':<16} {'before':>24} {'after':>24} {'after − before':>26}"]
    for name, pi in study.intervals("score", n_resamples=n_resamples).items():
        lines.append(f"{'on ' + name:<16} {str(pi.a):>24} {str(pi.b):>24} {str(pi.difference):>26}")
    first_before, first_after = study.first_wrong_steps()
    lines.append(f"mostly on another object at some step: {np.mean(first_before >= 0):.2f} of pairs before, "
                 f"{np.mean(first_after >= 0):.2f} after")
    return "\n".join(lines)
