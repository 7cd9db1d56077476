"""The SEE prompt-set builder: counts, text, questions, split, distances, export."""

from __future__ import annotations

import csv
import math
from collections import Counter

import pytest
import torch

from attnscope.datasets import coco
from attnscope.datasets.see import (
    PROMPT_COLUMNS,
    QUESTION_COLUMNS,
    SPLIT_COLUMNS,
    Recipe,
    Vocabulary,
    build_pair_prompts,
    build_see_prompts,
    build_toy_prompts,
    export,
    parse_concept,
    read_prompts,
    split,
    toy_recipe,
)
from attnscope.models.prompts import embed_texts


@pytest.fixture(scope="module")
def see():
    return build_see_prompts()


@pytest.fixture(scope="module")
def pairs():
    return build_pair_prompts()


def by_prompt(prompts, text):
    (match,) = [p for p in prompts if p.prompt == text]
    return match


# --------------------------------------------------------------------------- the SEE set


def test_see_has_the_papers_count_and_structure(see):
    assert len(see) == 5056 == 79 * 64
    assert len({p.prompt_id for p in see}) == len({p.prompt for p in see}) == 5056
    per_object = Counter(p.object for p in see)
    assert len(per_object) == 79 and set(per_object.values()) == {64}
    assert "person" not in per_object
    assert {p.superclass for p in see} == set(coco.HIERARCHY) and len(coco.HIERARCHY) == 11
    # k of 3 slots present, 3 values each: C(3,k) * 3**k prompts per object
    assert Counter(p.n_attributes for p in see) == {0: 79, 1: 79 * 9, 2: 79 * 27, 3: 79 * 27}
    assert {p.kind for p in see} == {"single"}


def test_prompts_drop_absent_attributes_cleanly(see):
    texts = {p.prompt for p in see}
    assert "a picture of a small red wooden car" in texts
    assert "a picture of a car" in texts
    assert "a picture of a red car" in texts
    assert "a picture of a large metal teddy bear" in texts
    assert "a picture of an apple" in texts and "a picture of a green apple" in texts
    for p in see:
        assert "  " not in p.prompt and p.prompt == p.prompt.strip()
    car = by_prompt(see, "a picture of a small wooden car")
    assert (car.object, car.superclass, car.size, car.colour, car.material) == ("car", "vehicle", "small", "", "wooden")
    assert car.n_attributes == 2 and car.concept == "small wooden car"


def test_questions_pair_presence_with_each_attribute(see):
    car = by_prompt(see, "a picture of a small red wooden car")
    assert [(q.check, q.slot, q.text) for q in car.questions] == [
        ("presence", "", "Is there a car in the image?"),
        ("attribute", "size", "Is the car small?"),
        ("attribute", "colour", "Is the car red?"),
        ("attribute", "material", "Is the car wooden?"),
    ]
    assert by_prompt(see, "a picture of an apple").questions[0].text == "Is there an apple in the image?"
    ids = [q.question_id for p in see for q in p.questions]
    assert len(ids) == len(set(ids)) == sum(1 + p.n_attributes for p in see)


def test_vocabulary_and_templates_are_configurable():
    recipe = Recipe(
        hierarchy={"vehicle": ("car", "bus")},
        vocabulary=Vocabulary(size=("tiny", "huge"), colour=("red",), material=("glass",)),
        template="a photo of a {colour} {object}, {size}",
        articles=False,
    )
    prompts = build_see_prompts(recipe)
    assert len(prompts) == 2 * 3 * 2 * 2
    assert {p.prompt for p in prompts} >= {"a photo of a red car, tiny", "a photo of a bus,"}
    with pytest.raises(ValueError, match="template"):
        Recipe(template="a picture of a {colour} thing")
    with pytest.raises(ValueError, match="objects and as attribute values"):
        Recipe(vocabulary=Vocabulary(colour=("orange", "red", "blue")))
    with pytest.raises(ValueError, match="more than one place"):
        Vocabulary(colour=("red", "small"))


