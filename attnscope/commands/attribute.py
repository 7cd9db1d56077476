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


def main(args: argparse.Namespace) -> int:
    from attnscope.analyses.attribution import attribute_word
    from attnscope.report.attribution import attribution_lines, write_attribution
    from attnscope.sampling import SamplerSettings

    study = attribute_word(
        load_from_args(args), args.prompt, args.word, args.object, seed=args.seed,
        settings=SamplerSettings(steps=args.steps, guidance_scale=args.guidance), steps=args.at_step,
        layers=args.layers or "all", measure=args.measure, noise=not args.no_noise, ig_steps=args.ig_steps,
    )
    written = write_attribution(study, args.out)
    print("\n".join(attribution_lines(study)))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
