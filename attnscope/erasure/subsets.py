"""Split an edit into parts for an ablation: per layer, per resolution, per place, keys vs values.

::

    parts = edit_subsets(edit, "places", pipe)     # [Subset("down", ...), Subset("mid", ...), Subset("up", ...)]
    with parts[2].edit.applied(pipe):              # only the up-blocks' part of the edit
        pipe("a wooden bench and a bird")

Each part is :meth:`Edit.restrict` of the full edit: applying it sets the
chosen tensors to the edited values and leaves every other tensor at its base
value, so sampling with each part in turn says which part of the edit
causes which side effect.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnscope.erasure.edit import PLACES, Edit, tensor_layer, tensor_place, tensor_projection
from attnscope.erasure.methods import SUBSET_KINDS as KINDS


@dataclass(frozen=True)
class Subset:
    """One part of an edit: ``kind`` (one of :data:`KINDS`), ``label`` (``"down"``, ``"16x16"``, a layer name, ``"k"``)."""

    kind: str
    label: str
    edit: Edit


def layer_resolutions(pipe) -> dict[str, str]:
    """``{layer name: "HxW"}`` of every cross-attention layer at the UNet's default latent size."""
    from attnscope.models.layers import cross_attention_layers

    size = pipe.unet.config.sample_size
    latent = (size, size) if isinstance(size, int) else tuple(size)
    return {layer.name: "{}x{}".format(*layer.resolution(latent)) for layer in cross_attention_layers(pipe.unet)}


def edit_subsets(edit: Edit, kind: str, pipe=None) -> list[Subset]:
    """The parts of ``edit`` of one ``kind``, in forward order of the layers the edit touches.

    ``"layers"``: one part per layer; ``"places"``: down / mid / up;
    ``"resolutions"``: one per query grid, finest first (needs ``pipe`` for
    the layers' resolutions); ``"kv"``: keys only (``k``), values only (``v``).
    Only parts that hold a tensor are returned.
    """
    names = list(edit.tensors)
    layers = list(dict.fromkeys(tensor_layer(n) for n in names))
    if kind == "layers":
        return [Subset(kind, layer, edit.restrict(layers=layer, label=layer)) for layer in layers]
    if kind == "places":
        present = {tensor_place(n) for n in names}
        return [Subset(kind, place, edit.restrict(places=place)) for place in PLACES.values() if place in present]
    if kind == "kv":
        present = {tensor_projection(n) for n in names}
        return [Subset(kind, kv, edit.restrict(kv=kv)) for kv in ("k", "v") if f"to_{kv}" in present]
    if kind == "resolutions":
        if pipe is None:
            raise ValueError("splitting an edit by resolution needs the pipeline (its layers' grids)")
        grids = layer_resolutions(pipe)
        by_grid: dict[str, list[str]] = {}
        for layer in layers:
            by_grid.setdefault(grids.get(layer, "?"), []).append(layer)
        order = sorted(by_grid, key=lambda g: -int(g.split("x")[0]) if g != "?" else 0)
        return [Subset(kind, grid, edit.restrict(layers=by_grid[grid], label=grid)) for grid in order]
    raise ValueError(f"unknown subset kind {kind!r}; choose from {', '.join(KINDS)}")
