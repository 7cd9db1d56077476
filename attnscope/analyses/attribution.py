"""Token attribution: which prompt tokens drive a scalar read out of the UNet.

Integrated gradients (captum's ``LayerIntegratedGradients``) on the text
encoder's token-embedding layer. The path runs, position by position, from
the embeddings of an empty-prompt *baseline* (``<bos> <eos> <eos> …``) to
those of the prompt; padding positions are the same in both, so every
attribution lands on the prompt's own tokens and, by completeness,

    Σ_tokens attribution ≈ F(prompt) − F(baseline)

up to the quadrature error reported as ``delta``. Cost is bounded by
``n_steps`` (interpolation points, one batched forward + backward) times the
number of chosen layers/steps.

Both targets start from :func:`trace`, one sampling pass of the prompt with
a fixed seed that records, at a few chosen steps, the UNet's input latent and
timestep and every chosen layer's query ``to_q(h)`` (conditional CFG branch),
plus every word's attention maps (for object regions).

**(a) Attention target** (:func:`attention_target`). For layer ``l`` at step
``s`` the attention of query cell ``i`` on prompt position ``j`` is

    p_ls(i, j) = mean_heads softmax_j( q_ls,i · to_k(E(x))_j · scale )

where ``E(x)`` is the text encoder's output for token ids ``x`` and
``q_ls`` is the recorded query, *held fixed*. The gradient therefore flows
text encoder → ``to_k`` → softmax and nowhere else: with the image layout of
this trajectory frozen, which tokens decide where the attribute word's
attention goes? (The text also reaches the query through earlier layers'
values; that path is deliberately cut, so the target is a clean function of
the keys.) With the word's positions ``W`` and the object's region ``R``
(soft, on the layer's grid) the per-(layer, step) value is

* ``"share"`` (default): ``Σ_i R_i Σ_{j∈W} p(i,j) / Σ_i Σ_{j∈W} p(i,j)`` —
  the binding score of :mod:`attnscope.analyses.binding`;
* ``"mass"``: ``Σ_i R_i Σ_{j∈W} p(i,j) / Σ_i R_i`` — how much the region's
  cells attend to the word, on average;

and ``F`` is its mean over the chosen layers and steps. At the baseline the
word's positions hold end/padding tokens, so ``F(baseline)`` is what those
positions would get.

**(b) Noise target** (:func:`noise_target`). At each chosen step (a noise
level of the same trajectory) the squared change of the UNet's prediction
from the baseline's, ``F(x) = mean_s mean ‖ε(z_s, t_s, E(x)) − ε(z_s, t_s, E(∅))‖²``,
so ``F(baseline) = 0`` and the attributions split the prompt's whole effect
on the prediction among its tokens.

Pipelines with one CLIP-style text encoder (SD 1.x/2.x, the toy model) are
supported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from attnscope.analyses.regions import regions_from_attention, regions_from_masks
from attnscope.models.layers import CrossAttentionLayer, cross_attention_layers, select_layers
from attnscope.models.prompts import encode, single_text_encoder, tokenize
from attnscope.store.tokens import clean

Measure = Literal["share", "mass"]
TextFunction = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- one sampling pass


@dataclass(frozen=True)
class Trace:
    """What one sampling pass of one prompt leaves for attribution (conditional branch only).

    ``steps``: the recorded step indices; ``timesteps[s]``: the scheduler's
    timestep at step ``s``; ``latents[s]``: the UNet's input (1, C, h, w) at
    step ``s``; ``queries[(layer, s)]``: that layer's ``to_q`` output
    (1, h·w, inner) at step ``s``; ``layers``: the recorded layers.
    ``attention[word][layer]``: the word's captured maps (all steps, h, w),
    heads averaged; ``image``: (H, W, 3) uint8.
    """

    prompt: str
    seed: int
    steps: tuple[int, ...]
    timesteps: dict[int, torch.Tensor]
    latents: dict[int, torch.Tensor]
    queries: dict[tuple[str, int], torch.Tensor]
    layers: tuple[CrossAttentionLayer, ...]
    attention: dict[str, dict[str, np.ndarray]] = field(repr=False)
    image: np.ndarray = field(repr=False)

    def regions(self, objects: Sequence[str], size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """Exclusive object regions ``{object: bool (H, W)}`` from the objects' own attention
        (:func:`~attnscope.analyses.regions.regions_from_attention`, all layers and steps)."""
        missing = [o for o in objects if o not in self.attention]
        if missing:
            raise KeyError(f"{missing} not in the prompt's words {list(self.attention)}")
        return regions_from_attention({o: list(self.attention[o].values()) for o in objects}, size=size)


def default_steps(n_steps: int, fractions: Sequence[float] = (0.2, 0.5, 0.8)) -> tuple[int, ...]:
    """A few step indices spread over a trajectory of ``n_steps`` (early, middle, late)."""
    return tuple(sorted({min(n_steps - 1, int(f * n_steps)) for f in fractions}))


def trace(
    pipe,
    prompt: str,
    *,
    seed: int = 0,
    settings=None,
    steps: Sequence[int] | None = None,
    layers: str | Sequence[str] = "all",
) -> Trace:
    """Sample ``prompt`` once and record what the attribution targets need (see :class:`Trace`).

    ``settings``: a :class:`~attnscope.sampling.SamplerSettings` (default 20
    steps); ``steps``: step indices to record (default :func:`default_steps`);
    ``layers``: cross-attention layers whose queries are recorded (names,
    globs, places or ``"all"``).
    """
    from attnscope.hooks import capture
    from attnscope.sampling import Job, SamplerSettings, generate

    settings = settings or SamplerSettings(steps=20)
    steps = tuple(sorted(set(steps))) if steps is not None else default_steps(settings.steps)
    if any(not 0 <= s < settings.steps for s in steps):
        raise ValueError(f"steps {steps} out of range for {settings.steps} sampling steps")
    chosen = tuple(select_layers(cross_attention_layers(pipe.unet), layers))
    state = {"step": -1}
    timesteps, latents, queries = {}, {}, {}

    def before_unet(module, args, kwargs):
        state["step"] += 1
        if state["step"] in steps:
            sample = args[0] if args else kwargs["sample"]
            timestep = args[1] if len(args) > 1 else kwargs["timestep"]
            latents[state["step"]] = sample[-1:].detach().clone()  # the conditional row of the last run
            timesteps[state["step"]] = torch.as_tensor(timestep).reshape(-1)[-1:].detach().clone()

    def grab_query(name: str):
        def hook(module, inputs, output):
            if state["step"] in steps:
                queries[(name, state["step"])] = output[-1:].detach().clone()

        return hook

    handles = [pipe.unet.register_forward_pre_hook(before_unet, with_kwargs=True)]
    handles += [layer.module.to_q.register_forward_hook(grab_query(layer.name)) for layer in chosen]
    try:
        with capture(pipe, layers="all", dtype=torch.float32) as cap:
            image = generate(pipe, [Job(prompt, seed)], settings, batch_size=1, progress=False)[0]
    finally:
        for handle in handles:
            handle.remove()
    runs = cap.file
    run = cap.run_ids[-1]
    attention = {
        word: {spec.name: runs.maps(run, spec.name, word=word)[:, 0] for spec in runs.layers}
        for word in dict.fromkeys(runs.words(run))
    }
    return Trace(prompt, seed, steps, timesteps, latents, queries, chosen, attention, image)


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """A scalar read-out of the conditioning: ``fn`` maps text-encoder outputs (B, L, d) to (B,)."""

    name: str
    fn: TextFunction


def _word_attention(layer: CrossAttentionLayer, query: torch.Tensor, text: torch.Tensor,
                    positions: Sequence[int]) -> torch.Tensor:
    """Attention (B, h·w) of every query cell on ``positions`` (summed), heads averaged.

    ``query``: (1, n, inner) recorded ``to_q`` output; ``text``: (B, L, d).
    """
    attn = layer.module
    context = attn.norm_encoder_hidden_states(text) if attn.norm_cross else text
    key = attn.to_k(context.to(attn.to_k.weight.dtype))  # (B, L, inner)
    q = query.unflatten(-1, (attn.heads, -1)).transpose(1, 2).float()  # (1, heads, n, d)
    k = key.unflatten(-1, (attn.heads, -1)).transpose(1, 2).float()  # (B, heads, L, d)
    probs = (q @ k.transpose(-1, -2) * attn.scale).softmax(dim=-1).mean(dim=1)  # (B, n, L)
    return probs[..., list(positions)].sum(dim=-1)


def attention_target(
    pipe,
    trace: Trace,
    word: str,
    region: np.ndarray,
    *,
    measure: Measure = "share",
    label: str = "region",
) -> Target:
    """Target (a): the word's attention share (or mass) inside ``region``, averaged over the
    trace's recorded layers and steps (formulas in the module docstring).

    ``region``: (H, W) bool or soft mask at any resolution (e.g. from
    :meth:`Trace.regions`), resized to each layer's grid as cell coverage.
    """
    if measure not in ("share", "mass"):
        raise ValueError(f"measure must be 'share' or 'mass', not {measure!r}")
    positions = tokenize(pipe, trace.prompt).positions(word)
    latent_hw = next(iter(trace.latents.values())).shape[-2:]
    cells = {}
    for layer in trace.layers:
        grid = layer.resolution(tuple(latent_hw))
        cover = regions_from_masks({"r": region}, grid, min_coverage=None)["r"].reshape(-1)
        cells[layer.name] = torch.as_tensor(cover, dtype=torch.float32, device=pipe.unet.device)
    pairs = [(layer, step) for layer in trace.layers for step in trace.steps]

    def fn(text: torch.Tensor) -> torch.Tensor:
        values = []
        for layer, step in pairs:
            p = _word_attention(layer, trace.queries[(layer.name, step)], text, positions)  # (B, n)
            r = cells[layer.name]
            inside = p @ r
            values.append(inside / (p.sum(-1) if measure == "share" else r.sum()))
        return torch.stack(values).mean(dim=0)

    return Target(f"attention {measure} of “{word}” in the {label} region", fn)


def noise_target(pipe, trace: Trace, baseline: str = "") -> Target:
    """Target (b): mean squared change of the UNet's prediction from the ``baseline`` prompt's,
    averaged over the trace's recorded steps (noise levels)."""
    unet = pipe.unet
    with torch.no_grad():
        reference_text = encode(pipe, tokenize(pipe, baseline).ids).to(unet.dtype)
        reference = {
            s: unet(trace.latents[s], trace.timesteps[s], encoder_hidden_states=reference_text).sample.float()
            for s in trace.steps
        }

    def fn(text: torch.Tensor) -> torch.Tensor:
        values = []
        for s in trace.steps:
            latents = trace.latents[s].expand(text.shape[0], *trace.latents[s].shape[1:])
            prediction = unet(latents, trace.timesteps[s], encoder_hidden_states=text.to(unet.dtype)).sample
            values.append((prediction.float() - reference[s]).pow(2).flatten(1).mean(1))
        return torch.stack(values).mean(dim=0)

    return Target("squared change of the UNet prediction", fn)


