"""The toy world's oracle: finds objects in an image and names their attributes.

Two stages:

1. :func:`segment` finds objects without learning: pixels far from the
   image's background colour (its per-channel median; see :func:`foreground`)
   are foreground; 8-connected components are merged when small and close to a
   bigger one (a cake's flame), split in two when wider than any single object
   can be (two touching objects), and dropped when tiny (sampling noise).
2. :class:`OracleNet`, a small CNN, classifies a fixed 40×40 window centred
   on each component (other pixels painted with the background colour, the
   component's mask as a 4th channel) into class, colour, material and size.
   The window is not rescaled, so the net sees the object's absolute size.

:class:`ToyOracle` wraps both and implements the judge interface
(:class:`attnscope.judges.base.Judge`): "Is there a {noun} in the image?"
(class or superclass word; the score is the most likely object's probability
of being one) and "Is the {noun} {attribute}?" (size, colour or material word;
the score is the attribute's probability on the object most likely to be the
noun, and 0 when no object is more likely than not to be one).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from attnscope.datasets.toy_vocabulary import CLASSES, COLOUR_NAMES, HIERARCHY, MATERIALS, SIZES, SUPERCLASS_OF
from attnscope.judges.base import Answer, ImageLike

FIELDS: dict[str, tuple[str, ...]] = {"cls": CLASSES, "colour": COLOUR_NAMES, "material": MATERIALS, "size": SIZES}
CROP = 40


def default_oracle_path() -> Path:
    """``attnscope/assets/oracle.safetensors`` (the shipped weights; may not exist yet)."""
    return Path(__file__).resolve().parents[1] / "assets" / "oracle.safetensors"


# --------------------------------------------------------------------------- segmentation


@dataclass(frozen=True)
class SegmentConfig:
    """Thresholds of :func:`segment`, in [0, 1] colour units and pixels."""

    threshold: float = 0.1  # L2 distance from the background colour
    min_part: int = 3  # smaller specks are ignored before merging
    max_parts: int = 16  # at most this many (the largest) components are merged (noisy images)
    min_pixels: int = 20  # smaller objects are noise
    merge_gap: int = 3  # components this close merge ...
    merge_extent: int = 31  # ... if together they span at most this (one object spans ≤ 30 px)
    split_above: int = 34  # a component wider than this holds two objects


def background_colour(images: torch.Tensor) -> torch.Tensor:
    """Per-image background colour (N, 3): the median pixel of images (N, 3, H, W)."""
    return images.flatten(2).median(-1).values


def _two_means(coords: np.ndarray, iterations: int = 10) -> np.ndarray:
    """Split pixel coordinates (k, 2) into two clusters; returns labels (k,) in {0, 1}."""
    axis = int(np.argmax(np.ptp(coords, axis=0)))
    centres = np.stack([coords[coords[:, axis].argmin()], coords[coords[:, axis].argmax()]]).astype(float)
    labels = np.zeros(len(coords), int)
    for _ in range(iterations):
        labels = np.linalg.norm(coords[:, None] - centres[None], axis=-1).argmin(1)
        centres = np.stack([coords[labels == i].mean(0) if (labels == i).any() else centres[i] for i in (0, 1)])
    return labels


def foreground(images: torch.Tensor, background: torch.Tensor, threshold: float) -> torch.Tensor:
    """Object pixels (N, H, W) bool of images (N, 3, H, W) with background colours (N, 3).

    A pixel is foreground when its difference from the background is longer
    than ``threshold`` and so is its 3×3-averaged difference (averaging
    cancels pixel noise), or when its own difference is longer than
    2.5 × ``threshold`` (keeps 1-px details such as chair legs).
    """
    diff = images - background[:, :, None, None]
    smooth = F.avg_pool2d(F.pad(diff, (1, 1, 1, 1), mode="replicate"), 3, 1).norm(dim=1)
    raw = diff.norm(dim=1)
    return ((smooth > threshold) & (raw > threshold)) | (raw > 2.5 * threshold)


def label_components(masks: torch.Tensor) -> torch.Tensor:
    """8-connected component labels (N, H, W) int64 of masks (N, H, W) bool.

    0 is background; a component's label is 1 + the largest flat pixel index
    in it (labels are not consecutive). Computed by propagating the maximum
    through 3×3 neighbourhoods until nothing changes.
    """
    n, h, w = masks.shape
    m = masks[:, None]
    ids = torch.arange(1, h * w + 1, dtype=torch.float32, device=masks.device).view(1, 1, h, w)
    labels = torch.where(m, ids, 0.0)
    while True:
        grown = torch.where(m, F.max_pool2d(labels, 3, 1, 1), 0.0)
        if torch.equal(grown, labels):
            return labels[:, 0].long()
        labels = grown


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilate a (H, W) bool mask by a (2 radius + 1)² square."""
    out = mask.copy()
    for axis in (0, 1):
        grown = out.copy()
        for shift in range(1, radius + 1):
            grown[(slice(shift, None),) if axis == 0 else (slice(None), slice(shift, None))] |= (
                out[(slice(None, -shift),) if axis == 0 else (slice(None), slice(None, -shift))])
            grown[(slice(None, -shift),) if axis == 0 else (slice(None), slice(None, -shift))] |= (
                out[(slice(shift, None),) if axis == 0 else (slice(None), slice(shift, None))])
        out = grown
    return out


