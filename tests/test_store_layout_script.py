"""benchmarks/store_layout.py at tiny sizes: every storage mode and chunk width gets a row."""

import pytest

from conftest import benchmark

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_run_reports_sizes_errors_and_read_times(tmp_path):
    out = tmp_path / "layout.md"
    assert benchmark("store_layout").main(["--runs", "1", "--steps", "2", "--read-runs", "2", "--read-steps", "5",
                                           "--chunk-width", "4096", "--work", str(tmp_path), "--out", str(out)]) == 0
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| storage") and not line.startswith("| layout")}
    assert float(rows["quantised"][-1]) <= 2e-3 and float(rows["lossless"][-1]) == float(rows["raw"][-1]) == 0
    assert {"format 1 (raw, chunk = one token row)"} | {  # the default steps per chunk, and all 5 in one
        f"{mode}, chunks of 3850 values × {steps} steps" for mode in ("lossless", "quantised") for steps in (4, 5)
    } <= set(rows)
