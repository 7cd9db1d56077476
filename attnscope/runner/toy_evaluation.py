"""Measure a toy pipeline with the oracle: does it draw what the prompt says?

    python -m attnscope.runner.toy_evaluation --model attnscope/assets/toy \\
        --oracle attnscope/assets/oracle.safetensors --prompts 200 --seeds 4 --steps 50 --out results.json

Prompts are drawn deterministically in three kinds:

- ``single``: one object, naming its class and a random subset of size,
  colour and material ("a small red car");
- ``superclass``: one object named by its superclass ("a vehicle"), now and
  then with a colour;
- ``two``: two objects of different classes, each with a random subset of
  attributes ("a wooden bench and a blue bird").

Each prompt is sampled with ``--seeds`` seeds; the oracle describes every
image. A noun is *present* when some detection's most likely class belongs
to it; its attributes are read off the detection most likely to be it (for
two-object prompts, the second noun takes the best remaining detection).
*Binding* is the share of named attributes found on the right object of a
two-object prompt; *leakage* is how often an attribute named for one object
shows up on the other object, which the prompt left unspecified (chance is
1 / number of values).

With ``--localise`` the cross-attention maps of every image are captured
(conditional branch, heads averaged, every layer, step and token position)
and scored against the oracle's object masks with
:mod:`attnscope.analyses.localisation`: per word role (noun, size, colour,
material) of single-object prompts the DAAM-style IoU and mass ratio; for
two-object prompts each word's share of its in-object mass on its own object
(chance 0.5); for every image the attention mass by token kind (start,
function words, object words, end, padding). Every metric gets a 95 %
interval from a bootstrap over prompts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from attnscope.analyses.localisation import (
    heatmap_iou,
    mass_by_kind,
    mass_ratio,
    own_share,
    token_heatmaps,
    token_mass,
)
from attnscope.analyses.stats import cluster_bootstrap_ci
from attnscope.datasets.toy_vocabulary import (
    ATTRIBUTES,
    CLASSES,
    COLOUR_NAMES,
    HIERARCHY,
    MATERIALS,
    SIZES,
    ToyObject,
    caption_for,
    parse_caption,
    word_kind,
    word_objects,
)
from attnscope.judges.toy_oracle import Detection, ToyOracle, default_oracle_path
from attnscope.models.loading import dtype_keyword
from attnscope.models.toy import default_model_path
from attnscope.models.toy.pipeline import DEFAULT_GUIDANCE_SCALE, ToyWorldPipeline
from attnscope.schedulers import SCHEDULERS

VALUES = {"size": SIZES, "colour": COLOUR_NAMES, "material": MATERIALS}
TARGETS = {  # acceptance thresholds of issue 10 (toy model v2)
    "single/cls": 0.90, "single/colour": 0.90, "single/material": 0.80, "single/size": 0.85,
    "superclass/present": 0.90, "two/both_present": 0.85,
    "loc/noun_iou": 0.60, "loc/size_iou": 0.45, "loc/colour_iou": 0.45, "loc/material_iou": 0.45,
    "loc/two_attribute_own_share": 0.65,
}
ROLES = {"size": "size", "colour": "colour", "material": "material", "cls": "noun", "superclass": "noun"}


def prompt_set(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` prompts as ``(kind, prompt)``: 50% single, 15% superclass, 35% two-object."""
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(n):
        kind = rng.choice(["single", "superclass", "two"], p=[0.5, 0.15, 0.35])
        k = 2 if kind == "two" else 1
        classes = rng.choice(len(CLASSES), size=k, replace=False)
        objects = [ToyObject(CLASSES[c], str(rng.choice(COLOUR_NAMES)), str(rng.choice(MATERIALS)),
                             str(rng.choice(SIZES))) for c in classes]
        if kind == "superclass":
            named = [("colour", "superclass") if rng.random() < 0.3 else ("superclass",)]
        else:
            p = 0.75 if kind == "single" else 0.5
            named = [tuple(a for a in ATTRIBUTES if rng.random() < p) + ("class",) for _ in objects]
        prompts.append((str(kind), caption_for(objects, named)))
    return prompts


def _members(noun: dict) -> tuple[str, ...]:
    return (noun["cls"],) if "cls" in noun else HIERARCHY[noun["superclass"]]


def assign(nouns: list[dict], detections: list[Detection]) -> list[Detection | None]:
    """For each parsed noun, the detection most likely to be it (each detection used once)
    among those whose most likely class is one of its members; None when there is none."""
    free = list(detections)
    out = []
    for noun in nouns:
        members = _members(noun)
        candidates = [d for d in free if d.cls in members]
        best = max(candidates, key=lambda d: sum(d.probs["cls"][c] for c in members), default=None)
        if best is not None:
            free.remove(best)
        out.append(best)
    return out


