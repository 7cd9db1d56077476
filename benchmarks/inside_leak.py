"""Inside the leak on the built-in toy model: which layers carry it, does attention explain it, what more costs.

Three phases, each resumable (the runner's states: a re-run skips the jobs
already sampled and judged) and each split over parallel processes with
``--part K/N`` (state i goes to the process with i mod N = K), so that one
shell command stays under a 9-minute limit:

* ``--phase ablation`` — erasing "bench" with UCE (``eos-aligned`` keys): the
  base model and the full edit, sampled with every cross-attention map
  captured, and every part of the edit alone (each layer, each place, each
  resolution, keys only, values only; no capture), on the bench's 99
  two-object leakage prompts (one attribute on the bench × every partner
  of another superclass) plus single-object target and retain prompts,
  × 4 seeds × 50 steps; the toy oracle judges. Files in ``{work}/ablation``.
* ``--phase tradeoff`` — the base model and UCE erasing the first 1, 2, 3
  (all of furniture), 4 and 8 concepts of a fixed list, one-shot and
  progressive, plus one-at-a-time sweeps of UCE λ / erase / preserve scales
  and RECE epochs / λ_r on "bench", on one prompt set (4 single-object
  prompts per class, 4 two-object prompts per listed concept) × 2 seeds
  × 50 steps; before sampling, each edit's K/V movement of the retained
  classes (the predictor). Files in ``{work}/tradeoff``.
* ``--phase report`` — no sampling: the ablation table (target, retain,
  leakage per part with intervals; the layers carrying most of the leakage
  change), dispersal before vs after, the attention ↔ outcome AUC, the
  trade-off curves and fronts and the predictor's Spearman ρ, into ``--out``
  (Markdown), the HTML report beside it, figures (PNG + PDF) into ``--figures``.

GPU (H200), three commands::

    W=out/inside-leak; mkdir -p $W    # out/ is ignored by git; kept between device calls
    for k in 0 1 2 3; do python3 benchmarks/inside_leak.py --work $W --phase ablation --part $k/4 > $W-abl$k.log 2>&1 & done; wait
    for k in 0 1 2 3; do python3 benchmarks/inside_leak.py --work $W --phase tradeoff --part $k/4 > $W-tr$k.log 2>&1 & done; wait
    python3 benchmarks/inside_leak.py --work $W --phase report --out benchmarks/results/inside_leak.md

(``--model PATH`` for a toy pipeline folder other than the shipped one.)

CPU check of the whole script (random tiny model, a few prompts, 2 steps)::

    python3 benchmarks/inside_leak.py --smoke --work /tmp/il --out /tmp/inside_leak.md --figures /tmp/il-figures
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from attnscope.analyses.ablation import ablation_table, leading_parts
from attnscope.datasets.see import build_pair_prompts, build_see_prompts, split, toy_recipe
from attnscope.datasets.toy_vocabulary import CLASSES, HIERARCHY, SUPERCLASS_OF
from attnscope.erasure import edit_subsets, erase_uce
from attnscope.erasure.edit import Edit
from attnscope.models.loading import load_toy_and_oracle
from attnscope.models.prompts import text_embedder
from attnscope.report import ReportInputs, StateInfo, write_leakage_report
from attnscope.report.inside import full_change_sentence, parts_sentence, tradeoff_section, tradeoff_study
from attnscope.runner import BASE, Plan, Reduction, State, read_ledgers, sample_state
from attnscope.runner.passes import check_plan
from attnscope.runner.shard import Shard
from attnscope.runner.tradeoff import concept_ladder, hyper_sweeps, point_states, tradeoff_plan
from attnscope.sampling import SamplerSettings

ERASED = "bench"
FULL = "uce-bench"
ABLATIONS = ("layers", "places", "resolutions", "kv")
LADDER = ("bench", "chair", "couch", "car", "bird", "pizza", "bus", "cat")  # furniture first: 3 = all of it
COUNTS = (1, 2, 3, 4, 8)
ABLATION_REDUCTION = Reduction(targets=12, retain_per_class=2, neighbours_per_class=4, leakage_pairs=99)
SMOKE_REDUCTION = Reduction(targets=2, retain_per_class=0, neighbours_per_class=1, leakage_pairs=4)
FIGURES = ("ablation", f"dispersal_{FULL}", f"outcome_{FULL}", "tradeoff_concepts", "tradeoff_fronts",
           "tradeoff_predictor")
SMOKE_NOTE = "SMOKE RUN (random tiny model and untrained oracle, a few prompts, 2 steps): checks the script only."


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", action="append", choices=("ablation", "tradeoff", "report"),
                        help="what to do; repeatable (default: all three in turn)")
    parser.add_argument("--part", default="0/1", help="K/N: this process runs states i with i mod N = K")
    parser.add_argument("--work", type=Path, default=Path("/tmp/attnscope-inside-leak"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/inside_leak.md"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures/inside_leak"))
    parser.add_argument("--ablate", action="append", choices=ABLATIONS,
                        help="how the edit is split into parts; repeatable (default: all four)")
    parser.add_argument("--seeds", type=int, default=4, help="ablation seeds (default 4)")
    parser.add_argument("--tradeoff-seeds", type=int, default=2, help="trade-off seeds (default 2)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="toy", help="'toy' (the shipped model) or a toy-world pipeline folder")
    parser.add_argument("--oracle", type=Path, default=None, help="oracle weights (default: the shipped ones)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model on the CPU, few prompts, 2 steps")
    args = parser.parse_args(argv)
    args.phase = args.phase or ["ablation", "tradeoff", "report"]
    args.ablate = list(dict.fromkeys(args.ablate or ABLATIONS))
    k, n = (int(x) for x in args.part.split("/"))
    if not 0 <= k < n:
        parser.error("--part K/N needs 0 <= K < N")
    args.part = (k, n)
    if args.smoke:
        args.seeds, args.tradeoff_seeds, args.steps, args.batch_size, args.device = 1, 1, 2, 8, "cpu"
        args.resamples = min(args.resamples, 200)
    return args


def mine(names: Sequence[str], part: tuple[int, int]) -> list[str]:
    """The states of this process."""
    return [name for i, name in enumerate(names) if i % part[1] == part[0]]


# --------------------------------------------------------------------------- ablation


def ablation_plan(pipe, args: argparse.Namespace) -> Plan:
    """Single-object toy prompts + the bench's 99 one-attribute two-object prompts, reduced, × seeds."""
    recipe = toy_recipe()
    partners = [c for c in CLASSES if SUPERCLASS_OF[c] != SUPERCLASS_OF[ERASED]]
    prompts = build_see_prompts(recipe) + build_pair_prompts(recipe, pairs=[(ERASED, p) for p in partners])
    rows = split(prompts, [ERASED], embed=text_embedder(pipe))
    plan = Plan(tuple(rows), tuple(range(args.seeds)), SamplerSettings(steps=args.steps), (ERASED,))
    return plan.reduced(SMOKE_REDUCTION if args.smoke else ABLATION_REDUCTION)


