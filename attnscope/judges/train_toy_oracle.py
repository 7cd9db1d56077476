"""Train the toy world's oracle on renders made to look like model samples.

    python -m attnscope.judges.train_toy_oracle --out attnscope/assets/oracle.safetensors

Batches are rendered on the fly (on the GPU when there is one) and degraded
like diffusion samples: per-channel gain and background tint, blur, pixel
noise and blotchy low-frequency noise. Each object's training mask is the
foreground rule of :func:`~attnscope.judges.toy_oracle.segment`, cut to
the object's (dilated) true mask, so training crops look like inference crops.
At the end the oracle is scored on held-out renders, clean and degraded,
through the full ``describe`` path (segmentation included), and the
accuracies go into the ``.json`` beside the weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attnscope.datasets.toy_vocabulary import CLASSES, COLOUR_NAMES, MATERIALS, SIZES, Scene
from attnscope.datasets.toyworld import render, sample_scenes
from attnscope.judges.toy_oracle import (
    FIELDS,
    OracleNet,
    SegmentConfig,
    ToyOracle,
    background_colour,
    crop_objects,
    foreground,
)

HELD_OUT_SEED = 1_000_003


def degrade(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Make renders (N, 3, H, W) in [0, 1] look like samples: gain, tint, blur, noise."""
    n, _, h, w = images.shape
    dev = images.device

    def u(*shape, lo=0.0, hi=1.0):
        return lo + (hi - lo) * torch.rand(*shape, generator=generator, device=dev)

    images = images * u(n, 3, 1, 1, lo=0.93, hi=1.07) + u(n, 3, 1, 1, lo=-0.04, hi=0.04)
    sigma = u(n, lo=0.05, hi=0.9) * (u(n) < 0.6)
    x = torch.arange(-2, 3, device=dev, dtype=torch.float32)
    k1 = torch.exp(-(x[None] ** 2) / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)  # (n, 5)
    kernel = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(3, 0)[:, None]  # (3n, 1, 5, 5)
    images = F.conv2d(F.pad(images.reshape(1, 3 * n, h, w), (2, 2, 2, 2), mode="replicate"), kernel, groups=3 * n)
    images = images.view(n, 3, h, w)
    blotches = F.interpolate(torch.randn(n, 3, 8, 8, generator=generator, device=dev), size=(h, w), mode="bilinear")
    images = images + blotches * u(n, 1, 1, 1, hi=0.03)
    images = images + torch.randn(images.shape, generator=generator, device=dev) * u(n, 1, 1, 1, hi=0.06)
    return images.clamp(0, 1)


def _labels(scenes: list[Scene]) -> dict[str, np.ndarray]:
    """Per field, label indices (N, 2) of the scenes' object slots (-1 when empty)."""
    out = {f: np.full((len(scenes), 2), -1, np.int64) for f in FIELDS}
    for i, s in enumerate(scenes):
        for j, o in enumerate(s.objects):
            out["cls"][i, j] = CLASSES.index(o.cls)
            out["colour"][i, j] = COLOUR_NAMES.index(o.colour)
            out["material"][i, j] = MATERIALS.index(o.material)
            out["size"][i, j] = SIZES.index(o.size)
    return out


