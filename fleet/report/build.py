"""``build_report``: a demo run directory's ``results.json`` -> ``index.html``, ``report.md`` and PNG figures,
and the same tables and figures in an offline W&B run."""

from __future__ import annotations

import os
from pathlib import Path

from fleet.demo.record import RESULTS_FILE, DemoRecord
from fleet.report.content import build_document
from fleet.report.html import render_html
from fleet.report.markdown import render_markdown
from fleet.report.wandb_log import log_document, open_run, run_directory

REPORT_SUBDIR = "report"
HTML_FILE = "index.html"
MARKDOWN_FILE = "report.md"


class ReportError(ValueError):
    """The run directory holds no readable demo record."""


def load_run(run_dir: Path) -> DemoRecord:
    """The run's demo record; ReportError naming the directory or file when it is not one."""
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a directory (expected a fleet-demo run directory)")
    if not (run_dir / RESULTS_FILE).is_file():
        raise ReportError(f"{run_dir}: no {RESULTS_FILE} (is this a fleet-demo run directory? the demo writes it "
                          "at the end of a run)")
    try:
        return DemoRecord.load(run_dir)
    except ValueError as exc:
        raise ReportError(str(exc)) from None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_report(run_dir: Path, out_dir: Path | None = None, wandb: bool = True) -> Path:
    """Write the report of the run in ``run_dir`` into ``out_dir`` (default ``<run_dir>/report``); returns it.
    ``wandb=False`` logs nothing to W&B whatever WANDB_MODE says (fleet-demo's ``wandb=false``)."""
    run_dir = Path(run_dir)
    record = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / REPORT_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    run = open_run(run_dir) if wandb else None
    try:
        doc = build_document(record, run_dir, out, run_directory(run))
        _write(out / MARKDOWN_FILE, render_markdown(doc))
        _write(out / HTML_FILE, render_html(doc))
        if run is not None:
            log_document(run, doc, out)
            run = None
    finally:
        if run is not None:
            run.finish(exit_code=1)
    return out
