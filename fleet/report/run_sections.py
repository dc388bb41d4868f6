"""The report's sections on what happened around the learning: the roll-out timeline, the faults the demo
injected, where the experience data lives, and the W&B runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet.demo.record import DemoRecord, RolloutStep, finite
from fleet.report import formatting as fmt
from fleet.report.document import Code, Figure, Items, Section, Table, Text, missing
from fleet.report.experience_data import duckdb_line, experience_data
from fleet.report.figures import rollout_figure

PUBLISHED = ("published", "published_candidate")
ROLLED_BACK = ("rolled_back", "rollback")


def _versions(steps: list[RolloutStep], events: tuple[str, ...]) -> str:
    found = sorted({s.version for s in steps if s.event in events and isinstance(s.version, int)})
    return ", ".join(f"v{v}" for v in found) or "none"


def _details(fields: Any) -> str:
    if not isinstance(fields, dict):
        return fmt.value(fields)
    return ", ".join(f"{k}={fmt.value(v)}" for k, v in sorted(fields.items()) if k != "by")


def rollout_section(record: DemoRecord, out_dir: Path) -> Section:
    """Versions published, canaries, verdicts, promotions and rollbacks: a summary, a table and a PNG."""
    steps = record.rollout if isinstance(record.rollout, list) else []
    canaries = [f"{fmt.trunk(s.version)}: {fmt.value(s.fields.get('canaries', []))}" for s in steps
                if s.event == "sent_to_canaries" and isinstance(s.fields, dict)]
    summary = Items([f"published: {_versions(steps, PUBLISHED)}", f"sent to canaries: {'; '.join(canaries) or 'none'}",
                     f"promoted: {_versions(steps, ('promoted',))}", f"rolled back: {_versions(steps, ROLLED_BACK)}"])
    t0 = record.started if finite(record.started) else None
    rows = [[fmt.number(s.time - t0, 1) if t0 is not None and finite(s.time) else missing("no time"), fmt.utc(s.time),
             fmt.label(s.event), fmt.trunk(s.version), fmt.value(s.fields.get("by", "")) if isinstance(s.fields, dict) else "",
             _details(s.fields)] for s in steps]
    blocks: list = [summary]
    if rows:
        blocks.append(Table("rollout", ["t (s)", "time", "event", "version", "by", "details"], rows,
                            "Roll-out log (the hub's trunks/rollout.jsonl)"))
    made = rollout_figure(steps, record.started, out_dir)
    blocks.append(made if isinstance(made, Figure) else Text(f"roll-out timeline: {missing(made)}"))
    return Section("Roll-out timeline", blocks)


def faults_section(record: DemoRecord) -> Section:
    """What the demo broke on purpose, when, and how long until it was back."""
    faults = [f for f in record.faults if isinstance(f, dict)] if isinstance(record.faults, list) else []
    if not faults:
        return Section("Faults injected", [Text("The record lists no injected fault.")])
    rows = [[fmt.label(f.get("what")), fmt.number(f.get("at_s")), fmt.number(f.get("back_after_s")),
             _details({k: v for k, v in f.items() if k not in ("what", "at_s", "back_after_s")})] for f in faults]
    return Section("Faults injected", [
        Text("What the demo broke on purpose (at: seconds after the demo started; back after: seconds until the "
             "part was running again)."),
        Table("faults", ["what", "at (s)", "back after (s)", "details"], rows, "Injected faults")])


def data_section(record: DemoRecord, run_dir: Path) -> Section:
    """The hub's store and Parquet tier, and the line of DuckDB that reads the Parquet tier."""
    if not isinstance(record.data_dir, str) or not record.data_dir:
        return Section("Experience data", [Text(f"data directory: {missing('the record names none')}")])
    data = experience_data(record.data_dir, run_dir)
    tier = (f"{data.parquet_rows} transitions in {data.parquet_files} file(s), complete through "
            f"{fmt.utc(data.complete_through)}" if data.parquet_files is not None
            else missing(f"no readable {data.parquet_dir.name}/_manifest.json at report time"))
    return Section("Experience data", [
        Items([f"hub storage directory: {data.data_dir}",
               f"store (every chunk, exactly once; SQLite): {data.store}"
               + ("" if data.store_exists else f" ({missing('not found at report time')})"),
               f"Parquet tier (one row per transition, partitioned by hardware and date): {data.parquet_dir}/ - {tier}"]),
        Text("Read the Parquet tier with DuckDB (pip install duckdb), one line of Python:"),
        Code(duckdb_line(data.parquet_dir)),
        Text("docs/storage.md describes both tiers and their columns.")])


def wandb_section(record: DemoRecord, run_dir: Path, wandb_run: str) -> Section:
    """The offline W&B run directories of every part and of this report (``wandb sync DIR`` uploads one)."""
    dirs = [d for d in record.wandb_dirs if isinstance(d, str)] if isinstance(record.wandb_dirs, list) else []
    lines = [d + ("" if (run_dir / d).exists() or Path(d).exists() else f" ({missing('not found at report time')})")
             for d in dirs]
    lines.append(f"this report's tables and figures: {wandb_run}")
    return Section("W&B runs", [Text("Offline run directories (upload one with `wandb sync DIR` once an account is "
                                     "set up):"), Items(lines)])
