"""Robots' adapters on the hub: every kept adapter a robot uploads, durable before the hub acks it.

Table ``adapters`` in the experience store's SQLite file (``<storage_dir>/experience.sqlite``, WAL,
``synchronous=FULL``: a commit returns after its fsync), one row per (robot, adapter version): the adapter file's
bytes exactly as the robot sent them (safetensors, with its version, trunk version and hardware in the
metadata), the trunk version it was trained on, the file's sha256, its weights' sha256 (from its metadata: the
file's own bytes differ between two saves of the same weights, as safetensors does not order the metadata) and
when it arrived. A resend of the same weights under a stored version is a ``duplicate``; other weights under a
stored version are refused. The fleet learner reads the newest adapter of each
robot with :meth:`AdapterStore.latest`.

:class:`AdapterIntake` stores uploads on a thread of its own, so the hub loop never waits on an fsync.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fleet.protocol import AdapterUpload, ErrorCode
from fleet.store import DUPLICATE, STORED, StoreError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS adapters (
    robot_id TEXT NOT NULL,
    adapter_version INTEGER NOT NULL,
    trunk_version INTEGER NOT NULL,
    hardware TEXT NOT NULL,
    received REAL NOT NULL,
    nbytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    weights_sha256 TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (robot_id, adapter_version)
);
"""
_COLUMNS = "robot_id, adapter_version, trunk_version, hardware, received, nbytes, sha256, weights_sha256, data"
_WEIGHTS_SHA256 = re.compile(r"[0-9a-f]{64}")


class AdapterConflictError(ValueError):
    """An upload names a stored (robot, version) with other bytes, or its file's metadata contradicts it."""


@dataclass(frozen=True)
class StoredAdapter:
    """One robot's adapter as stored: the file's bytes and what they were trained on."""

    robot_id: str
    adapter_version: int
    trunk_version: int
    hardware: str
    received: float
    nbytes: int
    sha256: str  # of the file's bytes
    weights_sha256: str  # of its tensors (shared_policy.adapter's digest, in the file's metadata)
    data: bytes = field(repr=False)


def adapter_metadata(data: bytes) -> dict[str, str]:
    """The metadata of a safetensors adapter file (read from its JSON header; no tensor is loaded), checked to
    be one whole file. AdapterConflictError saying what is wrong."""
    if len(data) < 8:
        raise AdapterConflictError(f"adapter file of {len(data)} bytes: not a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + n]) if 8 + n <= len(data) else None
    except (ValueError, RecursionError):  # RecursionError: a hostile, deeply nested header
        header = None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise AdapterConflictError("not a safetensors file with metadata")
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)
            and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2]
    if not all(type(end) is int for end in ends):  # a hostile header's "4" must not reach the arithmetic
        raise AdapterConflictError("adapter file header has non-integer data offsets")
    if 8 + n + max(ends, default=0) != len(data):
        raise AdapterConflictError("adapter file is truncated or has trailing bytes")
    return {str(k): str(v) for k, v in header["__metadata__"].items()}


def check_upload(msg: AdapterUpload, hardware: str) -> str:
    """The weights' sha256 of an upload's file; AdapterConflictError if the file says another version, trunk or
    hardware than the message and its robot."""
    meta = adapter_metadata(msg.data)
    want = {"version": str(msg.adapter_version), "trunk_version": str(msg.trunk_version), "hardware": hardware}
    wrong = [f"{k} {meta.get(k)!r:.40} (expected {v!r:.40})" for k, v in want.items() if meta.get(k) != v]
    if wrong:
        raise AdapterConflictError(f"adapter file metadata: {', '.join(wrong)}")
    if not _WEIGHTS_SHA256.fullmatch(meta.get("sha256", "")):
        raise AdapterConflictError("adapter file metadata has no sha256 of its weights")
    return meta["sha256"]


