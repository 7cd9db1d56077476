"""Capture text→image attention of diffusion transformers (SD3/SD3.5, Flux, PixArt, Sana).

``capture(pipe, ...)`` returns a :class:`TransformerCapture` when the pipeline
denoises with a transformer; selection, run file and reader are the UNet's.

* Each selected layer (:mod:`attnscope.models.layers`) gets a
  :class:`TransformerCaptureProcessor` that runs the module's **original
  processor** under an :class:`~attnscope.hooks.sdpa.SDPAObserver`: the
  output is the processor's own (bit-identical images), and the query/key
  it handed to SDPA — after QK-norm, RoPE and the text/image concatenation —
  are recorded with the kernel's log-sum-exp.
* Cross-attention layers (PixArt, Sana ``attn2``): the image queries'
  probabilities over the text keys (padding masked as the model masks it).
* Joint layers (SD3 ``attn``, Flux double- and single-stream ``attn``): the
  image queries' probabilities on the selected *text* keys, normalised over
  the whole joint key sequence (text and image), ``exp(q·k·scale − lse)``.
  For each run they are the text→image block of the joint attention; the
  image keys' share is what the text tokens' maps do not sum to.
* Token labels come from the ids each text encoder received: SD3's CLIP
  stream (77 positions) then its T5 stream, Flux's T5 stream, PixArt's T5.
  Positions are positions in the transformer's text sequence; a word has
  the same word index in every stream (T5's SentencePiece pieces are merged
  into words as CLIP's BPE pieces are), so ``maps(word=...)`` sums its
  tokens across streams.
* Steps are transformer calls (one per sampling step); CFG rows as for the
  UNet (``[uncond, cond]``).
* ``block="image-to-text"``: instead, the joint attention's other block —
  each selected text token's query on the image keys (still normalised over
  the whole joint sequence), a map over the image per token; joint layers only.
* ``concepts=[...]``: ConceptAttention-style concept maps
  (:mod:`attnscope.hooks.concepts`) of the conditional branch, stored as extra
  token rows ``"<concept:NAME>"`` after the prompt's tokens
  (``RunFile.concept_maps``).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Sequence

import torch

from attnscope.hooks.capture import Capture, _Batch
from attnscope.hooks.concepts import ConceptSet, ConceptStream, encode_concepts
from attnscope.hooks.sdpa import SDPACall, SDPAObserver, selected_probabilities
from attnscope.hooks.selection import Selection
from attnscope.models.layers import TransformerLayer, select_layers, transformer_attention_layers
from attnscope.models.prompts import TextStream, padded_ids, text_streams, token_texts
from attnscope.store.schema import CaptureSchema
from attnscope.store.tokens import align_words, clean, concept_label
from attnscope.store.writer import BatchRows

Token = tuple[int, str, int]  # (position in the text sequence, token text, word index)
_STREAMED = ("joint", "double")  # places whose blocks carry a separate text stream (concept maps)
BLOCKS = ("text-to-image", "image-to-text")


class TransformerCaptureProcessor:
    """Runs a transformer attention module's original processor and records its SDPA call."""

    def __init__(self, original, layer: TransformerLayer, recorder: "TransformerCapture"):
        self.original = original
        self.layer = layer
        self.recorder = recorder

    def __call__(self, attn, *args, **kwargs):
        if not self.recorder.recording:
            return self.original(attn, *args, **kwargs)
        observer = self.recorder.observer
        with observer:
            out = self.original(attn, *args, **kwargs)
        self.recorder.record_call(self.layer, observer.calls)
        return out


def _spell(tokens: list[Token]) -> list[str]:
    """Words from ``(position, text, word)`` tokens that hold every token of each word."""
    words: dict[int, str] = {}
    for _, text, word in tokens:
        if word >= 0:
            words[word] = words.get(word, "") + clean(text)
    return [words[i] for i in sorted(words)]