def test_superclass_prompts_are_optional():
    prompts = build_see_prompts(include_superclasses=True)
    assert len(prompts) == (79 + 11) * 64
    vehicle = by_prompt(prompts, "a picture of a red vehicle")
    assert vehicle.object == vehicle.superclass == "vehicle"


# --------------------------------------------------------------------------- two-object prompts


def test_pair_prompts_ask_about_leakage(pairs):
    assert len(pairs) == 79 * 3 * 9  # 3 partners, single-attribute variants
    assert all(p.kind == "pair" and p.n_attributes == 1 and p.superclass != p.other_superclass for p in pairs)
    assert build_pair_prompts() == pairs  # seeded: deterministic
    bench = by_prompt(build_pair_prompts(pairs=[("bench", "bird")]), "a picture of a wooden bench and a bird")
    assert [(q.check, q.subject, q.text) for q in bench.questions] == [
        ("presence", "bench", "Is there a bench in the image?"),
        ("attribute", "bench", "Is the bench wooden?"),
        ("presence", "bird", "Is there a bird in the image?"),
        ("leakage", "bird", "Is the bird wooden?"),
    ]
    assert len(build_pair_prompts(pairs=[("car", "dog")], attribute_counts=(1, 2, 3))) == 63
    with pytest.raises(ValueError, match="two different objects"):
        build_pair_prompts(pairs=[("car", "car")])


# --------------------------------------------------------------------------- toy world


def test_toy_prompts_use_only_toy_words_and_same_columns(see):
    toyworld = pytest.importorskip("attnscope.datasets.toyworld")
    toy = build_toy_prompts()
    n_variants = (len(toyworld.SIZES) + 1) * (len(toyworld.COLOURS) + 1) * (len(toyworld.MATERIALS) + 1)
    n_classes = sum(map(len, toyworld.HIERARCHY.values()))
    assert len(toy) == n_classes * n_variants
    assert toy[0].to_row().keys() == see[0].to_row().keys()
    vocab = {"a", "an", "and", *toyworld.SIZES, *toyworld.COLOURS, *toyworld.MATERIALS}
    vocab |= set(toyworld.HIERARCHY) | {c for members in toyworld.HIERARCHY.values() for c in members}
    toy_pairs = build_pair_prompts(toy_recipe(), partners_per_object=None)
    for p in toy + toy_pairs:
        assert set(p.prompt.split()) <= vocab, p.prompt
    for p in toy[:: len(toy) // 50]:  # the toy world's own parser reads our prompts back
        (parsed,) = toyworld.parse_caption(p.prompt)
        assert parsed["cls"] == p.object and {k: parsed[k] for k in p.attributes} == p.attributes


# --------------------------------------------------------------------------- split


def roles(rows):
    return Counter((r.role, r.relation, r.evasion) for r in rows)


def test_split_on_a_class(see):
    rows = split(see, "car")
    assert roles(rows) == {("target", "concept", False): 1, ("target", "variant", False): 63, ("retain", "", False): 4992}
    row = next(r for r in rows if r.prompt.prompt == "a picture of a small red wooden bus")
    assert row.role == "retain" and row.attr_distance == 3
    assert math.isnan(row.text_similarity)


def test_split_on_a_superclass_marks_evasion(see):
    rows = split(see, "vehicle")
    n_vehicles = len(coco.HIERARCHY["vehicle"])
    assert roles(rows) == {
        ("target", "subclass", True): n_vehicles,
        ("target", "variant", True): n_vehicles * 63,
        ("retain", "", False): 5056 - n_vehicles * 64,
    }
    with_word = split(build_see_prompts(include_superclasses=True), "vehicle")
    (concept,) = [r for r in with_word if r.relation == "concept"]
    assert concept.prompt.prompt == "a picture of a vehicle" and not concept.evasion


def test_split_on_a_composition_and_several_concepts(see, pairs):
    rows = {r.prompt.prompt: r for r in split(see, "blue couch")}
    assert rows["a picture of a blue couch"].relation == "concept"
    assert rows["a picture of a small blue couch"].relation == "variant"
    assert rows["a picture of a couch"].role == "retain" and rows["a picture of a couch"].attr_distance == 1
    assert rows["a picture of a blue chair"].role == "retain" and rows["a picture of a blue chair"].attr_distance == 0
    assert sum(r.role == "target" for r in rows.values()) == 16

    both = split(see + pairs, ["car", "dog"])
    assert sum(r.role == "target" and r.prompt.kind == "single" for r in both) == 128
    for r in both:
        if r.prompt.kind == "pair":
            assert r.other_role == ("target" if r.prompt.other_object in {"car", "dog"} else "retain")
        else:
            assert r.other_role == ""
    with pytest.raises(ValueError, match="truck driver"):
        parse_concept("truck driver", see)
    with pytest.raises(ValueError, match="shiny"):
        parse_concept("shiny car", see)


class WordTokenizer:
    """Whitespace tokenizer returning BOS + words + EOS, padded: enough for embed_texts.
    (EOS is not id 2, which would switch CLIP to its legacy argmax pooling.)"""

    def __init__(self, words):
        self.ids = {w: i for i, w in enumerate(["<pad>", "<bos>", "<unk>", "<eos>", *sorted(words)])}

    def __call__(self, texts, padding, truncation, return_tensors):
        seqs = [[1, *(self.ids[w] for w in t.split()), 3] for t in texts]
        width = max(map(len, seqs))
        ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def encoder(see):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    words = {w for p in see for w in p.concept.split()} | set(coco.HIERARCHY)
    tokenizer = WordTokenizer(words)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer.ids), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=16, eos_token_id=3, bos_token_id=1, pad_token_id=0,
    )
    return tokenizer, CLIPTextModel(config).eval()


