"""Read run files: metadata, token labels, maps and images as numpy arrays.

::

    with RunFile("run.h5") as runs:
        runs.summary()
        maps = runs.maps(0, layer="up_blocks.1.attentions.0.transformer_blocks.0.attn2", word="wooden")
        maps.shape                       # (steps, heads, h, w)
        runs.heatmap(0, word="wooden")   # (H, W), every layer and step

A file left by a killed writer opens too (in HDF5's SWMR-read mode); its
``complete`` array says which runs were fully written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import h5py
import numpy as np

from attnscope.errors import RunIndexError, UnreadableFile
from attnscope.store import compression
from attnscope.store.aggregate import global_heatmap
from attnscope.store.layers import select_layers
from attnscope.store.schema import FORMAT_NAME, FORMAT_VERSION, CaptureSchema, LayerSpec, RunRecord
from attnscope.store.tokens import CONCEPT_PREFIX, clean, concept_label


@dataclass(frozen=True)
class Storage:
    """What a run file takes on disk: ``maps_bytes`` (the ``/maps`` dataset as stored, compressed),
    ``file_bytes`` (the whole file: images, labels and metadata included), the maps' ``codec``,
    ``token_rows`` (rows of ``/maps``) and ``runs``."""

    maps_bytes: int
    file_bytes: int
    codec: str
    token_rows: int
    runs: int


@dataclass(frozen=True)
class Token:
    """A stored token row: its position in the prompt, text and word index (-1: special)."""

    position: int
    text: str
    word: int


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise FileNotFoundError(f"no run file at {path}")
    if path.is_dir():
        raise UnreadableFile(f"{path} is a folder, not a run file")
    try:
        try:
            return h5py.File(path, "r")
        except OSError as error:
            if "already open for write" not in str(error):
                raise
            return h5py.File(path, "r", swmr=True)  # a live or killed writer's file
    except OSError as error:
        if isinstance(error, PermissionError) or getattr(error, "errno", None) == 13:
            raise
        raise UnreadableFile(f"{path} cannot be read as HDF5 (not a run file, or corrupt/truncated): "
                             f"{' '.join(str(error).split())}") from error


def is_run_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HDF5 file that says it is an attnscope run file (also a killed writer's)."""
    path = Path(path)
    if not path.is_file() or not h5py.is_hdf5(path):
        return False
    try:
        with _open(path) as file:
            return file.attrs.get("format") == FORMAT_NAME
    except (OSError, UnreadableFile):
        return False