class TransformerCapture(Capture):
    """:class:`~attnscope.hooks.capture.Capture` for a diffusion transformer's attention.

    ``block``: ``"text-to-image"`` (image queries on text keys, default) or
    ``"image-to-text"`` (text queries on image keys, joint layers only).
    ``concepts``: phrases whose concept maps are stored beside the attention
    maps (joint-attention models; every SD3 joint / Flux double block must be
    selected, since each advances the concept stream). ``kernel_lse=False``
    recomputes the softmax normaliser from q/k instead of taking the attention
    kernel's (for tests; the two agree to float32 rounding).
    """

    def __init__(self, pipe, selection: Selection, sink: str | os.PathLike | None = None, *,
                 resume: bool = False, overwrite: bool = False, storage: str = "lossless",
                 block: str = "text-to-image", concepts: Sequence[str] = (), kernel_lse: bool = True):
        super().__init__(pipe, selection, sink, resume=resume, overwrite=overwrite, storage=storage)
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, not {block!r}")
        if block == "image-to-text" and any(not layer.joint for layer in self.layers):
            raise ValueError("the image-to-text block exists in joint attention only (SD3, Flux), not cross-attention")
        self.block = block
        self.concepts = list(concepts)
        if self.concepts:
            streamed = [layer for layer in transformer_attention_layers(pipe.transformer) if layer.place in _STREAMED]
            if not streamed or any(layer not in self.layers for layer in streamed):
                raise ValueError(
                    "concept maps need a joint-attention transformer (SD3, Flux) with every joint/double-stream "
                    "block selected: each block advances the concept tokens"
                )
        self._concept_set: ConceptSet | None = None
        self._stream: ConceptStream | None = None
        self._cond_rows = slice(0, 0)
        self.streams = [s for s in text_streams(pipe) if getattr(pipe, s.encoder, None) is not None]
        self.observer = SDPAObserver(kernel_lse=kernel_lse)
        self.lse_sources: set[str] = set()  # "kernel" / "recomputed": where the normaliser came from
        self._stream_calls: dict[str, list[torch.Tensor]] = {s.name: [] for s in self.streams}
        self._text_length = 0
        self._latent_per_token = 1

    def _backbone(self) -> torch.nn.Module:
        return self.pipe.transformer

    def _find_layers(self, pattern) -> list[TransformerLayer]:
        return select_layers(transformer_attention_layers(self.pipe.transformer), pattern)

    # -- hooks -----------------------------------------------------------------
    def _install(self) -> None:
        for layer in self.layers:
            module = layer.module
            self._originals[layer.name] = module.processor
            module.set_processor(TransformerCaptureProcessor(module.processor, layer, self))
        transformer = self.pipe.transformer
        self._handles.append(transformer.register_forward_pre_hook(self._before_transformer, with_kwargs=True))
        self._handles.append(transformer.register_forward_hook(self._after_unet))
        for stream in self.streams:
            encoder = getattr(self.pipe, stream.encoder)
            self._handles.append(encoder.register_forward_pre_hook(self._on_stream(stream), with_kwargs=True))
        if self.concepts:
            for layer in self.layers:
                if layer.place in _STREAMED:
                    block = transformer.get_submodule(layer.name.rsplit(".", 1)[0])
                    self._handles.append(block.register_forward_pre_hook(self._on_block, with_kwargs=True))

    def _on_block(self, module, args, kwargs):
        if self.recording:
            self._stream.temb = kwargs["temb"][self._cond_rows]

    def _on_stream(self, stream: TextStream):
        def hook(module, args, kwargs):
            if stream is self.streams[0] and self._batch is not None and self._batch.step > 0:
                warnings.warn("a sampling loop ended early; its partial attention maps were dropped")
                self._drop_batch()
            ids = args[0] if args else kwargs.get("input_ids")
            if ids is not None:
                self._stream_calls[stream.name].append(ids.detach().to("cpu"))

        return hook

    def _before_transformer(self, module, args, kwargs):
        if self._batch is None:
            self._batch = self._begin_transformer(args, kwargs)
        if self.concepts and self.recording:
            self._stream.start(module, self._cond_rows.stop - self._cond_rows.start)

    # -- one batch -------------------------------------------------------------
    def _grid(self, sample: torch.Tensor, kwargs: dict) -> tuple[int, int]:
        """The token grid ``(h, w)``; sets how many latent pixels one token spans."""
        patch = int(self.pipe.transformer.config.patch_size)
        img_ids = kwargs.get("img_ids")
        if img_ids is not None:  # Flux: packed 2×2 latent patches with (0, row, column) ids
            img_ids = img_ids[0] if img_ids.ndim == 3 else img_ids
            self._latent_per_token = 2 * patch
            return int(img_ids[:, 1].max()) + 1, int(img_ids[:, 2].max()) + 1
        self._latent_per_token = patch
        return sample.shape[-2] // patch, sample.shape[-1] // patch

    def _is_cfg(self, n_calls: int) -> bool:
        flag = getattr(self.pipe, "do_classifier_free_guidance", None)
        cfg = bool(flag) if flag is not None else n_calls >= 2
        if cfg and type(self.pipe).__name__.startswith("Flux"):
            raise NotImplementedError(
                "Flux true CFG (a negative prompt with true_cfg_scale > 1) runs the negative prompt in a "
                "second transformer call per step; capture supports one transformer call per step"
            )
        return cfg

    def _stream_ids(self, stream: TextStream, n_runs: int, cfg: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(prompt ids, negative ids)`` of ``stream``, one row per run."""
        calls = self._stream_calls[stream.name]
        prompt = calls[0]
        per_prompt = max(1, n_runs // prompt.shape[0])
        prompt = prompt.repeat_interleave(per_prompt, dim=0)[:n_runs]
        if cfg and len(calls) > 1:
            negative = calls[1].repeat_interleave(per_prompt, dim=0)[:n_runs]
        else:
            negative = padded_ids(getattr(self.pipe, stream.tokenizer), [""] * n_runs, prompt.shape[1])
        return prompt, negative

    def _tokens(self, ids: list[torch.Tensor], streams: list[TextStream]) -> list[Token]:
        """One run's selected tokens over all ``streams`` (``ids[i]``: stream i's ids), words aligned across them."""
        chosen: list[Token] = []
        offset, words = 0, None
        for stream, row in zip(streams, ids):
            tokenizer = getattr(self.pipe, stream.tokenizer)
            row, eos = row.tolist(), tokenizer.eos_token_id
            if eos not in row:  # Gemma (Sana) adds no EOS: the prompt ends at the first padding token
                eos = tokenizer.pad_token_id
            texts = token_texts(tokenizer, row)
            stream_words = _spell(Selection(tokens="prompt").resolve_tokens(row, texts, eos))
            if words is None:
                words, remap = stream_words, list(range(len(stream_words)))
            else:
                remap = align_words(words, stream_words)
                words = words + [w for w, i in zip(stream_words, remap) if i >= len(words)]
            chosen += [(offset + p, t, remap[w] if w >= 0 else -1)
                       for p, t, w in self.selection.resolve_tokens(row, texts, eos)]
            offset += len(row)
        if offset != self._text_length:
            raise RuntimeError(
                f"the text streams {[s.name for s in streams]} have {offset} token positions but the transformer "
                f"attends to {self._text_length} text positions; cannot label its keys (Sana: its default "
                "complex_human_instruction puts an instruction's tail before the prompt; pass "
                "complex_human_instruction=None)"
            )
        return chosen

    def _begin_transformer(self, args: tuple, kwargs: dict) -> _Batch:
        sample = args[0] if args else kwargs["hidden_states"]
        text = args[1] if len(args) > 1 else kwargs["encoder_hidden_states"]
        self._text_length = text.shape[1]
        streams = [s for s in self.streams if self._stream_calls[s.name]]
        if not streams:
            raise RuntimeError(
                "capture saw the transformer run without a text-encoder call: pass prompts (not prompt_embeds) "
                "so tokens can be labelled"
            )
        cfg = self._is_cfg(len(self._stream_calls[streams[0].name]))
        batch_size = sample.shape[0]
        n_runs = batch_size // 2 if cfg else batch_size
        ids = [self._stream_ids(s, n_runs, cfg) for s in streams]
        for calls in self._stream_calls.values():
            calls.clear()
        both = self.selection.branch == "both"
        cond = [self._tokens([p[run] for p, _ in ids], streams) for run in range(n_runs)]
        uncond = [self._tokens([n[run] for _, n in ids], streams) if both else [] for run in range(n_runs)]
        self._cond_rows = slice(n_runs, batch_size) if cfg else slice(0, batch_size)
        if self.concepts and self._concept_set is None:
            self._concept_set = encode_concepts(self.pipe, self.concepts)
            self._stream = ConceptStream(self._concept_set)
        concept_tokens = [(-1 - i, concept_label(name), -1) for i, name in enumerate(self.concepts)]
        records = self._records(n_runs, [c + concept_tokens for c in cond], uncond, *ids[0],
                                tokenizer=getattr(self.pipe, streams[0].tokenizer))

        positions = [[p for p, _, _ in tokens] for tokens in (uncond + cond if cfg and both else cond)]
        rows = slice(n_runs, batch_size) if cfg and not both else slice(0, batch_size)
        cond_width = max(len(c) for c in cond)
        uncond_width = max((len(u) for u in uncond), default=0)
        width = max(cond_width, uncond_width)
        token_index = torch.tensor([p + [0] * (width - len(p)) for p in positions], dtype=torch.long)

        grid = self._grid(sample, kwargs)
        steps = self.selection.resolve_steps(self._n_steps())
        schema = self._schema(grid, steps)
        self._writer.open(schema)
        self._extents = {spec.name: (spec.offset, spec.offset + spec.size) for spec in schema.layers}
        n_concepts = len(self.concepts)
        file_rows = BatchRows([list(range(len(c))) + list(range(cond_width, cond_width + n_concepts + len(u)))
                               for c, u in zip(cond, uncond)])
        maps = self._step_maps((n_runs, cond_width + n_concepts + uncond_width, schema.width_l), len(steps),
                               sample.device, file_rows)
        return _Batch(
            n_steps=self._n_steps(),
            slot_of_step={s: i for i, s in enumerate(steps)},
            rows=rows,
            token_index=token_index.to(sample.device, non_blocking=True),
            cond_width=cond_width,
            uncond_offset=n_runs if (cfg and both) else 0,
            maps=maps,
            records=records,
            file_rows=file_rows,
            latent_hw=grid,
        )

    def _schema(self, grid_hw: tuple[int, int], steps: list[int]) -> CaptureSchema:
        schema = super()._schema(grid_hw, steps)
        latent = (grid_hw[0] * self._latent_per_token, grid_hw[1] * self._latent_per_token)
        scale = int(getattr(self.pipe, "vae_scale_factor", 1))
        model = {**schema.model, "backbone": "transformer", "block": self.block, "text_length": self._text_length,
                 "text_streams": [s.name for s in self.streams]}
        return dataclasses.replace(
            schema, height=latent[0] * scale, width=latent[1] * scale,
            latent_height=latent[0], latent_width=latent[1], model=model,
        )

    # -- per layer -------------------------------------------------------------
    def record_call(self, layer: TransformerLayer, calls: list[SDPACall]) -> None:
        """Probabilities of ``layer``'s image queries on the selected text keys into the buffer."""
        if len(calls) != 1:
            raise RuntimeError(
                f"{layer.name}: expected one torch scaled_dot_product_attention call, saw {len(calls)}; capture "
                "needs the attention to run through PyTorch SDPA (diffusers' native attention backend)"
            )
        (call,) = calls
        batch = self._batch
        n = batch.latent_hw[0] * batch.latent_hw[1]
        text = self._text_length
        expected = n + text if layer.joint else n
        if call.query.shape[2] != expected:
            raise RuntimeError(f"{layer.name}: expected {expected} queries, got {call.query.shape[2]}")
        if layer.joint and layer.text_first:
            queries, key_offset = slice(text, text + n), 0
        else:
            queries, key_offset = slice(0, n), (n if layer.joint else 0)
        rows = batch.rows
        mask = call.attn_mask
        if mask is not None and mask.shape[0] > 1:
            mask = mask[rows]
        own = SDPACall(call.query[rows], call.key[rows], mask, call.scale,
                       None if call.lse is None else call.lse[rows])
        self.lse_sources.add("kernel" if call.lse is not None else "recomputed")
        mean_heads = self.selection.heads == "mean"
        if self.block == "image-to-text":  # the selected text tokens' queries on every image key
            text_offset = 0 if layer.text_first else n
            image_keys = torch.arange(queries.start, queries.stop, device=call.key.device).expand(len(own.key), -1)
            picked = selected_probabilities(own, batch.token_index + text_offset, image_keys, mean_heads=mean_heads)
            per_token = picked.permute(0, 2, 1, 3)  # (rows, heads or 1, tokens, n) -> (rows, tokens, heads, n)
        else:
            picked = selected_probabilities(own, queries, batch.token_index + key_offset, mean_heads=mean_heads)
            per_token = picked.permute(0, 3, 1, 2)  # (rows, heads or 1, n, tokens) -> (rows, tokens, heads, n)
        start, end = self._extents[layer.name]
        target = batch.target()[:, :, start:end].unflatten(-1, (picked.shape[1], n))
        cond, uncond = batch.cond_width, batch.cond_width + len(self.concepts)  # buffer: cond, concepts, uncond
        if batch.uncond_offset:  # rows are [uncond, cond]
            target[:, :cond].copy_(per_token[batch.uncond_offset :, :cond])
            target[:, uncond:].copy_(per_token[: batch.uncond_offset, : target.shape[1] - uncond])
        else:
            target[:, :cond].copy_(per_token[:, :cond])
        if self.concepts and layer.place in _STREAMED:
            block = self.pipe.transformer.get_submodule(layer.name.rsplit(".", 1)[0])
            rows = self._cond_rows
            mine = SDPACall(call.query[rows], call.key[rows], None, call.scale, None, call.value[rows], call.output[rows])
            image = queries  # the image positions of the joint sequence
            maps = self._stream.step(block, mine, image)  # (runs, concepts, n)
            target[:, cond:uncond].copy_(maps[:, :, None].expand(-1, -1, picked.shape[1], -1))
