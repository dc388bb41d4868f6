"""The Parquet tier: what robots sent comes back row for row through DuckDB and pandas (no code of ours),
incrementally, without duplicates or gaps after a crash, with its freshness stated."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import fleet.parquet_export as parquet_export
from fleet.parquet_export import MANIFEST, ParquetExporter
from fleet.record import encode_record
from fleet.store import ExperienceStore
from robot_agent.recorder import TransitionRecorder
from robot_agent.spool import Spool
from tests.fleet.chunks import TASKS, agent_arrays, agent_header
from tests.robot_agent.test_recorder import ChunkList  # an experience sink that keeps the chunks

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ("robot_id, hardware, task, chunk_id, episode, step, trunk_version, adapter_version, log_prob, reward, "
           "done, time_out, obs, action, critic_obs, bootstrap_critic_obs")


def _fleet_records(seed: int = 0, robots: int = 3, episodes: int = 2) -> tuple[list[bytes], list[tuple]]:
    """Records of several robots of two hardware types (episodes of several chunks, versions moving on,
    interleaved as they would arrive), and the rows each transition should become."""
    rng = np.random.default_rng(seed)
    streams = []
    for r in range(robots):
        hw, robot, epoch = ("cartpole", "go1_like")[r % 2], f"unit-{r}", f"{r:016x}"
        recs, seq = [], 1
        for ep in range(episodes):
            sizes = [int(rng.integers(5, 40)) for _ in range(int(rng.integers(1, 4)))]
            for k, n in enumerate(sizes):
                end = k == len(sizes) - 1
                arrays = agent_arrays(rng, n, hw, versions=(ep, seq), episode_end=end)
                header = agent_header(robot, epoch, seq, ep, arrays, hw, TASKS[hw], end)
                recs.append((header, arrays, sum(sizes[:k])))
                seq += 1
        streams.append(recs)
    records, expected = [], []
    while any(streams):  # round robin over robots, each robot in its own order
        for s in streams:
            if s:
                header, arrays, first = s.pop(0)
                records.append(encode_record(header, arrays))
                expected += _rows(header, arrays, first)
    return records, sorted(expected, key=lambda row: (row[3], row[5]))


def _rows(h: dict, a: dict, first: int) -> list[tuple]:
    n = h["steps"]
    return [(h["robot_id"], h["hardware"], h["task"], h["chunk_id"], h["episode"], first + t,
             int(a["trunk_version"][t]), int(a["adapter_version"][t]), float(a["log_probs"][t]), float(a["rewards"][t]),
             bool(a["dones"][t]), bool(a["time_outs"][t]), a["obs"][t].tolist(), a["actions"][t].astype(np.float32).tolist(),
             a["critic_obs"][t].tolist(), a["critic_obs"][n].tolist() if t == n - 1 else None) for t in range(n)]


def _duckdb_rows(out: Path) -> list[tuple]:
    return duckdb.sql(f"select {COLUMNS} from '{out}/**/*.parquet' order by chunk_id, step").fetchall()


def _store(tmp_path: Path, records: list[bytes]) -> ExperienceStore:
    store = ExperienceStore(tmp_path / "experience.sqlite")
    for k in range(0, len(records), 5):
        store.put_many(records[k:k + 5])
    return store


def test_duckdb_and_pandas_read_back_every_transition_sent_row_for_row(tmp_path):
    records, expected = _fleet_records()
    out, t0 = tmp_path / "parquet", time.time()
    with _store(tmp_path, records + records[:4]) as store:  # resends are stored once, exported once
        exporter = ParquetExporter(store, out, batch_chunks=4)
        assert exporter.catch_up() == len(records)
    assert _duckdb_rows(out) == expected
    days = {datetime.fromtimestamp(t, UTC).date() for t in (t0, time.time())}  # the UTC day(s) they arrived
    parts = duckdb.sql(f"select distinct hardware, date from '{out}/**/*.parquet'").fetchall()
    assert {p[0] for p in parts} == {"cartpole", "go1_like"} and {p[1] for p in parts} <= days
    df = pd.read_parquet(out)  # pyarrow's dataset discovery: hive partitions become columns, _manifest.json is skipped
    assert len(df) == len(expected)
    df = df.sort_values(["chunk_id", "step"])
    assert list(df["hardware"].astype(str)) == [row[1] for row in expected]
    assert np.array_equal(np.stack(df[df["hardware"] == "go1_like"]["obs"].to_numpy()),
                          np.array([row[12] for row in expected if row[1] == "go1_like"], np.float32))


@pytest.mark.timeout(300)
def test_chunks_of_the_real_recorder_through_the_spool_come_back_as_episode_ordered_rows(tmp_path):
    import sim  # MuJoCo plays the robot: its states drive the agent's own recorder

    env = sim.make_env("cartpole_swingup", "cartpole", 1, seed=0, nthread=1, episode_length_s=0.4,
                       randomization={"enabled": False})
    sink, rng = ChunkList(), np.random.default_rng(1)
    rec = TransitionRecorder(env.task, env.obs_layout, env.priv_layout, sink, chunk_steps=7,
                             rng=np.random.default_rng(0),
                             header={"robot_id": "unit-7", "hardware": "cartpole", "task": "cartpole_swingup"})
    for ep in range(2):
        rec.begin(ep, trunk_version=3, adapter_version=ep)
        for k in range(10_000):
            state = copy.deepcopy(env.state)
            obs, done = rec.observe(state, cut_short=False)
            if done:
                rec.record(0.02 * k, state, obs, None)
                break
            action = rng.uniform(-1, 1, env.num_actions)
            rec.record(0.02 * k, state, obs, action, log_prob=float(-k))
            env.step(action[None])
    assert len(sink.chunks) > 2 and sink.chunks[-1][0]["episode_end"]
    with Spool(tmp_path / "spool") as spool:  # the robot's disk, then its exact bytes to the hub
        for header, arrays in sink.chunks:
            spool.append(header, arrays)
        records = [spool.read_record_bytes(ref) for ref in spool.pending()]
    out = tmp_path / "parquet"
    with _store(tmp_path, records) as store:
        ParquetExporter(store, out).catch_up()
        assert json.loads((out / MANIFEST).read_text())["skipped_chunks"] == 0
    got = duckdb.sql(f"select episode, step, obs, log_prob, trunk_version, adapter_version, done, "
                     f"bootstrap_critic_obs is not null from '{out}/**/*.parquet' order by episode, step").fetchall()
    for ep in range(2):
        chunks = [a for h, a in sink.chunks if h["episode"] == ep]
        rows = [g for g in got if g[0] == ep]
        obs = np.concatenate([a["obs"] for a in chunks])
        assert [r[1] for r in rows] == list(range(len(obs)))  # steps 0.. across the episode's chunks
        assert np.array_equal(np.array([r[2] for r in rows], np.float32), obs)
        assert [r[3] for r in rows] == [float(-k) for k in range(len(obs))]
        assert {(r[4], r[5]) for r in rows} == {(3, ep)} and rows[-1][6] and not any(r[6] for r in rows[:-1])
        assert sum(r[7] for r in rows) == len(chunks)  # one bootstrap state per chunk


def test_manifest_states_how_fresh_the_parquet_tier_is_and_lag_counts_what_is_behind(tmp_path):
    records, _ = _fleet_records(seed=1)
    out = tmp_path / "parquet"
    with _store(tmp_path, records[:10]) as store:
        exporter = ParquetExporter(store, out, batch_chunks=3, roll_s=3600.0)
        exporter.step()  # read into open files: not complete yet
        assert exporter.lag().rows == 10
        exporter.catch_up()
        manifest = json.loads((out / MANIFEST).read_text())
        assert manifest["complete_through_rowid"] == store.last_rowid()
        assert manifest["complete_through_received"] == store.read_since(store.last_rowid() - 1)[0].received
        assert sum(f["rows"] for f in manifest["files"]) == len(_duckdb_rows(out))
        assert all((out / f["path"]).exists() for f in manifest["files"])
        assert exporter.lag().rows == 0 and exporter.lag().seconds == 0.0
        before = time.time()
        store.put_many(records[10:])
        lag = exporter.lag()
        assert lag.rows == len(records) - 10 and 0.0 <= lag.seconds <= time.time() - before


def test_files_roll_by_size_into_row_groups_and_leave_no_temp_files(tmp_path):
    records, expected = _fleet_records(seed=2, robots=4, episodes=6)
    out = tmp_path / "parquet"
    with _store(tmp_path, records) as store:
        ParquetExporter(store, out, file_bytes=20_000, row_group_rows=32, batch_chunks=2).catch_up()
    manifest = json.loads((out / MANIFEST).read_text())
    files = sorted(out.glob("hardware=*/date=*/part-*.parquet"))
    assert len(files) == len(manifest["files"]) > 4
    assert not list(out.rglob("*.tmp"))
    assert max(pq.ParquetFile(f).num_row_groups for f in files) > 1
    spans = sorted((f["min_rowid"], f["max_rowid"]) for f in manifest["files"])
    per_part = {}
    for f in manifest["files"]:
        per_part.setdefault(f["path"].rsplit("/", 1)[0], []).append((f["min_rowid"], f["max_rowid"]))
    for ranges in per_part.values():  # one partition's files cover disjoint rowid ranges
        ranges.sort()
        assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert spans and _duckdb_rows(out) == expected


def test_row_groups_are_cut_by_bytes_and_reads_batched_by_bytes_so_wide_chunks_stay_bounded(tmp_path, monkeypatch):
    records, expected = _fleet_records(seed=4, robots=2, episodes=4)
    out = tmp_path / "parquet"
    reads: list[int] = []
    with _store(tmp_path, records) as store:
        read_since = store.read_since

        def counting(rowid, limit=256, max_bytes=None):
            rows = read_since(rowid, limit, max_bytes)
            reads.append(sum(r.nbytes for r in rows))
            assert max_bytes is not None and (len(rows) <= 1 or reads[-1] <= max_bytes)
            return rows

        monkeypatch.setattr(store, "read_since", counting)
        one = max(len(r) for r in records)
        # counts alone would make one row group per file and one read per 256 chunks
        ParquetExporter(store, out, row_group_bytes=2_000, batch_bytes=2 * one).catch_up()
    files = sorted(out.glob("hardware=*/date=*/part-*.parquet"))
    assert min(pq.ParquetFile(f).num_row_groups for f in files) > 1
    filled = [n for n in reads if n]  # every record read once, in reads of at most two records' worth
    assert sum(filled) == sum(len(r) for r in records) and len(filled) > 1 and max(filled) <= 2 * one
    assert _duckdb_rows(out) == expected


def test_chunk_with_bad_arrays_is_skipped_named_in_the_manifest_and_costs_only_itself(tmp_path):
    records, expected = _fleet_records(seed=3, robots=1, episodes=1)
    rng = np.random.default_rng(9)
    bad = []
    for k, spoil in enumerate(["nan", "rows", "missing"]):
        arrays = agent_arrays(rng, 6)
        if spoil == "nan":
            arrays["rewards"][2] = np.nan
        elif spoil == "rows":
            arrays["obs"] = arrays["obs"][:4]
        else:
            del arrays["log_probs"]
        bad.append(encode_record(agent_header("unit-9", "9" * 16, k + 1, 0, arrays), arrays))
    out = tmp_path / "parquet"
    with _store(tmp_path, [bad[0], *records, bad[1], bad[2]]) as store:
        ParquetExporter(store, out).catch_up()
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["skipped_chunks"] == 3
    reasons = " ".join(s["reason"] for s in manifest["skipped"])
    assert "rewards holds NaN" in reasons and "obs has" in reasons and "log_probs" in reasons
    assert _duckdb_rows(out) == expected


def test_crash_between_rename_and_manifest_exports_those_rows_once_after_restart(tmp_path, monkeypatch):
    records, expected = _fleet_records(seed=4)
    out = tmp_path / "parquet"
    with _store(tmp_path, records) as store:
        first = ParquetExporter(store, out, batch_chunks=3)
        first.step()
        first.flush()

        def crash(*args, **kwargs):
            raise OSError("killed before the manifest was written")
        monkeypatch.setattr(parquet_export, "write_atomic", crash)
        first.step()
        with pytest.raises(OSError, match="killed"):
            first.flush()  # its files are renamed, but the manifest does not list them
        first.step()  # and more rows in temp files that never close
        monkeypatch.undo()
        assert len(_duckdb_rows(out)) > 0
        ParquetExporter(store, out, batch_chunks=3).catch_up()
    assert _duckdb_rows(out) == expected


def _complete_through(out: Path) -> int:
    try:
        return json.loads((out / MANIFEST).read_text())["complete_through_rowid"]
    except FileNotFoundError:
        return 0


@pytest.mark.timeout(300)
def test_exporter_killed_9_repeatedly_neither_duplicates_nor_skips_a_row(tmp_path):
    records, expected = _fleet_records(seed=5, robots=6, episodes=12)
    out, rng = tmp_path / "parquet", np.random.default_rng(5)
    _store(tmp_path, records).close()
    cmd = [sys.executable, "-m", "fleet.parquet_export", str(tmp_path / "experience.sqlite"), str(out), "--file-mb",
           "0.02", "--batch-chunks", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = 0
    for _ in range(6):  # each run: let it roll at least once, then kill -9 it wherever it is
        before = _complete_through(out)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while proc.poll() is None and _complete_through(out) == before and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(float(rng.uniform(0, 0.01)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=30)
        assert _complete_through(out) > before
    assert killed >= 3  # the export needs dozens of rolls: most runs die mid-way
    assert subprocess.run(cmd, env=env, timeout=240, capture_output=True).returncode == 0
    assert _duckdb_rows(out) == expected
    manifest = json.loads((out / MANIFEST).read_text())
    assert sum(f["rows"] for f in manifest["files"]) == len(expected) and not list(out.rglob("*.tmp"))