def _extent(mask: np.ndarray) -> int:
    ys, xs = np.nonzero(mask)
    return int(max(np.ptp(xs), np.ptp(ys))) + 1


def _merge_close(parts: list[np.ndarray], gap: int, max_extent: int) -> list[np.ndarray]:
    """Merge parts closer than ``gap`` pixels while their union still spans ≤ ``max_extent`` pixels."""
    parts = list(parts)
    merged = True
    while merged:
        merged = False
        for i in range(len(parts)):
            reach = _dilate(parts[i], gap)
            for j in range(len(parts)):
                if j != i and (reach & parts[j]).any() and _extent(parts[i] | parts[j]) <= max_extent:
                    parts[i] = parts[i] | parts.pop(j)
                    merged = True
                    break
            if merged:
                break
    return parts


def components(labels: np.ndarray, config: SegmentConfig = SegmentConfig()) -> list[np.ndarray]:
    """Object masks (each (H, W) bool), largest first, from component labels (H, W) (see
    :func:`label_components`).

    Components are merged when close and still object-sized together (a
    metal sheen can cut a thin part off), split in two when wider than one
    object can be (touching objects), and dropped when tiny (noise).
    """
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    order = np.argsort(-sizes, kind="stable")[: config.max_parts]
    keep = [ids[i] for i in order if sizes[i] >= config.min_part]
    parts = _merge_close([labels == i for i in keep], config.merge_gap, config.merge_extent)
    objects = []
    for part in parts:
        if _extent(part) > config.split_above:
            ys, xs = np.nonzero(part)
            halves = _two_means(np.stack([xs, ys], 1))
            for h in (0, 1):
                half = np.zeros_like(part)
                half[ys[halves == h], xs[halves == h]] = True
                objects.append(half)
        else:
            objects.append(part)
    return sorted((m for m in objects if m.sum() >= config.min_pixels), key=lambda m: -m.sum())


def segment(images: torch.Tensor, config: SegmentConfig = SegmentConfig()) -> list[list[np.ndarray]]:
    """Object masks of each image of a batch (N, 3, H, W) in [0, 1] (see module docstring)."""
    background = background_colour(images)
    labels = label_components(foreground(images, background, config.threshold)).cpu().numpy()
    return [components(lab, config) for lab in labels]


# --------------------------------------------------------------------------- crops


