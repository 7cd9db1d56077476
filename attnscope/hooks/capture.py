"""Record per-token cross-attention maps while a pipeline samples.

::

    with capture(pipe, layers="up_blocks.*", sink="run.h5") as cap:
        pipe(["a wooden bench and a bird"], generator=torch.Generator().manual_seed(0))
    cap.maps(layer="up_blocks.1.attentions.0.transformer_blocks.0.attn2", word="wooden")

How it works, per pipeline instance (no class is patched):

* every selected cross-attention module gets a :class:`CaptureProcessor` that
  calls the module's original processor — so the output, and the image, is
  exactly what it would have been — and keeps the ``q``/``k`` it used
  (grabbed by forward hooks on ``to_q``/``to_k``);
* the probabilities of the selected tokens come from fused attention calls
  on those ``q``/``k`` with one-hot values
  (:mod:`attnscope.hooks.probabilities`), one call per step for each group
  of layers of one shape (SD 1.x: four, not sixteen — on a GPU at small
  batches the host launching kernels is the bottleneck; the captured layers'
  ``q``/``k`` stay on the device until their step ends, or until they hold
  :data:`HELD_BYTES`, which bounds the extra memory); heads are averaged
  straight into the step's device buffer;
* hooks on the UNet count sampling steps (one UNet call per entry of the
  scheduler's timesteps); at the end of each stored step the step's buffer
  goes to pinned host memory in one asynchronous copy on a side stream
  (:class:`~attnscope.hooks.buffers.StepMaps`), and after the last step a
  writer thread appends the batch to the run file. Nothing in the hooks
  reads a device value, so the sampling loop never waits for the GPU or the
  host, and the device holds two steps of maps, not all of them;
* a hook on the text encoder records the prompt's token ids for labels (and
  tells a new pipeline call from a sampling loop that stopped early).

A ``torch.compile``d UNet (``torch.compile(pipe.unet)`` or
``pipe.unet.compile()``) is captured too: forward hooks inside a compiled
graph would be traced, so there the processor hands the layer's inputs to
one function that the compiler leaves out (a graph break per captured
layer), which recomputes ``q``/``k`` of the stored rows with the layer's
own ``to_q``/``to_k``.

Everything is removed on exit, also when the pipeline raises.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from attnscope.errors import UsageError
from attnscope.hooks.buffers import PinnedPool, StepMaps
from attnscope.hooks.probabilities import store_tokens, token_probabilities, token_values
from attnscope.hooks.selection import Selection
from attnscope.models.layers import CrossAttentionLayer, cross_attention_layers, select_layers
from attnscope.models.identity import pipeline_fingerprint
from attnscope.models.prompts import padded_ids, token_texts
from attnscope.store.reader import RunFile
from attnscope.store.schema import CaptureSchema, RunRecord, layout
from attnscope.store.writer import BatchRows, RunWriter, WriterTiming


HELD_BYTES = 128 << 20  # held q/k are mapped once they keep this much device memory alive
STEPS_IN_FLIGHT = 64  # stored steps that may wait in pinned host memory for the writer before sampling waits


class CaptureProcessor:
    """Wraps a cross-attention module's original processor and records its probabilities.

    ``from_inputs``: the module runs inside a compiled graph, so ``q``/``k``
    are recomputed from the layer's inputs by :func:`_record_inputs` (which
    the compiler leaves out) instead of being grabbed by hooks.
    """

    def __init__(self, original, layer: CrossAttentionLayer, recorder: "Capture", from_inputs: bool = False):
        self.original = original
        self.layer = layer
        self.recorder = recorder
        self.from_inputs = from_inputs

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if self.from_inputs:
            _record_inputs(self, attn, hidden_states, encoder_hidden_states)
        elif self.recorder.recording:
            self.recorder.record(self.layer, attn)
        return out


@torch.compiler.disable
def _record_inputs(processor: CaptureProcessor, attn, hidden_states, encoder_hidden_states) -> None:
    """Record a layer from its inputs, outside any compiled graph (the capture's state stays out of its guards)."""
    if processor.recorder.recording:
        processor.recorder.record_inputs(processor.layer, attn, hidden_states, encoder_hidden_states)


def is_compiled(module: torch.nn.Module) -> bool:
    """Whether ``module`` runs through ``torch.compile`` (wrapped, or compiled in place with ``.compile()``)."""
    return hasattr(module, "_orig_mod") or getattr(module, "_compiled_call_impl", None) is not None


def uncompiled(module: torch.nn.Module) -> torch.nn.Module:
    """The module a ``torch.compile`` wrapper wraps (the module itself when not wrapped)."""
    return getattr(module, "_orig_mod", module)


@dataclass
class _Batch:
    """State of the pipeline call being sampled."""

    n_steps: int
    slot_of_step: dict[int, int]  # sampler step -> stored step position
    rows: slice  # rows of the UNet batch whose maps are taken
    token_index: torch.Tensor  # (rows, tokens_max) positions to gather, on the device
    cond_width: int  # token slots reserved for the conditional branch
    uncond_offset: int  # rows of the uncond branch start here in `token_index`
    maps: StepMaps  # (runs, cond + uncond token slots, L) per stored step
    records: list[RunRecord]
    file_rows: BatchRows  # per run, the token slots of `maps` that hold its tokens; their rows in the file
    latent_hw: tuple[int, int]
    step: int = 0
    grabbed: dict = field(default_factory=dict)  # "q"/"k" of the layer running now
    pending: dict = field(default_factory=dict)  # shape of a layer group -> [(layer, attn, q, k)] held
    held: int = 0  # bytes of device memory the held q/k keep alive
    values: dict = field(default_factory=dict)  # (keys, heads, dtype, layers) -> one-hot token values

    def let_go(self) -> None:
        """Forget the held q/k (after they were mapped)."""
        self.pending.clear()
        self.held = 0

    def target(self) -> torch.Tensor:
        """``(runs, token slots, L)``: the buffer of the step being sampled."""
        return self.maps.slot(self.slot_of_step[self.step])

    def token_values(self, keys: int, heads: int, dtype: torch.dtype, layers: int = 1) -> torch.Tensor:
        """:func:`~attnscope.hooks.probabilities.token_values` of this batch's tokens for ``layers`` layers
        stacked along the rows, made once per shape."""
        made = self.values.get((keys, heads, dtype, layers))
        if made is None:
            index = self.token_index.repeat(layers, 1)
            made = self.values[(keys, heads, dtype, layers)] = token_values(index, keys, heads, dtype)
        return made


class Capture:
    """The object ``capture(...)`` yields: records while open, reads afterwards.

    Index it by run (``cap[0]``), or read maps directly with :meth:`maps` and
    :meth:`heatmap` (defaults: the last run). The underlying
    :class:`~attnscope.store.reader.RunFile` is ``cap.file``.
    """

    def __init__(
        self,
        pipe,
        selection: Selection,
        sink: str | os.PathLike | None = None,
        *,
        resume: bool = False,
        overwrite: bool = False,
        storage: str = "lossless",
    ):
        self.pipe = pipe
        self.selection = selection
        self.sink = sink
        self.layers = self._find_layers(selection.layers)
        self._writer = RunWriter(sink, resume=resume, overwrite=overwrite, storage=storage)
        device = self._backbone().device
        self._pool: PinnedPool | None = None  # pinned blocks of steps in flight (CUDA), sized once the file is open
        self._copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._compiled = is_compiled(self._backbone())
        self._text_calls: list[torch.Tensor] = []
        self._labels: list[dict] = []
        self._batch: _Batch | None = None
        self._extents: dict[str, tuple[int, int]] = {}  # layer -> (start, end) of its maps in L
        self._handles: list = []
        self._originals: dict[str, object] = {}
        self._file: RunFile | None = None
        self.run_ids: list[int] = []
        self._last_run_ids: list[int] = []
        self._fingerprint: str | None = None

    def _backbone(self) -> torch.nn.Module:
        return self.pipe.unet

    def _find_layers(self, pattern) -> list:
        return select_layers(cross_attention_layers(uncompiled(self.pipe.unet)), pattern)

    # -- context -----------------------------------------------------------
    def __enter__(self) -> "Capture":
        try:
            self._install()
        except BaseException:
            self._uninstall()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._drop_batch()  # a batch cut short by an error is dropped
        self._uninstall()
        self._writer.close()

    def _drop_batch(self) -> None:
        if self._batch is not None:
            self._batch.maps.release()
            self._batch = None

    def _install(self) -> None:
        unet = self.pipe.unet
        for layer in self.layers:
            module = layer.module
            self._originals[layer.name] = module.processor
            module.set_processor(CaptureProcessor(module.processor, layer, self, from_inputs=self._compiled))
            if not self._compiled:
                self._handles.append(module.to_q.register_forward_hook(self._grab("q", layer.name)))
                self._handles.append(module.to_k.register_forward_hook(self._grab("k", layer.name)))
        # a UNet compiled in place runs its hooks inside the compiled call: keep them out of the graph
        before, after = torch.compiler.disable(self._before_unet), torch.compiler.disable(self._after_unet)
        self._handles.append(unet.register_forward_pre_hook(before, with_kwargs=True))
        self._handles.append(unet.register_forward_hook(after))
        self._handles.append(self.pipe.text_encoder.register_forward_pre_hook(self._on_text, with_kwargs=True))

    def _uninstall(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        by_name = {layer.name: layer for layer in self.layers}
        for name, original in self._originals.items():
            by_name[name].module.set_processor(original)
        self._originals.clear()

    # -- labels the sampler may supply -----------------------------------------
    def label_next(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int] | None = None,
        negative_prompts: Sequence[str] | None = None,
        extra: Sequence[dict] | None = None,
    ) -> None:
        """Give the next pipeline call's exact prompts, seeds and metadata, one per run.

        Without labels, prompts are decoded from the token ids and seeds are -1.
        """
        n = len(prompts)
        if seeds is not None and any(int(s) < 0 for s in seeds):
            raise UsageError(f"seeds {[int(s) for s in seeds if int(s) < 0]} are negative: "
                             "the run file keeps -1 for an unknown seed; use seeds of 0 or more")
        self._labels = [
            {
                "prompt": prompts[i],
                "seed": -1 if seeds is None else int(seeds[i]),
                "negative_prompt": None if negative_prompts is None else negative_prompts[i],
                "extra": {} if extra is None else dict(extra[i]),
            }
            for i in range(n)
        ]

    # -- hooks ---------------------------------------------------------------
    def _grab(self, which: str, name: str):
        def hook(module, inputs, output):
            if self._batch is not None:
                self._batch.grabbed[which] = output

        return hook

    def _on_text(self, module, args, kwargs):
        if self._batch is not None and self._batch.step > 0:  # a new pipeline call: the last one stopped early
            warnings.warn("a sampling loop ended early; its partial attention maps were dropped")
            self._drop_batch()
        ids = args[0] if args else kwargs.get("input_ids")
        if ids is not None:
            self._text_calls.append(ids.detach().to("cpu"))

    @property
    def writer_timing(self) -> WriterTiming:
        """Seconds the run writer spent writing and the sampling spent waiting for it so far (its queue or
        host buffers full), and, once the context has closed, its drain
        (:class:`~attnscope.store.writer.WriterTiming`)."""
        timing = self._writer.timing
        return replace(timing, waited=timing.waited + (self._pool.waited if self._pool is not None else 0.0))

    @property
    def recording(self) -> bool:
        batch = self._batch
        return batch is not None and batch.step in batch.slot_of_step

    def _before_unet(self, module, args, kwargs):
        self._writer.check()  # a failed writer ends the sampling now, not after the whole batch
        if self._batch is None:
            self._batch = self._begin(args[0] if args else kwargs["sample"])

    def _after_unet(self, module, args, output):
        batch = self._batch
        if batch is None:
            return
        if batch.step in batch.slot_of_step:
            self._store_pending(batch)
            batch.maps.filled(batch.slot_of_step[batch.step])
        batch.step += 1
        batch.grabbed.clear()
        if batch.step == batch.n_steps:
            self._finish(batch)
            self._batch = None

    # -- one batch -------------------------------------------------------------
    def _n_steps(self) -> int:
        n = getattr(self.pipe, "_num_timesteps", None)
        return int(n) if n else len(self.pipe.scheduler.timesteps)

    def _cfg(self) -> bool:
        return bool(getattr(self.pipe, "do_classifier_free_guidance", False))

    def _token_texts(self, ids: torch.Tensor) -> list[list[str]]:
        return [token_texts(self.pipe.tokenizer, row) for row in ids]

    def _begin(self, sample: torch.Tensor) -> _Batch:
        cfg = self._cfg()
        batch_size = sample.shape[0]
        n_runs = batch_size // 2 if cfg else batch_size
        if not self._text_calls:
            raise RuntimeError(
                "capture saw the UNet run without a text-encoder call: pass prompts (not prompt_embeds) "
                "so tokens can be labelled"
            )
        prompt_ids = self._text_calls[0]
        negative_ids = self._text_calls[1] if cfg and len(self._text_calls) > 1 else None
        self._text_calls.clear()
        per_prompt = max(1, n_runs // prompt_ids.shape[0])
        prompt_ids = prompt_ids.repeat_interleave(per_prompt, dim=0)[:n_runs]
        if negative_ids is None:
            negative_ids = padded_ids(self.pipe.tokenizer, [""] * n_runs, prompt_ids.shape[1])
        else:
            negative_ids = negative_ids.repeat_interleave(per_prompt, dim=0)[:n_runs]

        eos = getattr(self.pipe.tokenizer, "eos_token_id", None)
        cond_texts, uncond_texts = self._token_texts(prompt_ids), self._token_texts(negative_ids)
        cond = [self.selection.resolve_tokens(i.tolist(), t, eos) for i, t in zip(prompt_ids, cond_texts)]
        both = self.selection.branch == "both"
        uncond = (
            [self.selection.resolve_tokens(i.tolist(), t, eos, required=False)
             for i, t in zip(negative_ids, uncond_texts)]
            if both else [[] for _ in range(n_runs)]
        )
        cond_width = max(len(c) for c in cond)
        uncond_width = max((len(u) for u in uncond), default=0)
        records = self._records(n_runs, cond, uncond, prompt_ids, negative_ids)

        # rows of the UNet batch to read ([uncond, cond] under CFG) and, per row, token positions
        device = sample.device
        if cfg and both:
            rows, positions = slice(0, batch_size), [[p for p, _, _ in u] for u in uncond] + [[p for p, _, _ in c] for c in cond]
        elif cfg:
            rows, positions = slice(n_runs, batch_size), [[p for p, _, _ in c] for c in cond]
        else:
            rows, positions = slice(0, batch_size), [[p for p, _, _ in c] for c in cond]
        width = max(cond_width, uncond_width)
        padded = [p + [0] * (width - len(p)) for p in positions]
        token_index = torch.tensor(padded, dtype=torch.long).to(device, non_blocking=True)

        n_steps = self._n_steps()
        steps = self.selection.resolve_steps(n_steps)
        latent_hw = (sample.shape[-2], sample.shape[-1])
        schema = self._schema(latent_hw, steps)
        self._writer.open(schema)
        self._extents = {spec.name: (spec.offset, spec.offset + spec.size) for spec in schema.layers}
        file_rows = BatchRows([list(range(len(c))) + list(range(cond_width, cond_width + len(u)))
                               for c, u in zip(cond, uncond)])
        maps = self._step_maps((n_runs, cond_width + uncond_width, schema.width_l), len(steps), device, file_rows)
        return _Batch(
            n_steps=n_steps,
            slot_of_step={s: i for i, s in enumerate(steps)},
            rows=rows,
            token_index=token_index,
            cond_width=cond_width,
            uncond_offset=n_runs if (cfg and both) else 0,
            maps=maps,
            records=records,
            file_rows=file_rows,
            latent_hw=latent_hw,
        )

    def _step_maps(self, shape: tuple[int, int, int], n_steps: int, device: torch.device,
                   file_rows: BatchRows) -> StepMaps:
        """Buffers of a batch whose stored steps each hold maps of ``shape`` (runs, token slots, L); its blocks of
        steps go to the writer as they fill."""
        if device.type != "cuda":
            def take(block_shape, dtype):
                return torch.zeros(block_shape, dtype=dtype), lambda: None
        else:
            if self._pool is None:  # about STEPS_IN_FLIGHT stored steps, in blocks of the file's steps per chunk
                self._pool = PinnedPool(capacity=max(2, -(-STEPS_IN_FLIGHT // self._writer.step_block)))

            def take(block_shape, dtype):
                return self._pool.take(block_shape, dtype, check=self._writer.check)

        def hand(first, host, ready, release):
            self._writer.submit_steps(file_rows, first, host, ready, release)

        return StepMaps(shape, n_steps, self._writer.step_block, self.selection.dtype, take, hand, device,
                        self._copy_stream)

    def _records(self, n_runs, cond, uncond, prompt_ids, negative_ids, tokenizer=None) -> list[RunRecord]:
        """One record per run of the call; prompts unlabelled by ``generate`` are decoded from their ids
        with ``tokenizer`` (default: the pipeline's)."""
        labels = self._labels if len(self._labels) == n_runs else []
        self._labels = []
        tokenizer = tokenizer or self.pipe.tokenizer
        decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True).strip()  # noqa: E731
        guidance = float(getattr(self.pipe, "guidance_scale", getattr(self.pipe, "_guidance_scale", 1.0)))
        records = []
        for run in range(n_runs):
            label = labels[run] if labels else {}
            negative = label.get("negative_prompt")
            records.append(
                RunRecord(
                    prompt=label.get("prompt") or decode(prompt_ids[run]),
                    negative_prompt=negative if negative is not None else decode(negative_ids[run]),
                    seed=label.get("seed", -1),
                    guidance_scale=guidance,
                    tokens=cond[run] + uncond[run],
                    n_uncond_tokens=len(uncond[run]),
                    extra=label.get("extra", {}),
                )
            )
        return records

    def _schema(self, latent_hw: tuple[int, int], steps: list[int]) -> CaptureSchema:
        heads = self.selection.heads == "all"
        specs = layout([
            (layer.name, layer.place, *layer.resolution(latent_hw), layer.module.heads if heads else 1)
            for layer in self.layers
        ])
        scale = int(getattr(self.pipe, "vae_scale_factor", 1))
        scheduler = self.pipe.scheduler
        if self._fingerprint is None:
            self._fingerprint = pipeline_fingerprint(self.pipe)
        edits = [applied.edit for applied in getattr(self.pipe, "attnscope_edits", None) or []]
        return CaptureSchema(
            height=latent_hw[0] * scale,
            width=latent_hw[1] * scale,
            latent_height=latent_hw[0],
            latent_width=latent_hw[1],
            layers=tuple(specs),
            steps=tuple(steps),
            timesteps=tuple(float(t) for t in scheduler.timesteps),
            heads=self.selection.heads,
            branch=self.selection.branch,
            dtype=str(self.selection.dtype).removeprefix("torch."),
            model={
                "id": str(getattr(self.pipe, "attnscope_model_id", None) or getattr(self.pipe, "name_or_path", "") or ""),
                "fingerprint": self._fingerprint,
                "class": type(self.pipe).__name__,
            },
            edit={"edits": [dict(edit.meta) for edit in edits]} if edits else None,
            sampler={  # "_"-keys (e.g. `_use_default_values`) are bookkeeping whose order varies by process
                "scheduler": type(scheduler).__name__,
                "config": {k: v for k, v in scheduler.config.items() if not k.startswith("_")},
            },
        )

    def record(self, layer: CrossAttentionLayer, attn) -> None:
        """Keep ``layer``'s q/k of the current step (grabbed by its ``to_q``/``to_k`` hooks) for the step's end."""
        batch = self._batch
        query, key = batch.grabbed.pop("q"), batch.grabbed.pop("k")
        self._keep(layer, attn, query[batch.rows], key[batch.rows])

    def record_inputs(self, layer: CrossAttentionLayer, attn, hidden_states, encoder_hidden_states) -> None:
        """Keep ``layer``'s q/k of the current step, recomputed for the stored rows from its inputs.

        For a compiled UNet, where the processor's own q/k cannot be grabbed; the
        processor must feed ``to_q``/``to_k`` its inputs unchanged (as SD's do).
        """
        if hidden_states.ndim != 3 or any(getattr(attn, name, None) is not None
                                          for name in ("spatial_norm", "group_norm", "norm_cross")):
            raise NotImplementedError(f"{layer.name}: capture on a compiled UNet needs a cross-attention layer "
                                      "without spatial/group/cross norms")
        rows = self._batch.rows
        self._keep(layer, attn, attn.to_q(hidden_states[rows]), attn.to_k(encoder_hidden_states[rows]))

    def _keep(self, layer: CrossAttentionLayer, attn, query: torch.Tensor, key: torch.Tensor) -> None:
        """Queue ``query`` ``(rows, n, heads·d)`` and ``key`` ``(rows, keys, heads·d)`` with the layers of their shape."""
        batch = self._batch
        h, w = layer.resolution(batch.latent_hw)
        if h * w != query.shape[1]:
            raise RuntimeError(f"{layer.name}: expected {h}x{w} queries for latent {batch.latent_hw}, "
                               f"got {query.shape[1]}")
        group = (query.shape, key.shape, query.dtype, attn.heads, attn.scale, bool(attn.upcast_attention))
        batch.pending.setdefault(group, []).append((layer, attn, query, key))
        batch.held += query.untyped_storage().nbytes() + key.untyped_storage().nbytes()  # views hold their base
        if batch.held >= HELD_BYTES:
            self._store_pending(batch)

    def _store_pending(self, batch: _Batch) -> None:
        """The held layers' maps into the step buffer: one attention call per group of same-shaped layers.

        A group's queries and keys are stacked along the rows, ``(layers·rows, n, heads·d)``; each layer's
        slice of the probabilities goes to its place in the step buffer. Called at the step's end, and
        earlier whenever the held q/k reach :data:`HELD_BYTES`.
        """
        for (_, _, dtype, heads, scale, upcast), kept in batch.pending.items():
            queries = kept[0][2] if len(kept) == 1 else torch.cat([query for _, _, query, _ in kept])
            keys = kept[0][3] if len(kept) == 1 else torch.cat([key for _, _, _, key in kept])
            values = batch.token_values(keys.shape[1], heads, torch.float32 if upcast else dtype, len(kept))
            probabilities = token_probabilities(queries, keys, values, heads=heads, scale=scale, upcast=upcast)
            rows = len(probabilities) // len(kept)
            for index, (layer, attn, _, _) in enumerate(kept):
                self._write(layer, attn.heads, probabilities[index * rows : (index + 1) * rows])
        batch.let_go()

    def _write(self, layer: CrossAttentionLayer, heads: int, probabilities: torch.Tensor) -> None:
        """One layer's probabilities ``(rows, heads, n, width)`` of the selected tokens into the step buffer."""
        batch = self._batch
        mean_heads = self.selection.heads == "mean"
        start, end = self._extents[layer.name]
        target = batch.target()[:, :, start:end].unflatten(-1, (1 if mean_heads else heads, probabilities.shape[2]))
        if batch.uncond_offset:  # rows are [uncond, cond]; cond slots come first in the buffer
            store_tokens(target[:, : batch.cond_width], probabilities[batch.uncond_offset :], mean_heads=mean_heads)
            store_tokens(target[:, batch.cond_width :], probabilities[: batch.uncond_offset], mean_heads=mean_heads)
        else:
            store_tokens(target, probabilities, mean_heads=mean_heads)

    def _finish(self, batch: _Batch) -> None:
        run_ids = self._writer.reserve(len(batch.records))
        self._writer.submit_runs(batch.file_rows, batch.records, run_ids)  # its last block of steps went on before
        self.run_ids += run_ids
        self._last_run_ids = run_ids

    # -- after sampling --------------------------------------------------------
    def add_images(self, images) -> None:
        """Store the last pipeline call's images: PIL images or ``(runs, H, W, 3)`` arrays."""
        if not self._last_run_ids:
            raise RuntimeError("no captured runs to attach images to")
        array = np.stack([np.asarray(image) for image in images])
        if array.dtype != np.uint8:
            array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
        if len(array) != len(self._last_run_ids):
            raise ValueError(f"{len(array)} images for {len(self._last_run_ids)} runs of the last call")
        self._writer.submit_images(array, self._last_run_ids)

    @property
    def file(self) -> RunFile:
        """The captured runs as a :class:`RunFile` (waits for pending writes)."""
        if self._writer.file is not None and self._writer.file.id.valid:
            self._writer.flush()
            return RunFile(self._writer.file)
        if self.sink is None:
            raise RuntimeError("nothing was captured")
        if self._file is None:
            self._file = RunFile(self.sink)
        return self._file

    def __len__(self) -> int:
        return len(self.run_ids)

    def _run(self, run: int | None) -> int:
        if not self.run_ids:
            raise RuntimeError("nothing was captured: call the pipeline inside the `with capture(...)` block")
        return self.run_ids[-1] if run is None else self.run_ids[run]

    def maps(self, layer: str, *, run: int | None = None, **selection) -> np.ndarray:
        """:meth:`RunFile.maps` for one captured run (default: the last)."""
        return self.file.maps(self._run(run), layer, **selection)

    def heatmap(self, *, run: int | None = None, **selection) -> np.ndarray:
        """:meth:`RunFile.heatmap` for one captured run (default: the last)."""
        return self.file.heatmap(self._run(run), **selection)

    def __getitem__(self, run: int) -> "RunView":
        return RunView(self.file, self._run(run))


@dataclass(frozen=True)
class RunView:
    """One captured run: ``view.maps(layer, word=...)``, ``view.image``, ``view.words``."""

    file: RunFile
    run: int

    def maps(self, layer: str, **selection) -> np.ndarray:
        return self.file.maps(self.run, layer, **selection)

    def heatmap(self, **selection) -> np.ndarray:
        return self.file.heatmap(self.run, **selection)

    @property
    def words(self) -> list[str]:
        return self.file.words(self.run)

    @property
    def record(self) -> RunRecord:
        return self.file.record(self.run)

    @property
    def image(self) -> np.ndarray:
        return self.file.image(self.run)
