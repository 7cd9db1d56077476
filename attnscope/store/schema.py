"""What a run file holds, independent of how it is written or read.

See ``docs/format.md`` for the on-disk layout. A run file has one *capture
schema* — image size, layers, steps, head mode, dtype, model and edit — shared
by all its runs, so every run's maps have the same width ``L`` and one HDF5
dataset holds them all.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

FORMAT_NAME = "attnscope.run"
FORMAT_VERSION = 3  # 3: lossless maps step-XOR encoded; 2: compressed or quantised maps (attributes of /maps); 1: raw


@dataclass(frozen=True)
class LayerSpec:
    """One cross-attention layer's segment of the flattened map axis.

    A map row is ``(steps, L)``; this layer occupies ``[offset, offset + size)``
    of ``L`` with ``size = heads * height * width`` laid out as
    ``(heads, height, width)`` (``heads == 1`` when heads were averaged).
    """

    name: str
    place: str  # "down" | "mid" | "up"
    height: int
    width: int
    heads: int
    offset: int

    @property
    def size(self) -> int:
        return self.heads * self.height * self.width


def layout(layers: list[tuple[str, str, int, int, int]]) -> list[LayerSpec]:
    """``(name, place, height, width, heads)`` tuples → specs with running offsets."""
    specs, offset = [], 0
    for name, place, height, width, heads in layers:
        spec = LayerSpec(name, place, height, width, heads, offset)
        specs.append(spec)
        offset += spec.size
    return specs


@dataclass(frozen=True)
class CaptureSchema:
    """Everything that is the same for all runs of one file."""

    height: int  # image height in pixels
    width: int
    latent_height: int
    latent_width: int
    layers: tuple[LayerSpec, ...]
    steps: tuple[int, ...]  # selected step indices, in stored order
    timesteps: tuple[float, ...]  # the scheduler's timesteps (all steps)
    heads: str  # "mean" | "all"
    branch: str  # "cond" | "both"
    dtype: str  # numpy dtype name of the maps: "float16" | "float32"
    model: dict = field(default_factory=dict)  # id, fingerprint, class
    edit: dict | None = None  # the Edit's metadata, None for the base model
    sampler: dict = field(default_factory=dict)  # scheduler class + config, steps

    @property
    def width_l(self) -> int:
        """``L``: length of one step's flattened maps over all layers."""
        return sum(layer.size for layer in self.layers)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> "CaptureSchema":
        data = json.loads(text)
        data["layers"] = tuple(LayerSpec(**layer) for layer in data["layers"])
        data["steps"] = tuple(data["steps"])
        data["timesteps"] = tuple(data["timesteps"])
        return cls(**data)

    def compatible_with(self, other: "CaptureSchema") -> list[str]:
        """Names of the fields that differ (empty when runs can share a file)."""
        mine, theirs = json.loads(self.to_json()), json.loads(other.to_json())
        return [key for key in mine if mine[key] != theirs[key]]


@dataclass
class RunRecord:
    """One run's metadata and token labels, as written with its maps.

    ``tokens`` lists the stored token rows of the conditional branch, then (with
    ``branch="both"``) those of the unconditional branch: ``(position, text,
    word)`` with ``word`` the index of the prompt word the token belongs to
    (-1 for start/end/padding tokens).
    """

    prompt: str
    negative_prompt: str
    seed: int
    guidance_scale: float
    tokens: list[tuple[int, str, int]]
    n_uncond_tokens: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens) - self.n_uncond_tokens
