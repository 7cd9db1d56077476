"""The leakage report: side-effect metrics of an erasure, with intervals, examples and settings.

:func:`write_leakage_report` turns judged records (one per question, the
schema of :mod:`attnscope.analyses.side_effects`) and the run files they came
from into a folder::

    report.html          self-contained: figures inlined (base64 PNG), tables, examples, settings, versions
    metrics.json         every table, the plan, the settings, versions and timings
    records.csv          every judged question (the metrics' input); records.parquet the same
    tables/*.csv         one CSV per metric table (and .parquet: pandas.read_parquet)
    figures/*.png|pdf    metric bars, retain accuracy by distance, example maps (PNG)

With ablation states (methods ``uce@part``) the report adds an ablation
section; with run files of the base model and an edit, sections on
dispersal and on attention ↔ judged leakage (:mod:`attnscope.report.inside`).
"""

from __future__ import annotations

import io
import json
import math
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from attnscope.analyses.side_effects import (
    accuracy_table,
    bin_by,
    retain_accuracy,
    side_effect_tables,
    subject_role,
)
from attnscope.figures.side_effects import TITLES, metric_intervals, ordered_methods, retain_by
from attnscope.figures.style import RC, plt, save, save_all
from attnscope.report import html as h
from attnscope.report.examples import Leak, find_leaks, leak_regions, render_side
from attnscope.report.inside import inside_sections
from attnscope.runner.records import RECORD_COLUMNS
from attnscope.store import RunFile
from attnscope.store.reader import index_runs
from attnscope.store.tables import write_tables

Row = dict[str, Any]
HEADLINE = ("target", "retain", "retain_attributes", "leakage")


@dataclass
class StateInfo:
    """A model state in the report: its run file (if captured), edit metadata and timing."""

    name: str
    method: str
    run_file: Path | None = None
    edit_meta: dict | None = None
    timing: dict | None = None  # sampled, sample_seconds, judge_seconds, images_per_second


@dataclass
class ReportInputs:
    """Everything the report shows besides what it computes from ``records``.

    ``settings``: the command's settings (model, judge, device, ...);
    ``plan``: :meth:`attnscope.runner.Plan.summary` when the runner made the
    images; ``notes``: sentences shown prominently (e.g. what was reduced).
    """

    erased: str
    records: list[Row]
    states: list[StateInfo]
    settings: dict[str, Any] = field(default_factory=dict)
    plan: dict | None = None
    notes: list[str] = field(default_factory=list)
    wall_seconds: float | None = None
    sections: list = field(default_factory=list)  # extra report.inside.Section s (e.g. a trade-off study)


# --------------------------------------------------------------------------- metrics


def similarity_edges(records: Sequence[Mapping[str, Any]], bins: int = 4) -> list[float]:
    """Quantile edges of the retained prompts' ``text_similarity`` (equal-count bins); [] if unknown."""
    values = sorted({float(r["text_similarity"]) for r in records if r.get("role") == "retain"
                     and isinstance(r.get("text_similarity"), float) and math.isfinite(r["text_similarity"])})
    if len(values) < 2:
        return []
    edges = np.unique(np.round(np.quantile(values, np.linspace(0, 1, bins + 1)), 2))
    edges[0], edges[-1] = min(edges[0], values[0]), max(edges[-1], values[-1])
    return [float(e) for e in edges] if len(edges) > 1 else []


def side_effect_metrics(records: Sequence[Mapping[str, Any]], **options: Any) -> dict[str, list[Row]]:
    """The report's tables: :func:`side_effect_tables` (retain also by ``attr_distance``), plus

    * ``retain_attributes``: attribute questions about retained objects ("is the chair red?");
    * ``retain_by_similarity``: retain accuracy in quantile bins of ``text_similarity`` (when known).
    """
    tables = side_effect_tables(records, by="attr_distance", **options)
    tables["retain_attributes"] = accuracy_table(
        records, lambda r: r["check"] == "attribute" and subject_role(r) == "retain", **options
    )
    edges = similarity_edges(records)
    if edges:
        tables["retain_by_similarity"] = retain_accuracy(bin_by(records, edges), by="similarity_bin", **options)
    return tables


