"""Measure a toy pipeline with the oracle: does it draw what the prompt says?

    python -m attnscope.models.toy.evaluate --model attnscope/assets/toy \\
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

from attnscope.datasets.toyworld import (
    ATTRIBUTES,
    CLASSES,
    COLOUR_NAMES,
    HIERARCHY,
    MATERIALS,
    SIZES,
    ToyObject,
    caption_for,
    parse_caption,
)
from attnscope.models.loading import dtype_keyword
from attnscope.models.toy import default_model_path, default_oracle_path
from attnscope.models.toy.oracle import Detection, ToyOracle
from attnscope.models.toy.pipeline import DEFAULT_GUIDANCE_SCALE, ToyWorldPipeline

VALUES = {"size": SIZES, "colour": COLOUR_NAMES, "material": MATERIALS}
TARGETS = {  # acceptance thresholds of issue 3
    "single/cls": 0.90, "single/colour": 0.90, "single/material": 0.80, "single/size": 0.85,
    "superclass/present": 0.90, "two/both_present": 0.75,
}


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


def aggregate(records: list[dict]) -> dict[str, float]:
    """Mean of every metric over all its observations."""
    pooled: dict[str, list[float]] = defaultdict(list)
    for r in records:
        for k, v in r["metrics"].items():
            pooled[k] += v
    return {k: float(np.mean(v)) for k, v in sorted(pooled.items()) if v}


def markdown(results: dict) -> str:
    """A markdown table of the metrics, with targets where the issue sets one."""
    lines = ["| metric | value | target |", "|---|---|---|"]
    for k, v in results["metrics"].items():
        target = TARGETS.get(k)
        mark = "" if target is None else (f"≥ {target:.2f} ✓" if v >= target else f"≥ {target:.2f} ✗")
        value = f"{v:.2f}" if k.endswith("objects") else f"{100 * v:.1f}%"
        lines.append(f"| {k} | {value} | {mark} |")
    s = results["settings"]
    lines.append("")
    lines.append(f"{s['prompts']} prompts × {s['seeds']} seeds, {s['steps']} steps, guidance {s['guidance_scale']}, "
                 f"{s['images']} images in {s['seconds']:.0f} s on {s['device']}")
    return "\n".join(lines)


def evaluate(model: Path, oracle_path: Path, n_prompts: int = 200, seeds: int = 4, steps: int = 50,
             guidance_scale: float = DEFAULT_GUIDANCE_SCALE, batch: int = 128, device: str | None = None,
             prompt_seed: int = 0) -> dict:
    """Generate ``n_prompts × seeds`` images and score them with the oracle; returns the results dict."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe = ToyWorldPipeline.from_pretrained(model, **dtype_keyword(dtype)).to(device)
    pipe.set_progress_bar_config(disable=True)
    oracle = ToyOracle.load(oracle_path, device=device)
    jobs = [(i, kind, prompt, s) for i, (kind, prompt) in enumerate(prompt_set(n_prompts, prompt_seed))
            for s in range(seeds)]
    records = []
    start = time.time()
    for b in range(0, len(jobs), batch):
        chunk = jobs[b:b + batch]
        generators = [torch.Generator().manual_seed(1000 * i + s) for i, _, _, s in chunk]
        images = pipe([p for _, _, p, _ in chunk], num_inference_steps=steps, guidance_scale=guidance_scale,
                      generator=generators, output_type="pt").images
        for (i, kind, prompt, s), dets in zip(chunk, oracle.describe(images.float().cpu())):
            records.append({"prompt": prompt, "kind": kind, "seed": s,
                            "detections": [f"{d.size} {d.colour} {d.material} {d.cls}" for d in dets],
                            "metrics": score(kind, prompt, dets)})
        print(f"{len(records)}/{len(jobs)} images, {len(records) / (time.time() - start):.1f} images/s", flush=True)
    seconds = time.time() - start
    return {
        "settings": {"model": str(model), "oracle": str(oracle_path), "prompts": n_prompts, "seeds": seeds,
                     "steps": steps, "guidance_scale": guidance_scale, "images": len(records), "device": device,
                     "seconds": round(seconds, 1), "prompt_seed": prompt_seed},
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
    args = p.parse_args(argv)
    results = evaluate(Path(args.model), Path(args.oracle), args.prompts, args.seeds, args.steps, args.guidance,
                       args.batch, args.device)
    table = markdown(results)
    print(table, flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
