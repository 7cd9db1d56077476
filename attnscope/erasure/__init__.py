"""Concept erasure as weight edits: UCE, RECE, and released erased weights.

Every method returns an :class:`Edit` (changed tensors + metadata) without
touching the pipeline; apply it in place and revert it exactly::

    from attnscope.erasure import Edit, erase_rece

    edit = erase_rece(pipe, ["bird"], epochs=3)
    with edit.applied(pipe):
        pipe("a bird")                     # after erasure
    edit.save("bird.edit")
    Edit.load("bird.edit").apply(pipe)

Names are imported on first use, so importing a light submodule (presets)
does not pull in diffusers.
"""

from attnscope._lazy import lazy_attributes

_EXPORTS = {
    "Edit": "edit",
    "EditBaseMismatch": "edit",
    "TensorChange": "edit",
    "applied_edits": "edit",
    "base_fingerprint": "edit",
    "edit_changes": "edit",
    "EditRequest": "request",
    "compute_edit": "request",
    "TOKEN_CHOICES": "methods",
    "METHODS": "methods",
    "EraseKeys": "embeddings",
    "kv_parameters": "layers",
    "edit_from_lora": "loaders",
    "edit_from_unet_state_dict": "loaders",
    "PRESETS": "presets",
    "Subset": "subsets",
    "edit_subsets": "subsets",
    "Preset": "presets",
    "adversarial_embeddings": "rece",
    "adversarial_matrix": "rece",
    "erase_rece": "rece",
    "erase_uce": "uce",
    "uce_matrix": "uce",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_attributes(__name__, _EXPORTS)
