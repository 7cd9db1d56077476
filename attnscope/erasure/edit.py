"""The Edit: a change to a pipeline's weights, applied in place and revertible.

An :class:`Edit` holds only the tensors it changes, by pipeline-relative
parameter name (``unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight``),
with their NEW values, plus JSON metadata saying how it was made and for which
base weights. Applying writes into the existing parameters with
``param.data.copy_`` (modules and parameters stay the same objects, so capture
hooks stay attached); the values it overwrote are kept in memory, bit for bit,
on the pipeline, and :meth:`Edit.revert` writes them back.

Edits stack: apply several in sequence and revert them last-in first-out.
Every edit records the fingerprint of the *unedited* base it was made for;
the pipeline caches its own unedited fingerprint on first use
(``pipe.attnscope_base_fingerprint``, see :func:`base_fingerprint`), so a
second edit is checked against the base, not against the first edit's weights.

File format (one file, ``*.edit`` by convention): a safetensors file whose
tensors are the changed parameters under their names plus optional
*artifacts* under ``artifacts/<name>`` (RECE's per-epoch weights and
adversarial embeddings); its string metadata holds ``format``
(``attnscope.edit/1``) and ``meta`` (the JSON metadata). Readable with plain
``safetensors.safe_open``.
"""

from __future__ import annotations

import fnmatch
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from attnscope.errors import UnreadableFile
from attnscope.models.identity import pipeline_fingerprint

FORMAT = "attnscope.edit/1"
ARTIFACT_PREFIX = "artifacts/"


