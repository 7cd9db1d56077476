"""The toy world: a procedurally rendered world with exact ground truth.

Objects come from a superclass → class hierarchy (:data:`HIERARCHY`; the words and the caption
grammar are :mod:`attnscope.datasets.toy_vocabulary`'s); each has
a size, a colour and a material. A scene holds one or two objects on a plain,
light, uniform background, and a caption that names some of their attributes:

    "a small red wooden car", "a red car", "a car", "a vehicle",
    "a small red wooden car and a blue bird"

Attributes a caption does not name are still drawn at random, so a model
trained on these captions must learn which words bind to what.

Rendering is vectorised in torch and runs on CPU or GPU::

    scenes = sample_scenes(8, seed=0)
    images, masks = render(scenes, device="cuda")  # (8,3,64,64) in [0,1], (8,2,64,64) bool

Every silhouette lives in an object-local frame ``(u, v) ∈ [-1, 1]²`` (``v``
points down, like image rows) that is scaled by the object's half-size ``s``
pixels and mirrored horizontally at random. Sizes: small objects span
16–20 px, large ones 26–30 px, so two large objects still fit side by side.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from attnscope.datasets.toy_vocabulary import (  # the words of a scene; re-exported with the renderer
    ATTRIBUTES,
    CLASSES,
    COLOUR_NAMES,
    COLOURS,
    HIERARCHY,
    MATERIALS,
    SIZES,
    SUPERCLASS_OF,
    Scene,
    ToyObject,
    caption_for,
    parse_caption,
    word_kind,
    word_objects,
)

IMAGE_SIZE = 64
MAX_OBJECTS = 2

BACKGROUND: tuple[float, float, float] = (0.92, 0.92, 0.90)

HALF_SIZE_RANGE: dict[str, tuple[float, float]] = {"small": (8.0, 10.0), "large": (13.0, 15.0)}
_MARGIN = 1.0  # px between an object's box and the image border
_GAP = 2.0  # px between the boxes of two objects
_DETAIL_SHADE = 0.55  # brightness of wheels, windows, toppings... relative to the body


# --------------------------------------------------------------------------- sampling


def _sample_named(rng: np.random.Generator, n: int, p_attr: float, p_superclass: float) -> list[tuple[str, ...]]:
    """Per object, which fields its phrase names (see :class:`Scene`)."""
    noun = np.where(rng.random(n) < p_superclass, "superclass", "class")
    attr_named = rng.random((n, len(ATTRIBUTES))) < p_attr
    # superclass phrases name fewer attributes, so "a vehicle" is common
    attr_named &= (noun == "class")[:, None] | (rng.random((n, 1)) < 0.3)
    return [tuple(a for a, k in zip(ATTRIBUTES, row) if k) + (nn,) for row, nn in zip(attr_named, noun)]


def _layout(rng: np.random.Generator, half: np.ndarray, two: np.ndarray) -> np.ndarray:
    """Object centres (n, 2, 2) in pixels, boxes inside the image and disjoint.

    ``half``: (n, 2) half-sizes. For two-object scenes the pair is laid out
    along a random axis: the slack along it is split at random between the
    margins and the gap, so any layout that fits can occur.
    """
    n = len(half)
    lo, hi = _MARGIN + half, IMAGE_SIZE - _MARGIN - half  # (n, 2) allowed centre range
    centres = lo[:, :, None] + rng.random((n, 2, 2)) * (hi - lo)[:, :, None]  # free placement
    axis = rng.integers(0, 2, n)
    first = rng.integers(0, 2, n)  # which object comes first along the axis
    h0 = half[np.arange(n), first]
    h1 = half[np.arange(n), 1 - first]
    slack = IMAGE_SIZE - 2 * _MARGIN - _GAP - 2 * (h0 + h1)
    assert (slack >= 0).all(), "two objects must always fit side by side"
    t0 = rng.random(n) * slack
    t1 = rng.random(n) * (slack - t0)
    c0 = _MARGIN + t0 + h0
    c1 = c0 + h0 + _GAP + t1 + h1
    rows = np.nonzero(two)[0]
    centres[rows, first[rows], axis[rows]] = c0[rows]
    centres[rows, 1 - first[rows], axis[rows]] = c1[rows]
    return centres


def sample_scenes(
    n: int,
    seed: int | np.random.Generator,
    p_two: float = 0.4,
    p_attr: float = 0.6,
    p_superclass: float = 0.12,
) -> list[Scene]:
    """Draw ``n`` random scenes; the same ``seed`` gives the same scenes.

    ``p_two``: probability of a two-object scene (its two objects have
    different classes). ``p_attr``: probability that the caption names each
    attribute. ``p_superclass``: probability that a phrase uses the
    superclass word ("a vehicle") instead of the class.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    two = rng.random(n) < p_two
    cls = rng.integers(0, len(CLASSES), (n, 2))
    cls[:, 1] = (cls[:, 0] + rng.integers(1, len(CLASSES), n)) % len(CLASSES)  # distinct classes
    colour = rng.integers(0, len(COLOURS), (n, 2))
    material = rng.integers(0, len(MATERIALS), (n, 2))
    size = rng.integers(0, len(SIZES), (n, 2))
    lo = np.array([HALF_SIZE_RANGE[s][0] for s in SIZES])[size]
    hi = np.array([HALF_SIZE_RANGE[s][1] for s in SIZES])[size]
    half = lo + rng.random((n, 2)) * (hi - lo)
    centres = _layout(rng, half, two)
    flip = rng.random((n, 2)) < 0.5
    named = _sample_named(rng, 2 * n, p_attr, p_superclass)

    scenes = []
    for i in range(n):
        k = 2 if two[i] else 1
        objects = tuple(
            ToyObject(CLASSES[cls[i, j]], COLOUR_NAMES[colour[i, j]], MATERIALS[material[i, j]], SIZES[size[i, j]])
            for j in range(k)
        )
        positions = tuple(
            (float(centres[i, j, 0]), float(centres[i, j, 1]), float(half[i, j]), bool(flip[i, j])) for j in range(k)
        )
        obj_named = tuple(named[2 * i : 2 * i + k])
        scenes.append(Scene(objects, positions, caption_for(objects, obj_named), obj_named))
    return scenes


