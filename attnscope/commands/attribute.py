"""``attnscope attribute``: which prompt tokens decide where an attribute word's attention goes.

    attnscope attribute --prompt "a wooden bench and a bird" --word wooden --object bird --object bench
    attnscope attribute --prompt "a wooden bench and a bird" --word wooden --object bird --edit bench.edit

Samples the prompt once (``--seed``), then runs integrated gradients from
the empty prompt on the text encoder's token embeddings for each target
(``attnscope.analyses.attribution``): for every ``--object``, the word's
attention share inside that object's region (regions from the objects' own
attention, exclusive), with the UNet's queries held at their recorded values;
and the squared change of the UNet's prediction. Targets are averaged over
``--at-step`` steps (default: three spread over the trajectory) and
``--layers``. Writes ``attribution.json``, ``attribution.csv`` and the
figures ``attribution.{png,pdf,svg}`` (bars per word) and
``attribution_maps.{png,pdf,svg}`` (the image with the word's and objects' maps).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attnscope.commands.common import add_model_options, load_from_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``attribute`` on the CLI's sub-parsers."""
    parser = subparsers.add_parser(
        "attribute", help="integrated-gradients attribution of a word's attention (and the prediction) to tokens",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--word", required=True, help="the attribute word whose attention is explained")
    parser.add_argument("--object", action="append", required=True,
                        help="object noun whose region is a target; repeatable (regions are exclusive)")
    add_model_options(parser)
    group = parser.add_argument_group("sampling and targets")
    group.add_argument("--seed", type=int, default=0, help="seed of the sampled trajectory (default 0)")
    group.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    group.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    group.add_argument("--at-step", type=int, action="append", default=None,
                       help="step whose queries/latents the targets use; repeatable (default: 3 spread out)")
    group.add_argument("--layers", action="append", default=None, help="layers of the attention target (default all)")
    group.add_argument("--measure", choices=("share", "mass"), default="share",
                       help="attention share of the word inside the region (default) or mean attention of its cells")
    group.add_argument("--no-noise", action="store_true", help="skip the prediction-change target")
    group.add_argument("--ig-steps", type=int, default=16, help="integration points (default 16)")
    parser.add_argument("--out", type=Path, default=Path("attribution"), help="output folder (default ./attribution)")
    return parser


def run(args: argparse.Namespace) -> int:
    from attnscope.analyses.attribution import attention_target, integrated_gradients, noise_target, trace
    from attnscope.sampling import SamplerSettings

    pipe = load_from_args(args)
    settings = SamplerSettings(steps=args.steps, guidance_scale=args.guidance)
    recorded = trace(pipe, args.prompt, seed=args.seed, settings=settings, steps=args.at_step,
                     layers=args.layers or "all")
    regions = recorded.regions(args.object)
    targets = [attention_target(pipe, recorded, args.word, regions[o], measure=args.measure, label=o)
               for o in args.object]
    if not args.no_noise:
        targets.append(noise_target(pipe, recorded))
    results = [integrated_gradients(pipe, args.prompt, t, n_steps=args.ig_steps) for t in targets]
    written = write_outputs(recorded, regions, results, args.out, word=args.word)
    for result in results:
        words = ", ".join(f"{w} {v:+.3g}" for w, v in result.by_word().items() if not w.startswith("<"))
        print(f"{result.name}: F = {result.target:.4g} (empty prompt {result.baseline:.4g}); {words}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def write_outputs(recorded, regions, results, out: Path, *, word: str) -> list[Path]:
    """JSON, CSV and figures of an attribution run into ``out``."""
    from attnscope.analyses.regions import aggregate
    from attnscope.datasets.see import write_table
    from attnscope.figures.attribution import attribution_bars
    from attnscope.figures.maps import word_map_grid
    from attnscope.figures.style import save_all
    from attnscope.store.aggregate import normalise

    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "prompt": recorded.prompt,
        "seed": recorded.seed,
        "steps": list(recorded.steps),
        "layers": [layer.name for layer in recorded.layers],
        "targets": [
            dict(name=r.name, target=r.target, baseline=r.baseline, delta=r.delta, ig_steps=r.n_steps,
                 by_word=r.by_word())
            for r in results
        ],
    }
    (out / "attribution.json").write_text(json.dumps(summary, indent=1))
    rows = [row for r in results for row in r.rows()]
    written = [out / "attribution.json", write_table(rows, list(rows[0]), out / "attribution.csv")]
    objects = list(regions)
    written += save_all(attribution_bars(results, highlight=[word, *objects], title=recorded.prompt),
                        out / "attribution")
    size = recorded.image.shape[:2]
    maps = {w: normalise(aggregate(list(recorded.attention[w].values()), size)) for w in [word, *objects]}
    grid = word_map_grid(recorded.image, {"all layers": maps}, title=f"{recorded.prompt} (seed {recorded.seed})")
    written += save_all(grid, out / "attribution_maps")
    return written