def make_batch(n: int, rng: np.random.Generator, generator: torch.Generator, device: torch.device,
               segment: SegmentConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Crops (k, 4, 40, 40) of the objects of ``n`` degraded scenes and their labels (k,) per field."""
    scenes = sample_scenes(n, rng, p_two=0.5)
    images, masks = render(scenes, device=device)
    images = degrade(images, generator)
    background = background_colour(images)  # (n, 3)
    fg = foreground(images, background, segment.threshold)  # (n, H, W)
    near = F.max_pool2d(masks.float(), 3, 1, 1) > 0  # (n, 2, H, W)
    present = masks.flatten(2).any(-1)
    image_index, slot = torch.nonzero(present, as_tuple=True)
    object_masks = near[image_index, slot] & fg[image_index]
    crops = crop_objects(images, object_masks, image_index, background)
    labels = {f: torch.from_numpy(v).to(device)[image_index, slot] for f, v in _labels(scenes).items()}
    return crops, labels


def train_oracle(steps: int = 3000, batch: int = 256, width: int = 32, lr: float = 2e-3, seed: int = 0,
                 minutes: float = 10.0, device: str | torch.device | None = None, log_every: int = 100) -> ToyOracle:
    """Train an oracle for ``steps`` steps (or until ``minutes`` pass) and return it."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    segment = SegmentConfig()
    net = OracleNet(width).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.05)
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    start = time.time()
    net.train()
    for step in range(1, steps + 1):
        crops, labels = make_batch(batch, rng, generator, device, segment)
        with autocast:
            logits = net(crops)
        loss = sum(F.cross_entropy(logits[f].float(), labels[f]) for f in FIELDS)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == steps:
            acc = {f: round((logits[f].argmax(-1) == labels[f]).float().mean().item(), 4) for f in FIELDS}
            print(f"step {step} loss {loss.item():.4f} train acc {acc} {time.time() - start:.0f}s", flush=True)
        if time.time() - start > minutes * 60:
            print(f"time budget reached at step {step}", flush=True)
            break
    return ToyOracle(net.cpu(), segment, "cpu")


def match(detections, masks: np.ndarray, min_iou: float = 0.3) -> list[int | None]:
    """For each true mask (k, H, W), the index of the detection overlapping it best (IoU ≥ ``min_iou``)."""
    out = []
    for m in masks:
        ious = [(d.mask & m).sum() / max((d.mask | m).sum(), 1) for d in detections]
        best = int(np.argmax(ious)) if ious else None
        out.append(best if best is not None and ious[best] >= min_iou else None)
    return out


def evaluate_oracle(oracle: ToyOracle, n: int = 1000, seed: int = HELD_OUT_SEED, degraded: bool = False,
                    batch: int = 250) -> dict[str, float]:
    """Accuracy per field over the objects of ``n`` held-out scenes (a missed object counts as wrong),
    plus ``detected`` (share of objects found) and ``spurious`` (extra detections per image)."""
    scenes = sample_scenes(n, seed, p_two=0.5)
    generator = torch.Generator().manual_seed(seed)
    correct = {f: 0 for f in FIELDS}
    found = total = extra = 0
    for b in range(0, n, batch):
        chunk = scenes[b:b + batch]
        images, masks = render(chunk)
        if degraded:
            images = degrade(images, generator)
        detections = oracle.describe(images)
        for scene, dets, m in zip(chunk, detections, masks.numpy()):
            matched = match(dets, m[: len(scene.objects)])
            extra += len(dets) - len({j for j in matched if j is not None})
            for obj, j in zip(scene.objects, matched):
                total += 1
                if j is None:
                    continue
                found += 1
                for f in FIELDS:
                    correct[f] += getattr(dets[j], f) == getattr(obj, f)
    return {**{f: correct[f] / total for f in FIELDS}, "detected": found / total, "spurious": extra / n}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="attnscope/assets/oracle.safetensors")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=256, help="scenes per step (~1.5 objects each)")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=2.0, help="stop training after this long")
    p.add_argument("--eval-scenes", type=int, default=1000)
    p.add_argument("--device")
    args = p.parse_args(argv)
    start = time.time()
    oracle = train_oracle(args.steps, args.batch, args.width, args.lr, args.seed, args.minutes, args.device)
    train_seconds = time.time() - start
    held_out = {
        "clean": evaluate_oracle(oracle, args.eval_scenes),
        "degraded": evaluate_oracle(oracle, args.eval_scenes, degraded=True),
    }
    for name, acc in held_out.items():
        print(f"held-out {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()), flush=True)
    oracle.save(args.out, {"held_out": held_out, "train_seconds": round(train_seconds, 1), "args": vars(args)})
    print(f"saved {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
