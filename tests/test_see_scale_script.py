"""benchmarks/see_scale.py in --smoke mode: the sheet's rows, sizes and projections."""

import re

import pytest

from conftest import benchmark

pytestmark = pytest.mark.usefixtures("one_thread")


def test_smoke_sheet_has_rates_sizes_and_projections(tmp_path):
    see_scale = benchmark("see_scale")
    out = tmp_path / "see_scale.md"
    assert see_scale.main(["--smoke", "--storage", "quantised", "--work", str(tmp_path), "--out", str(out)]) == 0
    sheet = out.read_text()
    assert "SMOKE RUN" in sheet and "2 prompts of the SEE set" in sheet
    quantised = next(line for line in sheet.splitlines() if line.startswith("| capture, quantised |"))
    maps_mb, file_mb, codec = [cell.strip() for cell in quantised.split("|")[5:8]]
    assert float(file_mb) > float(maps_mb) > 0 and codec in ("bitshuffle-zstd-1", "gzip-1-shuffle")
    projected = next(line for line in reversed(sheet.splitlines()) if line.startswith("| capture, quantised |"))
    walls = [float(hours) for hours in re.findall(r"([\d.]+) h wall", projected)]
    assert len(walls) == 3  # 1, 2 and 8 GPUs
    assert walls[0] == pytest.approx(2 * walls[1], rel=0.01) == pytest.approx(8 * walls[2], rel=0.01)
    assert list(tmp_path.glob("*/*.h5")) == []  # scratch run files are removed


def test_word_tokenizer_counts_one_token_per_word_like_clip():
    see_scale = benchmark("see_scale")
    tokenizer = see_scale.word_tokenizer(["a picture of a red bench"])
    ids = tokenizer("a picture of a red bench", padding="max_length", max_length=77).input_ids
    words = [tokenizer.convert_tokens_to_ids(word) for word in "a picture of a red bench".split()]
    assert len(ids) == 77 and ids[:8] == [0, *words, 1]
    assert set(ids[8:]) == {tokenizer.pad_token_id}