# --------------------------------------------------------------------------- silhouettes
# Each function maps local coordinates u, v (tensors of one shape) to
# (body, detail) bool masks; detail pixels are drawn darker (wheels, windows...).

Shape = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _box(u, v, u0, u1, v0, v1):
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def _ellipse(u, v, cu, cv, ru, rv):
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def _disc(u, v, cu, cv, r):
    return _ellipse(u, v, cu, cv, r, r)


def _segment(u, v, a, b, width):
    """Pixels within ``width`` of the segment from point ``a`` to point ``b``."""
    (au, av), (bu, bv) = a, b
    du, dv = bu - au, bv - av
    t = (((u - au) * du + (v - av) * dv) / (du * du + dv * dv)).clamp(0, 1)
    return (u - au - t * du) ** 2 + (v - av - t * dv) ** 2 <= width * width


def _triangle(u, v, p0, p1, p2):
    def side(a, b):
        return (b[0] - a[0]) * (v - a[1]) - (b[1] - a[1]) * (u - a[0])

    s0, s1, s2 = side(p0, p1), side(p1, p2), side(p2, p0)
    return ((s0 >= 0) & (s1 >= 0) & (s2 >= 0)) | ((s0 <= 0) & (s1 <= 0) & (s2 <= 0))


def _car(u, v):
    body = _box(u, v, -1.0, 1.0, -0.1, 0.42) | _box(u, v, -0.5, 0.4, -0.55, -0.1)
    wheels = _disc(u, v, -0.55, 0.45, 0.27) | _disc(u, v, 0.55, 0.45, 0.27)
    window = _box(u, v, -0.38, 0.28, -0.45, -0.18)
    return body | wheels, wheels | window


def _bus(u, v):
    body = _box(u, v, -1.0, 1.0, -0.62, 0.45)
    wheels = _disc(u, v, -0.6, 0.5, 0.2) | _disc(u, v, 0.6, 0.5, 0.2)
    windows = _box(u, v, -0.9, 0.9, -0.45, -0.12) & (torch.remainder(u + 0.9, 0.45) < 0.32)
    return body | wheels, wheels | windows


