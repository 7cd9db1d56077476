"""Files of ``attnscope attribute``: ``attribution.json``, ``attribution.csv`` and two figures."""

from __future__ import annotations

import json
from pathlib import Path

from attnscope.analyses.attribution import WordAttribution
from attnscope.analyses.regions import aggregate
from attnscope.figures.attribution import attribution_bars
from attnscope.figures.maps import word_map_grid
from attnscope.figures.style import save_all
from attnscope.store.aggregate import normalise
from attnscope.store.tables import write_table


def write_attribution(study: WordAttribution, out: Path) -> list[Path]:
    """Write the JSON, the CSV (one row per target and token) and the figures
    ``attribution.{png,pdf,svg}`` (bars per word) and ``attribution_maps.{png,pdf,svg}``
    (the image with the word's and objects' maps) into ``out``; returns the paths."""
    recorded, results, word = study.trace, study.results, study.word
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
    written = [out / "attribution.json", write_table(rows, out / "attribution.csv")]
    objects = list(study.regions)
    written += save_all(attribution_bars(results, highlight=[word, *objects], title=recorded.prompt),
                        out / "attribution")
    size = recorded.image.shape[:2]
    maps = {w: normalise(aggregate(list(recorded.attention[w].values()), size)) for w in [word, *objects]}
    grid = word_map_grid(recorded.image, {"all layers": maps}, title=f"{recorded.prompt} (seed {recorded.seed})")
    written += save_all(grid, out / "attribution_maps")
    return written


def attribution_lines(study: WordAttribution) -> list[str]:
    """One line per target: its value, the empty prompt's, and each word's attribution."""
    lines = []
    for result in study.results:
        words = ", ".join(f"{w} {v:+.3g}" for w, v in result.by_word().items() if not w.startswith("<"))
        lines.append(f"{result.name}: F = {result.target:.4g} (empty prompt {result.baseline:.4g}); {words}")
    return lines
