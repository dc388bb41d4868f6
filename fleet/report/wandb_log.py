"""The report's tables and figures in an offline W&B run under ``<run_dir>/wandb`` (no account, no network).

The mode comes from WANDB_MODE (offline when unset; never passed as an argument, which would override it);
with WANDB_MODE=disabled nothing is logged and no directory is written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fleet.report.document import Document

PROJECT = "fleet-demo"


def wandb_disabled() -> bool:
    """Whether the environment turns W&B off."""
    return os.environ.get("WANDB_MODE", "offline").lower() == "disabled"


def open_run(run_dir: Path) -> Any | None:
    """A W&B run writing under ``<run_dir>/wandb``, or None when W&B is disabled."""
    if wandb_disabled():
        return None
    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")
    return wandb.init(project=PROJECT, job_type="report", dir=str(run_dir), name=f"report-{run_dir.name}",
                      reinit="create_new")  # never ends a run the caller (fleet-demo) has open


def run_directory(run: Any | None) -> str:
    """Where the run's files are (its offline-run-* directory), or why there is none."""
    return str(Path(run.dir).parent) if run is not None else "not logged (W&B off: WANDB_MODE=disabled or wandb=false)"


def log_document(run: Any, doc: Document, out_dir: Path) -> None:
    """Every table (wandb.Table) and figure (wandb.Image) of the report, then finish the run."""
    import wandb

    payload: dict[str, Any] = {f"tables/{t.name}": wandb.Table(columns=t.header, data=t.rows) for t in doc.tables()}
    payload.update({f"figures/{f.name}": wandb.Image(str(out_dir / f.file), caption=f.caption) for f in doc.figures()})
    run.log(payload)
    run.finish()