def score(kind: str, prompt: str, detections: list[Detection]) -> dict[str, list[float]]:
    """Observations (1.0 / 0.0, or counts) per metric for one image; keys like ``single/colour``.

    A two-object image contributes one ``two/binding`` observation per named
    attribute and one ``two/leakage`` (with its ``two/leakage_chance``) per
    attribute named for one object only, when the other object is present.
    """
    nouns = parse_caption(prompt)
    found = assign(nouns, detections)
    m: dict[str, list[float]] = defaultdict(list)
    m[f"{kind}/objects"].append(len(detections))
    m[f"{kind}/exact_count"].append(float(len(detections) == len(nouns)))
    if kind in ("single", "superclass"):
        noun, det = nouns[0], found[0]
        m["single/cls" if kind == "single" else "superclass/present"].append(float(det is not None))
        for a in ATTRIBUTES:
            if a in noun:
                m[f"{kind}/{a}"].append(float(det is not None and getattr(det, a) == noun[a]))
        return dict(m)
    m["two/both_present"].append(float(all(d is not None for d in found)))
    for i, (noun, det) in enumerate(zip(nouns, found)):
        m[f"two/present_{i + 1}"].append(float(det is not None))
        other_noun, other = nouns[1 - i], found[1 - i]
        for a in ATTRIBUTES:
            if a not in noun:
                continue
            m["two/binding"].append(float(det is not None and getattr(det, a) == noun[a]))
            if a not in other_noun and other is not None:
                m["two/leakage"].append(float(getattr(other, a) == noun[a]))
                m["two/leakage_chance"].append(1 / len(VALUES[a]))
    return dict(m)


def token_roles(prompt: str, n_positions: int) -> list[tuple[str, int]]:
    """``(kind, object)`` per token position of a toy prompt: kind is ``start``, ``function``,
    ``noun``, ``size``, ``colour``, ``material``, ``end`` or ``padding``; object is the index of
    the object an object word names (-1 otherwise)."""
    words = prompt.lower().split()[: n_positions - 2]
    objects = word_objects(prompt)[: len(words)]
    roles = [("start", -1)]
    roles += [(ROLES.get(word_kind(w) or "", "function"), o) for w, o in zip(words, objects)]
    roles.append(("end", -1))
    return roles + [("padding", -1)] * (n_positions - len(roles))


def localisation_scores(kind: str, prompt: str, heat: np.ndarray, mass: np.ndarray,
                        found: list[Detection | None]) -> dict[str, list[float]]:
    """Localisation observations of one image (keys like ``loc/colour_iou``).

    ``heat``: (positions, H, W) unnormalised heat maps of every token position;
    ``mass``: (positions,) mean attention probability per position;
    ``found``: the detection assigned to each noun of the prompt (None: missing).
    """
    roles = token_roles(prompt, len(mass))
    m: dict[str, list[float]] = defaultdict(list)
    for token_kind, share in mass_by_kind(mass, [r for r, _ in roles]).items():
        m[f"mass/{token_kind}"].append(share)
    masks = [d.mask if d is not None else None for d in found]
    for position, (role, obj) in enumerate(roles):
        if obj < 0 or obj >= len(masks) or masks[obj] is None:
            continue
        if kind == "single":
            m[f"loc/{role}_iou"].append(float(heatmap_iou(heat[position], masks[obj])))
            m[f"loc/{role}_mass_ratio"].append(float(mass_ratio(heat[position], masks[obj])))
        elif kind == "two" and masks[1 - obj] is not None:
            share = float(own_share(heat[position], masks[obj], masks[1 - obj]))
            m[f"loc/two_{role}_own_share"].append(share)
            if role != "noun":
                m["loc/two_attribute_own_share"].append(share)
    return {k: [x for x in v if np.isfinite(x)] for k, v in m.items()}


def aggregate(records: list[dict], intervals: bool = True) -> dict[str, float]:
    """Mean of every metric over all its observations; with ``intervals``, also
    ``<metric>/low`` and ``<metric>/high``: its 95 % interval from a bootstrap over prompts."""
    pooled: dict[str, list[float]] = defaultdict(list)
    clusters: dict[str, list[int]] = defaultdict(list)
    for r in records:
        for k, v in r["metrics"].items():
            pooled[k] += v
            clusters[k] += [r.get("prompt_id", 0)] * len(v)
    out = {}
    for k, v in sorted(pooled.items()):
        if not v:
            continue
        out[k] = float(np.mean(v))
        if intervals and not k.endswith("objects"):
            ci = cluster_bootstrap_ci(v, clusters[k], n_resamples=1000)
            out[f"{k}/low"], out[f"{k}/high"] = ci.low, ci.high
    return out