def ablation_states(pipe, kinds: Sequence[str]) -> list[State]:
    """Base, the full UCE edit of "bench", and each part of it alone (methods ``uce@part``)."""
    full = erase_uce(pipe, [ERASED], token_choice="eos-aligned", keep_stages=False)
    parts = [part for kind in kinds for part in edit_subsets(full, kind, pipe)]
    return [BASE, State(FULL, "uce", full),
            *(State(f"{FULL}@{p.label}", f"uce@{p.label}", p.edit) for p in parts)]


def run_ablation(pipe, oracle, args: argparse.Namespace) -> None:
    folder = args.work / "ablation"
    plan = ablation_plan(pipe, args)
    check_plan(folder, {"plan": plan.summary(), "judge": oracle.name, "capture": "base and full edit"}, Shard())
    states = ablation_states(pipe, args.ablate)
    chosen = mine([s.name for s in states], args.part)
    print(f"ablation: {len(plan.rows)} prompts x {len(plan.seeds)} seeds, {len(states)} states; "
          f"this process: {', '.join(chosen)}", flush=True)
    for state in states:
        if state.name not in chosen:
            continue
        if state.name == FULL and not (folder / f"{FULL}.edit").exists():
            state.edit.save(folder / f"{FULL}.edit")
        started = time.time()
        done = sample_state(pipe, state, plan, folder, judge=oracle, capture_maps=state.name in (BASE.name, FULL),
                            batch_size=args.batch_size, progress=False)
        print(f"{state.name}: {done.sampled} sampled, {done.judged} judged in {time.time() - started:.0f} s", flush=True)


