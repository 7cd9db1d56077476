"""Train the toy-world pipeline on scenes rendered on the fly.

    python -m attnscope.models.toy.train --out runs/toy --minutes 8.5
    python -m attnscope.models.toy.train --out runs/toy2 --resume runs/toy --minutes 8.5
    python -m attnscope.models.toy.train --export runs/toy2 --to attnscope/assets/toy

Each step renders a fresh batch with :mod:`attnscope.datasets.toyworld` on the
training device, turns it into 12×32×32 "latents" (2×2 space-to-depth), and
trains the UNet — with a text encoder pre-trained by :mod:`.pretrain_text` and
frozen (``--text-encoder``), as Stable Diffusion does, or jointly with a random
one — on v-prediction over the cosine schedule,
min-SNR-γ weighting (floored at 1 so the noisiest steps, which decide the
layout, keep their weight), 10% empty prompts for classifier-free guidance,
bf16 autocast on CUDA, AdamW (LR warm-up, then linear from ``--lr`` to
``--lr-end`` over the call: decay it in the last call), an EMA of the weights.
``--ground W`` adds the token grounding loss of :mod:`.grounding` with weight W
(``--ground-coverage`` weighs its coverage term within it).

The run stops by itself ``--minutes`` after start-up (a safety margin
included) and writes into ``--out`` at most 7 files, each ≤ 15 MB:

- ``state-NNNNN.safetensors``: raw and EMA weights in fp16 (keys
  ``raw/…`` and ``ema/…``; with ``--save-ema-only`` the EMA alone, which a
  resumed run then also takes as its raw weights), sharded; the optimizer
  state is not saved, so a resumed run restarts Adam's moments (with a short
  LR warm-up again),
- ``state.json``: step, images seen, architecture, arguments,
- ``train_log.jsonl``: step, loss, images/s, elapsed seconds, every log interval,
- ``samples.png``: a grid of EMA samples for a quick look.

``--export RUN`` turns a run's EMA weights into an fp16 diffusers pipeline
folder (``--to``, default ``RUN/pipeline``); ``--export-pipeline`` does that
at the end of training too.
"""

from __future__ import annotations

import argparse
import json
import math
import queue
import shutil
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from attnscope.datasets.toy_vocabulary import Scene
from attnscope.datasets.toyworld import render, sample_scenes
from attnscope.models.toy.grounding import grounding_loss, set_grounding_processors, token_objects
from attnscope.models.toy.pretrain_text import load_text_encoder
from attnscope.models.toy.pipeline import (
    ToyModelConfig,
    ToyWorldPipeline,
    build_toy_pipeline,
    images_to_latents,
)

SHARD_BYTES = 15 * 10**6
SAFETY_SECONDS = 25.0  # kept free at the end for saving, sampling and exit (at most 1/4 of the budget)
SAMPLE_PROMPTS = (
    "a small red wooden car", "a large blue metal bus", "a green bicycle", "a yellow plastic bird",
    "a large purple cat", "an orange wooden dog", "a wooden bench", "a large metal chair",
    "a red plastic couch", "a pizza", "a small blue donut", "a large green wooden cake",
    "a vehicle", "an animal", "a wooden bench and a blue bird", "a red car and a yellow cat",
)


# --------------------------------------------------------------------------- data


class BatchStream:
    """Background thread that samples scenes and tokenizes their captions.

    ``next()`` returns ``(scenes, input_ids, objects)``: a list of ``batch``
    scenes, int64 token ids (batch, 16) with ``p_drop`` of the captions
    replaced by the empty prompt, and per token the object it names
    (:func:`~attnscope.models.toy.grounding.token_objects`, -1 for dropped
    captions). Rendering is left to the caller (it runs on the GPU).
    """

    def __init__(self, tokenizer, batch: int, seed: tuple[int, ...], p_drop: float = 0.1, depth: int = 4):
        self._tokenizer, self._batch, self._p_drop = tokenizer, batch, p_drop
        self._rng = np.random.default_rng(seed)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, daemon=True)
        self._thread.start()

    def _make(self) -> tuple[list[Scene], torch.Tensor, torch.Tensor]:
        scenes = sample_scenes(self._batch, self._rng)
        drop = self._rng.random(self._batch) < self._p_drop
        captions = ["" if d else s.caption for s, d in zip(scenes, drop)]
        ids = self._tokenizer(
            captions, padding="max_length", max_length=self._tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        ).input_ids
        return scenes, ids, token_objects(scenes, ids.shape[1], list(drop))

    def _fill(self) -> None:
        while not self._stop.is_set():
            item = self._make()
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.5)
                    break
                except queue.Full:
                    continue

    def next(self) -> tuple[list[Scene], torch.Tensor, torch.Tensor]:
        return self._queue.get()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------- loss