def _bicycle(u, v):
    def ring(cu):
        d2 = (u - cu) ** 2 + (v - 0.3) ** 2
        return (d2 <= 0.42**2) & (d2 >= 0.27**2)

    frame = (
        _segment(u, v, (-0.6, 0.3), (-0.05, 0.3), 0.08)
        | _segment(u, v, (-0.05, 0.3), (0.45, -0.3), 0.08)
        | _segment(u, v, (-0.6, 0.3), (-0.25, -0.3), 0.08)
        | _segment(u, v, (-0.25, -0.3), (0.45, -0.3), 0.08)
        | _segment(u, v, (0.45, -0.3), (0.6, 0.3), 0.08)
        | _box(u, v, -0.42, -0.1, -0.42, -0.3)  # saddle
        | _segment(u, v, (0.45, -0.3), (0.42, -0.55), 0.07)  # handlebar
    )
    wheels = ring(-0.6) | ring(0.6)
    return frame | wheels, wheels


def _bird(u, v):
    body = _ellipse(u, v, -0.1, 0.1, 0.55, 0.36)
    head = _disc(u, v, 0.5, -0.3, 0.24)
    beak = _triangle(u, v, (0.7, -0.38), (1.0, -0.3), (0.7, -0.22))
    tail = _triangle(u, v, (-0.55, 0.05), (-1.0, -0.25), (-0.95, 0.25))
    wing = _ellipse(u, v, -0.15, 0.02, 0.35, 0.16)
    legs = _segment(u, v, (-0.1, 0.4), (-0.15, 0.75), 0.06) | _segment(u, v, (0.1, 0.4), (0.12, 0.75), 0.06)
    eye = _disc(u, v, 0.56, -0.35, 0.07)
    return body | head | beak | tail | legs, wing | beak | eye | legs


def _cat(u, v):
    body = _ellipse(u, v, 0.0, 0.4, 0.5, 0.58)
    head = _disc(u, v, 0.0, -0.42, 0.36)
    ears = _triangle(u, v, (-0.34, -0.55), (-0.3, -1.0), (-0.06, -0.72)) | _triangle(
        u, v, (0.34, -0.55), (0.3, -1.0), (0.06, -0.72)
    )
    tail = _segment(u, v, (0.4, 0.85), (0.85, 0.6), 0.09) | _segment(u, v, (0.85, 0.6), (0.88, 0.15), 0.09)
    eyes = _disc(u, v, -0.14, -0.46, 0.07) | _disc(u, v, 0.14, -0.46, 0.07)
    return body | head | ears | tail, eyes


def _dog(u, v):
    body = _ellipse(u, v, -0.15, 0.0, 0.6, 0.3)
    head = _ellipse(u, v, 0.6, -0.35, 0.28, 0.24)
    snout = _box(u, v, 0.7, 1.0, -0.35, -0.15)
    ear = _ellipse(u, v, 0.45, -0.25, 0.1, 0.24)
    legs = (
        _box(u, v, -0.65, -0.5, 0.1, 0.7)
        | _box(u, v, -0.4, -0.25, 0.1, 0.7)
        | _box(u, v, 0.05, 0.2, 0.1, 0.7)
        | _box(u, v, 0.28, 0.43, 0.1, 0.7)
    )
    tail = _segment(u, v, (-0.7, -0.1), (-1.0, -0.5), 0.08)
    nose = _disc(u, v, 0.98, -0.3, 0.07)
    return body | head | snout | ear | legs | tail, ear | nose


def _bench(u, v):
    seat = _box(u, v, -1.0, 1.0, 0.0, 0.16)
    backs = _box(u, v, -1.0, 1.0, -0.55, -0.4) | _box(u, v, -1.0, 1.0, -0.3, -0.15)
    posts = _box(u, v, -0.85, -0.72, -0.55, 0.0) | _box(u, v, 0.72, 0.85, -0.55, 0.0)
    legs = _box(u, v, -0.85, -0.72, 0.16, 0.55) | _box(u, v, 0.72, 0.85, 0.16, 0.55)
    return seat | backs | posts | legs, posts | legs


def _chair(u, v):
    back = _box(u, v, 0.28, 0.46, -1.0, 0.1)
    seat = _box(u, v, -0.46, 0.46, 0.0, 0.16)
    legs = _box(u, v, -0.46, -0.3, 0.16, 1.0) | _box(u, v, 0.3, 0.46, 0.16, 1.0)
    rail = _box(u, v, 0.28, 0.46, -0.8, -0.65) | _box(u, v, 0.28, 0.46, -0.5, -0.35)
    return back | seat | legs, legs | rail


