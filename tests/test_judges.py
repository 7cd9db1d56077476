"""VQA judges on tiny random models built here: batching, answer reading, devices, loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from transformers.convert_slow_tokenizer import bytes_to_unicode

from attnscope.judges import BlipVQAJudge, Florence2Judge, Judge, QwenVLJudge, parse_yes_no, resolve_device
from attnscope.judges.vqa import default_dtype, yes_probability

QUESTIONS = [
    "Is there a car in the image?",
    "Is the car red?",
    "Is there a bird in the image?",
    "Is the bird wooden?",
    "Is the car small?",
]


def images(n: int) -> list:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8) for _ in range(n)]
    return [Image.fromarray(a) if i % 2 else a for i, a in enumerate(arrays)]  # PIL and arrays mixed


def byte_level_vocab(specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary: specials, the 256 byte symbols, and merges for 'yes' / 'no'."""
    words = specials + list(bytes_to_unicode().values()) + ["ye", "yes", "no"]
    return {w: i for i, w in enumerate(words)}, [("y", "e"), ("ye", "s"), ("n", "o")]


# --------------------------------------------------------------------------- tiny models


def tiny_blip() -> tuple[torch.nn.Module, object]:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "yes", "no", "is", "there", "a", "car", "in",
             "the", "image", "?", "red", "bird", "wooden", "small", "it"]
    vocab = {w: i for i, w in enumerate(words)}
    tokenizer = transformers.BertTokenizer(vocab=vocab, bos_token="[DEC]")
    processor = transformers.BlipProcessor(
        image_processor=transformers.BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    config = transformers.BlipConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, encoder_hidden_size=32, intermediate_size=37, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=64,
            bos_token_id=vocab["[DEC]"], pad_token_id=vocab["[PAD]"], sep_token_id=vocab["[SEP]"],
        ),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
    )
    return transformers.BlipForQuestionAnswering(config), processor


def tiny_florence2() -> tuple[torch.nn.Module, object]:
    vocab, merges = byte_level_vocab(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<image>"])
    tokenizer = transformers.BartTokenizer(vocab=vocab, merges=merges, extra_special_tokens={"image_token": "<image>"})
    # 32 px → 8×8 → 4×4 visual tokens, + 1 temporal token = 17 image tokens
    image_processor = transformers.CLIPImageProcessorPil(
        size={"height": 32, "width": 32}, do_center_crop=False, image_seq_length=17
    )
    processor = transformers.Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    config = transformers.Florence2Config(
        text_config=transformers.BartConfig(
            vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128,
            bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2,
        ),
        vision_config=dict(
            depths=(1, 1), patch_size=(7, 3), patch_stride=(4, 2), patch_padding=(3, 1), patch_prenorm=(False, True),
            embed_dim=(8, 16), num_heads=(1, 2), num_groups=(1, 2), window_size=2, projection_dim=16,
            max_position_embeddings=8, max_temporal_embeddings=4,
        ),
        image_token_id=vocab["<image>"],
    )
    return transformers.Florence2ForConditionalGeneration(config), processor


QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_qwen() -> tuple[torch.nn.Module, object]:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    vocab, merges = byte_level_vocab(specials)
    tokenizer = transformers.Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    image_processor = transformers.Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)
    # transformers' Qwen2.5-VL processor insists on a video processor, which needs torchvision;
    # images never touch it, so build the processor without one.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transformers.ProcessorMixin, "check_argument_for_proper_class", lambda self, name, arg: type(arg))
        processor = transformers.Qwen2_5_VLProcessor(
            image_processor=image_processor, tokenizer=tokenizer, video_processor=None, chat_template=QWEN_CHAT_TEMPLATE
        )
    config = transformers.Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=512,
            bos_token_id=None, eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<|endoftext|>"],
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        ),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                           window_size=56, fullatt_block_indexes=[0]),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"],
    )
    return transformers.Qwen2_5_VLForConditionalGeneration(config), processor


BACKENDS = {"blip": (BlipVQAJudge, tiny_blip), "florence2": (Florence2Judge, tiny_florence2), "qwen": (QwenVLJudge, tiny_qwen)}


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def judge(request):
    judge_class, build = BACKENDS[request.param]
    torch.manual_seed(0)
    model, processor = build()
    return judge_class(model, processor, batch_size=2, max_new_tokens=3, device="cpu")


class ScriptedHead:
    """Makes the LM head emit ``script[k]`` at generation step k (the last entry from then on),
    for one ``generate`` call: ask at most ``batch_size`` questions inside it."""

    def __init__(self, judge, script: list[int]):
        self.head, self.script, self.step = judge.model.get_output_embeddings(), script, 0
        if self.head is None:  # BLIP keeps its head inside the text decoder
            self.head = judge.model.text_decoder.get_output_embeddings()

    def __enter__(self):
        self.handle = self.head.register_forward_hook(self._push)
        return self

    def _push(self, module, inputs, logits):
        boost = torch.zeros(logits.shape[-1], dtype=logits.dtype)
        boost[self.script[min(self.step, len(self.script) - 1)]] = 100.0
        self.step += 1
        return logits + boost

    def __exit__(self, *exc):
        self.handle.remove()


