"""benchmarks/writer_drain.py in --smoke mode: both chunkings replayed, their drains and sizes reported."""

from conftest import benchmark


def test_smoke_sheet_compares_ten_steps_per_chunk_with_the_default(tmp_path):
    out = tmp_path / "drain.md"
    assert benchmark("writer_drain").main(["--smoke", "--repeats", "1", "--out", str(out)]) == 0
    rows = [line.split("|")[2:-1] for line in out.read_text().splitlines() if line.startswith("| tiny |")]
    by_chunking = {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows}
    before, default = by_chunking["10 steps per chunk (before)"], by_chunking["default"]
    assert (before[0], before[1]) == ("10", "10") and (default[0], default[1]) == ("3", "1")  # 10 steps: 3, 3, 3, 1
    for per_chunk, last, drain, spread, ratio, writing, stored in (before, default):
        assert float(drain) >= 0 and float(ratio) >= 1 and float(writing) > 0 and 0 < float(stored) < 1.5