class AdapterStore:
    """The ``adapters`` table of a store file (module docstring). Thread-safe (one connection, a lock)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def put(self, robot_id: str, hardware: str, msg: AdapterUpload) -> str:
        """Store one upload durably: STORED or DUPLICATE. AdapterConflictError for a bad file or other weights
        under a stored version, StoreError if the commit failed (nothing is stored then)."""
        weights = check_upload(msg, hardware)
        row = (robot_id, msg.adapter_version, msg.trunk_version, hardware, time.time(), len(msg.data),
               hashlib.sha256(msg.data).hexdigest(), weights, bytes(msg.data))
        with self._lock:
            try:
                cur = self._con.execute(f"INSERT OR IGNORE INTO adapters ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                                        row)
                if cur.rowcount == 1:
                    return STORED
                (have,) = self._con.execute("SELECT weights_sha256 FROM adapters WHERE robot_id = ? AND "
                                            "adapter_version = ?", (robot_id, msg.adapter_version)).fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.path}: adapter v{msg.adapter_version} of {robot_id} not stored: "
                                 f"{exc}") from exc
        if have != weights:
            raise AdapterConflictError(f"adapter v{msg.adapter_version} of {robot_id} is already stored with other "
                                       "weights")
        return DUPLICATE

    def _rows(self, sql: str, args: tuple = ()) -> list[StoredAdapter]:
        with self._lock:
            return [StoredAdapter(*r) for r in self._con.execute(sql, args).fetchall()]

    def latest(self) -> dict[str, StoredAdapter]:
        """Each robot's newest stored adapter (highest version), by robot id: what the fleet learner reads."""
        rows = self._rows(f"SELECT {_COLUMNS} FROM adapters a WHERE adapter_version = (SELECT MAX(adapter_version) "
                          "FROM adapters b WHERE b.robot_id = a.robot_id) ORDER BY robot_id")
        return {r.robot_id: r for r in rows}

    def latest_by_trunk(self) -> dict[tuple[str, int], StoredAdapter]:
        """Each robot's newest stored adapter for each trunk version it was trained on, by (robot id, trunk
        version): a robot the hub holds back on an older version runs the newest one for that version."""
        rows = self._rows(f"SELECT {_COLUMNS} FROM adapters a WHERE adapter_version = (SELECT MAX(adapter_version) "
                          "FROM adapters b WHERE b.robot_id = a.robot_id AND b.trunk_version = a.trunk_version) "
                          "ORDER BY robot_id, trunk_version")
        return {(r.robot_id, r.trunk_version): r for r in rows}

    def get(self, robot_id: str, adapter_version: int) -> StoredAdapter:
        """One stored adapter; KeyError if it is not stored."""
        rows = self._rows(f"SELECT {_COLUMNS} FROM adapters WHERE robot_id = ? AND adapter_version = ?",
                          (robot_id, adapter_version))
        if not rows:
            raise KeyError(f"{robot_id} v{adapter_version}")
        return rows[0]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._con.close()


Refusal = tuple[ErrorCode, str]  # the NACK an upload gets: its reason and text


class AdapterIntake:
    """The hub's adapter uploads: checked at once, stored on a thread of its own (one per robot at a time), the
    outcomes collected by the hub loop, and each robot's newest stored version (for the registry)."""

    def __init__(self, store: AdapterStore, wake: Callable[[], None]):
        self.store, self._wake = store, wake
        self.newest = {r: (a.adapter_version, a.trunk_version) for r, a in store.latest().items()}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="adapter-store")
        self.finished = False  # set by ``close`` once no upload is being stored (nothing can call ``wake`` then)
        self._done: deque[tuple[str, AdapterUpload, str | Exception]] = deque()
        self.busy: set[str] = set()  # robots with an upload being stored (the loop's thread only)

    def submit(self, robot_id: str, hardware: str, msg: AdapterUpload, stopping: bool = False) -> Refusal | None:
        """Queue ``msg`` to be stored (None), or why it is refused now."""
        try:
            check_upload(msg, hardware)
        except AdapterConflictError as exc:
            return ErrorCode.BAD_RECORD, str(exc)
        if stopping:
            return ErrorCode.SHUTTING_DOWN, "the hub is stopping: resend after reconnecting"
        if robot_id in self.busy:
            return ErrorCode.NO_CREDIT, "one adapter upload at a time: resend later"
        self.busy.add(robot_id)
        fut = self._pool.submit(self.store.put, robot_id, hardware, msg)
        fut.add_done_callback(lambda f: self._finished(robot_id, msg, f))
        return None

    def _finished(self, robot_id: str, msg: AdapterUpload, fut: Future) -> None:
        exc = fut.exception()
        self._done.append((robot_id, msg, exc if exc is not None else fut.result()))
        self._wake()

    def results(self) -> list[tuple[str, AdapterUpload, str | Refusal]]:
        """(robot, upload, STORED / DUPLICATE / a refusal) of each upload finished since the last call."""
        out: list[tuple[str, AdapterUpload, str | Refusal]] = []
        while self._done:
            robot, msg, result = self._done.popleft()
            self.busy.discard(robot)
            if isinstance(result, AdapterConflictError):
                result = (ErrorCode.BAD_RECORD, str(result))
            elif isinstance(result, Exception):
                result = (ErrorCode.STORAGE_FAILED, str(result))
            elif self.newest.get(robot, (0, 0))[0] <= msg.adapter_version:
                self.newest[robot] = (msg.adapter_version, msg.trunk_version)
            out.append((robot, msg, result))
        return out

    def close(self, timeout: float) -> None:
        """Finish what is being stored (an upload not yet acked is resent by its robot), then close the store."""
        worker = threading.Thread(target=self._pool.shutdown, kwargs={"wait": True}, daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            log.error("an adapter upload was still being stored at exit: not acked, so its robot resends it")
            return
        self.finished = True
        self.store.close()