def _couch(u, v):
    base = _box(u, v, -0.9, 0.9, 0.0, 0.42)
    back = _box(u, v, -0.75, 0.75, -0.5, 0.05)
    arms = _ellipse(u, v, -0.82, 0.05, 0.18, 0.4) | _ellipse(u, v, 0.82, 0.05, 0.18, 0.4)
    feet = _box(u, v, -0.8, -0.62, 0.42, 0.58) | _box(u, v, 0.62, 0.8, 0.42, 0.58)
    seam = _box(u, v, -0.75, 0.75, 0.02, 0.1) | _box(u, v, -0.04, 0.04, 0.0, 0.42)
    return base | back | arms | feet, feet | seam


def _pizza(u, v):
    slice_ = _triangle(u, v, (0.0, 0.9), (-0.75, -0.65), (0.75, -0.65))
    crust = _ellipse(u, v, 0.0, -0.65, 0.8, 0.25) & (v <= -0.5)
    toppings = _disc(u, v, -0.2, -0.3, 0.13) | _disc(u, v, 0.22, -0.2, 0.13) | _disc(u, v, 0.0, 0.25, 0.11)
    return slice_ | crust, crust | toppings


def _donut(u, v):
    d2 = u**2 + v**2
    ring = (d2 <= 0.9**2) & (d2 >= 0.36**2)
    angle = torch.atan2(v, u)
    sprinkles = ring & (torch.remainder(angle * 3.0, 1.6) < 0.35) & (d2 >= 0.55**2) & (d2 <= 0.75**2)
    return ring, sprinkles


def _cake(u, v):
    body = _box(u, v, -0.85, 0.85, -0.25, 0.75)
    frosting = _ellipse(u, v, 0.0, -0.25, 0.85, 0.15)
    drips = _box(u, v, -0.85, 0.85, -0.25, -0.05) | (
        _box(u, v, -0.85, 0.85, -0.05, 0.15) & (torch.remainder(u + 0.85, 0.42) < 0.2)
    )
    filling = _box(u, v, -0.85, 0.85, 0.28, 0.38)
    candle = _box(u, v, -0.06, 0.06, -0.75, -0.3)
    flame = _ellipse(u, v, 0.0, -0.87, 0.08, 0.13)
    return body | frosting | candle | flame, drips | filling | flame


SHAPES: dict[str, Shape] = {
    "car": _car,
    "bus": _bus,
    "bicycle": _bicycle,
    "bird": _bird,
    "cat": _cat,
    "dog": _dog,
    "bench": _bench,
    "chair": _chair,
    "couch": _couch,
    "pizza": _pizza,
    "donut": _donut,
    "cake": _cake,
}
assert set(SHAPES) == set(CLASSES)


# --------------------------------------------------------------------------- materials


def _shade_material(material: torch.Tensor, u: torch.Tensor, v: torch.Tensor, dy: torch.Tensor, phase: torch.Tensor):
    """Per-pixel (brightness, white-highlight) for each object, each (k, H, W).

    ``material``: (k,) material index; ``dy``: rows relative to the object
    centre in pixels, so wood grain has the same period at every size.
    """
    k = material.shape[0]
    wood = 0.62 + 0.38 * (0.5 + 0.5 * torch.sin(2 * math.pi * (dy + 1.2 * torch.sin(2.5 * u + phase)) / 4.0))
    gloss = torch.exp(-(((u + v) * 0.7 - 0.15) ** 2) / 0.03)
    metal = 0.5 + 0.3 * (1 - (u + v + 2) / 4)
    ones, zeros = torch.ones_like(u), torch.zeros_like(u)
    m = material.view(k, 1, 1)
    brightness = torch.where(m == 0, wood, torch.where(m == 1, metal, ones))
    highlight = torch.where(m == 1, 0.75 * gloss, zeros)
    return brightness, highlight


# --------------------------------------------------------------------------- rendering


