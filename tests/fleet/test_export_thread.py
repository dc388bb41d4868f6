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


_EXITS_WITHOUT_STOP = '''
import sys
import time
from pathlib import Path

from fleet.export_process import ParquetExportProcess
from fleet.store import ExperienceStore

if __name__ == "__main__":
    d = Path(sys.argv[1])
    ExperienceStore(d / "experience.sqlite").close()
    export = ParquetExportProcess(d / "experience.sqlite", d / "parquet", 1 << 20, 0.5, 0.1, 2.0)
    export.start()
    end = time.monotonic() + 60
    while not export.status()["running"] and time.monotonic() < end:  # the child is up, its signals set
        time.sleep(0.05)
    print(export.pid, export.status()["running"], flush=True)
    raise RuntimeError("the hub failed before it stopped its export")
'''


@pytest.mark.timeout(180)
def test_a_hub_that_raises_before_stopping_its_export_still_exits_and_frees_the_lock(tmp_path):
    import fcntl
    import os
    import signal
    import sys

    from fleet.export_process import LOCK_FILE

    script = tmp_path / "hub_that_raises.py"
    script.write_text(_EXITS_WITHOUT_STOP)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)  # the child's stop takes its stop_timeout_s (2 s) at most
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the process hung at exit: multiprocessing joins its export child, which ignored SIGTERM")
    assert proc.returncode == 1 and "the hub failed before it stopped its export" in err, err
    pid, running = out.split()
    assert running == "True", err  # the export had started before the raise
    assert not Path(f"/proc/{pid}").exists()  # joined at exit, not left behind
    with open(tmp_path / LOCK_FILE, "a") as f:  # the child let go of its lock
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.timeout(180)
def test_an_export_child_killed_9_is_restarted_and_exports_what_is_stored_after(tmp_path):
    import os
    import signal

    from fleet.export_process import ParquetExportProcess
    from fleet.store import ExperienceStore

    records, expected = _fleet_records(seed=5, robots=2, episodes=2)
    half = len(records) // 2
    out = tmp_path / "parquet"
    store = ExperienceStore(tmp_path / "experience.sqlite")
    export = ParquetExportProcess(tmp_path / "experience.sqlite", out, 1 << 20, 0.2, 0.1, 5.0)
    try:
        store.put_many(records[:half])
        export.start()
        first = export.pid
        assert wait_until(lambda: export.status()["complete_through_rowid"] == store.last_rowid(), 60), \
            export.status()
        os.kill(first, signal.SIGKILL)  # an OOM kill: nobody asked it to stop
        store.put_many(records[half:])  # stored after the kill: only a restarted export writes them
        assert wait_until(lambda: (s := export.status())["complete_through_rowid"] == store.last_rowid() and
                          s["chunks_behind"] == 0, 60), export.status()
        status = export.status()
        assert export.pid != first and status.get("restarts") == 1 and status["running"], status
        assert status["failures"] >= 1  # the death is counted, and the count never goes back
    finally:
        export.stop(5.0)
        store.close()
    assert _duckdb_rows(out) == expected  # nothing lost or doubled across the kill
    assert export.status().get("restarts") == 1  # stopped on request: not restarted again


@pytest.mark.timeout(120)
def test_sigterm_ends_the_export_child_cleanly_frees_its_lock_and_is_not_restarted(tmp_path):
    import fcntl
    import os
    import signal
    import time

    from fleet.export_process import LOCK_FILE, ParquetExportProcess
    from fleet.store import ExperienceStore

    ExperienceStore(tmp_path / "experience.sqlite").close()
    export = ParquetExportProcess(tmp_path / "experience.sqlite", tmp_path / "parquet", 1 << 20, 0.2, 0.1, 2.0)
    try:
        export.start()
        child = export.pid
        assert wait_until(lambda: export.status()["running"], 60), export.status()
        os.kill(child, signal.SIGTERM)  # as multiprocessing's exit handler, or a TERM to the hub's group, sends
        assert wait_until(lambda: not export.status()["running"], 60), "SIGTERM did not end the export child"
        with open(tmp_path / LOCK_FILE, "a") as f:  # exited, and its lock went with it
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for _ in range(20):  # well past the 0.1 s restart backoff: a child ended on request stays ended
            status = export.status()
            time.sleep(0.05)
        assert export.pid == child and status.get("restarts", 0) == 0 and status["failures"] == 0, status
    finally:
        export.stop(5.0)


@pytest.mark.timeout(180)
def test_an_export_child_that_cannot_be_remade_leaves_status_and_stop_working_and_is_remade_later(tmp_path):
    import os
    import signal

    from fleet.export_process import ParquetExportProcess
    from fleet.store import ExperienceStore

    records, expected = _fleet_records(seed=6, robots=1, episodes=2)
    out = tmp_path / "parquet"
    store = ExperienceStore(tmp_path / "experience.sqlite")
    export = ParquetExportProcess(tmp_path / "experience.sqlite", out, 1 << 20, 0.2, 0.1, 5.0)
    remake = export._new_child
    tries: list[int] = []

    def out_of_descriptors() -> None:  # what a Pipe() at the fd limit raises
        tries.append(1)
        raise OSError(24, "Too many open files")

    try:
        export.start()
        first = export.pid
        assert wait_until(lambda: export.status()["running"], 60), export.status()
        export._new_child = out_of_descriptors
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: export.status() and len(tries) >= 2, 30), tries  # status() answers throughout
        assert export.status()["running"] is False
        export._new_child = remake  # descriptors free again: the next try remakes it
        store.put_many(records)
        assert wait_until(lambda: (s := export.status())["complete_through_rowid"] == store.last_rowid() and
                          s["chunks_behind"] == 0, 90), export.status()
        assert export.pid != first and export.status()["restarts"] == 1
    finally:
        export.stop(5.0)
        store.close()
    assert _duckdb_rows(out) == expected


@pytest.mark.timeout(120)
def test_stopping_the_export_waits_for_the_childs_exit_without_spinning_on_its_closed_pipe(tmp_path):
    from fleet.export_process import ParquetExportProcess
    from fleet.store import ExperienceStore

    ExperienceStore(tmp_path / "experience.sqlite").close()
    export = ParquetExportProcess(tmp_path / "experience.sqlite", tmp_path / "parquet", 1 << 20, 0.2, 0.1, 2.0)
    drains, seen = [], []
    real = export._drain

    def counted(wait_s):
        drains.append(wait_s)
        real(wait_s)
        seen.append(export._status["running"])  # what the child last reported, before stop() marks it stopped

    export._drain = counted
    export.start()
    assert wait_until(lambda: export.status()["running"], 60), export.status()
    drains.clear()
    seen.clear()
    export.stop(5.0)
    assert export._proc.exitcode == 0  # the child exited on its own, not killed at the deadline
    assert False in seen  # its final report (sent after its export stopped) was read before the pipe closed
    # between the child's last report and its exit the pipe reads EOF at once: polled in a loop, that was
    # ~10k calls in 0.1 s; the stop now polls while the child reports and joins once its end is closed
    assert len(drains) < 100, f"{len(drains)} drains during stop"