# --------------------------------------------------------------------------- trade-off


def tradeoff_points(smoke: bool):
    if smoke:
        return concept_ladder(LADDER, (1, 2)) + hyper_sweeps(ERASED, uce={"lam": (0.1, 2.0)}, rece={"epochs": (1,)})
    return concept_ladder(LADDER, COUNTS) + hyper_sweeps(ERASED, preserve=list(HIERARCHY["furniture"][1:]))


def make_tradeoff_plan(args: argparse.Namespace) -> Plan:
    singles, pairs = (1, 1) if args.smoke else (4, 4)
    return tradeoff_plan(LADDER, range(args.tradeoff_seeds), SamplerSettings(steps=args.steps), singles=singles,
                         pairs=pairs)


def run_tradeoff_phase(pipe, oracle, args: argparse.Namespace) -> None:
    folder = args.work / "tradeoff"
    plan = make_tradeoff_plan(args)
    check_plan(folder, {"plan": plan.summary(), "judge": oracle.name, "capture": False, "processes": 1}, Shard())
    points = tradeoff_points(args.smoke)
    chosen = mine([BASE.name, *(p.name for p in points)], args.part)
    print(f"trade-off: {len(plan.rows)} prompts x {len(plan.seeds)} seeds, {len(points)} edits + base; "
          f"this process: {', '.join(chosen)}", flush=True)
    concepts = list(dict.fromkeys([*LADDER, *CLASSES]))
    states = ([BASE] if BASE.name in chosen else []) + point_states(
        pipe, [p for p in points if p.name in chosen], folder, concepts=concepts)
    for state in states:
        started = time.time()
        done = sample_state(pipe, state, plan, folder, judge=oracle, capture_maps=False, batch_size=args.batch_size,
                            progress=False)
        print(f"{state.name}: {done.sampled} sampled, {done.judged} judged in {time.time() - started:.0f} s", flush=True)


# --------------------------------------------------------------------------- report


def number(value: float | None) -> str:
    """``0.123``; ``–`` when unknown (NaN, or None from JSON)."""
    return "–" if value is None or value != value else f"{value:.3f}"


def ci(row, value="estimate", low="low", high="high", sign=False) -> str:
    """``0.123 [0.100, 0.150]``; ``–`` when the value is unknown (NaN, or None from JSON)."""
    form = "+.3f" if sign else ".3f"
    if row.get(value) is None or row[value] != row[value]:
        return "–"
    return " ".join([f"{row[value]:{form}}", "[" + ", ".join(
        "nan" if row.get(k) is None else f"{row[k]:{form}}" for k in (low, high)) + "]"])


def leading_lines(rows: list[dict], names: dict[str, str]) -> list[str]:
    """The full edit's leakage change, then per kind of part which parts carry it (or change it alone)."""
    lines = [full_change_sentence(rows, "uce"), ""]
    for kind in ABLATIONS:
        mine = [r for r in rows if names[r["part"]] == kind]
        if mine:
            lines.append(f"- by {kind} (each alone): " + parts_sentence(leading_parts(mine, "leakage")))
    return lines


