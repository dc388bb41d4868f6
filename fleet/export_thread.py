"""The hub's Parquet tier, kept up to date by a thread (in the hub's export process, fleet/export_process.py).

The thread tails the store through connections of its own (a second :class:`~fleet.store.ExperienceStore`:
SQLite WAL readers never wait for the group writer's fsyncs, and the writer never waits for them), so export
can be slow, stuck or broken without holding up one ack. A failure (full disk, unwritable directory, a bug) is
logged and counted, and the exporter is built afresh after a backoff: its manifest says where to resume, and
files a crash left half-written are removed (fleet/parquet_export.py). Freshness goes to the registry, the
Prometheus endpoint and W&B through :meth:`ParquetExportThread.status`.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fleet.config import HubConfig
from fleet.parquet_export import ParquetExporter
from fleet.store import ExperienceStore

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0  # a broken export retries at least this often
BATCH_CHUNKS = 32  # chunks read per step: small steps keep its pacing fine-grained
LAG_EVERY_S = 1.0  # how often a busy exporter counts what it is behind (a COUNT over the backlog)


class ParquetExportThread:
    """Runs a :class:`~fleet.parquet_export.ParquetExporter` on its own thread until ``stop``; ``status()``
    from any thread says how fresh the Parquet tier is."""

    def __init__(self, store_path: Path, out_dir: Path, file_bytes: int, roll_s: float, every_s: float,
                 stop_timeout_s: float, busy_max: float = 1.0):
        self.store_path, self.out_dir = Path(store_path), Path(out_dir)
        self.file_bytes, self.roll_s, self.every_s, self.stop_timeout_s = file_bytes, roll_s, every_s, stop_timeout_s
        self.busy_max = busy_max  # the share of its time the thread may spend exporting while behind
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._status = self.initial_status(self.out_dir)
        self._files_counted = 0  # manifest entries already summed into rows_exported
        self._thread = threading.Thread(target=self._run, name="parquet-export", daemon=True)

    @staticmethod
    def initial_status(out_dir: Path) -> dict[str, Any]:
        """What ``status`` says before the export has looked at anything."""
        return {"enabled": True, "dir": str(out_dir), "running": False, "complete_through_rowid": 0,
                "complete_through_received": None, "chunks_behind": 0, "behind_s": 0.0, "checked_at": None,
                "files": 0, "rows_exported": 0, "last_export_at": None, "failures": 0, "last_error": ""}

    @classmethod
    def from_config(cls, cfg: HubConfig, store_path: Path) -> ParquetExportThread:
        """The export thread a hub config asks for (not started)."""
        return cls(store_path, cfg.parquet_path(), int(cfg.parquet_file_mb * (1 << 20)), cfg.parquet_roll_s,
                   cfg.parquet_every_s, cfg.stop_timeout_s, cfg.parquet_busy_max)

    def start(self) -> None:
        """Start exporting."""
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Export what is stored within ``timeout`` (the rest waits for the next start), roll the open files and
        end the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout + 5.0)
            if self._thread.is_alive():
                log.error("the Parquet export did not stop in time: its open files are redone at the next start")

    def status(self) -> dict[str, Any]:
        """How fresh the Parquet tier is: ``complete_through_rowid`` / ``_received`` (every chunk up to it is in a
        closed file), ``chunks_behind`` and ``behind_s`` (stored chunks not yet in a closed file, and the age of
        the oldest), files, rows exported, the last export time, and failures with the last error."""
        with self._lock:
            s = dict(self._status)
        if s["chunks_behind"] and s["checked_at"] is not None:  # the backlog keeps ageing between looks
            s["behind_s"] = round(s["behind_s"] + max(0.0, time.time() - s["checked_at"]), 3)
        return s

    # -- the thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = self.every_s
        store: ExperienceStore | None = None
        try:
            while not self._stop.is_set():
                started = time.monotonic()  # an attempt that fails at once (the store will not open) keeps backing off
                try:
                    if store is None:  # its own connections: never the hub's (module docstring)
                        store = ExperienceStore(self.store_path, check=False, read_only=True)
                    self._export(store)
                    return
                except Exception as exc:  # noqa: BLE001 - the export must never take ingest down with it
                    if time.monotonic() - started > MAX_BACKOFF_S:  # it had been working: a new fault
                        backoff = self.every_s
                    log.exception("Parquet export failed (retrying in %.1f s): %s", backoff, exc)
                    with self._lock:
                        self._status.update(running=False, failures=self._status["failures"] + 1,
                                            last_error=f"{type(exc).__name__}: {exc}"[:500])
                    self._count_backlog(store)
                    if store is not None:  # reopened at the retry: a broken connection does not linger
                        store.close()
                        store = None
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            if store is not None:
                store.close()

    def _export(self, store: ExperienceStore) -> None:
        exporter = ParquetExporter(store, self.out_dir, file_bytes=self.file_bytes, roll_s=self.roll_s,
                                   batch_chunks=BATCH_CHUNKS)
        with self._lock:
            self._status["running"] = True
        self._note(exporter, force=True)
        while not self._stop.is_set():
            cpu = time.thread_time()
            read = exporter.step()
            self._note(exporter, force=read == 0)
            if read == 0:
                self._stop.wait(self.every_s)
            elif self.busy_max < 1:  # pace itself: ingest gets the interpreter lock the rest of the time
                self._stop.wait((time.thread_time() - cpu) * (1 - self.busy_max) / self.busy_max)
        end = time.monotonic() + self.stop_timeout_s
        while time.monotonic() < end and exporter.step():
            pass
        exporter.flush()
        self._note(exporter, force=True)
        with self._lock:
            self._status["running"] = False

    def _note(self, exporter: ParquetExporter, force: bool) -> None:
        """Publish the manifest's progress; count the backlog when idle or at most every LAG_EVERY_S."""
        m = exporter.manifest
        files = m["files"]
        first_look = self._files_counted == 0 and self._status["last_export_at"] is None
        new_rows = sum(f["rows"] for f in files[self._files_counted:])
        self._files_counted = len(files)
        with self._lock:
            s = self._status
            if new_rows:  # a restart finds earlier files: their export time is the manifest's
                s["last_export_at"] = _unix(m["updated"]) if first_look else time.time()
            s.update(complete_through_rowid=m["complete_through_rowid"],
                     complete_through_received=m["complete_through_received"], files=len(files),
                     rows_exported=s["rows_exported"] + new_rows)
            due = force or s["checked_at"] is None or time.time() - s["checked_at"] >= LAG_EVERY_S
        if due:
            lag = exporter.lag()
            with self._lock:
                self._status.update(chunks_behind=lag.rows, behind_s=round(lag.seconds, 3), checked_at=time.time())

    def _count_backlog(self, store: ExperienceStore | None) -> None:
        """After a failure: what waits since the last known complete row, so a broken export does not look fresh."""
        if store is None:
            return
        try:
            rows, first = store.backlog(self._status["complete_through_rowid"])
        except Exception as exc:  # noqa: BLE001 - best effort: the failure itself is already counted
            log.debug("could not count the Parquet backlog: %s", exc)
            return
        with self._lock:
            self._status.update(chunks_behind=rows, checked_at=time.time(),
                                behind_s=round(max(0.0, time.time() - first), 3) if first is not None else 0.0)


def _unix(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None
