"""Erasure acceptance on the toy model: does "bird" go, do other classes stay?

For each edit, every prompt is sampled with 4 seeds and the toy oracle is
asked "Is there a <class> in the image?" about the class the prompt names.

* target: 24 single-bird prompts ("a bird", "a red bird", "a small blue wooden bird", ...);
  acceptance: UCE drops the bird-present rate by ≥ 60 points;
* retain: single-object prompts of each class outside the animal superclass
  (9 classes × 6 prompts); acceptance: presence after ≥ 90 % of presence before;
* the same for RECE, and progressive vs one-shot erasure of a 3-concept list
  (bird, car, bench: one per superclass), whose retain set is the 9 other
  classes, neighbours of the erased ones included.

    python benchmarks/erasure_toy.py --out benchmarks/results/erasure.md
    python benchmarks/erasure_toy.py --smoke --out /tmp/erasure.md   # random tiny model + oracle: checks the code only
"""

from __future__ import annotations

import argparse
import time
from itertools import zip_longest
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from attnscope.datasets.toy_vocabulary import CLASSES, COLOUR_NAMES, MATERIALS, SIZES, SUPERCLASS_OF
from attnscope.erasure import Edit, erase_rece, erase_uce
from attnscope.models.loading import load_toy_and_oracle
from attnscope.sampling import Job, SamplerSettings, generate

TARGET = "bird"
LIST = ("bird", "car", "bench")


def class_prompts(cls: str, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct single-object prompts naming ``cls``: bare, one attribute (kinds interleaved), then random full phrases."""
    single = [w for group in zip_longest(COLOUR_NAMES, MATERIALS, SIZES) for w in group if w]
    prompts = [f"a {cls}", *(f"a {w} {cls}" for w in single)]
    rng = np.random.default_rng(seed)
    while len(prompts) < n:
        phrase = f"a {rng.choice(SIZES)} {rng.choice(COLOUR_NAMES)} {rng.choice(MATERIALS)} {cls}"
        if phrase not in prompts:
            prompts.append(phrase)
    return [p.replace("a orange", "an orange") for p in prompts[:n]]


@dataclass
class Evaluator:
    """Samples prompts × seeds and asks the oracle whether the named class is present."""

    pipe: object
    judge: object
    settings: SamplerSettings
    prompts_per_class: dict[str, list[str]]
    seeds: tuple[int, ...]
    batch_size: int

    def presence(self) -> dict[str, float]:
        """``{class: fraction of its images in which the oracle finds it}`` for the current weights."""
        rates = {}
        for cls, prompts in self.prompts_per_class.items():
            jobs = [Job(p, s) for p in prompts for s in self.seeds]
            images = generate(self.pipe, jobs, self.settings, batch_size=self.batch_size, progress=False)
            answers = self.judge.answer(list(images), [f"Is there a {cls} in the image?"] * len(jobs))
            rates[cls] = float(np.mean([a.yes for a in answers]))
        return rates


def _mean(rates: dict[str, float], classes) -> float:
    return float(np.mean([rates[c] for c in classes]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="markdown report to write")
    parser.add_argument("--model", default="toy")
    parser.add_argument("--oracle", default=None, help="oracle weights (default: the shipped ones)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--prompts", type=int, default=24, help="target prompts; retain classes get a quarter")
    parser.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1 per prompt")
    parser.add_argument("--epochs", type=int, default=3, help="RECE epochs")
    parser.add_argument("--smoke", action="store_true", help="random tiny model and oracle; 2 prompts, 1 seed, 2 steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.prompts, args.seeds, args.steps = 2, 1, 2
    seeds = tuple(range(args.seeds))

    pipe, judge = load_toy_and_oracle(args.model, args.device, args.oracle, smoke=args.smoke)
    retain = [c for c in CLASSES if SUPERCLASS_OF[c] != SUPERCLASS_OF[TARGET]]
    per_retain = max(1, args.prompts // 4)
    prompts = {TARGET: class_prompts(TARGET, args.prompts)}
    prompts.update({c: class_prompts(c, per_retain) for c in CLASSES if c != TARGET})
    evaluator = Evaluator(pipe, judge, SamplerSettings(steps=args.steps), prompts, seeds, args.batch_size)

    edits: dict[str, Callable[[], Edit]] = {
        "UCE bird (last token)": lambda: erase_uce(pipe, [TARGET]),
        "UCE bird (eos-aligned)": lambda: erase_uce(pipe, [TARGET], token_choice="eos-aligned"),
        f"RECE bird ({args.epochs} epochs, last token)": lambda: erase_rece(pipe, [TARGET], epochs=args.epochs),
        f"RECE bird ({args.epochs} epochs, eos-aligned)": lambda: erase_rece(
            pipe, [TARGET], epochs=args.epochs, token_choice="eos-aligned"
        ),
        "UCE bird+car+bench one-shot": lambda: erase_uce(pipe, LIST),
        "UCE bird+car+bench progressive": lambda: erase_uce(pipe, LIST, progressive=True),
        "RECE bird+car+bench one-shot": lambda: erase_rece(pipe, LIST, epochs=args.epochs),
        "RECE bird+car+bench progressive": lambda: erase_rece(pipe, LIST, epochs=args.epochs, progressive=True),
    }
    started = time.perf_counter()
    before = evaluator.presence()
    results = {}
    for name, make in edits.items():
        with make().applied(pipe):
            results[name] = evaluator.presence()
        print(f"{name}: {results[name]}", flush=True)

    lines = [
        "# Erasure on the toy model",
        "",
        f"- model {args.model!r}{' (smoke: random tiny model and oracle)' if args.smoke else ''}; "
        f"{args.steps} sampling steps; seeds {list(seeds)}; judge: toy oracle, 'Is there a <class> in the image?'",
        f"- target: {len(prompts[TARGET])} single-bird prompts × {len(seeds)} seeds; retain: {per_retain} "
        f"single-object prompts × {len(seeds)} seeds per class",
        f"- default hyper-parameters of `erase_uce`/`erase_rece`; wall time {time.perf_counter() - started:.0f} s",
        "",
        "| edit | erased: present before → after | drop (points) | retain (non-animal): after / before "
        "| retain (other 9 classes): after / before |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name, after in results.items():
        erased = list(LIST) if "+" in name else [TARGET]
        others = [c for c in CLASSES if c not in erased]
        b, a = _mean(before, erased), _mean(after, erased)
        non_animal = _mean(after, retain) / max(_mean(before, retain), 1e-9)
        lines.append(
            f"| {name} | {b:.2f} → {a:.2f} | {100 * (b - a):.0f} | {non_animal:.2f} "
            f"| {_mean(after, others) / max(_mean(before, others), 1e-9):.2f} |"
        )
    lines += ["", "Per class (present rate):", "", "| class | before | " + " | ".join(results) + " |",
              "| --- | ---: |" + " ---: |" * len(results)]
    lines += [
        f"| {c} | {before[c]:.2f} | " + " | ".join(f"{r[c]:.2f}" for r in results.values()) + " |" for c in CLASSES
    ]
    lines += ["", "Acceptance (single bird: drop ≥ 60 points, non-animal retention ≥ 0.90):", ""]
    for name, after in results.items():
        if "+" in name:
            continue
        drop = 100 * (before[TARGET] - after[TARGET])
        kept = _mean(after, retain) / max(_mean(before, retain), 1e-9)
        verdict = "pass" if drop >= 60 and kept >= 0.9 else "FAIL"
        lines.append(f"- {name}: drop {drop:.0f} points, retention {kept:.2f}: {verdict}")
    lines.append("")
    report = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