def ablation_lines(rows: list[dict], names: dict[str, str]) -> list[str]:
    """Per kind of part, a table: Δ target, Δ retain, Δ leakage [95% CI] and the leakage share."""
    by = {(r["part"], r["metric"]): r for r in rows}
    lines = []
    for kind in ("all", *ABLATIONS):  # kinds not ablated have no parts
        parts = [p for p, k in names.items() if k == kind]
        if not parts:
            continue
        lines += [f"### {'full edit' if kind == 'all' else 'by ' + kind}", "",
                  "| part | Δ target | Δ retain | Δ leakage | leakage share of full Δ |", "|---|---|---|---|---:|"]
        for part in parts:
            cells = [ci(by[(part, m)], "delta", "delta_low", "delta_high", True) if (part, m) in by else "–"
                     for m in ("target", "retain", "leakage")]
            share = by.get((part, "leakage"), {}).get("share", float("nan"))
            lines.append(f"| {part} | {' | '.join(cells)} | {'—' if math.isnan(share) else f'{share:.2f}'} |")
        lines.append("")
    return lines


def write_report(pipe, oracle, args: argparse.Namespace) -> int:
    folder, trade = args.work / "ablation", args.work / "tradeoff"
    plan = ablation_plan(pipe, args)
    states = ablation_states(pipe, args.ablate)
    missing = [s.name for s in states if not (folder / f"{s.name}.answers.csv").exists()]
    points = tradeoff_points(args.smoke)
    missing += [f"tradeoff/{n}" for n in [BASE.name, *(p.name for p in points)]
                if not (trade / f"{n}.answers.csv").exists()]
    if missing:
        print("cannot write the report, states without answers (run their phase again):\n  " + "\n  ".join(missing),
              file=sys.stderr)
        return 1
    records = read_ledgers([folder / f"{s.name}.answers.csv" for s in states])
    t_plan = make_tradeoff_plan(args)
    t_rows, rho = tradeoff_study(trade, t_plan, [p.name for p in points], n_resamples=args.resamples)
    section = tradeoff_section(t_rows, rho, folder)
    infos = [StateInfo(s.name, s.method, folder / f"{s.name}.h5" if (folder / f"{s.name}.h5").exists() else None,
                       Edit.load(folder / f"{FULL}.edit").meta if s.name == FULL else None) for s in states]
    notes = [SMOKE_NOTE] if args.smoke else []
    inputs = ReportInputs(erased=ERASED, records=records, states=infos, plan=plan.summary(), notes=notes,
                          settings={"benchmark": "benchmarks/inside_leak.py", "judge": oracle.name,
                                    "model": "toy (smoke: random tiny)" if args.smoke else "toy",
                                    "steps": args.steps, "seeds": args.seeds}, sections=[section])
    html = write_leakage_report(folder, inputs, examples=3, n_resamples=args.resamples)
    metrics = json.loads((folder / "metrics.json").read_text())["inside"]

    rows = ablation_table(records, n_resamples=args.resamples)
    kinds = {"all": "all", **{p.label: p.kind for kind in args.ablate for p in edit_subsets(states[1].edit, kind, pipe)}}
    names = {r["part"]: kinds.get(r["part"], "?") for r in rows}
    outcome = metrics.get(f"outcome:{FULL}")
    dispersal = metrics.get(f"dispersal:{FULL}", {}).get("rows", [])
    args.figures.mkdir(parents=True, exist_ok=True)
    for stem in FIGURES:
        for ext in ("png", "pdf"):
            if (folder / "figures" / f"{stem}.{ext}").exists():
                shutil.copy(folder / "figures" / f"{stem}.{ext}", args.figures / f"{stem}.{ext}")
    relative = os.path.relpath(args.figures, args.out.parent)
    kinds_p = plan.summary()["kinds"]
    lines = [
        "# Inside the leak: which layers carry it, does attention explain it, what it costs to erase more", "",
        *([f"- {SMOKE_NOTE}"] if args.smoke else []),
        f"- ablation: UCE erasing “{ERASED}” (eos-aligned keys, library defaults); {len(plan.rows)} prompts "
        f"({kinds_p['pair']} two-object, {kinds_p['single']} single-object) × seeds {list(plan.seeds)} × "
        f"{args.steps} steps; {len(states)} states (base, full edit, {len(states) - 2} parts); judge: {oracle.name}; "
        f"device {pipe.device}, torch {torch.__version__}",
        f"- trade-off: {len(t_plan.rows)} prompts × seeds {list(t_plan.seeds)}; {len(points)} edits",
        "- intervals: 95% percentile bootstrap resampling prompts (paired with the base model for Δ)",
        "- produced by (`W` the work folder; the four parts of a phase ran as parallel processes):", "",
        "```bash",
        *(f"python3 benchmarks/inside_leak.py --work $W --phase {phase} --part $k/4   # k = 0..3"
          for phase in ("ablation", "tradeoff")),
        f"python3 benchmarks/inside_leak.py --work $W --phase report --out {args.out}",
        "```", "",
        "## Which part of the edit carries the leakage", "",
        *leading_lines(rows, names), "",
        *ablation_lines(rows, names),
        f"![ablation]({relative}/ablation.png)", "",
        "## Concentration and dispersal (two-object images, before → after the full edit)", "",
        "| role | quantity | images | before | after | change |", "|---|---|---:|---|---|---|",
        *(f"| {r['word']} | {r['quantity']} | {r['pairs']} | {ci(r, 'before', 'before_low', 'before_high')} | "
          f"{ci(r, 'after', 'after_low', 'after_high')} | {ci(r, 'change', 'change_low', 'change_high', True)} |"
          for r in dispersal), "",
        "## Does attention explain the leak?", "",
    ]
    if outcome:
        lines += [f"Logistic regression of the judged leakage ({outcome['positives']} of {outcome['images']} images, "
                  f"{outcome['prompts']} prompts) on binding shift, entropy change and mass on the erased token: "
                  f"out-of-fold **AUC {ci(outcome['auc'])}** (folds and bootstrap by prompt); with the answers "
                  f"shuffled among prompts the same procedure scores {ci(outcome['null_auc'])} (mean and central "
                  f"95 % of {outcome['null_auc']['n']} shuffles: out-of-fold AUCs sit below 0.5 when the features "
                  f"carry no signal), permutation **p = {number(outcome['p_value'])}**.", "",
                  "| feature | AUC alone | Cohen's d | odds ratio per SD (joint) |", "|---|---|---|---:|",
                  *(f"| {e['feature']} | {ci(e['auc'])} | {ci(e['cohens_d'], sign=True)} | "
                    f"{e['odds_ratio_per_sd'] or float('nan'):.2f} |" for e in outcome["effects"]), "",
                  f"{len(outcome['disagreements'])} disagreeing images are listed in the HTML report.", "",
                  f"![outcome]({relative}/outcome_{FULL}.png)", ""]
    else:
        lines += ["No leakage images with run files: no fit.", ""]
    lines += ["## What erasing more costs", "",
              "| sweep | mode | value | target | retain | leakage | K/V movement |", "|---|---|---|---|---|---|---:|",
              *(f"| {r['sweep']} | {r['mode']} | {r['value']:g} | {ci(r, 'target', 'target_low', 'target_high')} | "
                f"{ci(r, 'retain', 'retain_low', 'retain_high')} | "
                f"{ci(r, 'leakage', 'leakage_low', 'leakage_high')} | "
                f"{r['predictor']:.4f} |" for r in t_rows), "",
              f"Pre-sampling predictor: Spearman ρ between the retained classes' K/V movement and the measured retain "
              f"drop over {rho.n} edits: **{rho}**.", "",
              f"![trade-off]({relative}/tradeoff_concepts.png)", f"![fronts]({relative}/tradeoff_fronts.png)",
              f"![predictor]({relative}/tradeoff_predictor.png)", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    shutil.copy(html, args.out.with_suffix(".html"))
    print("\n".join(lines))
    print(f"wrote {args.out}, {args.out.with_suffix('.html')} and figures in {args.figures}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    pipe, oracle = load_toy_and_oracle(args.model, device=args.device, oracle=args.oracle, smoke=args.smoke)
    if "ablation" in args.phase:
        run_ablation(pipe, oracle, args)
    if "tradeoff" in args.phase:
        run_tradeoff_phase(pipe, oracle, args)
    return write_report(pipe, oracle, args) if "report" in args.phase else 0


if __name__ == "__main__":
    raise SystemExit(main())