# --------------------------------------------------------------------------- integrated gradients


@dataclass(frozen=True)
class TokenAttribution:
    """Integrated-gradients attribution of one target to the prompt's tokens.

    ``texts``/``word_of``/``words``: as in :class:`~attnscope.models.prompts.Tokens` (positions
    ``0 … end``); ``values``: (end + 1,) attribution per position, summed
    over the embedding dimension; ``target``/``baseline``: ``F`` at the
    prompt and at the empty prompt; ``delta``: ``Σ values − (target − baseline)``
    over all positions (the quadrature error; 0 for exact completeness).
    """

    name: str
    prompt: str
    texts: tuple[str, ...]
    word_of: tuple[int, ...]
    words: tuple[str, ...]
    values: np.ndarray
    target: float
    baseline: float
    delta: float
    n_steps: int

    def by_word(self) -> dict[str, float]:
        """Attribution per word, sub-word tokens summed; start/end tokens under their own
        strings; a word that occurs twice gets a second label ``word#2``."""
        out: dict[str, float] = {}
        labels: dict[int, str] = {}
        occurrences: dict[str, int] = {}
        for p, text in enumerate(self.texts):
            w = self.word_of[p]
            if w >= 0 and w not in labels:
                word = self.words[w]
                occurrences[word] = occurrences.get(word, 0) + 1
                labels[w] = word if occurrences[word] == 1 else f"{word}#{occurrences[word]}"
            key = text if w < 0 else labels[w]
            out[key] = out.get(key, 0.0) + float(self.values[p])
        return out

    def rows(self) -> list[dict]:
        """One row per token position (for CSV)."""
        return [
            dict(target=self.name, position=p, token=clean(t), word=self.words[w] if w >= 0 else "",
                 attribution=float(self.values[p]))
            for p, (t, w) in enumerate(zip(self.texts, self.word_of))
        ]