# --------------------------------------------------------------------------- context


def versions() -> dict[str, str]:
    """Versions of Python, attnscope and the libraries that shape the numbers."""
    import diffusers
    import h5py
    import matplotlib
    import torch
    import transformers

    from attnscope._version import __version__

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "attnscope": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "h5py": h5py.__version__,
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
    }


def capture_context(path: Path) -> dict[str, Any]:
    """What a run file says about how its images were made: model, edit, sampler, capture."""
    with RunFile(path) as runs:
        schema = runs.schema
        guidance = sorted({float(g) for g in runs.column("guidance_scale")})
        return {
            "runs": len(runs),
            "complete": int(runs.complete.sum()),
            "model": schema.model,
            "edit": schema.edit,
            "image": f"{schema.height}x{schema.width}",
            "sampler": schema.sampler.get("scheduler"),
            "sampling_steps": len(schema.timesteps),
            "guidance_scale": guidance,
            "captured_steps": len(schema.steps),
            "layers": [f"{layer.name} ({layer.height}x{layer.width})" for layer in schema.layers],
            "heads": schema.heads,
            "map_dtype": schema.dtype,
            "versions": runs.versions,
        }


# --------------------------------------------------------------------------- writing


def _json_ready(value: Any) -> Any:
    """NaN → None (strict JSON), paths → str, recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _save_both(figure, folder: Path, stem: str) -> bytes:
    """Save ``figure`` as PNG and PDF under ``folder``; returns the PNG bytes (for inlining)."""
    png, _ = save_all(figure, folder / stem, formats=("png", "pdf"))
    return png.read_bytes()


def _width(png: bytes) -> int:
    """CSS pixels that show a PNG saved at the paper style's dpi at its size in inches."""
    from PIL import Image

    return round(Image.open(io.BytesIO(png)).width * 96 / RC["savefig.dpi"])


def _interval(row: Mapping[str, Any]) -> str:
    return f"{row['estimate']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"


def _delta(row: Mapping[str, Any]) -> str:
    if "delta" not in row or row["delta"] is None:
        return ""
    return f"{row['delta']:+.3f} [{row['delta_low']:+.3f}, {row['delta_high']:+.3f}]"


def headline_rows(tables: Mapping[str, Sequence[Row]], order: Sequence[str] = ()) -> list[Row]:
    """One row per method (in ``order``): each headline metric as ``estimate [low, high]`` and its Δ vs base."""
    metrics = [m for m in HEADLINE if tables.get(m)]
    rows = []
    for method in ordered_methods({m: tables[m] for m in metrics}, order):
        row: Row = {"method": method}
        for metric in metrics:
            found = next((r for r in tables[metric] if r["method"] == method), None)
            row[metric] = _interval(found) if found else ""
            row[f"{metric} Δ"] = _delta(found) if found else ""
        rows.append(row)
    return rows


def _metric_table(rows: Sequence[Row]) -> str:
    if not rows:
        return h.paragraph("no rows: this metric does not apply to this prompt set and erased concept")
    group = [c for c in rows[0] if c not in ("n_prompts", "n_answers", "estimate", "low", "high", "delta",
                                              "delta_low", "delta_high")]
    columns = [*group, "n_prompts", "n_answers", "rate [95% CI]", "Δ vs base [95% CI]"]
    return h.table(rows, columns, formats={"rate [95% CI]": _interval, "Δ vs base [95% CI]": _delta})


@dataclass
class _Example:
    leak: Leak
    before: bytes | None
    after: bytes | None
    binding_before: dict[str, float]
    binding_after: dict[str, float]


