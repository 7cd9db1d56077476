"""The HTML leakage report (``attnscope leakage-report``): self-contained HTML, metrics.json, CSVs, figures.

:func:`write_leakage_report` builds it from judged side-effect records and
the run files they came from; :mod:`.html` holds the escaping HTML builders.
"""

from attnscope.report.leakage import ReportInputs, StateInfo, side_effect_metrics, write_leakage_report

__all__ = ["ReportInputs", "StateInfo", "side_effect_metrics", "write_leakage_report"]
