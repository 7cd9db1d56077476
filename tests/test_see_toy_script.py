"""benchmarks/see_toy.py in --smoke mode, phase by phase: states, throughput, report."""

import json

import pytest

from conftest import benchmark

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def see_toy():
    return benchmark("see_toy").main


def test_phases_write_timings_throughput_and_report(see_toy, tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "results" / "see_toy.md"
    smoke = ["--smoke", "--work", str(work)]
    assert see_toy([*smoke, "--state", "base"]) == 0
    assert see_toy([*smoke, "--state", "uce"]) == 0
    assert not (work / "rece-furniture.edit").exists()  # a state computes only its own edit
    for name, method in (("base", "base"), ("uce-furniture", "uce")):
        timing = json.loads((work / f"{name}.timing.json").read_text())
        assert (timing["state"], timing["method"]) == (name, method)
        assert timing["sampled"] == timing["jobs"] == timing["judged"] > 0
        assert timing["finished"] > timing["started"] and timing["run_file_gb"] > 0

    assert see_toy([*smoke, "--throughput", "1"]) == 0
    throughput = json.loads((work / "throughput.json").read_text())
    assert throughput["ratio"] > 0 and throughput["batches"] == 1 and len(throughput["passes"]) == 4
    assert not (work / "throughput.h5").exists()  # the scratch run file is gone

    # All three states are expected by default: rece never ran.
    capsys.readouterr()
    assert see_toy([*smoke, "--report", "--out", str(out)]) == 1
    assert "rece-furniture: no answers" in capsys.readouterr().err
    assert not out.exists()

    # --report with --state expects just those states; re-running finished states samples nothing
    # and keeps their timing files.
    timing = (work / "base.timing.json").read_text()
    assert see_toy([*smoke, "--state", "base", "--state", "uce", "--report", "--out", str(out)]) == 0
    assert (work / "base.timing.json").read_text() == timing
    report = out.read_text()
    assert "with UCE" in report and "| base | 6 |" in report and "| uce-furniture | 6 |" in report
    assert f"**{throughput['ratio']:.3f}**" in report and "Pass seconds" in report
    assert "wall time" in report and "### leakage" in report
    assert out.with_suffix(".html").exists()

    # With every state done, the default report is written even without the run files (they do not
    # outlive their phase on the GPU machine): no example images, and the HTML says why.
    assert see_toy([*smoke, "--state", "rece"]) == 0
    for run_file in work.glob("*.h5"):
        run_file.unlink()
    assert see_toy([*smoke, "--report", "--out", str(out)]) == 0
    report = out.read_text()
    assert "with UCE and RECE" in report and "| rece-furniture | 6 |" in report
    html = out.with_suffix(".html").read_text()
    assert "Run files not in the work folder (base, uce-furniture, rece-furniture)" in html

    # A state killed mid-write leaves a cut last line: that job counts as missing, the file is left alone.
    ledger = work / "rece-furniture.answers.csv"
    ledger.write_bytes(ledger.read_bytes()[:-20])
    cut = ledger.read_bytes()
    capsys.readouterr()
    assert see_toy([*smoke, "--report", "--out", str(out)]) == 1
    assert "rece-furniture: 1 of 6 jobs lack answers" in capsys.readouterr().err
    assert ledger.read_bytes() == cut
