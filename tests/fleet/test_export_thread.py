"""The Parquet tier run by the hub: robots send to a real fleet-hub process and DuckDB reads back, row for row,
what they sent; a broken export is logged and counted while ingest goes on, and catches up once repaired."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fleet.record import parse_record
from fleet.registry import load_registry
from tests.fleet.hub_client import BIN, BareRobot, free_port, kill_group, start_hub_process, wait_until
from tests.fleet.test_parquet_export import _duckdb_rows, _fleet_records


def _send_fleet(endpoint: str, records: list[bytes], robots) -> None:
    """Each record from its own robot's connection, every one acked."""
    by_robot: dict[str, BareRobot] = {}
    for rec in records:
        header = parse_record(rec, 0)[0]
        robot = by_robot.get(header["robot_id"])
        if robot is None:
            robot = by_robot[header["robot_id"]] = robots(endpoint, header["robot_id"])
            robot.welcome()
        assert robot.send(robot.chunk(header["chunk_id"], rec))
    for robot in by_robot.values():
        sent = {parse_record(r, 0)[0]["chunk_id"] for r in records if parse_record(r, 0)[0]["robot_id"] == robot.robot_id}
        acked: set[str] = set()
        while acked < sent:
            ack = robot.recv_type("ack", skip=("heartbeat", "credit"))
            assert ack is not None, f"{robot.robot_id}: {len(acked)} of {len(sent)} acked"
            acked |= set(ack.stored)


def _parquet(tmp_path: Path) -> dict:
    return load_registry(tmp_path / "hub" / "registry.json")["hub"]["parquet"]


def _rows_or_none(out: Path) -> list[tuple] | None:
    return _duckdb_rows(out) if list(out.rglob("*.parquet")) else None


@pytest.mark.timeout(180)
def test_robots_send_to_a_hub_process_and_duckdb_reads_its_parquet_tier_row_for_row(tmp_path, robots):
    records, expected = _fleet_records(seed=3, robots=3, episodes=3)
    port = free_port()
    proc = start_hub_process(tmp_path, port, "parquet_roll_s=0.5", "parquet_every_s=0.2", "registry_every_s=0.1")
    out = tmp_path / "hub" / "parquet"
    try:
        _send_fleet(f"tcp://127.0.0.1:{port}", records, robots)
        fresh = wait_until(lambda: (p := _parquet(tmp_path))["complete_through_rowid"] == len(records) and
                           p["chunks_behind"] == 0 and p, 60)
        assert fresh, _parquet(tmp_path)
        assert _duckdb_rows(out) == expected  # read with no code of ours
        assert fresh["rows_exported"] == len(expected) and fresh["failures"] == 0 and fresh["last_export_at"]
        status = subprocess.run([str(BIN / "fleet-hub"), "status", str(tmp_path / "hub")], capture_output=True,
                                text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert f"(rowid {len(records)}); 0 chunks / 0.0 s behind; {len(expected)} rows" in status.stdout
    finally:
        kill_group(proc)


@pytest.mark.timeout(180)
def test_a_broken_export_is_logged_and_counted_ingest_goes_on_and_it_catches_up_once_repaired(tmp_path, robots):
    records, expected = _fleet_records(seed=4, robots=2, episodes=2)
    out = tmp_path / "lake"
    out.write_text("not a directory")  # the export cannot make its directory
    port = free_port()
    proc = start_hub_process(tmp_path, port, f"parquet_dir={out}", "parquet_roll_s=0.3", "parquet_every_s=0.1",
                             "registry_every_s=0.1")
    try:
        _send_fleet(f"tcp://127.0.0.1:{port}", records, robots)  # every chunk acked while the export is broken
        broken = wait_until(lambda: (p := _parquet(tmp_path))["failures"] >= 1 and
                            p["chunks_behind"] == len(records) and p, 30)
        assert broken, _parquet(tmp_path)
        assert "lake" in broken["last_error"] and proc.poll() is None
        assert "Parquet export failed" in "".join(proc.output)
        out.unlink()  # repaired: the next retry exports everything stored
        assert wait_until(lambda: _parquet(tmp_path)["chunks_behind"] == 0 and _rows_or_none(out) == expected, 60), \
            _parquet(tmp_path)
    finally:
        kill_group(proc)


@pytest.mark.timeout(120)
def test_the_export_process_ends_when_its_hub_is_killed_and_holds_no_lock_after(tmp_path):
    import fcntl
    import os
    import signal

    from fleet.export_process import LOCK_FILE

    proc = start_hub_process(tmp_path, free_port(), "parquet_every_s=0.1", "registry_every_s=0.1")
    try:
        children = wait_until(lambda: [int(c) for c in Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                                       .read_text().split()], 30)
        lock = tmp_path / "hub" / LOCK_FILE
        assert children and wait_until(lambda: lock.exists(), 30)
        os.kill(proc.pid, signal.SIGKILL)  # the hub alone: its export process must not outlive it
        proc.wait(30)

        def gone() -> bool:
            for c in children:
                try:
                    if Path(f"/proc/{c}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":  # alive, not a zombie
                        return False
                except FileNotFoundError:
                    pass
            return True
        assert wait_until(gone, 60)
        with open(lock, "a") as f:  # a restarted hub's exporter would take the lock at once
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        kill_group(proc)