# --------------------------------------------------------------------------- answer reading


@pytest.mark.parametrize(
    "text, expected",
    [("yes", True), ("Yes.", True), ("yes, it is", True), (" YES!", True), ("no", False), ("No, there is not.", False),
     ("a red car", None), ("", None), ("yesterday", None), ("not really", None)],
)
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) is expected


def test_yes_probability_is_normalised_over_yes_and_no():
    logits = torch.log(torch.tensor([[3.0, 1.0, 100.0], [1.0, 1.0, 1.0]]))
    assert yes_probability(logits, [0], [1]).tolist() == pytest.approx([0.75, 0.5])
    assert yes_probability(logits, [0, 2], [1]).tolist()[0] == pytest.approx(103 / 104)


# --------------------------------------------------------------------------- mechanics on tiny models


def test_judge_satisfies_the_protocol(judge):
    assert isinstance(judge, Judge)
    assert judge.name == judge.backend


def test_batches_give_one_answer_per_question_whatever_the_batch_size(judge):
    answers = judge.answer(images(5), QUESTIONS)
    assert len(answers) == 5
    assert all(isinstance(a.yes, bool) and 0.0 <= a.score <= 1.0 for a in answers)
    judge.batch_size = 5
    try:
        together = judge.answer(images(5), QUESTIONS)
    finally:
        judge.batch_size = 2
    assert [a.score for a in together] == pytest.approx([a.score for a in answers], abs=1e-4)


def test_generated_yes_and_no_are_read(judge):
    tok = judge.tokenizer
    yes, no, eos = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no"), tok.sep_token_id or tok.eos_token_id
    if judge.backend == "qwen2.5-vl":
        eos = judge.model.config.text_config.eos_token_id
    with ScriptedHead(judge, [yes, eos]):
        said_yes = judge.answer(images(2), QUESTIONS[:2])
    with ScriptedHead(judge, [no, eos]):
        said_no = judge.answer(images(2), QUESTIONS[:2])
    assert all(a.yes and a.score > 0.99 for a in said_yes)
    assert all(not a.yes and a.score < 0.01 for a in said_no)


def test_score_is_read_at_the_first_content_token(judge):
    """A leading special token (Florence-2's forced BOS) is skipped when reading P(yes)."""
    tok = judge.tokenizer
    special = sorted(set(tok.all_special_ids) - {tok.pad_token_id})[0]
    with ScriptedHead(judge, [special, tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")]):
        (answer,) = judge.answer(images(1), QUESTIONS[:1])
    assert answer.yes and answer.score > 0.99


def test_model_lives_on_the_judges_device(judge):
    assert judge.device == torch.device("cpu") and judge.dtype == torch.float32
    assert {p.device.type for p in judge.model.parameters()} == {"cpu"}
    assert {p.dtype for p in judge.model.parameters()} == {torch.float32}


def test_mismatched_inputs_are_refused(judge):
    with pytest.raises(ValueError, match="2 images but 1 questions"):
        judge.answer(images(2), QUESTIONS[:1])


@pytest.mark.gpu
def test_auto_device_puts_the_model_on_the_gpu_in_float16():
    model, processor = tiny_blip()
    judge = BlipVQAJudge(model, processor, batch_size=2, max_new_tokens=3)
    assert judge.device.type == "cuda" and judge.dtype == torch.float16
    assert {(p.device.type, p.dtype) for p in judge.model.parameters()} == {("cuda", torch.float16)}
    assert all(0.0 <= a.score <= 1.0 for a in judge.answer(images(3), QUESTIONS[:3]))


def test_device_resolution(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert default_dtype(torch.device("cuda")) == torch.float16
    assert default_dtype(torch.device("cpu")) == torch.float32


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("backend", ["blip", "florence2"])
def test_from_pretrained_loads_a_local_folder(backend, tmp_path):
    judge_class, build = BACKENDS[backend]
    model, processor = build()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    judge = judge_class.from_pretrained(str(tmp_path), device="cpu", batch_size=4)
    assert judge.name == f"{judge.backend}:{tmp_path}" and judge.batch_size == 4
    assert len(judge.answer(images(2), QUESTIONS[:2])) == 2


@pytest.mark.parametrize("judge_class", [BlipVQAJudge, Florence2Judge, QwenVLJudge])
@pytest.mark.parametrize("where", ["missing-folder", "nobody/not-a-cached-model"])
def test_missing_weights_raise_a_clear_error(judge_class, where, tmp_path):
    path = str(tmp_path / where) if where == "missing-folder" else where
    with pytest.raises(FileNotFoundError, match="no model hub is reachable") as err:
        judge_class.from_pretrained(path, device="cpu")
    assert path in str(err.value)