def diffusion_loss(
    unet, embeds: torch.Tensor, x0: torch.Tensor, alphas_cumprod: torch.Tensor,
    prediction_type: str, snr_gamma: float,
) -> torch.Tensor:
    """Weighted denoising loss of clean latents ``x0`` (B, 12, 32, 32) given text embeddings (B, 16, hidden).

    Weight per sample: ``clamp(snr, 1, γ) / (snr + 1)`` for v-prediction and
    ``min(snr, γ) / snr`` for ε-prediction (min-SNR-γ; γ ≤ 0 disables it).
    """
    b = x0.shape[0]
    t = torch.randint(0, len(alphas_cumprod), (b,), device=x0.device)
    a = alphas_cumprod[t].view(b, 1, 1, 1)
    noise = torch.randn_like(x0)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    target = a.sqrt() * noise - (1 - a).sqrt() * x0 if prediction_type == "v_prediction" else noise
    pred = unet(xt, t, encoder_hidden_states=embeds, return_dict=False)[0]
    mse = F.mse_loss(pred.float(), target, reduction="none").mean(dim=(1, 2, 3))
    if snr_gamma > 0:
        snr = (a / (1 - a)).flatten()
        if prediction_type == "v_prediction":
            weight = snr.clamp(1.0, snr_gamma) / (snr + 1)
        else:
            weight = snr.clamp(max=snr_gamma) / snr
        mse = mse * weight
    return mse.mean()


# --------------------------------------------------------------------------- EMA & state