def crop_objects(images: torch.Tensor, masks: torch.Tensor, image_index: torch.Tensor,
                 background: torch.Tensor) -> torch.Tensor:
    """Network inputs (k, 4, 40, 40) for k objects.

    ``images``: (N, 3, H, W) in [0, 1]; ``masks``: (k, H, W) bool, object
    ``i`` in image ``image_index[i]``; ``background``: (N, 3). Each window is
    centred on the object's bounding box; pixels outside the mask dilated by
    one pixel are painted with the background colour; channel 3 is the mask.
    """
    k, h, w = masks.shape
    if k == 0:
        return images.new_zeros(0, 4, CROP, CROP)
    dilated = F.max_pool2d(masks[:, None].float(), 3, 1, 1)[:, 0] > 0
    bg = background[image_index].view(k, 3, 1, 1)
    objs = torch.where(dilated[:, None], images[image_index], bg)
    layers = torch.cat([objs - bg, masks[:, None].float()], 1)  # zero outside the object
    rows_any, cols_any = masks.any(2), masks.any(1)
    ar_h, ar_w = torch.arange(h, device=masks.device), torch.arange(w, device=masks.device)
    y0 = torch.where(rows_any, ar_h, h).min(1).values
    y1 = torch.where(rows_any, ar_h, -1).max(1).values
    x0 = torch.where(cols_any, ar_w, w).min(1).values
    x1 = torch.where(cols_any, ar_w, -1).max(1).values
    cy, cx = (y0 + y1 + 1) // 2, (x0 + x1 + 1) // 2
    padded = F.pad(layers, (CROP // 2, CROP // 2, CROP // 2, CROP // 2))
    offs = torch.arange(CROP, device=masks.device)
    rows = (cy[:, None] + offs[None])[:, :, None]  # (k, CROP, 1), in padded coordinates
    cols = (cx[:, None] + offs[None])[:, None, :]  # (k, 1, CROP)
    idx = torch.arange(k, device=masks.device)[:, None, None]
    crops = padded.permute(0, 2, 3, 1)[idx, rows, cols]  # (k, CROP, CROP, 4)
    return crops.permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------- network


class OracleNet(nn.Module):
    """CNN on (k, 4, 40, 40) crops → logits per field, ``{field: (k, len(FIELDS[field]))}``."""

    def __init__(self, width: int = 32):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.width = width
        self.features = nn.Sequential(
            block(4, width), nn.MaxPool2d(2),  # 20×20
            block(width, 2 * width), nn.MaxPool2d(2),  # 10×10
            block(2 * width, 4 * width), nn.MaxPool2d(2),  # 5×5
            nn.Flatten(), nn.Linear(4 * width * 25, 8 * width), nn.ReLU(inplace=True), nn.Dropout(0.1),
        )
        self.heads = nn.ModuleDict({f: nn.Linear(8 * width, len(v)) for f, v in FIELDS.items()})

    def forward(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(crops)
        return {f: head(h) for f, head in self.heads.items()}


# --------------------------------------------------------------------------- the judge


@dataclass(frozen=True)
class Detection:
    """One object the oracle found.

    ``mask``: (H, W) bool; ``bbox``: (x0, y0, x1, y1), exclusive ends;
    ``probs[field][label]``: probability of each label, for fields ``cls``,
    ``colour``, ``material``, ``size``.
    """

    cls: str
    colour: str
    material: str
    size: str
    bbox: tuple[int, int, int, int]
    mask: np.ndarray
    probs: dict[str, dict[str, float]]

    @property
    def superclass(self) -> str:
        return SUPERCLASS_OF[self.cls]

    def noun_prob(self, noun: str) -> float:
        """Probability that this object is a ``noun`` (a class or a superclass word)."""
        members = HIERARCHY.get(noun, (noun,))
        return float(sum(self.probs["cls"].get(c, 0.0) for c in members))


def as_image_tensor(images: Sequence[ImageLike | torch.Tensor] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Images as float32 (N, 3, H, W) in [0, 1], from PIL images, uint8 or float arrays (H, W, 3)
    (or one array (N, H, W, 3)), tensors (3, H, W), or a tensor (N, 3, H, W) in [0, 1]."""
    if isinstance(images, torch.Tensor):
        return images.detach().float().cpu()
    if len(images) and all(isinstance(im, torch.Tensor) for im in images):
        return torch.stack([im.detach().float().cpu() for im in images])
    arrays = [np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im) for im in images]
    arrays = [a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32) for a in arrays]
    if not arrays:
        return torch.zeros(0, 3, 64, 64)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


_EXISTS = re.compile(r"^is there (?:a|an) (\w+) in the (?:image|picture)\??$")
_ATTRIBUTE = re.compile(r"^is the (\w+) (\w+)\??$")
_ATTRIBUTE_FIELD = {**{w: "size" for w in SIZES}, **{w: "colour" for w in COLOUR_NAMES},
                    **{w: "material" for w in MATERIALS}}


class ToyOracle:
    """Segmenter + :class:`OracleNet`; a :class:`~attnscope.judges.base.Judge`."""

    name = "toy-oracle"

    def __init__(self, net: OracleNet, segment_config: SegmentConfig = SegmentConfig(),
                 device: str | torch.device = "cpu", meta: dict | None = None):
        self.net = net.to(device).eval()
        self.segment_config = segment_config
        self.device = torch.device(device)
        self.meta = meta or {}

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> "ToyOracle":
        """Load weights (``.safetensors``) and the ``.json`` beside them; default: the shipped oracle."""
        path = Path(path) if path is not None else default_oracle_path()
        if not path.exists():
            raise FileNotFoundError(f"no oracle weights at {path}; train them with "
                                    "python -m attnscope.judges.train_toy_oracle")
        meta = json.loads(path.with_suffix(".json").read_text())
        net = OracleNet(meta["width"])
        net.load_state_dict({k: v.float() for k, v in load_file(path).items()})
        return cls(net, SegmentConfig(**meta.get("segment", {})), device, meta)

    def save(self, path: str | Path, meta: dict | None = None) -> None:
        """Write fp16 weights to ``path`` and config + ``meta`` to ``path`` with suffix ``.json``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu", torch.float16 if v.is_floating_point() else v.dtype).contiguous()
                 for k, v in self.net.state_dict().items()}
        save_file(state, path)
        self.meta = {"width": self.net.width, "segment": vars(self.segment_config), **(meta or {})}
        path.with_suffix(".json").write_text(json.dumps(self.meta, indent=1))

    @torch.no_grad()
    def classify(self, images: torch.Tensor, masks: list[list[np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Per image, per field, probabilities (objects, labels) of the given object masks.

        ``images``: (N, 3, H, W) in [0, 1]; ``masks[i]``: object masks (H, W) of image i.
        """
        flat = [m for ms in masks for m in ms]
        if not flat:
            return [{f: np.zeros((0, len(v))) for f, v in FIELDS.items()} for _ in masks]
        images = images.to(self.device)
        index = torch.tensor([i for i, ms in enumerate(masks) for _ in ms], device=self.device)
        object_masks = torch.from_numpy(np.stack(flat)).to(self.device)
        crops = crop_objects(images, object_masks, index, background_colour(images))
        probs = {f: l.float().softmax(-1).cpu().numpy() for f, l in self.net(crops).items()}
        out, start = [], 0
        for ms in masks:
            out.append({f: p[start:start + len(ms)] for f, p in probs.items()})
            start += len(ms)
        return out

    def describe(self, images: Sequence[ImageLike] | np.ndarray | torch.Tensor) -> list[list[Detection]]:
        """The objects in each image, largest first."""
        tensor = as_image_tensor(images)
        masks = segment(tensor, self.segment_config)
        results = []
        for ms, probs in zip(masks, self.classify(tensor, masks)):
            detections = []
            for j, m in enumerate(ms):
                ys, xs = np.nonzero(m)
                p = {f: dict(zip(FIELDS[f], map(float, probs[f][j]))) for f in FIELDS}
                best = {f: max(p[f], key=p[f].get) for f in FIELDS}
                detections.append(Detection(best["cls"], best["colour"], best["material"], best["size"],
                                            (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                                            m, p))
            results.append(detections)
        return results

    def answer(self, images: Sequence[ImageLike], questions: Sequence[str]) -> list[Answer]:
        """Answer ``questions[i]`` about ``images[i]`` (see module docstring for the forms).

        An image object passed several times (several questions about one
        image) is described once.
        """
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images for {len(questions)} questions")
        distinct = {id(image): image for image in images}  # keeps each object alive, so ids stay unique
        position = {key: i for i, key in enumerate(distinct)}
        detections = self.describe(list(distinct.values()))
        return [_judge(detections[position[id(image)]], q) for image, q in zip(images, questions)]


def _check_noun(noun: str, question: str) -> None:
    if noun not in CLASSES and noun not in HIERARCHY:
        raise ValueError(f"unknown noun {noun!r} in {question!r}")


def _judge(detections: list[Detection], question: str) -> Answer:
    q = question.strip().lower()
    if m := _EXISTS.match(q):
        noun = m.group(1)
        _check_noun(noun, question)
        score = max((d.noun_prob(noun) for d in detections), default=0.0)
        return Answer(score >= 0.5, score)
    if m := _ATTRIBUTE.match(q):
        noun, word = m.groups()
        _check_noun(noun, question)
        if word not in _ATTRIBUTE_FIELD:
            raise ValueError(f"unknown attribute {word!r} in {question!r}")
        subject = max(detections, key=lambda d: d.noun_prob(noun), default=None)
        if subject is None or subject.noun_prob(noun) < 0.5:
            return Answer(False, 0.0)  # no such object, so it is not {word}
        score = subject.probs[_ATTRIBUTE_FIELD[word]][word]
        return Answer(score >= 0.5, score)
    raise ValueError(f"the toy oracle cannot parse {question!r}")
