"""benchmarks/writer_contention.py in --smoke mode: the stand-in loop alone and beside the writer, paired."""

from conftest import benchmark


def test_smoke_sheet_has_paired_ratios_for_the_loop_with_and_without_the_writer(tmp_path):
    out = tmp_path / "contention.md"
    assert benchmark("writer_contention").main(["--smoke", "--repeats", "2", "--out", str(out)]) == 0
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| arm")}
    assert set(rows) == {"alone", "with the writer", "with the writer, 10 steps per chunk",
                         "with the writer in a child process (reference)"}
    assert [cell.strip() for cell in rows["alone"][1:5]] == ["1.000"] * 4
    assert all(float(cells[1]) > 0 for cells in rows.values())
