"""benchmarks/inside_leak.py in --smoke mode: phases split over two processes' parts, resumed, then the report."""

import json

import pytest

from conftest import benchmark

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def test_phases_in_parts_then_the_report(tmp_path, capsys):
    inside_leak = benchmark("inside_leak").main
    work, out, figures = tmp_path / "work", tmp_path / "results" / "inside_leak.md", tmp_path / "figures"
    smoke = ["--smoke", "--work", str(work), "--ablate", "kv", "--out", str(out), "--figures", str(figures)]
    assert inside_leak([*smoke, "--phase", "ablation", "--part", "0/2"]) == 0
    ran = sorted(p.name for p in (work / "ablation").glob("*.answers.csv"))
    assert ran == ["base.answers.csv", "uce-bench@k.answers.csv"]  # states 0 and 2 of base, full, k, v
    assert (work / "ablation" / "base.h5").exists() and not (work / "ablation" / "uce-bench@k.h5").exists()

    capsys.readouterr()
    assert inside_leak([*smoke, "--phase", "report"]) == 1  # half the states are missing
    assert "uce-bench@v" in capsys.readouterr().err and not out.exists()

    assert inside_leak([*smoke, "--phase", "ablation", "--part", "1/2"]) == 0
    assert inside_leak([*smoke, "--phase", "tradeoff"]) == 0
    answers = (work / "tradeoff" / "uce-once-n2.answers.csv").read_text()
    assert inside_leak([*smoke, "--phase", "tradeoff", "--phase", "report"]) == 0  # resumes: nothing sampled
    assert (work / "tradeoff" / "uce-once-n2.answers.csv").read_text() == answers

    report = out.read_text()
    assert "SMOKE RUN" in report and "### by kv" in report and "| k |" in report and "| v |" in report
    assert "Does attention explain the leak?" in report and "AUC" in report and "Spearman ρ" in report
    assert report.count("| concepts |") == 4 and "| lam | one-shot | 0.1 |" in report
    for stem in ("ablation", "dispersal_uce-bench", "outcome_uce-bench", "tradeoff_concepts", "tradeoff_predictor"):
        assert (figures / f"{stem}.png").exists() and (figures / f"{stem}.pdf").exists()
    assert "](../figures/ablation.png)" in report  # links relative to the Markdown file
    inside = json.loads((work / "ablation" / "metrics.json").read_text())["inside"]
    assert {"ablation", "dispersal:uce-bench", "outcome:uce-bench", "tradeoff"} <= set(inside)
    assert out.with_suffix(".html").exists()