class EMA:
    """Exponential moving average of a list of parameters, kept in float32."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params = params
        self.shadow = [p.detach().float().clone() for p in params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1 - decay)


def _named_params(pipe: ToyWorldPipeline) -> dict[str, torch.nn.Parameter]:
    """The trained parameters: the UNet's, and the text encoder's unless it is frozen."""
    return {
        **{f"unet.{k}": p for k, p in pipe.unet.named_parameters()},
        **{f"text_encoder.{k}": p for k, p in pipe.text_encoder.named_parameters() if p.requires_grad},
    }


def _module_states(pipe: ToyWorldPipeline) -> dict[str, torch.Tensor]:
    return {
        **{f"unet.{k}": v for k, v in pipe.unet.state_dict().items()},
        **{f"text_encoder.{k}": v for k, v in pipe.text_encoder.state_dict().items()},
    }


def save_state(out: Path, pipe: ToyWorldPipeline, ema: EMA, meta: dict, ema_only: bool = False) -> None:
    """Write raw + EMA weights (or the EMA alone) as fp16 shards ≤ 15 MB, and ``state.json``, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    raw = {k: v.detach() for k, v in _module_states(pipe).items()}
    ema_tensors = dict(raw)
    ema_tensors.update(zip(_named_params(pipe), ema.shadow))
    tensors = {f"ema/{k}": v for k, v in ema_tensors.items()}
    if not ema_only:
        tensors.update({f"raw/{k}": v for k, v in raw.items()})
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, value in tensors.items():
        value = value.to("cpu", torch.float16 if value.is_floating_point() else value.dtype).contiguous()
        nbytes = value.numel() * value.element_size()
        if size + nbytes > SHARD_BYTES and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][key] = value
        size += nbytes
    for old in out.glob("state-*.safetensors"):
        old.unlink()
    names = [f"state-{i:05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        save_file(shard, out / name)
    (out / "state.json").write_text(json.dumps({**meta, "shards": names}, indent=1))


def _config_from_json(d: dict) -> ToyModelConfig:
    return ToyModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def load_state(run: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Read a run: ``(meta, raw, ema)``, weights keyed ``unet.…`` / ``text_encoder.…``
    (``raw`` is the EMA when the run saved only that)."""
    meta = json.loads((run / "state.json").read_text())
    tensors: dict[str, torch.Tensor] = {}
    for name in meta["shards"]:
        tensors.update(load_file(run / name))
    raw = {k[4:]: v for k, v in tensors.items() if k.startswith("raw/")}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema/")}
    return meta, raw or ema, ema


def _load_into(pipe: ToyWorldPipeline, weights: dict[str, torch.Tensor]) -> None:
    for prefix, module in (("unet.", pipe.unet), ("text_encoder.", pipe.text_encoder)):
        sub = {k[len(prefix):]: v.float() for k, v in weights.items() if k.startswith(prefix)}
        module.load_state_dict(sub, strict=True)


def pipeline_from_run(run: Path, use_ema: bool = True) -> ToyWorldPipeline:
    """The float32 CPU pipeline of a run's EMA (or raw) weights."""
    meta, raw, ema = load_state(run)
    pipe = build_toy_pipeline(_config_from_json(meta["config"]))
    _load_into(pipe, ema if use_ema else raw)
    return pipe


def export(run: Path, to: Path) -> None:
    """Write a run's EMA weights as an fp16 diffusers pipeline folder ``to``."""
    pipe = pipeline_from_run(run).to(torch.float16)
    if to.exists():
        shutil.rmtree(to)
    pipe.save_pretrained(to, safe_serialization=True)
    print(f"exported {run} -> {to}", flush=True)


# --------------------------------------------------------------------------- sampling


def save_samples(pipe: ToyWorldPipeline, shadow: list[torch.Tensor], path: Path, steps: int = 30) -> None:
    """A 4×4 grid of samples of :data:`SAMPLE_PROMPTS` with the EMA weights (raw weights restored after)."""
    params = list(_named_params(pipe).values())
    backup = [p.detach().clone() for p in params]
    with torch.no_grad():
        torch._foreach_copy_([p.data for p in params], shadow)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(list(SAMPLE_PROMPTS), num_inference_steps=steps, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    with torch.no_grad():
        torch._foreach_copy_([p.data for p in params], backup)
    grid = images.reshape(4, 4, *images.shape[1:]).transpose(0, 2, 1, 3, 4).reshape(4 * images.shape[1], -1, 3)
    Image.fromarray((grid * 255).round().astype(np.uint8)).resize((grid.shape[1] * 2, grid.shape[0] * 2),
                                                                   Image.NEAREST).save(path)


# --------------------------------------------------------------------------- main loop


def train(args: argparse.Namespace) -> None:
    t_start = time.time()
    budget = args.minutes * 60
    deadline = t_start + budget - min(SAFETY_SECONDS, budget / 4)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    step, images_seen, train_seconds = 0, 0, 0.0
    if args.resume:
        resume = Path(args.resume)
        meta, raw, ema_weights = load_state(resume)
        config = _config_from_json(meta["config"])
        pipe = build_toy_pipeline(config, seed=args.seed)
        _load_into(pipe, raw)
        step, images_seen, train_seconds = meta["step"], meta["images_seen"], meta["train_seconds"]
        frozen = meta.get("frozen_text_encoder", False)
        if resume.resolve() != out.resolve() and (resume / "train_log.jsonl").exists():
            shutil.copy(resume / "train_log.jsonl", out / "train_log.jsonl")
    else:
        config = ToyModelConfig.tiny() if args.tiny else ToyModelConfig(prediction_type=args.prediction_type)
        pipe = build_toy_pipeline(config, seed=args.seed)
        ema_weights = None
        frozen = args.text_encoder is not None
        if frozen:
            load_text_encoder(pipe.text_encoder, Path(args.text_encoder))
        (out / "train_log.jsonl").unlink(missing_ok=True)
    pipe.to(device)
    unet, text_encoder = pipe.unet, pipe.text_encoder
    unet.train()
    text_encoder.train(not frozen)
    text_encoder.requires_grad_(not frozen)
    grounding_maps: list[torch.Tensor] = []
    original_processors = set_grounding_processors(unet, grounding_maps) if args.ground > 0 else None
    params = list(_named_params(pipe).values())
    ema = EMA(params, args.ema_decay)
    if ema_weights is not None:
        names = list(_named_params(pipe))
        ema.shadow = [ema_weights[n].to(device, torch.float32) for n in names]
    n_params = sum(p.numel() for p in params)
    print(f"device {device}, {n_params / 1e6:.2f}M trained parameters (text encoder "
          f"{'frozen' if frozen else 'trained'}), start step {step}, config {asdict(config)}", flush=True)

    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    alphas_cumprod = pipe.scheduler.alphas_cumprod.to(device, torch.float32)
    unet_fwd = torch.compile(unet) if args.compile else unet
    stream = BatchStream(pipe.tokenizer, args.batch, seed=(args.seed, step))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    log = (out / "train_log.jsonl").open("a")
    first_step, window_loss, window_ground, window_n, window_t = step, 0.0, 0.0, 0, time.time()
    try:
        while time.time() < deadline:
            scenes, ids, objects = stream.next()
            images, masks = render(scenes, device=device)
            x0 = images_to_latents(images)
            progress = min(1.0, (time.time() - t_start) / (deadline - t_start))
            lr = (args.lr + (args.lr_end - args.lr) * progress) * min(1.0, (step - first_step + 1) / args.warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast:
                with torch.set_grad_enabled(not frozen):
                    embeds = text_encoder(ids.to(device))[0]
                loss = diffusion_loss(unet_fwd, embeds, x0, alphas_cumprod, config.prediction_type, args.snr_gamma)
                if args.ground > 0:
                    ground = grounding_loss(grounding_maps, objects.to(device), masks, args.ground_coverage)
                    grounding_maps.clear()
                    loss = loss + args.ground * ground
                    window_ground += ground.detach()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            ema.update(step)
            step += 1
            images_seen += args.batch
            window_loss += loss.detach()
            window_n += 1
            if step % args.log_every == 0 or time.time() >= deadline:
                now = time.time()
                record = {
                    "step": step, "loss": round(float(window_loss) / window_n, 5),
                    "ground": round(float(window_ground) / window_n, 4),
                    "images_per_s": round(window_n * args.batch / (now - window_t), 1),
                    "elapsed_s": round(now - t_start, 1), "lr": lr, "images_seen": images_seen,
                }
                print(json.dumps(record), flush=True)
                log.write(json.dumps(record) + "\n")
                log.flush()
                window_loss, window_ground, window_n, window_t = 0.0, 0.0, 0, now
    finally:
        stream.close()
        log.close()

    train_seconds += time.time() - t_start
    meta = {"step": step, "images_seen": images_seen, "train_seconds": round(train_seconds, 1),
            "config": asdict(config), "args": vars(args), "frozen_text_encoder": frozen}
    save_state(out, pipe, ema, meta, ema_only=args.save_ema_only)
    print(f"saved state at step {step} to {out} ({time.time() - t_start:.0f} s since start)", flush=True)
    unet.eval()
    text_encoder.eval()
    if original_processors is not None:
        unet.set_attn_processor(original_processors)
    save_samples(pipe, ema.shadow, out / "samples.png", steps=args.sample_steps)
    if args.export_pipeline:
        export(out, out / "pipeline")
    print(f"done in {time.time() - t_start:.0f} s", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="run folder to write state, log and samples into")
    p.add_argument("--resume", help="run folder to continue from (may equal --out)")
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget from start-up to exit")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--lr-end", type=float, help="LR reached linearly at the end of this call (default: --lr)")
    p.add_argument("--warmup", type=int, default=200, help="LR warm-up steps (also after a resume)")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--snr-gamma", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prediction-type", default="v_prediction", choices=["v_prediction", "epsilon"])
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--text-encoder", metavar="SAFETENSORS",
                   help="pre-trained text encoder (pretrain_text's output) to load and freeze (new runs)")
    p.add_argument("--ground", type=float, default=0.0, help="weight of the token grounding loss (0: off)")
    p.add_argument("--ground-coverage", type=float, default=1.0,
                   help="weight of the grounding loss's coverage (KL) term, relative to its in-object term")
    p.add_argument("--save-ema-only", action="store_true", help="save the EMA weights only (smaller state)")
    p.add_argument("--sample-steps", type=int, default=30, help="sampling steps of samples.png")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    p.add_argument("--tiny", action="store_true", help="tiny model, for smoke tests")
    p.add_argument("--cpu", action="store_true", help="train on CPU even if CUDA is present")
    p.add_argument("--export-pipeline", action="store_true", help="also write OUT/pipeline at the end")
    p.add_argument("--export", metavar="RUN", help="only export RUN's EMA weights as a pipeline folder")
    p.add_argument("--to", help="where --export writes the pipeline (default RUN/pipeline)")
    args = p.parse_args(argv)
    if not args.export and not args.out:
        p.error("--out is required unless --export is given")
    if args.lr_end is None:
        args.lr_end = args.lr
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.export:
        export(Path(args.export), Path(args.to) if args.to else Path(args.export) / "pipeline")
    else:
        train(args)


if __name__ == "__main__":
    main(sys.argv[1:])