def _render_examples(leaks: Sequence[Leak], states: Mapping[str, StateInfo], folder: Path) -> list[_Example]:
    """Draw each leak's before/after pair (needs both run files); saves PNGs under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    opened: dict[str, tuple[RunFile, dict]] = {}

    def runs_of(state: str) -> tuple[RunFile, dict] | None:
        info = states.get(state)
        if info is None or info.run_file is None or not Path(info.run_file).exists():
            return None
        if state not in opened:
            runs = RunFile(info.run_file)
            opened[state] = (runs, index_runs(runs))
        return opened[state]

    examples = []
    try:
        for number, leak in enumerate(leaks):
            pngs, bindings, regions = [], [], None
            for side, state in (("before", leak.base_state), ("after", leak.state)):
                found = runs_of(state)
                run = found[1].get((leak.prompt_id, leak.seed)) if found else None
                if run is None:
                    pngs.append(None)
                    bindings.append({})
                    continue
                if side == "before":
                    regions = leak_regions(found[0], run, leak)
                view = render_side(found[0], run, leak, f"{side} ({state})", regions)
                path = folder / f"{number:02d}-{leak.method}-{side}.png"
                pngs.append(save(view.figure, path).read_bytes() if view.figure is not None else None)
                bindings.append(view.binding)
            examples.append(_Example(leak, pngs[0], pngs[1], bindings[0], bindings[1]))
    finally:
        for runs, _ in opened.values():
            runs.close()
    return examples


def _binding_text(binding: Mapping[str, float], value: str) -> str:
    if not binding:
        return ""
    shares = ", ".join(f"{obj} {share:.0%}" for obj, share in binding.items())
    return f"“{value}” attention inside objects: {shares}"


def _examples_section(examples: Sequence[_Example], captured: bool) -> list[str]:
    out = [h.heading(2, "Examples: the erased object's attribute on the retained object", "examples")]
    if not captured:
        return out + [h.paragraph("No run files with attention maps (capture was off): no examples.")]
    if not examples:
        return out + [h.paragraph("No leakage answer's score rose after the edit (or no two-object prompt "
                                  "paired an erased object with a retained one).")]
    out.append(h.paragraph(
        "For each edited model, the leakage answers that flipped from no (base model) to yes (edited model) "
        "come first, then the largest rises of the judge's score. Each image is shown with the attention of "
        "the attribute word and of both object words (all layers and steps, DAAM-style, scaled to [0, 1]). "
        "The percentages split the attribute's attention that falls inside the two objects' regions between "
        "them (relative binding, averaged over layers and steps). The regions are Otsu masks of the object "
        "words' maps in the base model's run, used for both sides: the edit disturbs the erased noun's own "
        "attention, while the shared seed starts both runs from the same noise."))
    for example in examples:
        leak = example.leak
        caption = (f"{leak.method}: “{leak.prompt}” (seed {leak.seed}) — is the {leak.other_object} "
                   f"{leak.value}? base: {'yes' if leak.before_yes else 'no'} ({leak.before_score:.2f}), "
                   f"{leak.method}: {'yes' if leak.after_yes else 'no'} ({leak.after_score:.2f})")
        figures = []
        for png, binding, side in ((example.before, example.binding_before, "before"),
                                   (example.after, example.binding_after, "after")):
            figures.append(h.figure(png, f"{side}. {_binding_text(binding, leak.value)}", width=_width(png)) if png
                           else h.paragraph(f"{side}: run not found in the run file"))
        out.append(h.tag("h3", h.text(caption)))
        out.append(h.tag("div", *figures, class_="pair"))
    return out


def _settings_section(inputs: ReportInputs, contexts: Mapping[str, dict], library: Mapping[str, str]) -> list[str]:
    out = [h.heading(2, "Settings and versions", "settings")]
    settings = [{"setting": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else v}
                for k, v in inputs.settings.items()]
    out += [h.tag("h3", h.text("Command")), h.table(settings, ["setting", "value"])]
    if inputs.plan:
        plan = {k: v for k, v in inputs.plan.items() if k != "prompt_ids"}
        out += [h.tag("h3", h.text("Prompt set")),
                h.table([{"field": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else v}
                         for k, v in plan.items()], ["field", "value"]),
                h.details(f"the {len(inputs.plan.get('prompt_ids', []))} prompt ids",
                          h.preformatted("\n".join(inputs.plan.get("prompt_ids", []))))]
    edits = [{"state": s.name, "method": s.method, "edit": json.dumps(_edit_summary(s.edit_meta))}
             for s in inputs.states if s.edit_meta]
    if edits:
        out += [h.tag("h3", h.text("Edits")), h.table(edits, ["state", "method", "edit"])]
    timings = [{"state": s.name, **s.timing} for s in inputs.states if s.timing]
    if timings:
        out += [h.tag("h3", h.text("Timing (this session)")), h.table(timings)]
    if contexts:
        first = next(iter(contexts.values()))
        rows = [{"state": name, "runs": c["runs"], "complete": c["complete"], "model": c["model"].get("id"),
                 "fingerprint": str(c["model"].get("fingerprint", ""))[:16], "image": c["image"],
                 "sampler": c["sampler"], "steps": c["sampling_steps"], "guidance": c["guidance_scale"],
                 "captured steps": c["captured_steps"], "heads": c["heads"], "map dtype": c["map_dtype"]}
                for name, c in contexts.items()]
        out += [h.tag("h3", h.text("Run files")), h.table(rows),
                h.details(f"{len(first['layers'])} captured cross-attention layers",
                          h.preformatted("\n".join(first["layers"]))),
                h.details("versions recorded in the run files",
                          h.preformatted(json.dumps(first["versions"], indent=1)))]
    out += [h.tag("h3", h.text("Versions (this report)")),
            h.table([{"package": k, "version": v} for k, v in library.items()], ["package", "version"])]
    return out


def _edit_summary(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields of an edit's metadata a reader needs (not its stage list or fingerprints)."""
    keep = ("method", "concepts", "guides", "preserved", "hyper", "epochs", "token_choice", "progressive", "created")
    return {k: meta[k] for k in keep if k in (meta or {})}


