"""Attribute drift on the toy model: after erasing "bench", where does "wooden" go?

Prompts "a wooden bench and a <colour> bird" for every toy colour, seeds
0..N-1, sampled with cross-attention capture by the base model and by the
model with "bench" erased by UCE (default hyper-parameters, last token).
Reported with 95 % percentile-bootstrap intervals that resample whole
prompts (paired: the same draw for before and after):

* the binding score of "wooden" (share of its attention mass) on the bench
  region and on the bird region, averaged over every layer and step, with
  regions from the before run's object-token attention and, separately,
  from the toy oracle's segmentation of the before image;
* the rate at which the oracle judges the bird wooden, finds a bench, finds
  a bird, and finds the bird in its prompt colour.

    python benchmarks/drift.py                       # toy model, 16 seeds: a few minutes on a CPU
    python benchmarks/drift.py --device cuda --seeds 64
    python benchmarks/drift.py --smoke --out /tmp/drift.md   # random tiny model and oracle: checks the code only

Writes the markdown report (``--out``), the drift command's JSON/CSV
(``--results``), small PNG figures (``--figures``) and keeps the run files
and the edit in ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from attnscope.analyses.run_binding import drift_study
from attnscope.analyses.stats import PairedIntervals, paired_cluster_bootstrap
from attnscope.datasets.toy_vocabulary import COLOUR_NAMES
from attnscope.erasure import Edit, erase_uce
from attnscope.figures.binding import short_layer_name
from attnscope.hooks import capture
from attnscope.models.loading import load_toy_and_oracle
from attnscope.report.drift import drift_figures, median_pair, write_drift
from attnscope.sampling import Job, SamplerSettings, generate
from attnscope.store import RunFile

TARGET, WORD, OTHER = "bench", "wooden", "bird"


def prompts(colours=COLOUR_NAMES) -> list[str]:
    """"a wooden bench and a <colour> bird" (with "an" before a vowel, as toy captions have it)."""
    return [f"a {WORD} {TARGET} and {'an' if c[0] in 'aeiou' else 'a'} {c} {OTHER}" for c in colours]


def sample(pipe, jobs, settings, path: Path, batch_size: int) -> None:
    """Sample ``jobs`` with every layer and step captured into the run file ``path`` (replaced if there)."""
    with capture(pipe, sink=path, overwrite=True) as cap:
        generate(pipe, jobs, settings, batch_size=batch_size, cap=cap, progress=False)


def judge(oracle, before: RunFile, after: RunFile, pairs, n_resamples: int) -> dict[str, PairedIntervals]:
    """Oracle yes-rates before vs after, paired and clustered by prompt; the last row counts only
    images in which the oracle finds a bird (a ratio of pooled counts per resampled prompt set)."""
    questions = {
        f"the {OTHER} is {WORD}": lambda prompt: f"Is the {OTHER} {WORD}?",
        f"a {TARGET} is present": lambda prompt: f"Is there a {TARGET} in the image?",
        f"a {OTHER} is present": lambda prompt: f"Is there a {OTHER} in the image?",
        f"the {OTHER} has its prompt colour": lambda prompt: f"Is the {OTHER} {prompt.split()[-2]}?",
    }
    images = {"before": [before.image(p.before) for p in pairs], "after": [after.image(p.after) for p in pairs]}
    clusters = np.array([p.prompt for p in pairs], dtype=object)
    yes = {}
    out = {}
    for name, ask in questions.items():
        asked = [ask(p.prompt) for p in pairs]
        yes[name] = {state: np.array([a.yes for a in oracle.answer(images[state], asked)], float) for state in images}
        out[name] = paired_cluster_bootstrap(yes[name]["before"], clusters, yes[name]["after"], clusters,
                                             n_resamples=n_resamples)
    wooden, found = yes[f"the {OTHER} is {WORD}"], yes[f"a {OTHER} is present"]
    b, a = found["before"] > 0, found["after"] > 0
    out[f"the {OTHER} is {WORD}, among images with a {OTHER}"] = paired_cluster_bootstrap(
        wooden["before"][b], clusters[b], wooden["after"][a], clusters[a], n_resamples=n_resamples)
    return out


def region_check(study_attention, study_oracle, before: RunFile, oracle) -> dict[str, float]:
    """Per object: the mean share of its attention region that lies inside the oracle's mask of it
    (IoA on the attention grid), over pairs where the oracle found the object."""
    from attnscope.analyses.binding import ioa
    from attnscope.analyses.regions import regions_from_masks
    from attnscope.analyses.run_binding import attention_regions, oracle_regions

    shares = {o: [] for o in study_attention.objects}
    for i, pair in enumerate(study_attention.pairs):
        attention = attention_regions(before, pair.before, study_attention.objects)
        grid = next(iter(attention.values())).shape
        truth = regions_from_masks(oracle_regions(before.image(pair.before), study_attention.objects, oracle), grid)
        for k, o in enumerate(study_attention.objects):
            if study_oracle.found[i, k] and attention[o].any():
                shares[o].append(float(ioa(attention[o], truth[o])))
    return {o: float(np.mean(v)) if v else float("nan") for o, v in shares.items()}


def attribution_figures(pipe, edit, prompt: str, seed: int, settings, folder: Path) -> list[Path]:
    """Token attributions of "wooden"'s attention share in the bird and bench regions, before and after."""
    from attnscope.analyses.attribution import attention_target, integrated_gradients, trace
    from attnscope.figures.attribution import attribution_bars
    from attnscope.figures.style import save_all

    written = []
    for state in ("before", "after"):
        if state == "after":
            edit.apply(pipe)
        try:
            recorded = trace(pipe, prompt, seed=seed, settings=settings)
            regions = recorded.regions([TARGET, OTHER])
            results = [integrated_gradients(pipe, prompt, attention_target(pipe, recorded, WORD, regions[o], label=o))
                       for o in (OTHER, TARGET)]
        finally:
            if state == "after":
                edit.revert(pipe)
        figure = attribution_bars(results, highlight=[WORD, TARGET, OTHER],
                                  title=f"{prompt} (seed {seed}), {state} erasing “{TARGET}”")
        written += save_all(figure, folder / f"attribution_{state}", ("png",))
    return written


