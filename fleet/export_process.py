"""The hub's Parquet export in a process of its own, so it never holds the hub's interpreter lock.

Decoding every stored chunk (npz, CRCs, digests) and building Arrow tables cost 1.4-7 ms of Python per chunk; on
a thread of the hub that time was taken from the socket loop (BENCHMARKS.md, "Fleet hub": the merged hub's ingest
ratio fell from 0.37 to 0.26 of raw and its ack p99 rose from 35 to 269 ms). Here the very same
:class:`~fleet.export_thread.ParquetExportThread` (its manifest, retry and pacing: exactly once, docs/storage.md)
runs in a spawned child process at a lower CPU priority, reading the store through SQLite WAL connections of its
own. The hub talks to it over one pipe: it receives the export's freshness every ``STATUS_EVERY_S`` and sends
``stop`` at shutdown (the child then exports what is stored within ``stop_timeout_s`` and rolls its files).

The child follows the hub: it ignores SIGINT (a Ctrl-C at the terminal reaches the whole process group; the hub
decides when it stops) and stops when the pipe closes (the hub died). SIGTERM is a stop request, as ``stop`` is:
at interpreter exit multiprocessing SIGTERMs daemonic children and joins them with no timeout, so a hub that exits
without reaching ``stop`` (an exception, Ctrl-C during start-up) still ends. If the child dies without being asked
to (an OOM kill, a crash: a nonzero exit code), ``status`` starts a new one after a backoff; the manifest says
where it resumes.
An exclusive lock on ``<storage_dir>/.parquet-export.lock`` keeps a second exporter (a restarted
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
MAX_RESTART_BACKOFF_S = 60.0  # a child that keeps dying is restarted at least this often


class _Terminated(Exception):
    """Raised in the child by SIGTERM: it breaks out of a blocking poll or send (the hub may no longer read)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


