"""The report's line of DuckDB, run as printed against a Parquet tier that fleet.parquet_export wrote from a
real store, counts every transition the robots sent."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from fleet.parquet_export import ParquetExporter
from fleet.report import build_report
from fleet.report.build import MARKDOWN_FILE
from fleet.store import STORE_FILE, ExperienceStore
from tests.fleet.chunks import agent_record
from tests.report.records import demo_record


def _store_of_two_types(storage) -> Counter:
    """Chunks of three robots on two hardware types, versions moving on; returns steps per
    (hardware, robot, trunk, adapter)."""
    rng, steps = np.random.default_rng(0), Counter()
    records = []
    for r, hw in enumerate(("cartpole", "go1_like", "cartpole")):
        for seq in range(1, 7):
            versions, n = (1 + seq // 4, seq // 2), int(rng.integers(5, 30))
            records.append(agent_record(rng, f"unit-{r}", seq, epoch=f"{r:016x}", episode=seq // 3, steps=n,
                                        hardware=hw, versions=versions, episode_end=seq % 3 == 2))
            steps[(hw, f"unit-{r}", *versions)] += n
    with ExperienceStore(storage / STORE_FILE) as store:
        store.put_many(records)
        ParquetExporter(store, storage / "parquet").catch_up()
    return steps


@pytest.mark.timeout(120)
def test_the_duckdb_line_in_the_report_reads_every_stored_transition(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "hub").mkdir(parents=True)
    steps = _store_of_two_types(run_dir / "hub")
    demo_record(data_dir="hub").save(run_dir)  # relative to the run directory, as a run dir moved elsewhere
    md = (build_report(run_dir) / MARKDOWN_FILE).read_text()
    line = re.search(r"```\n(import duckdb;.*)\n```", md).group(1)
    assert f"{run_dir / 'hub' / 'parquet'}/" in md
    assert re.search(rf"{sum(steps.values())} transitions in \d file\(s\), complete through 20", md)
    res = subprocess.run([sys.executable, "-c", line], cwd=tmp_path, capture_output=True, text=True, timeout=100)
    assert res.returncode == 0, res.stderr
    rows = [[c.strip() for c in ln.split("│")[1:-1]] for ln in res.stdout.splitlines() if ln.startswith("│")]
    header, types, *data = rows
    assert header == ["hardware", "robot_id", "trunk_version", "adapter_version", "transitions", "chunks",
                      "mean_reward"]
    got = {(r[0], r[1], int(r[2]), int(r[3])): int(r[4]) for r in data}
    assert got == dict(steps)


def test_a_missing_parquet_tier_is_shown_as_missing_and_the_line_still_names_where_it_goes(tmp_path):
    demo_record(data_dir=str(tmp_path / "gone")).save(tmp_path)
    md = (build_report(tmp_path) / MARKDOWN_FILE).read_text()
    assert "missing (no readable parquet/_manifest.json at report time)" in md
    assert "missing (not found at report time)" in md  # the store
    assert f"read_parquet('{tmp_path / 'gone' / 'parquet'}/**/*.parquet'" in md