def _header(path: Path) -> dict | None:
    """The safetensors metadata of ``path``, or None when it is not a readable safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception:  # safetensors raises its own SafetensorError (not an OSError) for malformed files
        return None


def is_edit_file(path: str | Path) -> bool:
    """Whether ``path`` is a file written by :meth:`Edit.save`."""
    path = Path(path)
    return path.is_file() and (_header(path) or {}).get("format") == FORMAT


class EditBaseMismatch(ValueError):
    """An edit was applied to a pipeline whose base weights are not the ones it was made for."""


@dataclass(frozen=True)
class AppliedEdit:
    """An edit applied to a pipeline and the exact values it overwrote."""

    edit: "Edit"
    originals: dict[str, torch.Tensor]


def model_id(pipe) -> str:
    """The id the pipeline was loaded from (``load_pipeline`` sets it), else its class name."""
    return getattr(pipe, "attnscope_model_id", None) or getattr(pipe, "name_or_path", None) or type(pipe).__name__


def applied_edits(pipe) -> list["Edit"]:
    """The edits currently applied to ``pipe``, in application order."""
    return [a.edit for a in getattr(pipe, "attnscope_edits", [])]


def base_fingerprint(pipe, refresh: bool = False) -> str:
    """Fingerprint of ``pipe``'s weights without any applied edit, cached on the instance.

    Computed on first use (necessarily before the first edit is applied) and
    kept while edits come and go, since revert restores the base exactly.
    Pass ``refresh=True`` after changing the weights outside attnscope.
    """
    if refresh and getattr(pipe, "attnscope_edits", None):
        raise RuntimeError("cannot refresh the base fingerprint while edits are applied")
    if refresh or getattr(pipe, "attnscope_base_fingerprint", None) is None:
        pipe.attnscope_base_fingerprint = pipeline_fingerprint(pipe)
    return pipe.attnscope_base_fingerprint


def edit_meta(pipe, method: str, **fields: Any) -> dict[str, Any]:
    """The metadata every edit records: method, base model and fingerprint, version, time, ``fields``.

    If ``pipe`` already has edits applied, the new edit was computed on top of
    them; their metadata is recorded under ``on_top_of``.
    """
    from attnscope._version import __version__

    meta = {
        "method": method,
        **fields,
        "base_model": model_id(pipe),
        "base_fingerprint": base_fingerprint(pipe),
        "attnscope_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if applied_edits(pipe):
        meta["on_top_of"] = [e.meta for e in applied_edits(pipe)]
    return meta


def _parameter(pipe, name: str) -> torch.nn.Parameter:
    component, _, rest = name.partition(".")
    module = getattr(pipe, component, None)
    if not isinstance(module, torch.nn.Module):
        raise KeyError(f"edit tensor {name!r}: the pipeline has no component {component!r}")
    try:
        return module.get_parameter(rest)
    except AttributeError as error:
        raise KeyError(f"edit tensor {name!r}: {component} has no parameter {rest!r}") from error


@dataclass
class Edit:
    """Changed tensors (new values, by pipeline-relative name) + JSON metadata + artifacts.

    Made by :func:`~attnscope.erasure.uce.erase_uce`, :func:`~attnscope.erasure.rece.erase_rece`
    or a loader; ``with edit.applied(pipe): ...`` applies it in place and reverts it
    exactly (hooks stay attached); ``edit.save(path)`` / ``Edit.load(path)`` keep it.

    Args:
        tensors: ``{pipeline-relative parameter name: new value}``, e.g.
            ``"unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"``.
        meta: JSON metadata (below).
        artifacts: tensors saved with the edit but never applied.

    ``meta`` keys written by attnscope's methods: ``method``, ``concepts``,
    ``guides``, ``preserved``, ``hyper`` (method hyper-parameters),
    ``token_choice``, ``progressive``, ``layers``, ``stages`` (labels of the
    intermediate weights, e.g. ``["uce", "rece epoch 1", ...]``),
    ``base_model``, ``base_fingerprint``, ``attnscope_version``, ``created``.
    """

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    artifacts: dict[str, torch.Tensor] = field(default_factory=dict)

    def __repr__(self) -> str:
        concepts = self.meta.get("concepts", "")
        return (
            f"Edit(method={self.meta.get('method')!r}, concepts={concepts!r}, "
            f"{len(self.tensors)} tensors, {len(self.artifacts)} artifacts)"
        )

    # ------------------------------------------------------------------ apply / revert

    def check_base(self, pipe) -> None:
        """Raise :class:`EditBaseMismatch` unless ``pipe``'s unedited weights are this edit's base."""
        expected = self.meta.get("base_fingerprint")
        actual = base_fingerprint(pipe)
        if expected != actual:
            raise EditBaseMismatch(
                f"this edit was made for base model {self.meta.get('base_model')!r} with weight "
                f"fingerprint {expected}, but the pipeline ({model_id(pipe)!r}) has base fingerprint "
                f"{actual}; load the model the edit was made for"
            )

    def apply(self, pipe) -> None:
        """Write the new values into ``pipe``'s parameters in place (their dtype and device)."""
        self.check_base(pipe)
        params = {name: _parameter(pipe, name) for name in self.tensors}
        for name, param in params.items():
            if param.shape != self.tensors[name].shape:
                raise ValueError(
                    f"edit tensor {name!r} has shape {tuple(self.tensors[name].shape)}, "
                    f"the parameter has {tuple(param.shape)}"
                )
        originals = {name: param.detach().clone() for name, param in params.items()}
        with torch.no_grad():
            for name, param in params.items():
                param.data.copy_(self.tensors[name].to(device=param.device, dtype=param.dtype))
        if not hasattr(pipe, "attnscope_edits"):
            pipe.attnscope_edits = []
        pipe.attnscope_edits.append(AppliedEdit(self, originals))

    def revert(self, pipe) -> None:
        """Restore the values :meth:`apply` overwrote; edits are reverted last-in first-out."""
        stack = getattr(pipe, "attnscope_edits", [])
        if not stack or stack[-1].edit is not self:
            where = "is not applied" if all(a.edit is not self for a in stack) else "is not the last one applied"
            raise RuntimeError(f"cannot revert {self!r}: it {where} to this pipeline (revert in LIFO order)")
        with torch.no_grad():
            for name, original in stack[-1].originals.items():
                _parameter(pipe, name).data.copy_(original)
        stack.pop()

    @contextmanager
    def applied(self, pipe) -> Iterator["Edit"]:
        """``with edit.applied(pipe): ...`` applies the edit and reverts it on exit, also on error."""
        self.apply(pipe)
        try:
            yield self
        finally:
            self.revert(pipe)

    # ------------------------------------------------------------------ stages

    @property
    def stages(self) -> list[str]:
        """Labels of the intermediate weights this edit keeps (the last one is the edit itself)."""
        return list(self.meta.get("stages", []))

    def stage(self, index: int) -> "Edit":
        """The edit as it stood after stage ``index`` (e.g. RECE's epoch ``index``; 0 = UCE)."""
        stages = self.stages
        index = range(len(stages))[index]
        meta = {**self.meta, "stage": stages[index]}
        if index == len(stages) - 1:
            return Edit(dict(self.tensors), meta)
        prefix = f"stage/{index}/"
        tensors = {n[len(prefix) :]: t for n, t in self.artifacts.items() if n.startswith(prefix)}
        if not tensors:
            raise KeyError(f"stage {index} ({stages[index]!r}) was not kept in this edit")
        return Edit(tensors, meta)

    # ------------------------------------------------------------------ subsets

    def restrict(
        self,
        *,
        layers: str | Sequence[str] | None = None,
        places: str | Sequence[str] | None = None,
        kv: str | None = None,
        label: str | None = None,
    ) -> "Edit":
        """The part of this edit that touches only the chosen tensors (a new Edit; artifacts dropped).

        ``layers``: layer names or globs (``"up_blocks.*"``), matched against
        each tensor's layer (its module path up to ``to_k``/``to_v``/...);
        ``places``: ``"down"``, ``"mid"``, ``"up"``; ``kv``: ``"k"`` (``to_k``
        tensors only) or ``"v"`` (``to_v`` only). Criteria combine with *and*;
        the other tensors keep their base values when the result is applied.
        ``meta["subset"]`` records the criteria and ``label`` (default: made
        from them); ``ValueError`` if no tensor is left.
        """
        if kv not in (None, "k", "v"):
            raise ValueError(f"kv must be 'k' or 'v', not {kv!r}")
        chosen_places = [places] if isinstance(places, str) else list(places or [])
        unknown = sorted(set(chosen_places) - set(PLACES.values()))
        if unknown:
            raise ValueError(f"unknown places {unknown}; choose from {sorted(set(PLACES.values()))}")
        patterns = [layers] if isinstance(layers, str) else list(layers or [])
        kept = {
            name: tensor for name, tensor in self.tensors.items()
            if (not patterns or any(fnmatch.fnmatchcase(tensor_layer(name), p) for p in patterns))
            and (not chosen_places or tensor_place(name) in chosen_places)
            and (kv is None or tensor_projection(name) == f"to_{kv}")
        }
        criteria = {"layers": patterns, "places": chosen_places, "kv": kv}
        if not kept:
            raise ValueError(f"no tensor of {self!r} matches {criteria}")
        label = label or "+".join([*patterns, *chosen_places, *([kv] if kv else [])]) or "all"
        meta = {k: v for k, v in self.meta.items() if k != "stages"}
        meta["subset"] = {**criteria, "label": label, "tensors": len(kept), "of": len(self.tensors)}
        return Edit(kept, meta)

    # ------------------------------------------------------------------ compose

    @staticmethod
    def compose(edits: Sequence["Edit"]) -> "Edit":
        """One edit equal to applying ``edits`` in order (later values win; artifacts dropped).

        All parts must share one base fingerprint.
        """
        if not edits:
            raise ValueError("compose needs at least one edit")
        bases = {e.meta.get("base_fingerprint") for e in edits}
        if len(bases) != 1:
            raise EditBaseMismatch(f"cannot compose edits made for different bases: {sorted(map(str, bases))}")
        tensors: dict[str, torch.Tensor] = {}
        for edit in edits:
            tensors.update(edit.tensors)
        first = edits[0].meta
        meta = {
            "method": "compose",
            "parts": [e.meta for e in edits],
            "base_model": first.get("base_model"),
            "base_fingerprint": first.get("base_fingerprint"),
            "attnscope_version": first.get("attnscope_version"),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        return Edit(tensors, meta)

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        """Write the edit to one safetensors file (see module docstring); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {n: t.detach().to("cpu", copy=True).contiguous() for n, t in self.tensors.items()}
        for name, tensor in self.artifacts.items():
            tensors[ARTIFACT_PREFIX + name] = tensor.detach().to("cpu", copy=True).contiguous()
        save_file(tensors, str(path), metadata={"format": FORMAT, "meta": json.dumps(self.meta)})
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "Edit":
        """Read an edit written by :meth:`save`; tensors are placed on ``device``.

        A missing, corrupt or foreign file raises :class:`~attnscope.errors.UnreadableFile` naming it."""
        path = Path(path)
        if not path.is_file():
            raise UnreadableFile(f"{path}: no such edit file" if not path.exists() else f"{path} is not a file")
        header = _header(path)
        if header is None:
            raise UnreadableFile(f"{path} is not a readable edit file (not safetensors, or corrupt/truncated); "
                                 "write it again with `attnscope erase`")
        if header.get("format") != FORMAT:
            raise UnreadableFile(f"{path} is not an attnscope edit file (format {header.get('format')!r})")
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                tensors, artifacts = {}, {}
                for name in f.keys():
                    if name.startswith(ARTIFACT_PREFIX):
                        artifacts[name[len(ARTIFACT_PREFIX) :]] = f.get_tensor(name)
                    else:
                        tensors[name] = f.get_tensor(name)
            meta = json.loads(header["meta"])
        except (KeyError, ValueError, json.JSONDecodeError) as error:
            raise UnreadableFile(
                f"{path}: corrupt edit file ({error}); write it again with `attnscope erase`"
            ) from error
        return cls(tensors, meta, artifacts)


PLACES = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}  # module path root -> place
_SUBMODULES = ("to_k", "to_v", "to_q", "to_out")


def tensor_layer(name: str) -> str:
    """The layer (module path) a pipeline-relative tensor name belongs to.

    ``unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight`` →
    ``up_blocks.1.attentions.0.transformer_blocks.0.attn2``; a tensor outside
    an attention projection gives its module path.
    """
    parts = name.split(".")[1:]
    cut = next((i for i, part in enumerate(parts) if part in _SUBMODULES), len(parts) - 1)
    return ".".join(parts[:cut])


def tensor_place(name: str) -> str:
    """``"down"``, ``"mid"`` or ``"up"`` for a UNet tensor name, else ``""``."""
    parts = name.split(".")
    return PLACES.get(parts[1], "") if len(parts) > 1 else ""


def tensor_projection(name: str) -> str:
    """``"to_k"``, ``"to_v"``, ... (the attention projection holding the tensor), else ``""``."""
    return next((part for part in name.split(".") if part in _SUBMODULES), "")


@dataclass(frozen=True)
class TensorChange:
    """How much one tensor changes: ``‖new − old‖_F / ‖old‖_F`` and ``max |new − old|``."""

    name: str
    shape: tuple[int, ...]
    relative: float
    max_abs: float


@torch.no_grad()
def changes(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> list[TensorChange]:
    """Per-tensor change from ``old`` to ``new`` (same names), computed in float32."""
    rows = []
    for name, after in new.items():
        before = old[name].float()
        delta = after.to(before.device).float() - before
        norm = before.norm().item()
        rows.append(
            TensorChange(
                name,
                tuple(after.shape),
                delta.norm().item() / norm if norm > 0 else float("inf"),
                delta.abs().max().item() if delta.numel() else 0.0,
            )
        )
    return rows


def edit_changes(pipe, edit: Edit) -> list[TensorChange]:
    """Per-tensor change ``edit`` makes to ``pipe``'s current weights."""
    return changes({n: _parameter(pipe, n).detach() for n in edit.tensors}, edit.tensors)
