"""Where a run's experience data lives, and the one line of DuckDB that reads its Parquet tier.

The hub's Parquet tier is ``<storage_dir>/parquet`` by default (fleet/parquet_export.py, docs/storage.md):
``hardware=<type>/date=<YYYY-MM-DD>/part-*.parquet``, one row per transition, ``hardware`` and ``date`` in the
path only (Hive partitioning), and ``_manifest.json`` saying what the files hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fleet.parquet_export import MANIFEST
from fleet.store import STORE_FILE

PARQUET_SUBDIR = "parquet"  # the hub's default parquet_dir under its storage_dir


@dataclass(frozen=True)
class ExperienceData:
    """The store and Parquet tier of a run, and what the Parquet manifest says it holds."""

    data_dir: Path
    store: Path
    parquet_dir: Path
    store_exists: bool
    parquet_files: int | None  # None: no readable manifest
    parquet_rows: int | None
    complete_through: float | None  # hub receive time of the last chunk the tier holds


def resolve_data_dir(data_dir: str, run_dir: Path) -> Path:
    """The record's ``data_dir``: absolute as recorded; a relative one under the run directory if it is there,
    else relative to the working directory."""
    p = Path(data_dir)
    if p.is_absolute():
        return p
    return run_dir / p if (run_dir / p).exists() else p.resolve()


def experience_data(data_dir: str, run_dir: Path) -> ExperienceData:
    """What is at ``data_dir`` now (a missing or unreadable manifest is reported, not raised)."""
    root = resolve_data_dir(data_dir, run_dir)
    parquet = root / PARQUET_SUBDIR
    files = rows = through = None
    try:
        manifest = json.loads((parquet / MANIFEST).read_text())
        files = len(manifest["files"])
        rows = sum(int(f["rows"]) for f in manifest["files"])
        through = manifest.get("complete_through_received")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return ExperienceData(root, root / STORE_FILE, parquet, (root / STORE_FILE).exists(), files, rows,
                          through if isinstance(through, int | float) else None)


def duckdb_line(parquet_dir: Path) -> str:
    """One line of Python that prints the transitions, episodes and mean reward per hardware type, robot and
    trunk / adapter version, straight from the Parquet files."""
    glob = str(parquet_dir / "**" / "*.parquet").replace("'", "''")  # an SQL string literal
    sql = ("select hardware, robot_id, trunk_version, adapter_version, count(*) as transitions, "
           "count(distinct chunk_id) as chunks, avg(reward) as mean_reward "
           f"from read_parquet('{glob}', hive_partitioning = true, union_by_name = true) group by all order by all")
    return f"import duckdb; duckdb.sql({sql!r}).show(max_rows=1000)"
