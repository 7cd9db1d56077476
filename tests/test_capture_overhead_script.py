"""benchmarks/capture_overhead.py in --smoke mode: every section of the acceptance sheet, with numbers."""

import pytest

from conftest import benchmark

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # ~35 s: dynamo traces the UNet twice


def rows(sheet: str, section: str) -> dict[str, list[str]]:
    """The table rows of ``section``, by their first cell."""
    body = sheet.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in body.splitlines() if line.startswith("| ")]
    return {row[0]: row[1:] for row in cells[1:]}


def test_smoke_sheet_has_paired_ratios_memory_sizes_and_the_compiled_unet(tmp_path):
    out = tmp_path / "overhead.md"
    assert benchmark("capture_overhead").main(["--smoke", "--repeats", "2", "--calls", "1", "--out", str(out)]) == 0
    sheet = out.read_text()
    for section in ("Batch 2, eager UNet", "Batch 1, eager UNet", "Batch 2, torch.compile'd UNet (backend eager)"):
        arms = rows(sheet, section)
        assert {"plain", "capture"} <= set(arms)
        assert arms["plain"][2:4] == ["1.000", "1.000"]  # plain against itself, median and mean
        ratio_median, ratio_mean = float(arms["capture"][2]), float(arms["capture"][3])
        assert ratio_median > 0 and ratio_mean > 0
        drain, waited = float(arms["capture"][5]), float(arms["capture"][6])  # seconds, for capture arms only
        assert drain > 0 and waited >= 0 and arms["plain"][5:7] == ["–", "–"]
    assert "daam-style" in rows(sheet, "Batch 1, eager UNet")
    sizes = rows(sheet, "Bytes per image on disk")
    assert set(sizes) == {"lossless", "quantised", "raw"}
    assert float(sizes["raw"][3]) == 1.0 and 0 < float(sizes["quantised"][1]) < float(sizes["raw"][1])