def test_embed_texts_is_pooled_normalised_and_batch_invariant(encoder):
    texts = ["car", "red car", "small red wooden teddy bear", "car"]
    emb = embed_texts(texts, encoder, batch_size=64)
    assert emb.shape == (4, 16) and emb.dtype == torch.float32 and not emb.requires_grad
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(emb, embed_texts(texts, encoder, batch_size=1), atol=1e-5)
    # the pooled vector is the last real token's state, i.e. CLIP's own pooler output at EOS
    tokenizer, model = encoder
    batch = tokenizer(texts[:1], padding=True, truncation=True, return_tensors="pt")
    pooled = torch.nn.functional.normalize(model(**batch).pooler_output, dim=-1)
    assert torch.allclose(emb[:1], pooled, atol=1e-5)


def test_split_measures_text_similarity(see, encoder):
    rows = split(see, "car", embed=lambda texts: embed_texts(texts, encoder, batch_size=512))
    sims = [r.text_similarity for r in rows]
    assert all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in sims)
    (bare,) = [r for r in rows if r.relation == "concept"]
    assert bare.text_similarity == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- export


def read_csv(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_export_round_trips_prompts_and_writes_questions(tmp_path, see, pairs):
    prompts = see[:200] + pairs[:20]
    paths = export(prompts, tmp_path, parquet=False)
    assert [p.name for p in paths] == ["see_prompts.csv", "see_questions.csv"]
    assert read_prompts(paths[0]) == prompts
    questions = read_csv(paths[1])
    assert list(questions[0]) == list(QUESTION_COLUMNS)
    assert len(questions) == sum(len(p.questions) for p in prompts)


def test_export_split_rows(tmp_path, see):
    rows = split(see[:100], "bicycle")
    (path, _) = export(rows, tmp_path, stem="erase_bicycle", parquet=False)
    records = read_csv(path)
    assert list(records[0]) == list(PROMPT_COLUMNS + SPLIT_COLUMNS)
    assert records[0]["role"] == "target" and records[0]["text_similarity"] == ""
    assert read_prompts(path) == see[:100]


def test_parquet_needs_pyarrow(tmp_path, see):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        with pytest.raises(ImportError, match="pyarrow"):
            export(see[:5], tmp_path, parquet=True)
        assert [p.suffix for p in export(see[:5], tmp_path)] == [".csv", ".csv"]
    else:
        paths = export(see[:5], tmp_path, parquet=True)
        assert pq.read_table(paths[1]).num_rows == 5
