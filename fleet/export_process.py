"""The hub's Parquet export in a process of its own, so it never holds the hub's interpreter lock.

Decoding every stored chunk (npz, CRCs, digests) and building Arrow tables cost 1.4-7 ms of Python per chunk; on
a thread of the hub that time was taken from the socket loop (BENCHMARKS.md, "Fleet hub": the merged hub's ingest
ratio fell from 0.37 to 0.26 of raw and its ack p99 rose from 35 to 269 ms). Here the very same
:class:`~fleet.export_thread.ParquetExportThread` (its manifest, retry and pacing: exactly once, docs/storage.md)
runs in a spawned child process at a lower CPU priority, reading the store through SQLite WAL connections of its
own. The hub talks to it over one pipe: it receives the export's freshness every ``STATUS_EVERY_S`` and sends
``stop`` at shutdown (the child then exports what is stored within ``stop_timeout_s`` and rolls its files).

The child follows the hub: it ignores SIGINT / SIGTERM (the hub decides when it stops) and stops when the pipe
closes (the hub died). An exclusive lock on ``<storage_dir>/.parquet-export.lock`` keeps a second exporter (a restarted
hub while the old child still rolls its files) waiting until the first is gone, so two never write one manifest.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing as mp
import os
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from fleet.config import HubConfig
from fleet.export_thread import ParquetExportThread

log = logging.getLogger(__name__)

STATUS_EVERY_S = 0.2  # how often the child reports the export's freshness to the hub
EXPORT_NICE = 10  # the export is background work: on a busy machine ingest gets the CPU first
LOCK_FILE = ".parquet-export.lock"  # beside the store: held by the one exporter of that store
STOP = "stop"


class ParquetExportProcess:
    """The Parquet export run in a child process (module docstring); the same ``start`` / ``stop`` /
    ``status`` as :class:`~fleet.export_thread.ParquetExportThread`, called from the hub's thread."""

    def __init__(self, store_path: Path, out_dir: Path, file_bytes: int, roll_s: float, every_s: float,
                 stop_timeout_s: float, busy_max: float = 1.0):
        self._args = (str(store_path), str(out_dir), file_bytes, roll_s, every_s, stop_timeout_s, busy_max)
        self.stop_timeout_s = stop_timeout_s
        ctx = mp.get_context("spawn")  # never fork a process with ZeroMQ and SQLite threads running
        self._conn, self._child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=export_main, args=(self._child_conn, self._args), name="parquet-export",
                                 daemon=True)
        self._status: dict[str, Any] = ParquetExportThread.initial_status(Path(out_dir))

    @classmethod
    def from_config(cls, cfg: HubConfig, store_path: Path) -> ParquetExportProcess:
        """The export process a hub config asks for (not started)."""
        return cls(store_path, cfg.parquet_path(), int(cfg.parquet_file_mb * (1 << 20)), cfg.parquet_roll_s,
                   cfg.parquet_every_s, cfg.stop_timeout_s, cfg.parquet_busy_max)

    @property
    def pid(self) -> int | None:
        """The child's process id (None before ``start``)."""
        return self._proc.pid

    def start(self) -> None:
        """Start the child."""
        self._proc.start()
        self._child_conn.close()  # the child holds its end: the pipe closes when either side is gone

    def stop(self, timeout: float) -> None:
        """Ask the child to export what is stored within its ``stop_timeout_s``, roll its files and exit; kill it
        if it has not within ``timeout`` + 5 s (its open files are redone at the next start)."""
        if self._proc.pid is None:
            return
        try:
            self._conn.send(STOP)
        except OSError:
            pass  # already gone
        end = time.monotonic() + timeout + 5.0
        while self._proc.is_alive() and time.monotonic() < end:
            self._drain(0.1)
        if self._proc.is_alive():
            log.error("the Parquet export did not stop in time: its open files are redone at the next start")
            self._proc.kill()
        self._proc.join(5.0)
        self._drain(0)
        self._status["running"] = False
        self._conn.close()

    def status(self) -> dict[str, Any]:
        """The export's freshness as the child last reported it (``ParquetExportThread.status``); ``behind_s``
        keeps ageing between reports."""
        self._drain(0)
        s = dict(self._status)
        if self._proc.pid is not None and not self._proc.is_alive() and s["running"]:
            s["running"] = False
            s["last_error"] = s["last_error"] or f"export process exited ({self._proc.exitcode})"
        if s["chunks_behind"] and s["checked_at"] is not None:
            s["behind_s"] = round(s["behind_s"] + max(0.0, time.time() - s["checked_at"]), 3)
            s["checked_at"] = time.time()
        return s

    def _drain(self, wait_s: float) -> None:
        try:
            while not self._conn.closed and self._conn.poll(wait_s):
                self._status = self._conn.recv()
                wait_s = 0
        except (EOFError, OSError):
            pass  # the child is gone: the last status stands


def export_main(conn: Connection, args: tuple) -> None:
    """The child: wait for the export lock, run the export thread, report its status until told to stop or the
    hub is gone, then stop it (exports what is stored within its timeout, rolls its files)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C or SIGTERM to the process group is the hub's to act on
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        os.nice(EXPORT_NICE)
    except OSError:
        pass
    store_path, out_dir = Path(args[0]), Path(args[1])
    lock = _wait_for_lock(store_path.parent / LOCK_FILE, conn)
    if lock is None:
        return
    export = ParquetExportThread(store_path, out_dir, *args[2:])
    export.start()
    try:
        while True:
            try:
                if conn.poll(STATUS_EVERY_S) and conn.recv() == STOP:
                    break
                conn.send(export.status())
            except (EOFError, OSError):  # the hub is gone
                break
    finally:
        export.stop(export.stop_timeout_s)
        try:
            conn.send(export.status())
        except OSError:
            pass
        os.close(lock)


def _wait_for_lock(lock_path: Path, conn: Connection) -> int | None:
    """An exclusive lock on ``lock_path`` (its fd), once no other exporter holds it; None if the hub stops or
    goes away first."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            pass
        if not announced:
            log.warning("another Parquet export holds %s: waiting for it to finish", lock_path)
            announced = True
        try:
            if conn.poll(0.5) and conn.recv() == STOP:
                break
        except (EOFError, OSError):
            break
    os.close(fd)
    return None
