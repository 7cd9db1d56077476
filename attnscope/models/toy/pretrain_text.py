"""Pre-train the toy text encoder CLIP-style, to be frozen while the UNet trains.

    python -m attnscope.models.toy.pretrain_text --out runs/text --seconds 90

Stable Diffusion keeps its CLIP text encoder frozen; a toy encoder trained
jointly with the UNet learned to pack every attribute into the noun and
padding tokens, so attribute words stopped attending to their objects
(``benchmarks/results/toy_model.md``). This module gives the toy model an
encoder trained the way CLIP's was: a contrastive loss between the caption's
end-token embedding (``CLIPTextModel``'s pooled output, projected) and an
image embedding from a small CNN on rendered scenes, symmetric InfoNCE with a
learned temperature, in-batch negatives.

It writes ``text_encoder.safetensors`` (fp16, the ``CLIPTextModel`` weights)
and ``text_pretrain.json`` (settings, steps, last in-batch top-1 accuracy of
caption → image) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from attnscope.datasets.toyworld import render, sample_scenes
from attnscope.models.toy.pipeline import ToyModelConfig, build_text_encoder
from attnscope.models.toy.tokenizer import build_tokenizer


class ImageTower(nn.Module):
    """Small CNN: images (B, 3, 64, 64) in [0, 1] → unit embeddings (B, dim)."""

    def __init__(self, dim: int, width: int = 64):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())

        self.features = nn.Sequential(
            block(3, width), nn.AvgPool2d(2),  # 32
            block(width, 2 * width), nn.AvgPool2d(2),  # 16
            block(2 * width, 4 * width), nn.AvgPool2d(2),  # 8
            block(4 * width, 4 * width),
        )
        self.head = nn.Linear(4 * width * 2, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f = self.features(images * 2 - 1)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return F.normalize(self.head(pooled), dim=-1)


class ContrastiveModel(nn.Module):
    """Text encoder + projection and image tower, with CLIP's learned logit scale."""

    def __init__(self, config: ToyModelConfig):
        super().__init__()
        self.tokenizer = build_tokenizer()
        self.text_encoder = build_text_encoder(config, self.tokenizer)
        self.text_projection = nn.Linear(config.text_hidden, config.text_hidden, bias=False)
        self.image_tower = ImageTower(config.text_hidden)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def text_embeds(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, 16) → unit caption embeddings (B, dim) from the end token."""
        pooled = self.text_encoder(ids).pooler_output
        return F.normalize(self.text_projection(pooled), dim=-1)

    def loss(self, ids: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Symmetric InfoNCE loss and caption → image top-1 accuracy of one batch."""
        logits = self.logit_scale.exp().clamp(max=100) * self.text_embeds(ids) @ self.image_tower(images).T
        labels = torch.arange(len(ids), device=ids.device)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        return loss, (logits.argmax(dim=1) == labels).float().mean()


def pretrain(out: Path, seconds: float, batch: int = 1024, lr: float = 1e-3, seed: int = 0,
             config: ToyModelConfig | None = None, device: str | None = None, log_every: int = 50) -> dict:
    """Train for ``seconds`` of wall time and write the encoder into ``out``; returns the summary."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = config or ToyModelConfig()
    torch.manual_seed(seed)
    model = ContrastiveModel(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    start, step = time.time(), 0
    while step == 0 or time.time() - start < seconds:  # at least one step
        scenes = sample_scenes(batch, rng)
        ids = model.tokenizer([s.caption for s in scenes], padding="max_length",
                              max_length=model.tokenizer.model_max_length, return_tensors="pt").input_ids.to(device)
        images, _ = render(scenes, device=device)
        progress = (time.time() - start) / seconds if seconds > 0 else 1.0
        for group in optimizer.param_groups:  # warm-up, then cosine decay over the budget
            group["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        with autocast:
            loss, acc = model.loss(ids, images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % log_every == 0:
            print(json.dumps({"step": step, "loss": round(loss.item(), 4), "top1": round(acc.item(), 3),
                              "elapsed_s": round(time.time() - start, 1)}), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.text_encoder.state_dict().items()}
    save_file(weights, out / "text_encoder.safetensors")
    summary = {"steps": step, "batch": batch, "lr": lr, "seconds": round(time.time() - start, 1),
               "top1": round(acc.item(), 3), "loss": round(loss.item(), 4), "seed": seed}
    (out / "text_pretrain.json").write_text(json.dumps(summary, indent=1))
    return summary


def load_text_encoder(text_encoder: nn.Module, path: Path) -> None:
    """Load pre-trained weights (``text_encoder.safetensors``) into a ``CLIPTextModel``."""
    state = {k: v.float() for k, v in load_file(path).items()}
    text_encoder.load_state_dict(state, strict=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder to write text_encoder.safetensors into")
    p.add_argument("--seconds", type=float, default=90.0, help="wall-clock training budget")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="tiny architecture, for smoke tests")
    args = p.parse_args(argv)
    config = ToyModelConfig.tiny() if args.tiny else ToyModelConfig()
    summary = pretrain(Path(args.out), args.seconds, args.batch, args.lr, args.seed, config)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