class RunFile:
    """A run file opened for reading: metadata, token labels, maps, images and the run index.

    One *run* is one image (prompt, negative prompt, seed, model, edit, sampler
    settings); runs are numbered from 0 in the order they were written.

    Args:
        source: the path of a run file (``capture(..., sink=path)``), or an open
            ``h5py.File``, which stays open when the reader closes.
    """

    def __init__(self, source: str | os.PathLike | h5py.File):
        self._owns = not isinstance(source, h5py.File)
        self.file = _open(Path(source)) if self._owns else source
        try:
            self._check_format(getattr(self.file, "filename", source))
            self.schema = CaptureSchema.from_json(self.file.attrs["schema"])
        except BaseException:
            self.close()
            raise
        self._token_cache: dict[int, list[Token]] = {}

    def _check_format(self, name) -> None:
        attrs = self.file.attrs
        if attrs.get("format") != FORMAT_NAME:
            raise UnreadableFile(f"{name} is not an attnscope run file (HDF5 without its 'format' attribute)")
        version = int(attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise UnreadableFile(f"{name} is run-file format version {version}; this attnscope reads up to "
                                 f"version {FORMAT_VERSION}: upgrade attnscope to read it")

    # -- file-level ---------------------------------------------------------
    def __enter__(self) -> "RunFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._owns:
            self.file.close()

    @property
    def layers(self) -> list[LayerSpec]:
        return list(self.schema.layers)

    @property
    def steps(self) -> np.ndarray:
        """Stored step indices (0 = first, noisiest), shape ``(S,)``."""
        return np.asarray(self.schema.steps)

    @property
    def versions(self) -> dict[str, str]:
        return json.loads(self.file.attrs["versions"])

    def __len__(self) -> int:
        return int(self.file["runs/complete"].shape[0])

    def storage(self) -> Storage:
        """Bytes on disk of the maps and of the whole file (:class:`Storage`)."""
        maps = self.file["maps"]
        return Storage(int(maps.id.get_storage_size()), os.path.getsize(self.file.filename),
                       str(maps.attrs.get("codec", "?")), int(maps.shape[0]), len(self))

    @property
    def complete(self) -> np.ndarray:
        """``(runs,)`` bool: the run's maps and labels were fully written."""
        return self.file["runs/complete"][:]

    @property
    def has_image(self) -> np.ndarray:
        return self.file["runs/has_image"][:]

    def column(self, name: str) -> np.ndarray:
        """One field of the run table for all runs (e.g. ``"seed"``, ``"prompt"``)."""
        values = self.file["runs"][name][:]
        return values.astype(str) if values.dtype == object else values

    def select_layers(self, pattern: str | Sequence[str] | None = None) -> list[LayerSpec]:
        """The stored layers chosen by ``pattern``: ``"all"``/``None``, names, globs or places
        (``"up"``), the rule capture chose them with (:func:`attnscope.store.layers.select_layers`)."""
        return select_layers(self.layers, pattern, known_as="the run file stores")

    # -- one run -----------------------------------------------------------
    def _check_run(self, run: int) -> int:
        if not 0 <= run < len(self):
            name = getattr(self.file, "filename", "the run file")
            if not len(self):
                raise RunIndexError(f"{name} holds no runs (was its capture stopped before the first batch?)")
            raise RunIndexError(f"run {run} is out of range: {name} holds runs 0 to {len(self) - 1}")
        return int(run)

    def rows(self, run: int) -> slice:
        """The run's rows of the ``maps`` dataset (all branches)."""
        run = self._check_run(run)
        runs = self.file["runs"]
        start = int(runs["row_start"][run])
        return slice(start, start + int(runs["n_tokens"][run]) + int(runs["n_uncond_tokens"][run]))

    def record(self, run: int) -> RunRecord:
        run = self._check_run(run)
        runs = self.file["runs"]
        tokens = [(t.position, t.text, t.word) for t in self.tokens(run, branch="all")]
        return RunRecord(
            prompt=runs["prompt"].asstr()[run],
            negative_prompt=runs["negative_prompt"].asstr()[run],
            seed=int(runs["seed"][run]),
            guidance_scale=float(runs["guidance_scale"][run]),
            tokens=tokens,
            n_uncond_tokens=int(runs["n_uncond_tokens"][run]),
            extra=json.loads(runs["extra"].asstr()[run]),
        )

    def tokens(self, run: int, branch: str = "cond") -> list[Token]:
        """Stored token rows of a run: ``branch`` is "cond", "uncond" or "all"."""
        run = self._check_run(run)
        if run not in self._token_cache:
            rows = self.rows(run)
            group = self.file["tokens"]
            self._token_cache[run] = [
                Token(int(p), str(t), int(w))
                for p, t, w in zip(group["position"][rows], group["text"].asstr()[rows], group["word"][rows])
            ]
        everything = self._token_cache[run]
        n_cond = int(self.file["runs/n_tokens"][run])
        return {"cond": everything[:n_cond], "uncond": everything[n_cond:], "all": everything}[branch]

    def words(self, run: int) -> list[str]:
        """The prompt's words among the stored tokens, as the tokenizer split them, in prompt order."""
        spelled = self._spelled(run)
        return [spelled[i] for i in sorted(spelled)]

    def _spelled(self, run: int) -> dict[int, str]:
        """``{word index: word}`` of the stored tokens (``Token.word`` indexes the whole prompt's words).

        A word's text is spelled from its first consecutive tokens: with two
        text streams (SD3's CLIP and T5) the same word also has tokens in
        the second stream, which count for its maps but not for its spelling.
        """
        words: dict[int, str] = {}
        last: dict[int, int] = {}  # word -> position of its last spelled token; -2 once spelled
        for token in self.tokens(run):
            if token.word < 0:
                continue
            previous = last.get(token.word)
            if previous is None or previous == token.position - 1:
                words[token.word] = words.get(token.word, "") + clean(token.text)
                last[token.word] = token.position
            else:
                last[token.word] = -2
        return words

    def token_rows(self, run: int, token: int | str | None = None, word: str | None = None, branch: str = "cond") -> list[int]:
        """Row offsets (within the run's block) of the selected tokens.

        ``token``: a prompt position (int) or a token's text; ``word``: every
        token of that word (sub-word pieces of ``"wooden"``); neither: all rows
        of the branch.
        """
        tokens = self.tokens(run, branch="all")
        n_cond = int(self.file["runs/n_tokens"][run])
        candidates = range(n_cond) if branch == "cond" else range(n_cond, len(tokens))
        if word is not None:
            spelled = self._spelled(run)
            indices = [i for i, spelling in spelled.items() if spelling == word]
            if not indices:
                raise KeyError(f"word {word!r} is not in run {run}'s prompt {self.words(run)}")
            return [i for i in candidates if tokens[i].word == indices[0]]
        if token is None:
            return list(candidates)
        if isinstance(token, str):
            found = [i for i in candidates if clean(tokens[i].text) == token or tokens[i].text == token]
        else:
            found = [i for i in candidates if tokens[i].position == token]
        if not found:
            raise KeyError(f"token {token!r} was not captured for run {run}: {[t.text for t in tokens]}")
        return found

    def _step_positions(self, step: int | Sequence[int] | None) -> list[int] | slice:
        if step is None:
            return slice(None)
        wanted = [step] if isinstance(step, (int, np.integer)) else list(step)
        stored = list(self.schema.steps)
        missing = [s for s in wanted if s not in stored]
        if missing:
            raise KeyError(f"steps {missing} were not captured; stored steps: {stored}")
        return [stored.index(s) for s in wanted]

    def maps(
        self,
        run: int,
        layer: str,
        *,
        token: int | str | None = None,
        word: str | None = None,
        step: int | Sequence[int] | None = None,
        branch: str = "cond",
    ) -> np.ndarray:
        """Attention maps of one layer for one run.

        Returns ``(steps, tokens, heads, h, w)``; with ``token`` or ``word`` the
        token axis is summed away (sub-word pieces of a word add up, as in
        DAAM) → ``(steps, heads, h, w)``. ``heads`` is 1 when heads were
        averaged at capture time. An int ``step`` keeps the steps axis (length 1).
        Quantised files are decoded to float32.
        """
        (spec,) = self._one(layer)
        block = self.rows(run)
        rows = np.asarray(self.token_rows(run, token, word, branch)) + block.start
        columns = slice(spec.offset, spec.offset + spec.size)
        data = compression.read(self.file["maps"], slice(rows.min(), rows.max() + 1), columns)
        data = data[rows - rows.min()][:, self._step_positions(step)]
        data = data.reshape(data.shape[:2] + (spec.heads, spec.height, spec.width)).swapaxes(0, 1)
        if token is not None or word is not None:
            return data.astype(np.float32).sum(axis=1)
        return data

    def concepts(self, run: int) -> list[str]:
        """Names of the concepts whose maps were stored with the run (``capture(..., concepts=...)``)."""
        return [t.text[len(CONCEPT_PREFIX) : -1] for t in self.tokens(run) if t.text.startswith(CONCEPT_PREFIX)]

    def concept_maps(self, run: int, layer: str, concept: str, *, step: int | Sequence[int] | None = None) -> np.ndarray:
        """A concept's output-space map at one layer, ``(steps, heads, h, w)`` (zero where the layer has none)."""
        if concept not in self.concepts(run):
            raise KeyError(f"no concept {concept!r} in run {run}; stored: {self.concepts(run)}")
        return self.maps(run, layer, token=concept_label(concept), step=step)

    def _one(self, pattern: str) -> list[LayerSpec]:
        chosen = self.select_layers(pattern)
        if len(chosen) != 1:
            raise KeyError(f"{pattern!r} matches {len(chosen)} layers; use heatmap() to aggregate several")
        return chosen

    def heatmap(
        self,
        run: int,
        *,
        word: str | None = None,
        token: int | str | None = None,
        layers: str | Sequence[str] | None = None,
        step: int | Sequence[int] | None = None,
        size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """DAAM-style global heat map ``(H, W)``: every chosen layer upsampled to
        ``size``, summed over heads, layers and steps, and scaled to [0, 1].

        Args:
            run: the run's index in the file.
            word: a word of the prompt (its sub-word tokens add up), or
            token: a prompt position (int) or a token's text.
            layers: ``None``/``"all"``, names, globs or places (``"up"``): the rule
                ``capture(layers=...)`` chose them with.
            step: a step index or several (default: every stored step).
            size: ``(H, W)`` of the map (default: the image size).
        """
        if word is None and token is None:
            raise ValueError("heatmap needs a word or a token")
        size = size or (self.schema.height, self.schema.width)
        per_layer = {
            spec.name: self.maps(run, spec.name, word=word, token=token, step=step)
            for spec in self.select_layers(layers)
        }
        return global_heatmap(per_layer, size)

    def image(self, run: int) -> np.ndarray:
        """The run's image, ``(H, W, 3)`` uint8."""
        run = self._check_run(run)
        if run >= self.file["images"].shape[0] or not self.file["runs/has_image"][run]:
            raise KeyError(f"run {run} has no stored image")
        return self.file["images"][run]

    def find(self, **extra) -> list[int]:
        """Runs whose ``extra`` metadata (or prompt/seed) match all given values."""
        prompts, seeds = self.column("prompt"), self.column("seed")
        extras = [json.loads(e) for e in self.column("extra")]
        found = []
        for run, (prompt, seed, meta) in enumerate(zip(prompts, seeds, extras)):
            fields = {"prompt": prompt, "seed": int(seed), **meta}
            if all(fields.get(key) == value for key, value in extra.items()):
                found.append(run)
        return found

    def index(self) -> "pandas.DataFrame":
        """The run table, one row per run: ``run``, ``prompt``, ``negative_prompt``, ``seed``,
        ``guidance_scale``, ``complete``, ``has_image`` and the fields of each run's ``extra``
        metadata (e.g. the runner's ``prompt_id``; empty where a run has none)::

            runs.index().query("complete and seed == 0")
        """
        import pandas  # start-up speed: only readers of the index load pandas

        table = pandas.DataFrame({
            "run": np.arange(len(self)),
            **{name: self.column(name) for name in ("prompt", "negative_prompt", "seed", "guidance_scale")},
            "complete": self.complete.astype(bool),
            "has_image": self.has_image.astype(bool),
        })
        extra = pandas.DataFrame([json.loads(e) for e in self.column("extra")], index=table.index)
        return table.join(extra[[c for c in extra.columns if c not in table.columns]])

    def summary(self) -> str:
        """A few lines describing the file (what ``attnscope inspect`` prints)."""
        schema = self.schema
        complete = self.complete
        lines = [
            f"runs: {len(self)} ({int(complete.sum())} complete, {int(self.has_image.sum())} with images)",
            f"model: {schema.model.get('id', '?')} (fingerprint {schema.model.get('fingerprint', '?')[:12]})",
            f"edit: {describe_edits(schema.edit)}",
            f"image: {schema.height}x{schema.width}; steps stored: {len(schema.steps)} of {len(schema.timesteps)}; "
            f"heads: {schema.heads}; branch: {schema.branch}; dtype: {schema.dtype}; "
            f"storage: {compression.storage_mode(self.file['maps'])}",
            f"layers ({len(schema.layers)}):",
        ]
        lines += [f"  {l.name:<60} {l.place:<4} {l.height}x{l.width} heads={l.heads}" for l in schema.layers]
        shown = min(len(self), 5)
        if shown:
            lines.append("first runs:")
        for run in range(shown):
            words = " ".join(self.words(run))
            concepts = f"; concepts: {', '.join(self.concepts(run))}" if self.concepts(run) else ""
            lines.append(f"  [{run}] seed={self.column('seed')[run]} complete={bool(complete[run])} words: {words}"
                         f"{concepts}")
        return "\n".join(lines)


def index_runs(runs: RunFile, ids_by_prompt: Mapping[str, str] | None = None) -> dict[tuple[str, int], int]:
    """``{(prompt_id, seed): run}`` of the runs complete with an image (the last one wins), from
    :meth:`RunFile.index`.

    The prompt id comes from the run's ``extra``; runs without one (captured
    outside the runner) are looked up by prompt text in ``ids_by_prompt``,
    and skipped when it does not know them.
    """
    index = {}
    for row in runs.index().to_dict("records"):
        if not (row["complete"] and row["has_image"]):
            continue
        prompt_id = row.get("prompt_id")
        if not isinstance(prompt_id, str) or not prompt_id:
            prompt_id = (ids_by_prompt or {}).get(str(row["prompt"]))
        if prompt_id is not None:
            index[(prompt_id, int(row["seed"]))] = int(row["run"])
    return index


def describe_edits(edit: dict | None) -> str:
    """``"uce ['bench']; rece ['bird']"`` from a schema's edit field (``{"edits": [meta, ...]}``)."""
    if not edit:
        return "none"
    return "; ".join(f"{meta.get('method')} {meta.get('concepts', '')}".strip() for meta in edit.get("edits", [edit]))


def open_runs(paths: Iterable[str | os.PathLike]) -> list[RunFile]:
    """Open several run files (e.g. the shards of a benchmark)."""
    return [RunFile(path) for path in paths]
