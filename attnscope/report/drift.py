"""Files of ``attnscope drift``: where an attribute word's attention goes before and after an edit.

:func:`drift_report` measures a :class:`~attnscope.analyses.run_binding.DriftStudy`
of two run files and writes (see ``attnscope drift --help``)

* ``drift.json``, ``drift_pairs.csv``, ``drift_layers_steps.csv`` (:func:`write_drift`);
* ``drift_panel.{png,pdf,svg}`` and ``binding_heatmap.{png,pdf,svg}`` (:func:`drift_figures`);
* ``dispersal.json``, ``dispersal.csv``, ``dispersal_layers_steps.csv``,
  ``dispersal.{png,pdf}`` (:func:`~attnscope.report.inside.write_dispersal`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from attnscope.analyses.dispersal import dispersal_study
from attnscope.analyses.run_binding import DriftStudy, attention_regions, drift_study, oracle_regions
from attnscope.figures.binding import binding_heatmap
from attnscope.figures.drift import drift_panel
from attnscope.figures.style import save_all
from attnscope.report.inside import write_dispersal
from attnscope.store.reader import RunFile
from attnscope.store.tables import write_table


def drift_report(before: RunFile, after: RunFile, out: Path, word: str, objects: Sequence[str] | None = None, *,
                 own: str | None = None, regions: str = "attention", oracle=None,
                 layers: Sequence[str] | None = None, example: int | None = None,
                 n_resamples: int = 2000) -> tuple[DriftStudy, list[Path]]:
    """Measure ``word``'s drift between two run files (:func:`~attnscope.analyses.run_binding.drift_study`)
    and write every file of the module docstring into ``out``.

    ``example``: the pair the panel shows (default :func:`median_pair`); warns on stderr
    when all pairs share one prompt (intervals are then undefined). Returns the study and the paths.
    """
    study = drift_study(before, after, word, objects, own=own, regions=regions, oracle=oracle, layers=layers)
    if len(set(study.clusters)) < 2:
        print(f"attnscope drift: warning: all {len(study.pairs)} pairs share one prompt; intervals resample "
              "prompts, so they are left undefined (nan): capture 2 or more prompts for intervals",
              file=sys.stderr)
    example = median_pair(study) if example is None else example
    written = write_drift(study, before, after, out, example=example, oracle=oracle, n_resamples=n_resamples)
    found = dispersal_study(before, after, [study.word, *study.objects], layers=layers,
                            regions={study.word: study.own, **{o: o for o in study.objects}})
    return study, written + write_dispersal(found, out, n_resamples=n_resamples)


def median_pair(study: DriftStudy) -> int:
    """Index of the pair whose change of binding score on the own object is the median one."""
    before, after = study.per_pair("score")
    change = after[:, study.objects.index(study.own)] - before[:, study.objects.index(study.own)]
    finite = np.where(np.isfinite(change))[0]
    if not len(finite):
        return 0
    order = finite[np.argsort(change[finite], kind="stable")]
    return int(order[(len(order) - 1) // 2])


def write_drift(study: DriftStudy, before: RunFile, after: RunFile, out: Path, *, example: int = 0, oracle=None,
                n_resamples: int = 2000, figures: bool = True) -> list[Path]:
    """Write the JSON, CSVs and (with ``figures``) figures of a study into ``out``.

    ``before``/``after``: the open run files (for the example pair's images and maps).
    """
    out.mkdir(parents=True, exist_ok=True)
    summary = study.summary(n_resamples=n_resamples)
    summary["example_pair"] = {"index": example, **asdict(study.pairs[example])}
    summary["files"] = {"before": str(getattr(before.file, "filename", "")),
                        "after": str(getattr(after.file, "filename", ""))}
    (out / "drift.json").write_text(json.dumps(summary, indent=1, default=float))
    written = [
        out / "drift.json",
        write_table(study.rows(), out / "drift_pairs.csv"),
        write_table(study.layer_step_rows(), out / "drift_layers_steps.csv"),
    ]
    if figures:
        written += drift_figures(study, before, after, out, example=example, oracle=oracle, n_resamples=n_resamples)
    return written


def drift_figures(study: DriftStudy, before: RunFile, after: RunFile, out: Path, *, example: int = 0, oracle=None,
                  n_resamples: int = 2000, formats: tuple[str, ...] = ("png", "pdf", "svg")) -> list[Path]:
    """The drift panel (pair ``example`` + bars over all pairs) and the layer × step heat map."""
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


def drift_text(study: DriftStudy, n_resamples: int = 2000) -> str:
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
