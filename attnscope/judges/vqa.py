"""VQA judges: yes/no questions answered by vision-language models through transformers.

Three backends, one mechanism (:class:`VQAJudge`):

- :class:`BlipVQAJudge` — ``BlipForQuestionAnswering`` (e.g. Salesforce/blip-vqa-base)
- :class:`Florence2Judge` — native ``Florence2ForConditionalGeneration`` (transformers ≥ 5)
- :class:`QwenVLJudge` — ``Qwen2_5_VLForConditionalGeneration``, via its chat template

Each batch is generated greedily. The answer is read twice:

- ``yes``: the first word of the decoded answer ("Yes.", "yes, it is", "no");
  if that word is neither yes nor no, ``score >= 0.5`` decides.
- ``score``: P(yes) / (P(yes) + P(no)) from the logits of the first generated
  content token (the first that is not a special token), where P(yes) sums
  the probabilities of the tokens that start "yes" / "Yes" / " yes" / " Yes".

Weights load offline by default (``local_files_only=True``): pass a local
folder or a hub id already in the Hugging Face cache. Models go on the GPU
when there is one (``device="auto"``), in float16 there, float32 on CPU.

Note: the Qwen2.5-VL processor of transformers 5.x requires torchvision (it
builds a video processor), so :meth:`QwenVLJudge.from_pretrained` needs it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import transformers
from PIL import Image

from attnscope.judges.base import Answer, ImageLike

_YES_WORDS = ("yes", "Yes", " yes", " Yes")
_NO_WORDS = ("no", "No", " no", " No")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → the current CUDA device when one is available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    """float16 on GPU, float32 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


def parse_yes_no(text: str) -> bool | None:
    """True / False when the answer's first word is yes / no, else None.

    >>> parse_yes_no("Yes."), parse_yes_no(" no, it is not"), parse_yes_no("a red car")
    (True, False, None)
    """
    words = "".join(ch if ch.isalpha() else " " for ch in text.lower()).split()
    first = words[0] if words else ""
    return {"yes": True, "no": False}.get(first)