def integrated_gradients(
    pipe,
    prompt: str,
    target: Target,
    *,
    baseline: str = "",
    n_steps: int = 16,
    internal_batch_size: int | None = None,
) -> TokenAttribution:
    """Attribute ``target`` to the tokens of ``prompt`` with integrated gradients.

    The path interpolates the token-embedding layer's output from the
    ``baseline`` prompt's (default: empty) to the prompt's, ``n_steps``
    Gauss–Legendre points, ``internal_batch_size`` of them per forward
    (default all). Deterministic.
    """
    from captum.attr import LayerIntegratedGradients

    encoder = single_text_encoder(pipe)
    tokens, base = tokenize(pipe, prompt), tokenize(pipe, baseline)
    device = encoder.device

    def forward(ids: torch.Tensor) -> torch.Tensor:
        return target.fn(encoder(ids)[0])

    ig = LayerIntegratedGradients(forward, encoder.get_input_embeddings())
    attributions, delta = ig.attribute(
        tokens.ids.to(device), baselines=base.ids.to(device), n_steps=n_steps,
        internal_batch_size=internal_batch_size, return_convergence_delta=True,
    )
    with torch.no_grad():
        at_prompt, at_base = forward(tokens.ids.to(device)), forward(base.ids.to(device))
    per_position = attributions.float().sum(dim=-1)[0]  # (L,)
    return TokenAttribution(
        name=target.name,
        prompt=prompt,
        texts=tokens.texts,
        word_of=tokens.word_of,
        words=tokens.words,
        values=per_position[: len(tokens.texts)].detach().cpu().numpy(),
        target=float(at_prompt[0]),
        baseline=float(at_base[0]),
        delta=float(delta[0]),
        n_steps=n_steps,
    )