def markdown(results: dict) -> str:
    """A markdown table of the metrics, with targets where the issue sets one."""
    metrics = results["metrics"]
    lines = ["| metric | value | 95 % interval (prompts) | target |", "|---|---|---|---|"]
    for k, v in metrics.items():
        if k.endswith(("/low", "/high")):
            continue
        target = TARGETS.get(k)
        mark = "" if target is None else (f"≥ {target:.2f} ✓" if v >= target else f"≥ {target:.2f} ✗")
        percent = not (k.endswith(("objects", "_iou", "_mass_ratio", "_share")) or k.startswith("mass/"))
        fmt = (lambda x: f"{100 * x:.1f}%") if percent else (lambda x: f"{x:.3f}")
        interval = f"[{fmt(metrics[k + '/low'])}, {fmt(metrics[k + '/high'])}]" if k + "/low" in metrics else ""
        lines.append(f"| {k} | {fmt(v)} | {interval} | {mark} |")
    s = results["settings"]
    lines.append("")
    lines.append(f"{s['prompts']} prompts × {s['seeds']} seeds, {s['steps']} steps of {s.get('scheduler', '?')}, "
                 f"guidance {s['guidance_scale']}, "
                 f"{s['images']} images in {s['seconds']:.0f} s on {s['device']}")
    return "\n".join(lines)


def _captured_heat(runs, run: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(heat (positions, H, W), mass (positions,))`` of one captured run, every layer."""
    per_layer = {spec.name: runs.maps(run, spec.name) for spec in runs.layers}
    return token_heatmaps(per_layer, size), token_mass(per_layer)


def evaluate(model: Path, oracle_path: Path, n_prompts: int = 200, seeds: int = 4, steps: int = 50,
             guidance_scale: float = DEFAULT_GUIDANCE_SCALE, batch: int = 128, device: str | None = None,
             prompt_seed: int = 0, localise: bool = False, kinds: tuple[str, ...] | None = None,
             scheduler: str | None = None) -> dict:
    """Generate ``n_prompts × seeds`` images and score them with the oracle (and, with
    ``localise``, the attention maps against its masks); returns the results dict.
    ``kinds`` keeps only prompts of those kinds (default: all); ``scheduler`` samples with
    another scheduler (:mod:`attnscope.schedulers`) than the pipeline's own."""
    from attnscope.hooks import capture
    from attnscope.schedulers import scheduler_of

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe = ToyWorldPipeline.from_pretrained(model, **dtype_keyword(dtype)).to(device)
    pipe.set_progress_bar_config(disable=True)
    oracle = ToyOracle.load(oracle_path, device=device)
    jobs = [(i, kind, prompt, s) for i, (kind, prompt) in enumerate(prompt_set(n_prompts, prompt_seed))
            for s in range(seeds) if kinds is None or kind in kinds]
    records = []
    start = time.time()
    for b in range(0, len(jobs), batch):
        chunk = jobs[b:b + batch]
        generators = [torch.Generator().manual_seed(1000 * i + s) for i, _, _, s in chunk]

        def sample():
            with scheduler_of(pipe, scheduler):
                return pipe([p for _, _, p, _ in chunk], num_inference_steps=steps, guidance_scale=guidance_scale,
                            generator=generators, output_type="pt").images

        if localise:
            with capture(pipe, tokens="all") as cap:
                images = sample()
            runs = cap.file
        else:
            images = sample()
        for row, ((i, kind, prompt, s), dets) in enumerate(zip(chunk, oracle.describe(images.float().cpu()))):
            metrics = score(kind, prompt, dets)
            if localise:
                heat, mass = _captured_heat(runs, cap.run_ids[row], tuple(images.shape[-2:]))
                found = assign(parse_caption(prompt), dets)
                metrics.update(localisation_scores(kind, prompt, heat, mass, found))
            records.append({"prompt": prompt, "prompt_id": i, "kind": kind, "seed": s,
                            "detections": [f"{d.size} {d.colour} {d.material} {d.cls}" for d in dets],
                            "metrics": metrics})
        print(f"{len(records)}/{len(jobs)} images, {len(records) / (time.time() - start):.1f} images/s", flush=True)
    seconds = time.time() - start
    return {
        "settings": {"model": str(model), "oracle": str(oracle_path), "prompts": n_prompts, "seeds": seeds,
                     "steps": steps, "guidance_scale": guidance_scale, "images": len(records), "device": device,
                     "seconds": round(seconds, 1), "prompt_seed": prompt_seed, "localise": localise,
                     "scheduler": scheduler or type(pipe.scheduler).__name__},
        "metrics": aggregate(records),
        "records": [{k: v for k, v in r.items() if k != "metrics"} for r in records],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(default_model_path()))
    p.add_argument("--oracle", default=str(default_oracle_path()))
    p.add_argument("--prompts", type=int, default=200)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE_SCALE)
    p.add_argument("--batch", type=int, default=128, help="images per pipeline call")
    p.add_argument("--device")
    p.add_argument("--out", default="toy_eval.json")
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--localise", action="store_true", help="also score attention localisation (captures maps)")
    p.add_argument("--scheduler", choices=SCHEDULERS, help="sample with this scheduler (default: the model's)")
    p.add_argument("--kinds", nargs="+", choices=["single", "superclass", "two"], help="only these prompt kinds")
    args = p.parse_args(argv)
    results = evaluate(Path(args.model), Path(args.oracle), args.prompts, args.seeds, args.steps, args.guidance,
                       args.batch, args.device, localise=args.localise,
                       kinds=tuple(args.kinds) if args.kinds else None, scheduler=args.scheduler)
    table = markdown(results)
    print(table, flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
