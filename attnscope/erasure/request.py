"""One erasure edit as a command asks for it: a method (or a preset's), concepts and hyper-parameters → an :class:`Edit`."""

from __future__ import annotations

from dataclasses import dataclass, field

from attnscope.erasure.edit import Edit

HYPER_PARAMETERS = ("lam", "uce_lam", "erase_scale", "preserve_scale", "lam_r", "epochs", "token_choice")
RECE_ONLY = ("uce_lam", "lam_r", "epochs")
METHOD_NAMES = ("uce", "rece", "checkpoint", "lora")


@dataclass(frozen=True)
class EditRequest:
    """What to compute.

    Args:
        method: "uce", "rece", "checkpoint" or "lora"; ``None``: the preset's, else "uce".
        concepts, guides, preserve: texts of the concepts to erase, their guides (``None``: the preset's or "")
            and the concepts to keep.
        preset: a name of :data:`attnscope.erasure.presets.PRESETS` (published hyper-parameters).
        hyper: keyword arguments of ``erase_uce``/``erase_rece`` (:data:`HYPER_PARAMETERS`) that override the preset.
        layers: cross-attention layer names/globs (``None``: all); progressive: erase concepts one after another.
        weights, lora_scale: the released state dict or adapter (checkpoint/lora) and the adapter's strength.
    """

    method: str | None = None
    concepts: list[str] = field(default_factory=list)
    guides: list[str] | None = None
    preserve: list[str] = field(default_factory=list)
    preset: str | None = None
    hyper: dict = field(default_factory=dict)
    layers: list[str] | None = None
    progressive: bool = False
    weights: str | None = None
    lora_scale: float = 1.0


def check_texts(pipe, request: EditRequest) -> None:
    """Refuse empty concepts and words outside the model's vocabulary (they would edit ``<unk>``)."""
    from attnscope.models.checks import check_prompt_length, check_vocabulary

    check_vocabulary(pipe, request.concepts, "--concept")
    check_vocabulary(pipe, request.guides or [], "--guide", allow_empty=True)
    check_vocabulary(pipe, request.preserve, "--preserve")
    for option, texts in (("--concept", request.concepts), ("--guide", request.guides or []),
                          ("--preserve", request.preserve)):
        check_prompt_length(pipe, texts, option)


def compute_edit(pipe, request: EditRequest) -> Edit:
    """The :class:`Edit` ``request`` asks for on ``pipe`` (the pipeline is not changed).

    Raises ``ValueError`` naming the option at fault (a preset of another method, missing weights or concepts,
    RECE options for UCE).
    """
    from attnscope.erasure import PRESETS, edit_from_lora, edit_from_unet_state_dict, erase_rece, erase_uce

    preset = PRESETS[request.preset] if request.preset else None
    method = request.method or (preset.method if preset else "uce")
    if method not in METHOD_NAMES:
        raise ValueError(f"method {method!r}: use one of {', '.join(METHOD_NAMES)}")
    if unknown := sorted(set(request.hyper) - set(HYPER_PARAMETERS)):
        raise ValueError(f"{', '.join(unknown)}: not hyper-parameters of UCE/RECE ({', '.join(HYPER_PARAMETERS)})")
    if preset and preset.method != method:
        raise ValueError(f"preset {preset.name} is for --method {preset.method}, not {method}")
    if method in ("checkpoint", "lora"):
        if not request.weights:
            raise ValueError(f"--method {method} needs --weights PATH")
        if method == "checkpoint":
            return edit_from_unet_state_dict(pipe, request.weights)
        return edit_from_lora(pipe, request.weights, scale=request.lora_scale)
    if not request.concepts:
        raise ValueError(f"--method {method} needs at least one --concept")
    check_texts(pipe, request)
    kwargs = {**(preset.kwargs if preset else {}), **request.hyper}
    rece_only = [k for k in RECE_ONLY if k in kwargs]
    if method == "uce" and rece_only:
        raise ValueError(f"{', '.join(rece_only)}: RECE options, not UCE ones")
    guides = request.guides if request.guides is not None else ([preset.guide] if preset else None)
    erase = erase_uce if method == "uce" else erase_rece
    return erase(pipe, request.concepts, guides, request.preserve, layers=request.layers or "all",
                 progressive=request.progressive, **kwargs)
