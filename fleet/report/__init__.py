"""The sim-to-real report of a demo run (``fleet-eval report RUN_DIR``): tables, PNG figures, index.html,
report.md and an offline W&B run, every figure derived from the run's ``results.json``."""

from fleet.report.build import ReportError, build_report

__all__ = ["ReportError", "build_report"]
