"""Report sections "inside the leak": edit ablation, dispersal, attention ↔ outcome, trade-off.

Each ``*_section`` function computes its analysis, writes its tables
(``tables/*.csv``) and figures (``figures/*.png|pdf``) under a report folder
and returns a :class:`Section`: HTML fragments for the page and JSON-ready
numbers for ``metrics.json``. :func:`inside_sections` picks the sections that
a leakage report's inputs allow (ablation states; run files of the base model
and an edit).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from attnscope.analyses.ablation import FULL, ablation_table, clear_change, leading_parts, split_method
from attnscope.analyses.outcome import FEATURES, attention_features, dispersal_rows, fit_outcome, leakage_images
from attnscope.analyses.side_effects import write_csv
from attnscope.figures.inside import (
    ablation_figure,
    dispersal_figure,
    front_figure,
    outcome_figure,
    predictor_figure,
    tradeoff_figure,
)
from attnscope.figures.style import RC, save_all
from attnscope.report import html as h

Row = dict[str, Any]


@dataclass
class Section:
    """One report section: its HTML fragments and its numbers (for ``metrics.json``)."""

    key: str
    body: list[str]
    data: dict[str, Any] = field(default_factory=dict)


def leading_sentence(rows: Sequence[dict], parts: Sequence[dict], edit: str) -> str:
    """What :func:`~attnscope.analyses.ablation.leading_parts` found, in words: the full edit's leakage change,
    then the parts carrying it or, when it is not clear, the parts that change leakage on their own."""
    return f"{full_change_sentence(rows, edit)} {parts_sentence(parts)}"


def full_change_sentence(rows: Sequence[dict], edit: str) -> str:
    """``"The full edit changes leakage by Δ [CI]."`` or that it changes nothing measurable."""
    full = next((r for r in rows if r["metric"] == "leakage" and r["part"] == FULL and r["edit"] == edit), None)
    if full is None or math.isnan(full["delta"]):
        return "The full edit is not in these records."
    change = _ci(full, "delta", "delta_low", "delta_high", True)
    if clear_change(full):
        return f"The full edit changes leakage by {change}."
    return f"The full edit does not change leakage measurably ({change}), so no part has a share of it."


def parts_sentence(parts: Sequence[dict]) -> str:
    """The parts of :func:`~attnscope.analyses.ablation.leading_parts` in words, with their Δ (and share)."""
    if not parts:
        return "No parts."
    named = ", ".join(f"{p['part']} (Δ {_ci(p, 'delta', 'delta_low', 'delta_high', True)}"
                      + (f", share {p['share']:.2f})" if not math.isnan(p["share"]) else ")") for p in parts)
    if any(not math.isnan(p["share"]) for p in parts):
        return f"It comes mostly from {named}."
    if any(clear_change(p) for p in parts):
        return f"Parts that change it on their own: {named}."
    return f"No part alone changes it measurably (largest: {named})."


def _figure(figure, folder: Path, stem: str, caption: str) -> str:
    """Save PNG + PDF under ``folder`` and return the inlined figure."""
    from PIL import Image

    png, _ = save_all(figure, folder / stem, formats=("png", "pdf"))
    data = png.read_bytes()
    width = round(Image.open(io.BytesIO(data)).width * 96 / RC["savefig.dpi"])
    return h.figure(data, caption, width=width)


def _table(rows: Sequence[Mapping[str, Any]], out: Path, name: str) -> None:
    """Write ``rows`` to ``out/tables/{name}`` (folder made when missing)."""
    (out / "tables").mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "tables" / name)


def _ci(row: Mapping[str, Any], value: str, low: str, high: str, sign: bool = False) -> str:
    if row.get(value) is None or (isinstance(row[value], float) and math.isnan(row[value])):
        return ""
    form = "+.3f" if sign else ".3f"
    return f"{row[value]:{form}} [{row[low]:{form}}, {row[high]:{form}}]"


# --------------------------------------------------------------------------- ablation


def ablation_section(records: Sequence[Mapping[str, Any]], out: Path, *, order: Sequence[str] = (),
                     n_resamples: int = 2000) -> Section | None:
    """Target, retain and leakage per part of the edit (states named ``method@part``); None without parts.

    ``order``: the records' methods in the order the figure shows them.
    """
    if not any("@" in str(r["method"]) for r in records):
        return None
    rows = ablation_table(records, n_resamples=n_resamples)
    _table(rows, out, "ablation.csv")
    body = [h.heading(2, "Which part of the edit causes which side effect", "ablation"), h.paragraph(
        "Each part of the edit (a layer, a place, a resolution, or only its keys or values) applied alone, every "
        "other weight at its base value, sampled on the same prompts and seeds. Δ is the change from the base model "
        "with a paired 95% interval (prompts resampled); share = the part's Δ / the full edit's Δ (parts need not "
        "add up), defined only when the full edit's change is clear (its interval excludes 0).")]
    body.append(_figure(ablation_figure(rows, order=order), out / "figures", "ablation",
                        "Change of each metric from the base model per part of the edit (95% CI)."))
    edits = list(dict.fromkeys(r["edit"] for r in rows))
    leading = {edit: leading_parts(rows, "leakage", edit=edit) for edit in edits}
    for edit, parts in leading.items():
        if parts:
            body.append(h.paragraph(f"{edit}: {leading_sentence(rows, parts, edit)}"))
    table = [{"edit": r["edit"], "part": r["part"], "metric": r["metric"], "prompts": r["n_prompts"],
              "rate [95% CI]": _ci(r, "estimate", "low", "high"),
              "Δ vs base [95% CI]": _ci(r, "delta", "delta_low", "delta_high", True),
              "share of full Δ": r["share"]} for r in rows]
    body.append(h.details(f"ablation table ({len(rows)} rows)", h.table(table)))
    return Section("ablation", body, {"rows": rows, "leading": {e: [p["part"] for p in ps] for e, ps in leading.items()}})


# --------------------------------------------------------------------------- attention: dispersal and outcome


def attention_sections(records: Sequence[Mapping[str, Any]], before: Path, after: Path, state: str, out: Path, *,
                       n_resamples: int = 2000) -> list[Section]:
    """Dispersal before vs after and attention ↔ judged leakage for the leakage images of ``state``."""
    from attnscope.store import RunFile

    images = leakage_images(records, state)
    if not images:
        return []
    with RunFile(before) as runs_before, RunFile(after) as runs_after:
        rows = attention_features(runs_before, runs_after, images)
    if not rows:
        return []
    stem = state.replace("@", "_")
    _table(rows, out, f"attention_{stem}.csv")
    bootstrap = {"n_resamples": n_resamples}
    dispersal = dispersal_rows(rows, **bootstrap)
    _table(dispersal, out, f"dispersal_{stem}.csv")
    d_body = [h.heading(2, f"Concentration and dispersal ({state})", f"dispersal-{stem}"), h.paragraph(
        f"{len(rows)} two-object images whose first object is erased. Per word role — the attribute word, the erased "
        "noun, the retained noun — the normalised entropy of its map (0: one cell, 1: uniform), the mass share in "
        "its top 10% cells, the spread (root second moment about the centroid, in image sides), the attribute's "
        "share inside its own object's region and its relative binding to the retained object (on_other), each "
        "averaged over layers and steps; before and after the edit, the change with a paired 95% interval "
        "(prompts resampled).")]
    d_body.append(_figure(dispersal_figure(dispersal), out / "figures", f"dispersal_{stem}",
                          "Before vs after the edit, mean over images (95% CI)."))
    d_body.append(h.table([{"role": r["word"], "quantity": r["quantity"], "images": r["pairs"],
                            "before": _ci(r, "before", "before_low", "before_high"),
                            "after": _ci(r, "after", "after_low", "after_high"),
                            "change": _ci(r, "change", "change_low", "change_high", True)} for r in dispersal]))
    sections = [Section(f"dispersal:{state}", d_body, {"rows": dispersal})]

    fit = fit_outcome(rows, **bootstrap)
    o_body = [h.heading(2, f"Does attention explain the leak? ({state})", f"outcome-{stem}"), h.paragraph(
        f"Logistic regression of the judge's leakage answer on the edited image ({fit.positives} of {fit.n_images} "
        f"images judged leaked, {fit.n_prompts} prompts) on standardised attention features: binding shift of the "
        "attribute word onto the retained object, change of its map's entropy, and the attention mass left on the "
        f"erased noun. AUC of out-of-fold predictions (folds by prompt), prompt-clustered interval: {fit.auc}; the "
        f"same procedure with the answers shuffled among prompts (the null; out-of-fold AUCs sit below 0.5 when "
        f"features carry no signal): {fit.null}; permutation p = {fit.p_value:.3f}.")]
    o_body.append(_figure(outcome_figure(fit), out / "figures", f"outcome_{stem}",
                          "ROC of the out-of-fold predictions; AUC per feature and jointly (grey tick: the null)."))
    o_body.append(h.table([{"feature": e.feature, "AUC alone [95% CI]": str(e.auc),
                            "Cohen's d [95% CI]": str(e.cohens_d), "odds ratio per SD (joint)": e.odds_ratio}
                           for e in fit.effects]))
    if fit.disagreements:
        o_body.append(h.tag("h3", h.text("Where attention and the judge disagree")))
        o_body.append(h.table([{"kind": d["kind"], "prompt": d.get("prompt", d["prompt_id"]), "seed": d["seed"],
                                "P(leak) from attention": d["predicted"], "judge score": d["score"],
                                **{f: d[f] for f in FEATURES}} for d in fit.disagreements]))
    sections.append(Section(f"outcome:{state}", o_body, fit.summary()))
    return sections


# --------------------------------------------------------------------------- trade-off


def tradeoff_section(rows: Sequence[Row], rho, out: Path) -> Section:
    """Trade-off curves over the number of erased concepts, hyper-parameter fronts and the predictor check.

    ``rows``: :func:`~attnscope.analyses.tradeoff.tradeoff_rows` with columns
    ``sweep`` (``"concepts"`` for the concept ladder), ``mode``, ``n_concepts``,
    ``value``; ``rho``: :func:`~attnscope.analyses.tradeoff.predictor_correlation`.
    """
    _table(rows, out, "tradeoff.csv")
    body = [h.heading(2, "What erasing more costs", "tradeoff")]
    ladder = [r for r in rows if r["sweep"] == "concepts"]
    if ladder:
        body.append(_figure(tradeoff_figure(ladder), out / "figures", "tradeoff_concepts",
                            "Target, retain and leakage against the number of erased concepts, one-shot vs "
                            "progressive (95% CI, prompts resampled)."))
    sweeps = [r for r in rows if r["sweep"] != "concepts"]
    if sweeps:
        body.append(_figure(front_figure(sweeps), out / "figures", "tradeoff_fronts",
                            "Hyper-parameter sweeps: retain and leakage against target accuracy (95% CI); "
                            "labels are the swept values."))
    body.append(_figure(predictor_figure(rows, rho), out / "figures", "tradeoff_predictor",
                        "K/V movement of the retained concepts, measured before sampling, against the retain drop "
                        "that sampling measured."))
    body.append(h.paragraph(f"Pre-sampling predictor: Spearman ρ between the retained concepts' K/V movement and "
                            f"the measured retain drop over {rho.n} edits: {rho} (edits resampled)."))
    table = [{"sweep": r["sweep"], "mode": r.get("mode", ""), "value": r.get("value", ""),
              "concepts": r.get("n_concepts", ""), "target": _ci(r, "target", "target_low", "target_high"),
              "retain": _ci(r, "retain", "retain_low", "retain_high"),
              "leakage": _ci(r, "leakage", "leakage_low", "leakage_high"), "predictor": r.get("predictor")}
             for r in rows]
    body.append(h.details(f"trade-off table ({len(rows)} edits)", h.table(table)))
    return Section("tradeoff", body, {"rows": list(rows), "spearman": {"estimate": rho.estimate, "low": rho.low,
                                                                        "high": rho.high, "n": rho.n}})


# --------------------------------------------------------------------------- leakage report


def inside_sections(records: Sequence[Mapping[str, Any]], run_files: Mapping[str, Path | None],
                    methods: Mapping[str, str], out: Path, *, n_resamples: int = 2000) -> list[Section]:
    """The sections a leakage report can add: ablation (when parts were sampled), and dispersal and
    outcome for every full edit whose run file and the base model's are present.

    ``run_files``: state name → run file (or None); ``methods``: state name → method.
    """
    sections = []
    ablation = ablation_section(records, out, order=list(methods.values()), n_resamples=n_resamples)
    if ablation:
        sections.append(ablation)
    base = next((name for name, method in methods.items() if method == "base"), None)
    before = run_files.get(base) if base else None
    if before is None or not Path(before).exists():
        return sections
    for name, method in methods.items():
        after = run_files.get(name)
        if method == "base" or split_method(method)[1] != FULL or after is None or not Path(after).exists():
            continue
        sections += attention_sections(records, Path(before), Path(after), name, out, n_resamples=n_resamples)
    return sections


# --------------------------------------------------------------------------- drift


def write_dispersal(study, out: Path, *, n_resamples: int = 2000, formats: tuple[str, ...] = ("png", "pdf")
                    ) -> list[Path]:
    """Files of a :class:`~attnscope.analyses.dispersal.DispersalStudy` in ``out``: ``dispersal.json`` (per
    word and quantity: before, after, change with paired intervals), ``dispersal.csv``,
    ``dispersal_layers_steps.csv`` (per word, quantity, layer and step) and the ``dispersal`` figure."""
    import json

    from attnscope.datasets.see import write_table

    out.mkdir(parents=True, exist_ok=True)
    rows = study.rows(n_resamples=n_resamples)
    layer_rows = study.layer_step_rows()
    summary = {"words": list(study.words), "pairs": len(study.clusters), "prompts": len(set(study.clusters)),
               "layers": list(study.layers), "steps": list(study.steps), "rows": rows}
    (out / "dispersal.json").write_text(json.dumps(summary, indent=1, default=float))
    written = [out / "dispersal.json", write_table(rows, list(rows[0]), out / "dispersal.csv"),
               write_table(layer_rows, list(layer_rows[0]), out / "dispersal_layers_steps.csv")]
    return written + save_all(dispersal_figure(rows), out / "dispersal", formats)


def tradeoff_study(folder: Path, plan, names: Sequence[str], *, n_resamples: int = 2000) -> tuple[list[Row], Any]:
    """Rows and predictor ρ of a trade-off run in ``folder`` (points ``names``, judged records and point files)."""
    from attnscope.analyses.tradeoff import predictor_correlation, tradeoff_rows
    from attnscope.runner.tradeoff import read_points, tradeoff_records

    records = tradeoff_records(folder, ["base", *names])
    rows = tradeoff_rows(read_points(folder, names), records, [r.prompt for r in plan.rows], n_resamples=n_resamples)
    return rows, predictor_correlation(rows, n_resamples=n_resamples)


def write_tradeoff_page(folder: Path, rows: Sequence[Row], rho, title: str) -> Path:
    """``folder/tradeoff.html`` (self-contained) with the trade-off section; tables and figures beside it."""
    section = tradeoff_section(rows, rho, folder)
    path = folder / "tradeoff.html"
    path.write_text(h.page(title, [h.heading(1, title), *section.body]), encoding="utf-8")
    return path