def _pack(scenes: Sequence[Scene]) -> dict[str, np.ndarray]:
    """Struct of arrays for the scenes; slot 1 of one-object scenes has ``present`` False."""
    n = len(scenes)
    out = {
        "present": np.zeros((n, 2), bool),
        "cls": np.zeros((n, 2), np.int64),
        "colour": np.zeros((n, 2), np.int64),
        "material": np.zeros((n, 2), np.int64),
        "pos": np.zeros((n, 2, 4), np.float32),
    }
    for i, scene in enumerate(scenes):
        for j, (obj, pos) in enumerate(zip(scene.objects, scene.positions)):
            out["present"][i, j] = True
            out["cls"][i, j] = CLASSES.index(obj.cls)
            out["colour"][i, j] = COLOUR_NAMES.index(obj.colour)
            out["material"][i, j] = MATERIALS.index(obj.material)
            out["pos"][i, j] = pos
    return out


def render(scenes: Sequence[Scene], device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Render scenes to images and per-object masks.

    Returns ``images``: float32 (N, 3, 64, 64) in [0, 1], and ``masks``: bool
    (N, 2, 64, 64), ``masks[i, j]`` the pixels of object ``j`` (all False
    when scene ``i`` has no object ``j``). Deterministic: wood-grain phase is
    derived from the object's position.

    Objects are grouped by (slot, class) on the CPU and each group's
    parameters are sent to ``device`` as one small tensor, so rendering on a
    GPU never waits for it.
    """
    device = torch.device(device)
    n = len(scenes)
    packed = _pack(scenes)
    palette = np.array(list(COLOURS.values()), np.float32)
    background = torch.tensor(BACKGROUND, device=device).view(3, 1, 1)
    images = background.expand(n, 3, IMAGE_SIZE, IMAGE_SIZE).clone()
    masks = torch.zeros(n, MAX_OBJECTS, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool, device=device)
    coords = torch.arange(IMAGE_SIZE, device=device, dtype=torch.float32) + 0.5  # pixel centres

    for slot in range(MAX_OBJECTS):
        for c, name in enumerate(CLASSES):
            rows_np = np.nonzero(packed["present"][:, slot] & (packed["cls"][:, slot] == c))[0]
            if len(rows_np) == 0:
                continue
            params_np = np.concatenate(
                [
                    packed["pos"][rows_np, slot],  # cx, cy, s, flip
                    palette[packed["colour"][rows_np, slot]],  # r, g, b
                    packed["material"][rows_np, slot, None].astype(np.float32),
                ],
                axis=1,
            )
            rows = torch.from_numpy(rows_np).to(device, non_blocking=True)
            params = torch.from_numpy(params_np).to(device, non_blocking=True)
            cx, cy, s, flip = (params[:, i].view(-1, 1, 1) for i in range(4))
            base = params[:, 4:7].view(-1, 3, 1, 1)
            material = params[:, 7].round().long()
            dx = coords.view(1, 1, -1) - cx  # (k, 1, W)
            dy = coords.view(1, -1, 1) - cy  # (k, H, 1)
            u = (torch.where(flip > 0.5, -1.0, 1.0) * dx / s).expand(-1, IMAGE_SIZE, -1)
            v = (dy / s).expand(-1, -1, IMAGE_SIZE)
            body, detail = SHAPES[name](u, v)
            phase = torch.remainder(cx * 0.37 + cy * 0.91, 2 * math.pi)
            brightness, highlight = _shade_material(material, u, v, dy.expand_as(u), phase)
            brightness = brightness * torch.where(detail, _DETAIL_SHADE, 1.0)
            colour = (base * brightness.unsqueeze(1) + highlight.unsqueeze(1)).clamp(0, 1)
            images[rows] = torch.where(body.unsqueeze(1), colour, images[rows])
            masks[rows, slot] = body
    return images, masks


__all__ = [  # the renderer's names, and the vocabulary's (toy_vocabulary), so a scene's words come with it
    "ATTRIBUTES", "BACKGROUND", "CLASSES", "COLOURS", "COLOUR_NAMES", "HALF_SIZE_RANGE", "HIERARCHY", "IMAGE_SIZE",
    "MATERIALS", "MAX_OBJECTS", "SHAPES", "SIZES", "SUPERCLASS_OF", "Scene", "Shape", "ToyObject", "caption_for",
    "parse_caption", "render", "sample_scenes", "word_kind", "word_objects",
]