def _ci(interval, digits: int = 3) -> str:
    return f"{interval.estimate:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"


def _signed(interval, digits: int = 3) -> str:
    return f"{interval.estimate:+.{digits}f} [{interval.low:+.{digits}f}, {interval.high:+.{digits}f}]"


def binding_table(study, quantity: str, n_resamples: int) -> list[str]:
    """Before, after and the change, with the regions' mean area (the score of a uniform map)."""
    lines = [f"| {quantity} of “{WORD}” | before | after | after − before | region area |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for k, (name, pi) in enumerate(study.intervals(quantity, n_resamples=n_resamples).items()):
        lines.append(f"| on the {name} region | {_ci(pi.a)} | {_ci(pi.b)} | {_signed(pi.difference)} | "
                     f"{study.area[:, k].mean():.3f} |")
    return lines


def layer_table(study) -> list[str]:
    """Per layer: the binding score on each object, mean over pairs and steps, before → after."""
    b, a = (np.nanmean(x, axis=0) for x in study.layer_step("score"))  # (layers, K)
    header = " | ".join(f"on {o}: before → after" for o in study.objects)
    lines = [f"| layer | {header} |", "| --- |" + " ---: |" * len(study.objects)]
    for l, name in enumerate(study.layers):
        cells = " | ".join(f"{b[l, k]:.3f} → {a[l, k]:.3f}" for k in range(len(study.objects)))
        lines.append(f"| {short_layer_name(name)} | {cells} |")
    return lines


def summary_lines(studies, judged, check, n_resamples: int) -> list[str]:
    """The headline numbers in four sentences (generated, so they stay true when the numbers change)."""
    present, wooden = judged[f"a {TARGET} is present"], judged[f"the {OTHER} is {WORD}"]
    among = judged[f"the {OTHER} is {WORD}, among images with a {OTHER}"]
    oracle = studies["oracle"].intervals("score", n_resamples=n_resamples)
    area = {o: studies["oracle"].area[:, k].mean() for k, o in enumerate(studies["oracle"].objects)}
    lines = [
        f"- Erasure: the oracle finds a {TARGET} in {present.a.estimate:.2f} of the images before and "
        f"{present.b.estimate:.2f} after.",
        f"- The oracle judges the {OTHER} {WORD} in {wooden.a.estimate:.2f} → {wooden.b.estimate:.2f} of the images "
        f"(change {_signed(wooden.difference, 2)}); among images with a {OTHER}: {among.a.estimate:.2f} → "
        f"{among.b.estimate:.2f} ({_signed(among.difference, 2)}).",
        f"- Binding score of “{WORD}” (oracle regions): on the {TARGET} {oracle[TARGET].a.estimate:.3f} → "
        f"{oracle[TARGET].b.estimate:.3f} ({_signed(oracle[TARGET].difference)}), on the {OTHER} "
        f"{oracle[OTHER].a.estimate:.3f} → {oracle[OTHER].b.estimate:.3f} ({_signed(oracle[OTHER].difference)}); "
        f"the regions cover {area[TARGET]:.3f} and {area[OTHER]:.3f} of the image, which is what a uniform map "
        "would score.",
    ]
    poor = [o for o, share in check.items() if share < 0.5]
    if poor:
        lines.append(f"- With this checkpoint the object tokens' attention does not locate the {' and the '.join(poor)} "
                     f"(less than half of the attention region lies on the object, see below): read the "
                     "oracle-region rows.")
    return lines


def report(args, studies, judged, check, timings, figures, command: str, n_resamples: int) -> str:
    attention = studies["attention"]
    n_pairs, n_prompts = len(attention.pairs), len(set(attention.clusters))
    lines = [
        f"# Attribute drift on the toy model: erasing “{TARGET}”",
        "",
        f"Prompts “a {WORD} {TARGET} and a <colour> {OTHER}” for the {n_prompts} toy colours × {args.seeds} seeds "
        f"= {n_pairs} pairs of runs (same prompt and seed) sampled before and after a UCE edit that erases "
        f"“{TARGET}” (default `erase_uce` hyper-parameters: λ = 0.5, eos-aligned tokens (the choice that erases on the toy model, see erasure.md), guide \"\"). "
        f"{args.steps} DDIM steps, guidance {args.guidance if args.guidance else 'default (4.0)'}; "
        f"every cross-attention layer and step captured."
        + (" **Smoke run: random tiny model and oracle — the numbers mean nothing.**" if args.smoke else ""),
        "",
        "Intervals: 95 % percentile bootstrap, resampling whole prompts (the seeds of a prompt are not "
        f"independent), the same draw for before and after; {n_resamples} resamples.",
        "",
        "Produced by",
        "",
        "```",
        command,
        "```",
        "",
        *(["(This report was re-analysed from that command's run files with `--reuse`.)", ""] if args.reuse else []),
        f"Wall time: sampling {timings['sampling']['images']} images {timings['sampling']['seconds']:.0f} s "
        f"({timings['sampling']['device']}, {timings['sampling']['threads']} CPU threads), analysis "
        f"{timings['analysis']:.0f} s ({timings['device']}, {timings['threads']} threads).",
        "",
        "## Summary",
        "",
        *summary_lines(studies, judged, check, n_resamples),
        "",
        f"## Binding of “{WORD}”",
        "",
        "Binding score: the share of the word's attention mass inside an object's region (a uniform map scores "
        "the region's area share), averaged over all layers and sampling steps, per pair. Regions come from the "
        "*before* run and are shared by both runs of a pair.",
        "",
        "**Regions from the object tokens' attention** (Otsu on the aggregated “bench” / “bird” maps):",
        "",
        *binding_table(attention, "score", n_resamples),
        "",
        *binding_table(attention, "relative", n_resamples),
        "",
        "(relative: the share of the *in-region* mass, score / Σ scores.)",
        "",
        "Check of the attention regions against the oracle's masks (pairs where the oracle finds the object): "
        + ", ".join(f"{check[o]:.2f} of the “{o}” attention region lies on the {o}" for o in check) + ".",
        "",
    ]
    oracle = studies.get("oracle")
    if oracle is not None:
        found = {o: int(oracle.found[:, k].sum()) for k, o in enumerate(oracle.objects)}
        lines += [
            "**Regions from the oracle's segmentation of the before image** (an object the oracle does not "
            f"find gets an empty region: found in {found[TARGET]}/{n_pairs} pairs for the {TARGET}, "
            f"{found[OTHER]}/{n_pairs} for the {OTHER}):",
            "",
            *binding_table(oracle, "score", n_resamples),
            "",
        ]
    wrong = {source: study.first_wrong_steps() for source, study in studies.items()}
    lines += [
        f"Pairs in which “{WORD}”, averaged over layers, puts more than half of its in-region mass on the "
        f"{OTHER} at some step: "
        + "; ".join(f"{np.mean(b >= 0):.2f} before, {np.mean(a >= 0):.2f} after ({source} regions)"
                    for source, (b, a) in wrong.items()) + ".",
        "",
        "Per layer (oracle regions; mean over pairs and steps):",
        "",
        *layer_table(studies["oracle"]),
        "",
        "## What the oracle sees",
        "",
        "| oracle judges … | before | after | after − before |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {name} | {_ci(pi.a, 2)} | {_ci(pi.b, 2)} | {_signed(pi.difference, 2)} |" for name, pi in judged.items()],
        "",
        "“The bird is wooden” is the oracle's answer to “Is the bird wooden?”: no when it finds no bird.",
        "",
        "## Figures",
        "",
        *[f"![{Path(f).parent.name} {Path(f).stem}]({os.path.relpath(f, args.out.parent)})" for f in figures],
        "",
        "- `drift_panel` (attention regions, then oracle regions): the pair whose change of binding score on "
        "the bench is the median one (attention regions); the word's heat map over all layers and steps, "
        "outlines of the regions, and the binding score over all pairs with 95 % intervals.",
        "- `binding_heatmap`: binding score per layer (forward order) × step, mean over pairs, before, after "
        "and the difference.",
        "- `attribution_before/after`: integrated gradients (16 points, empty-prompt baseline) of “wooden”'s "
        "attention share in the bird and bench regions to the prompt's words, for one pair, with the queries "
        "of that trajectory held fixed (see `attnscope.analyses.attribution`).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/drift.md"), help="markdown report")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/drift"),
                        help="folder for the drift command's JSON and CSV")
    parser.add_argument("--figures", type=Path, default=Path("docs/figures/drift"), help="folder for PNG figures")
    parser.add_argument("--work", type=Path, default=Path("/tmp/attnscope-drift"), help="run files and the edit")
    parser.add_argument("--model", default="toy")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seeds", type=int, default=16, help="seeds 0..N-1 per prompt (default 16)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--threads", default="auto",
                        help="torch CPU threads; 'auto' = 1 when the machine is busy (load ≥ cores), else torch's")
    parser.add_argument("--no-attribution", action="store_true", help="skip the attribution figures")
    parser.add_argument("--reuse", action="store_true",
                        help="analyse the run files and the edit already in --work instead of sampling again")
    parser.add_argument("--smoke", action="store_true", help="random tiny model and oracle; 2 prompts, 2 seeds, 3 steps")
    args = parser.parse_args(argv)
    given = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--reuse"]
    command = " ".join(["python benchmarks/drift.py", shlex.join(given)]).strip()
    if args.smoke:
        args.seeds, args.steps = 2, 3
    threads = args.threads
    if threads == "auto":
        threads = 1 if os.getloadavg()[0] >= (os.cpu_count() or 1) else torch.get_num_threads()
    torch.set_num_threads(int(threads))

    pipe, oracle = load_toy_and_oracle(args.model, args.device, smoke=args.smoke)
    texts = prompts(COLOUR_NAMES[:2] if args.smoke else COLOUR_NAMES)
    jobs = [Job(p, s) for p in texts for s in range(args.seeds)]
    settings = SamplerSettings(steps=args.steps, guidance_scale=args.guidance)
    args.work.mkdir(parents=True, exist_ok=True)
    paths = {state: args.work / f"{state}.h5" for state in ("before", "after")}

    sampling_log = args.work / "sampling.json"
    started = time.perf_counter()
    if args.reuse:
        edit = Edit.load(args.work / f"{TARGET}.edit")
    else:
        sample(pipe, jobs, settings, paths["before"], args.batch_size)
        edit = erase_uce(pipe, [TARGET], token_choice="eos-aligned")
        edit.save(args.work / f"{TARGET}.edit")
        with edit.applied(pipe):
            sample(pipe, jobs, settings, paths["after"], args.batch_size)
        sampling_log.write_text(json.dumps({"seconds": time.perf_counter() - started, "device": str(pipe.device),
                                            "threads": torch.get_num_threads(), "images": 2 * len(jobs)}))
    sampled = time.perf_counter()

    args.figures.mkdir(parents=True, exist_ok=True)
    with RunFile(paths["before"]) as before, RunFile(paths["after"]) as after:
        studies = {
            "attention": drift_study(before, after, WORD, [TARGET, OTHER]),
            "oracle": drift_study(before, after, WORD, [TARGET, OTHER], regions="oracle", oracle=oracle),
        }
        attention = studies["attention"]
        judged = judge(oracle, before, after, attention.pairs, args.resamples)
        check = region_check(attention, studies["oracle"], before, oracle)
        example = median_pair(attention)
        write_drift(attention, before, after, args.results, example=example, n_resamples=args.resamples,
                      figures=False)
        figures = []
        for source, study in studies.items():
            figures += drift_figures(study, before, after, args.figures / source, example=example, oracle=oracle,
                                     n_resamples=args.resamples, formats=("png",))
    if not args.no_attribution:
        pair = attention.pairs[example]
        figures += attribution_figures(pipe, edit, pair.prompt, pair.seed, settings, args.figures / "attribution")
    analysed = time.perf_counter()

    timings = {"sampling": json.loads(sampling_log.read_text()), "analysis": analysed - sampled,
               "device": str(pipe.device), "threads": torch.get_num_threads()}
    text = report(args, studies, judged, check, timings, figures, command, args.resamples)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