class ParquetExportProcess:
    """The Parquet export run in a child process (module docstring); the same ``start`` / ``stop`` /
    ``status`` as :class:`~fleet.export_thread.ParquetExportThread`, called from the hub's thread."""

    def __init__(self, store_path: Path, out_dir: Path, file_bytes: int, roll_s: float, every_s: float,
                 stop_timeout_s: float, busy_max: float = 1.0):
        self._args = (str(store_path), str(out_dir), file_bytes, roll_s, every_s, stop_timeout_s, busy_max)
        self.stop_timeout_s = stop_timeout_s
        self.restart_backoff_s = every_s  # doubles per restart up to MAX_RESTART_BACKOFF_S
        self._stopping = False  # set by ``stop``: a child that exits after it is not restarted
        self._died_at: float | None = None  # when ``status`` found the child dead unasked
        self._started_at = 0.0
        self.restarts = 0
        self._failures_before = 0  # failures counted by children that died: the count never goes back
        self._new_child()
        self._status: dict[str, Any] = ParquetExportThread.initial_status(Path(out_dir))

    def _new_child(self) -> None:
        ctx = mp.get_context("spawn")  # never fork a process with ZeroMQ and SQLite threads running
        self._conn, self._child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=export_main, args=(self._child_conn, self._args), name="parquet-export",
                                 daemon=True)

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
        self._started_at = time.monotonic()
        self._child_conn.close()  # the child holds its end: the pipe closes when either side is gone

    def stop(self, timeout: float) -> None:
        """Ask the child to export what is stored within its ``stop_timeout_s``, roll its files and exit; kill it
        if it has not within ``timeout`` + 5 s (its open files are redone at the next start)."""
        self._stopping = True
        if self._proc.pid is None:  # never started (or a restart never began): nothing holds the pipe
            self._child_conn.close()
            self._conn.close()
            return
        try:
            self._conn.send(STOP)
        except OSError:
            pass  # already gone
        end = time.monotonic() + timeout + 5.0
        while self._proc.is_alive() and time.monotonic() < end:
            if self._conn.closed:  # its end is closed (it is exiting): wait for the exit, not on the pipe
                self._proc.join(min(0.1, max(0.0, end - time.monotonic())))
            else:
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
        keeps ageing between reports. A child that died unasked is restarted here, after a backoff (``restarts``
        counts them; each death counts as a failure)."""
        self._drain(0)
        self._restart_if_dead()
        s = dict(self._status)
        s["failures"] += self._failures_before
        s["restarts"] = self.restarts
        if self._proc.pid is not None and not self._proc.is_alive() and s["running"]:
            s["running"] = False
            s["last_error"] = s["last_error"] or f"export process exited ({self._proc.exitcode})"
        if s["chunks_behind"] and s["checked_at"] is not None:
            s["behind_s"] = round(s["behind_s"] + max(0.0, time.time() - s["checked_at"]), 3)
            s["checked_at"] = time.time()
        return s

    def _restart_if_dead(self) -> None:
        if self._stopping or not self._started_at or self._proc.is_alive():
            return
        # it ended as asked: SIGTERM (e.g. to the hub's whole group at shutdown), handled (0) or, when it came
        # before the child installed its handler, by default (-SIGTERM)
        if self._proc.exitcode in (0, -signal.SIGTERM):
            log.warning("the Parquet export process was terminated: not restarted until the hub restarts")
            self._stopping = True
            return
        now = time.monotonic()
        if self._died_at is None:
            self._died_at = now
            if now - self._started_at > MAX_RESTART_BACKOFF_S:  # it had been working: a new fault
                self.restart_backoff_s = self._args[4]
            self._failures_before += self._status["failures"] + 1
            self._status.update(running=False, failures=0,
                                last_error=f"export process exited ({self._proc.exitcode})")
            log.error("the Parquet export process exited (%s): restarting it in %.1f s", self._proc.exitcode,
                      self.restart_backoff_s)
            return
        if now - self._died_at < self.restart_backoff_s:
            return
        self.restart_backoff_s = min(self.restart_backoff_s * 2, MAX_RESTART_BACKOFF_S)
        old = (self._conn, self._child_conn, self._proc)
        try:
            # the new child first: if it cannot be made (EMFILE...), the old (dead, unclosed) one stays in place,
            # so status() and stop() still work on it
            self._new_child()
        except Exception:  # noqa: BLE001 - a failed restart must not take the hub's loop down: retried later
            self._conn, self._child_conn, self._proc = old
            log.exception("the Parquet export process could not be restarted (retrying in %.1f s)",
                          self.restart_backoff_s)
            self._died_at = now
            return
        old[0].close()
        old[1].close()
        old[2].close()
        try:
            self.start()
        except Exception:  # noqa: BLE001 - as above; the unstarted child is replaced at the next try
            log.exception("the Parquet export process could not be restarted (retrying in %.1f s)",
                          self.restart_backoff_s)
            self._died_at = now
            return
        self.restarts += 1
        self._died_at = None
        log.warning("the Parquet export process was restarted (restart %d, pid %s)", self.restarts, self._proc.pid)

    def _drain(self, wait_s: float) -> None:
        try:
            while not self._conn.closed and self._conn.poll(wait_s):
                self._status = self._conn.recv()
                wait_s = 0
        except (EOFError, OSError):  # the child closed its end (it is exiting or gone): the last status stands
            self._conn.close()  # nothing more comes; an open end would answer every poll at once, with EOF


def export_main(conn: Connection, args: tuple) -> None:
    """The child: wait for the export lock, run the export thread, report its status until told to stop (``stop``
    or SIGTERM) or the hub is gone, then stop it (exports what is stored within its timeout, rolls its files)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to the process group is the hub's to act on
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        _export_until_stopped(conn, args)
    except _Terminated:
        pass  # before the export started, or while it stopped: nothing left to roll (the lock goes with the fd)


def _export_until_stopped(conn: Connection, args: tuple) -> None:
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
    terminated = False
    try:
        export.start()
        while True:
            try:
                if conn.poll(STATUS_EVERY_S) and conn.recv() == STOP:
                    break
                conn.send(export.status())
            except (EOFError, OSError):  # the hub is gone
                break
    except _Terminated:
        terminated = True  # the hub is exiting (multiprocessing's atexit) or someone asked this child to end
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the stop below is bounded by its timeout
        export.stop(export.stop_timeout_s)
        if not terminated:  # after SIGTERM nobody may read: a send could block on a full pipe
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