@dataclass(frozen=True)
class WordAttribution:
    """Attributions of one word's attention (and of the prediction) in one sampled trajectory.

    ``trace``: the sampling pass; ``regions``: ``{object: bool (H, W)}`` from the
    objects' own attention; ``results``: one :class:`TokenAttribution` per
    object (the word's attention in its region), then the noise target if asked.
    """

    word: str
    trace: Trace
    regions: dict[str, np.ndarray]
    results: list[TokenAttribution]


def attribute_word(
    pipe,
    prompt: str,
    word: str,
    objects: Sequence[str],
    *,
    seed: int = 0,
    settings=None,
    steps: Sequence[int] | None = None,
    layers: str | Sequence[str] = "all",
    measure: Measure = "share",
    noise: bool = True,
    ig_steps: int = 16,
) -> WordAttribution:
    """Sample ``prompt`` once (:func:`trace`) and attribute, for every object, ``word``'s attention
    in that object's region (:func:`attention_target`), and with ``noise`` the prediction's change
    (:func:`noise_target`), to the prompt's tokens (:func:`integrated_gradients`, ``ig_steps`` points)."""
    recorded = trace(pipe, prompt, seed=seed, settings=settings, steps=steps, layers=layers)
    regions = recorded.regions(objects)
    targets = [attention_target(pipe, recorded, word, regions[o], measure=measure, label=o) for o in objects]
    if noise:
        targets.append(noise_target(pipe, recorded))
    results = [integrated_gradients(pipe, prompt, target, n_steps=ig_steps) for target in targets]
    return WordAttribution(word, recorded, regions, results)