def _metrics_help() -> str:
    items = [
        ("target accuracy", "share of presence questions about the erased concept (and its subclasses and "
                            "compositional variants) answered yes; lower = stronger erasure."),
        ("retain accuracy", "the same for concepts that should survive; compare with the base model."),
        ("retained attributes", "share of attribute questions about retained objects answered yes."),
        ("attribute leakage", "two-object prompts whose first object is erased and carries an attribute "
                              "(“a wooden bench and a bird”): share of images in which the judge says the "
                              "retained object has that attribute (“is the bird wooden?”)."),
        ("evasion", "target accuracy on subclasses and compositional variants of an erased superclass."),
    ]
    return h.tag("ul", *(h.tag("li", h.tag("b", h.text(name)), h.text(": " + text)) for name, text in items))


def write_leakage_report(out: str | Path, inputs: ReportInputs, *, examples: int = 3,
                         n_resamples: int = 2000) -> Path:
    """Compute the tables and write everything listed in the module docstring; returns ``report.html``."""
    out = Path(out)
    figures = out / "figures"
    (out / "tables").mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)

    tables = side_effect_metrics(inputs.records, n_resamples=n_resamples)
    write_tables(inputs.records, out / "records", RECORD_COLUMNS)
    for name, rows in tables.items():
        if rows:
            write_tables(rows, out / "tables" / name)

    order = [s.method for s in inputs.states]
    full_edits_only = {name: [r for r in rows if "@" not in str(r["method"])] for name, rows in tables.items()}
    pngs = {"metrics": _save_both(metric_intervals(full_edits_only, order=order), figures, "metrics")}
    curves = (("retain_by_distance", "attr_distance", "attribute slots differing from the erased concept"),
              ("retain_by_similarity", "similarity_bin", "text-embedding similarity to the erased concept"))
    for name, column, label in curves:
        if len({r[column] for r in tables.get(name, [])}) > 1:  # one bin is no curve
            pngs[name] = _save_both(retain_by(tables[name], column, xlabel=label, order=order), figures, name)
    plt.close("all")

    states = {s.name: s for s in inputs.states}
    contexts = {s.name: capture_context(Path(s.run_file)) for s in inputs.states
                if s.run_file is not None and Path(s.run_file).exists()}
    full_edits = [r for r in inputs.records if "@" not in str(r["method"])]  # ablation parts have no examples
    leaks = find_leaks(full_edits, per_method=examples) if examples else []
    rendered = _render_examples(leaks, states, figures / "examples") if contexts else []
    library = versions()
    inside = [*inside_sections(inputs.records, {s.name: s.run_file for s in inputs.states},
                               {s.name: s.method for s in inputs.states}, out, n_resamples=n_resamples),
              *inputs.sections]
    plt.close("all")

    metrics = {
        "erased": inputs.erased,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tables": tables,
        "headline": headline_rows(tables, order),
        "examples": [leak.to_row() for leak in leaks],
        "plan": inputs.plan,
        "settings": inputs.settings,
        "notes": inputs.notes,
        "states": [{"name": s.name, "method": s.method, "run_file": s.run_file, "edit": _edit_summary(s.edit_meta),
                    "timing": s.timing} for s in inputs.states],
        "run_files": {name: {k: v for k, v in c.items() if k != "layers"} for name, c in contexts.items()},
        "versions": library,
        "wall_seconds": inputs.wall_seconds,
        "inside": {section.key: section.data for section in inside},
    }
    (out / "metrics.json").write_text(json.dumps(_json_ready(metrics), indent=1, allow_nan=False))

    methods = ", ".join(m for m in ordered_methods(tables, order) if m != "base")
    title = f"Leakage report: erasing “{inputs.erased}” ({methods})"
    body = [h.heading(1, title)]
    body.append(h.paragraph(
        f"model {inputs.settings.get('model', '?')}, judge {inputs.settings.get('judge', '?')}, "
        f"{len({r['prompt_id'] for r in inputs.records})} prompts, "
        f"{len(inputs.records)} judged questions" +
        (f", wall time {inputs.wall_seconds:.0f} s" if inputs.wall_seconds is not None else "")))
    body += [h.paragraph(note, class_="note") for note in inputs.notes]
    body += [h.heading(2, "Summary", "summary"), _metrics_help()]
    headline = headline_rows(tables, order)
    columns = ["method"] + [c for m in HEADLINE if tables.get(m) for c in (m, f"{m} Δ")]
    body.append(h.table(headline, columns, headers={
        **{m: TITLES[m][0] + " [95% CI]" for m in HEADLINE}, **{f"{m} Δ": "Δ vs base" for m in HEADLINE}}))
    body.append(h.figure(pngs["metrics"], "Rate of yes answers per method with 95% cluster-bootstrap intervals "
                                          "(prompts resampled, seeds nested).", width=_width(pngs["metrics"])))
    for name, caption in (("retain_by_distance", "Retain accuracy by attribute distance to the erased concept."),
                          ("retain_by_similarity", "Retain accuracy by text-embedding similarity to the erased "
                                                   "concept (quantile bins).")):
        if name in pngs:
            body.append(h.figure(pngs[name], caption, width=_width(pngs[name])))
    body += _examples_section(rendered, bool(contexts))
    for section in inside:
        body += section.body
    body.append(h.heading(2, "Tables", "tables"))
    for name, rows in tables.items():
        body += [h.tag("h3", h.text(name.replace("_", " "))), _metric_table(rows)]
    body += _settings_section(inputs, contexts, library)
    body.append(h.paragraph("Files beside this report: metrics.json, records.csv, tables/*.csv (each also as .parquet), "
                            "figures/*.png|pdf."))
    path = out / "report.html"
    path.write_text(h.page(title, body), encoding="utf-8")
    return path