def answer_token_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Ids of the first tokens of the yes and no spellings; ids shared by both
    (e.g. a lone space piece) are dropped."""

    def first_ids(words: Sequence[str]) -> set[int]:
        return {tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words}

    yes, no = first_ids(_YES_WORDS), first_ids(_NO_WORDS)
    if not yes - no or not no - yes:
        raise ValueError(f"{type(tokenizer).__name__} does not tell 'yes' from 'no' by their first token")
    return sorted(yes - no), sorted(no - yes)


def yes_probability(logits: torch.Tensor, yes_ids: Sequence[int], no_ids: Sequence[int]) -> torch.Tensor:
    """P(yes) / (P(yes) + P(no)) for logits (B, V) → (B,) in [0, 1], computed in log space."""
    logp = logits.float().log_softmax(dim=-1)
    return torch.sigmoid(logp[:, list(yes_ids)].logsumexp(-1) - logp[:, list(no_ids)].logsumexp(-1))


def _to_pil(image: ImageLike) -> Image.Image:
    if isinstance(image, np.ndarray):
        return Image.fromarray(image)
    return image.convert("RGB")


class VQAJudge:
    """A transformers vision-language model as a :class:`~attnscope.judges.base.Judge`.

    Subclasses name their model class and how a question becomes the model's
    text input; batching, device placement and answer reading live here.

    Args:
        model: the loaded model (moved to ``device`` / ``dtype`` here).
        processor: its processor (image processor + tokenizer).
        batch_size: questions per ``generate`` call.
        max_new_tokens: answer length cap; yes/no needs only a few.
        prompt: format string around the question, with ``{question}``.
        device: ``"auto"`` (GPU when present), or a torch device.
        dtype: default float16 on GPU, float32 on CPU.
        name: reported in results; defaults to the backend's name.
    """

    backend: ClassVar[str]
    model_class_name: ClassVar[str]
    default_prompt: ClassVar[str] = "{question}"

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        *,
        batch_size: int = 8,
        max_new_tokens: int = 8,
        prompt: str | None = None,
        device: str | torch.device = "auto",
        dtype: torch.dtype | None = None,
        name: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.dtype = dtype or default_dtype(self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.prompt = prompt or self.default_prompt
        self.name = name or self.backend
        self.yes_ids, self.no_ids = answer_token_ids(self.tokenizer)
        self._special_ids = torch.tensor(sorted(self.tokenizer.all_special_ids))

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str,
        *,
        local_files_only: bool = True,
        device: str | torch.device = "auto",
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> "VQAJudge":
        """Load model and processor from a local folder or the hub cache.

        ``kwargs`` go to the constructor (``batch_size``, ``prompt``, ...).
        Raises FileNotFoundError naming ``path_or_id`` when the weights are
        neither a local folder nor cached.
        """
        resolved = resolve_device(device)
        dtype = dtype or default_dtype(resolved)
        try:
            model_class = getattr(transformers, cls.model_class_name)
            model = model_class.from_pretrained(path_or_id, dtype=dtype, local_files_only=local_files_only)
            processor = transformers.AutoProcessor.from_pretrained(path_or_id, local_files_only=local_files_only)
        except OSError as err:
            where = "offline: local_files_only=True" if local_files_only else "the hub was asked too"
            raise FileNotFoundError(
                f"cannot load the {cls.backend} judge from {path_or_id!r}: it is not a local model folder and "
                f"not in the Hugging Face cache ({where}; no model hub is reachable from this machine). "
                f"Pass the path of a downloaded {cls.model_class_name} checkpoint."
            ) from err
        kwargs.setdefault("name", f"{cls.backend}:{path_or_id}")
        return cls(model, processor, device=resolved, dtype=dtype, **kwargs)

    def texts(self, questions: Sequence[str]) -> list[str]:
        """The model's text inputs for ``questions`` (one each)."""
        return [self.prompt.format(question=q) for q in questions]

    def answer(self, images: Sequence[ImageLike], questions: Sequence[str]) -> list[Answer]:
        """Ask ``questions[i]`` about ``images[i]``, ``batch_size`` at a time."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        answers: list[Answer] = []
        for start in range(0, len(questions), self.batch_size):
            stop = start + self.batch_size
            answers += self._answer_batch(images[start:stop], questions[start:stop])
        return answers

    @torch.no_grad()
    def _answer_batch(self, images: Sequence[ImageLike], questions: Sequence[str]) -> list[Answer]:
        inputs = self.processor(
            images=[_to_pil(im) for im in images], text=self.texts(questions), return_tensors="pt", padding=True
        ).to(device=self.device, dtype=self.dtype)
        out = self.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            output_logits=True,
            return_dict_in_generate=True,
        )
        logits = torch.stack(out.logits, dim=1)  # (B, steps, V)
        new_tokens = out.sequences[:, -logits.shape[1] :].cpu()  # (B, steps): the generated ones
        content = ~torch.isin(new_tokens, self._special_ids)
        step = torch.where(content.any(dim=1), content.int().argmax(dim=1), 0)  # first content token, else 0
        scores = yes_probability(logits[torch.arange(len(step)), step.to(logits.device)], self.yes_ids, self.no_ids)
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        answers = []
        for text, score in zip(texts, scores.tolist()):
            said = parse_yes_no(text)
            answers.append(Answer(yes=said if said is not None else score >= 0.5, score=score))
        return answers


class BlipVQAJudge(VQAJudge):
    """BLIP VQA (``BlipForQuestionAnswering``), e.g. Salesforce/blip-vqa-base."""

    backend = "blip-vqa"
    model_class_name = "BlipForQuestionAnswering"


class Florence2Judge(VQAJudge):
    """Florence-2 through transformers' native ``Florence2ForConditionalGeneration``
    (checkpoints in the native format, e.g. florence-community/Florence-2-base).
    The question is the task text; the processor adds the image tokens."""

    backend = "florence2"
    model_class_name = "Florence2ForConditionalGeneration"


class QwenVLJudge(VQAJudge):
    """Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``); one user turn with the
    image and the question, rendered by the processor's chat template."""

    backend = "qwen2.5-vl"
    model_class_name = "Qwen2_5_VLForConditionalGeneration"
    default_prompt = "{question} Answer yes or no."

    def __init__(self, model: torch.nn.Module, processor: Any, **kwargs: Any) -> None:
        processor.tokenizer.padding_side = "left"  # decoder-only: batch answers must start aligned
        super().__init__(model, processor, **kwargs)

    def texts(self, questions: Sequence[str]) -> list[str]:
        turns = [
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            for text in super().texts(questions)
        ]
        return [self.processor.apply_chat_template(t, add_generation_prompt=True, tokenize=False) for t in turns]
