"""The text an erasure edit is summarised by: method, concepts, time, and how much each layer's K and V moved."""

from __future__ import annotations

from collections import defaultdict

from attnscope.erasure.edit import Edit, TensorChange


def edit_summary(edit: Edit, changes: list[TensorChange], seconds: float) -> str:
    """A short report: method, concepts, time, and per-layer relative change ``‖ΔW‖/‖W‖`` of K and V
    (the 20 largest changes when the edit touches other tensors too)."""
    meta = edit.meta
    lines = [
        f"{meta['method']} edit of {meta.get('base_model')} in {seconds:.3f} s: "
        f"{len(edit.tensors)} tensors changed"
        + (f", concepts {meta['concepts']}" if "concepts" in meta else "")
        + (f", stages {len(meta['stages'])}" if meta.get("stages") else ""),
    ]
    if all(r.name.endswith((".to_k.weight", ".to_v.weight")) for r in changes):
        by_layer: dict[str, dict[str, float]] = defaultdict(dict)
        for row in changes:
            layer, projection = row.name.partition(".")[2].removesuffix(".weight").rsplit(".", 1)
            by_layer[layer][projection] = row.relative
        lines.append(f"{'layer':<64} {'‖ΔK‖/‖K‖':>10} {'‖ΔV‖/‖V‖':>10}")
        for layer, rel in by_layer.items():
            lines.append(f"{layer:<64} {rel.get('to_k', 0.0):>10.4f} {rel.get('to_v', 0.0):>10.4f}")
    else:
        top = sorted(changes, key=lambda r: -r.relative)[:20]
        lines.append(f"largest relative changes ({len(top)} of {len(changes)}):")
        lines += [f"  {r.name:<80} {r.relative:>10.4g}" for r in top]
    return "\n".join(lines)
