"""The hub's experience store: every chunk's record bytes, once, durable before the hub acks it.

Two parts (docs/storage.md). The record bytes (exactly the bytes the robot's spool holds, digest included) are
appended to segment files (``fleet/segments.py``, ``<store>.segments/``) and ``fdatasync``ed once per commit
group. The index is SQLite (stdlib) in WAL mode with ``synchronous=FULL``: one row per chunk with the columns
readers select by (robot, spool epoch, sequence, hardware, task, episode, steps, trunk and adapter versions,
received time, digest) and where its bytes are (segment, offset, length), committed in ONE transaction per group
AFTER the segment's fsync. So a committed row never points at bytes that are not on disk, and a chunk is acked
only once both are durable (two fsyncs per group, however many chunks).

``chunk_id`` is the unique key: a resend of a stored chunk is a ``duplicate`` and is stored once (checked before
its bytes are appended); the same id with other bytes is refused. ``rowid`` is an explicit ``INTEGER PRIMARY KEY
AUTOINCREMENT``: the order rows were committed in, never reused and stable under VACUUM (an implicit rowid is
not), so readers tail the store with ``read_since`` and persist how far they got. Stores of schema 1 (bytes in a
``record`` BLOB column) are migrated in place at open: their rows keep their BLOBs, new rows go to segments.
"""

from __future__ import annotations

import logging
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from fleet.record import DIGEST, RecordError, parse_record, record_digest, verify_record
from fleet.segments import SegmentClosedError, SegmentError, SegmentFiles, SegmentLockedError, SegmentWriter
from shared_policy.durable import fsync_dir

log = logging.getLogger(__name__)

STORED, DUPLICATE, REJECTED = "stored", "duplicate", "rejected"
SCHEMA_VERSION = 2  # 2: record bytes in segment files; 1: in the record BLOB (migrated at open)
STORE_FILE = "experience.sqlite"  # the store's file name inside the hub's storage_dir
WAL_CHECKPOINT_PAGES = 8192
CHECKPOINT_EVERY_BYTES = 1 << 20  # the background checkpointer copies the WAL into the database this often
CHECKPOINT_POLL_S = 0.1

# Names end up in file paths (Parquet partitions) and in chunk ids: letters, digits, '_', '.', '-'.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
CHUNK_ID = re.compile(r"(?P<robot>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})-(?P<epoch>[0-9a-f]{16})-(?P<seq>[0-9]{10})")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk_id TEXT NOT NULL UNIQUE,
    robot_id TEXT NOT NULL,
    spool_epoch TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hardware TEXT NOT NULL,
    task TEXT NOT NULL,
    episode INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    trunk_version INTEGER NOT NULL,
    adapter_version INTEGER NOT NULL,
    received REAL NOT NULL,
    nbytes INTEGER NOT NULL,
    digest BLOB NOT NULL,
    segment INTEGER,  -- where the record's bytes are (fleet/segments.py); NULL: in ``record`` (schema 1 rows)
    seg_offset INTEGER,
    record BLOB NOT NULL DEFAULT x''
);
CREATE INDEX IF NOT EXISTS chunks_by_robot ON chunks (robot_id, spool_epoch, episode, seq);
CREATE INDEX IF NOT EXISTS chunks_by_hardware ON chunks (hardware, received);
"""
_COLUMNS = ("chunk_id", "robot_id", "spool_epoch", "seq", "hardware", "task", "episode", "steps", "trunk_version",
            "adapter_version", "received", "nbytes", "digest", "segment", "seg_offset", "record")
# ``record`` gets x'' (a schema-1 table, migrated, has no default for it)
_INSERT = f"INSERT INTO chunks ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_META = ("rowid", "chunk_id", "robot_id", "spool_epoch", "seq", "hardware", "task", "episode", "steps",
         "trunk_version", "adapter_version", "received", "nbytes")
# a row as readers load it: the columns of StoredChunk but its record, then where the record is
_LOAD = f"{', '.join(_META)}, segment, seg_offset, digest, CASE WHEN segment IS NULL THEN record END"
_MIGRATE_1_TO_2 = "ALTER TABLE chunks ADD COLUMN segment INTEGER; ALTER TABLE chunks ADD COLUMN seg_offset INTEGER;"


class StoreError(RuntimeError):
    """The store could not commit a group (disk full, I/O error) or is closed: nothing of the group is stored."""


class StoreCorruptError(StoreError):
    """The store is damaged: its index is not a sound SQLite database (``PRAGMA quick_check`` at open), or a
    segment is missing, shorter than its index says, or holds other bytes than a row's digest."""


@dataclass(frozen=True)
class StoreResult:
    """What happened to one record of a ``put_many`` group."""

    chunk_id: str | None  # None when the record is too broken to name its chunk
    status: str  # STORED | DUPLICATE | REJECTED
    reason: str = ""  # why it was rejected
    rowid: int | None = None  # where it is stored (also for a duplicate)

    @property
    def durable(self) -> bool:
        """True when the chunk is on disk: the hub may ack it."""
        return self.status in (STORED, DUPLICATE)


@dataclass(frozen=True)
class StoredChunk:
    """One stored chunk as readers see it: its columns and its record bytes."""

    rowid: int
    chunk_id: str
    robot_id: str
    spool_epoch: str
    seq: int
    hardware: str
    task: str
    episode: int
    steps: int
    trunk_version: int
    adapter_version: int
    received: float
    nbytes: int
    record: bytes


@dataclass(frozen=True)
class RobotCounts:
    """What one robot has stored."""

    chunks: int
    steps: int
    bytes: int


SQLITE_MAX_INT = 2**63 - 1  # an INTEGER column holds no more: a larger one would fail its group's insert


def _int_field(header: dict[str, Any], key: str, minimum: int) -> int:
    value = header.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= SQLITE_MAX_INT:
        raise RecordError(f"header {key}: {value!r:.40} is not an integer in [{minimum}, 2**63 - 1]")
    return value


def _name_field(header: dict[str, Any], key: str) -> str:
    value = header.get(key)
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise RecordError(f"header {key}: {value!r} is not a name of letters, digits, '_', '.', '-' (<= 64)")
    return value


def record_row(record: bytes | memoryview, received: float, vetted: dict[str, Any] | None = None) -> tuple:
    """The ``chunks`` row of one record (column order ``_COLUMNS``, then the record itself); RecordError saying what
    is wrong. ``vetted``: the record's header as a caller parsed it after checking the record's framing and digest
    (the hub's protocol decode and ``record_header`` did), so neither is done again. A memoryview (the hub's
    received frame) goes into the row as it is, not copied."""
    header = vetted if vetted is not None else verify_record(record)
    cid = header["chunk_id"]
    m = CHUNK_ID.fullmatch(cid) if isinstance(cid, str) else None
    if m is None:
        raise RecordError(f"chunk id {cid!r} is not <robot_id>-<16 hex spool epoch>-<10 digit seq>")
    robot = _name_field(header, "robot_id")
    if robot != m["robot"]:
        raise RecordError(f"chunk {cid} names robot {m['robot']!r} but its header says {robot!r}")
    seq, epoch = int(m["seq"]), m["epoch"]
    if header.get("seq", seq) != seq or header.get("spool_epoch", epoch) != epoch:
        raise RecordError(f"chunk {cid}: header seq/spool_epoch {header.get('seq')!r}/{header.get('spool_epoch')!r} "
                          "differ from its id")
    data = record if isinstance(record, bytes | memoryview) else bytes(record)
    return (cid, robot, epoch, seq, _name_field(header, "hardware"), _name_field(header, "task"),
            _int_field(header, "episode", 0), _int_field(header, "steps", 1), _int_field(header, "trunk_version", 0),
            _int_field(header, "adapter_version", 0), received, len(data), record_digest(data), data)


def _connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    # autocommit (isolation_level=None): transactions are the explicit BEGIN/COMMIT of a group
    if read_only:  # mode=ro: never creates the file, never takes a write lock
        return sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False, timeout=30.0)
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)


def segments_dir(store_path: str | Path) -> Path:
    """Where the segment files of the store at ``store_path`` are: ``experience.sqlite`` -> ``experience.segments``."""
    return Path(store_path).with_suffix(".segments")


def _corrupt(path: Path, exc: sqlite3.DatabaseError) -> StoreCorruptError:
    return StoreCorruptError(f"{path}: not a readable SQLite store ({exc}). Restore a backup or salvage it "
                             "(docs/storage.md, recovery)")


class ExperienceStore:
    """Durable, exactly-once storage of chunk records (module docstring). Thread-safe: one writer
    connection for commit groups and one reader connection, so readers never wait for a group's fsync.

    ``read_only=True`` opens an existing store for reading beside the hub (another process, or a thread with
    connections of its own: the Parquet export, the replay's reader): no writer, no recovery, no lock.
    ``direct_io``: the segment writer's (``fleet.segments.SegmentWriter``)."""

    def __init__(self, path: str | Path, check: bool = True, read_only: bool = False, direct_io: bool = True):
        self.path, self.read_only, self._direct_io = Path(path), read_only, direct_io
        self._w: sqlite3.Connection | None = None
        self._segment_writer: SegmentWriter | None = None
        self._r: sqlite3.Connection | None = None
        self._closed = True  # until fully open: close() then releases whatever was opened
        self._wlock, self._rlock = threading.Lock(), threading.Lock()
        self._checkpointer: threading.Thread | None = None
        try:
            self._open(check)
        except BaseException:
            self._release()
            raise

    def _open(self, check: bool) -> None:
        if self.read_only:
            if not self.path.is_file():
                raise StoreError(f"store {self.path} does not exist (the hub creates it)")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            try:  # the lock first: a second hub touches nothing
                self._segment_writer = SegmentWriter(segments_dir(self.path), direct_io=self._direct_io)
            except SegmentLockedError as exc:
                raise StoreError(f"{self.path}: {exc}") from exc
            self._w = self._open_writer(check, created)
            try:
                self._segment_writer.recover(self._indexed_ends())
            except OSError as exc:  # SegmentError: missing or shorter than the index says; or the disk refused
                raise StoreCorruptError(f"{self.path}: {exc}") from exc
            if created:
                fsync_dir(self.path.parent)  # the new file's directory entry, before anything is acked from it
        try:
            self._r = _connect(self.path, read_only=True)
            self._r.execute("PRAGMA query_only=1")
            version = self._r.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.OperationalError as exc:  # locked, or a -shm that cannot be made: not damage
            raise StoreError(f"{self.path}: cannot open the store for reading ({exc})") from exc
        except sqlite3.DatabaseError as exc:
            raise _corrupt(self.path, exc) from exc
        if version > SCHEMA_VERSION or version < 1:
            raise StoreError(f"{self.path}: store schema {version} is not one this code reads (1..{SCHEMA_VERSION}; "
                             "0: the hub has not created its tables yet)")
        self._version = version  # a read-only store of schema 1 looks again before each read (_load_sql)
        self._segments = SegmentFiles(segments_dir(self.path))
        self._uncheckpointed = 0
        self._wake_checkpoint = threading.Event()
        if not self.read_only:
            # Checkpoints off the commit path: a commit that also checkpoints copies the WAL and fsyncs the
            # database before its group is acked (hub_ingest's latency case showed it). A thread of its own copies
            # the WAL every CHECKPOINT_EVERY_BYTES (PASSIVE: never blocks a commit).
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, args=(_connect(self.path),),
                                                  name="store-checkpointer", daemon=True)
        self._closed = False
        if self._checkpointer is not None:
            self._checkpointer.start()

    def _release(self) -> None:
        """Close what a failed open had opened (connections, the writer's lock)."""
        if self._r is not None:
            self._r.close()
        self._close_writer()

    def _open_writer(self, check: bool, created: bool) -> sqlite3.Connection:
        w = _connect(self.path)
        try:
            w.execute("PRAGMA synchronous=FULL")  # per connection: every commit fsyncs the WAL
            if check and not created:
                found = [r[0] for r in w.execute("PRAGMA quick_check").fetchall()]
                if found != ["ok"]:
                    raise StoreCorruptError(f"{self.path}: PRAGMA quick_check failed: {'; '.join(found[:5])}. "
                                            f"Restore a backup or salvage it (docs/storage.md, recovery)")
            if w.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
                raise StoreError(f"{self.path}: SQLite refused WAL mode")
            version = w.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: store schema {version} is newer than this code's {SCHEMA_VERSION}")
            migrate = _MIGRATE_1_TO_2 if version == 1 else ""
            w.executescript(f"BEGIN; {_SCHEMA} {migrate} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            w.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            w.execute(f"PRAGMA journal_size_limit={WAL_CHECKPOINT_PAGES * 4096 * 2}")
        except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
            w.close()
            raise _corrupt(self.path, exc) from exc
        except StoreError:
            w.close()
            raise
        return w

    def _indexed_ends(self) -> dict[int, int]:
        """Each segment the index names, with where its last committed record ends."""
        assert self._w is not None
        return dict(self._w.execute("SELECT segment, MAX(seg_offset + nbytes) FROM chunks WHERE segment IS NOT NULL "
                                    "GROUP BY segment").fetchall())

    def _close_writer(self) -> None:
        if self._w is not None:  # the SQLite writer first: the lock, released last, is what admits the next hub
            self._w.close()
        if self._segment_writer is not None:
            self._segment_writer.close()

    def _checkpoint_loop(self, conn: sqlite3.Connection) -> None:
        try:
            while not self._closed:
                self._wake_checkpoint.wait(CHECKPOINT_POLL_S)
                self._wake_checkpoint.clear()
                if self._uncheckpointed >= CHECKPOINT_EVERY_BYTES and not self._closed:
                    self._uncheckpointed = 0
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # the writer's auto-checkpoint still bounds the WAL
            log.warning("store %s: background checkpoint failed (%s); commits checkpoint by themselves", self.path, exc)
        finally:
            conn.close()

    # -- writing -------------------------------------------------------------------------------------
    def put_many(self, records: list[bytes | memoryview],
                 vetted: list[dict[str, Any] | None] | None = None) -> list[StoreResult]:
        """Store a group of records: their bytes appended to a segment with one fdatasync, then their index rows
        in ONE transaction. Each is checked first (framing and digest, unless ``vetted[i]`` is its header as a
        caller parsed it after checking both; then its id and header fields): a bad one is ``rejected`` with its
        reason and costs only itself. When this returns, every ``stored`` and ``duplicate`` record is durable.
        StoreError if the group could not be committed: then none of it is."""
        now = time.time()
        results: list[StoreResult | None] = [None] * len(records)
        rows: list[tuple[int, tuple]] = []
        for i, rec in enumerate(records):
            try:
                rows.append((i, record_row(rec, now, vetted[i] if vetted is not None else None)))
            except RecordError as exc:  # name the chunk only when its digest holds: else the name is noise
                parsed = parse_record(rec, 0)
                results[i] = StoreResult(str(parsed[0]["chunk_id"]) if parsed else None, REJECTED, str(exc))
        with self._wlock:
            if self._closed or self._w is None:
                raise StoreError(f"store {self.path} is {'closed' if self._closed else 'open read-only'}")
            if rows:
                self._commit(rows, results)
        return results  # type: ignore[return-value]  # every slot is filled

    def _known(self, rows: list[tuple[int, tuple]], results: list[StoreResult | None]) -> list[tuple[int, tuple]]:
        """The rows to store: a stored id (or one earlier in the group) is a duplicate, or refused with other bytes."""
        assert self._w is not None
        ids = sorted({row[0] for _, row in rows})
        stored: dict[str, tuple[int | None, bytes]] = {}
        for k in range(0, len(ids), 500):  # SQLite's limit on host parameters is far above 500
            part = ids[k:k + 500]
            q = f"SELECT chunk_id, rowid, digest FROM chunks WHERE chunk_id IN ({', '.join('?' * len(part))})"
            stored.update({cid: (rowid, digest) for cid, rowid, digest in self._w.execute(q, part)})
        new = []
        for i, row in rows:
            cid, digest = row[0], row[12]
            if cid not in stored:
                stored[cid] = (None, digest)  # a second copy in this group is a duplicate of this one
                new.append((i, row))
            elif stored[cid][1] == digest:
                results[i] = StoreResult(cid, DUPLICATE, rowid=stored[cid][0])
            else:  # ids are unique forever: other bytes under a stored id are never the same chunk
                results[i] = StoreResult(cid, REJECTED, f"chunk {cid} is already stored with other bytes")
        return new

    def _commit(self, rows: list[tuple[int, tuple]], results: list[StoreResult | None]) -> None:
        conn, segments = self._w, self._segment_writer
        assert conn is not None and segments is not None
        try:
            new = self._known(rows, results)
            if not new:
                return
            places = segments.append([row[-1] for _, row in new])  # durable before any row points at them
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"store {self.path}: group of {len(rows)} not committed: {exc}") from exc
        try:
            conn.execute("BEGIN IMMEDIATE")
            rowids = [conn.execute(_INSERT, (*row[:-1], *place, b"")).lastrowid
                      for (_, row), place in zip(new, places, strict=True)]
            conn.execute("COMMIT")
        except Exception as exc:  # whatever failed (not only sqlite3.Error), no transaction may stay open: its
            # uncommitted rows would read as stored to the next group's duplicate check and be acked unstored
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # no transaction left to roll back
            raise StoreError(f"store {self.path}: group of {len(rows)} not committed: {exc}") from exc
        rowid_of = {}
        for (i, row), rowid in zip(new, rowids, strict=True):
            results[i] = StoreResult(row[0], STORED, rowid=rowid)
            rowid_of[row[0]] = rowid
        for i, row in rows:  # a second copy of a chunk new in this group: its rowid is known only now
            res = results[i]
            if res is not None and res.status == DUPLICATE and res.rowid is None:
                results[i] = StoreResult(row[0], DUPLICATE, rowid=rowid_of[row[0]])
        self._uncheckpointed += 512 * len(new)  # about what one index row adds to the WAL
        if self._uncheckpointed >= CHECKPOINT_EVERY_BYTES:
            self._wake_checkpoint.set()

    # -- reading -------------------------------------------------------------------------------------
    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._rlock:
            if self._closed:
                raise StoreError(f"store {self.path} is closed")
            return self._r.execute(sql, args).fetchall()

    def _load_sql(self) -> str:
        """The columns of a StoredChunk's row; call under the read lock. A read-only store opened on schema 1 looks
        again each time: the hub may have migrated it since, and new rows keep their bytes in segments."""
        if self._version < 2:
            self._version = self._r.execute("PRAGMA user_version").fetchone()[0]
        return _LOAD if self._version >= 2 else f"{', '.join(_META)}, NULL, NULL, NULL, record"

    def _loaded(self, where: str, args: tuple, max_bytes: int | None = None) -> list[StoredChunk]:
        """The chunks of ``SELECT ... FROM chunks WHERE <where>``, records read, under the read lock (a close
        waits for it); ``max_bytes`` bounds their total size, at least one."""
        with self._rlock:
            if self._closed:
                raise StoreError(f"store {self.path} is closed")
            self._r.execute("BEGIN")  # one snapshot: the schema version seen is the one the rows are read under
            try:
                rows = self._r.execute(f"SELECT {self._load_sql()} FROM chunks WHERE {where}", args).fetchall()
            finally:
                self._r.execute("COMMIT")
            if max_bytes is not None:
                total = 0
                for k, r in enumerate(rows):
                    if total and total + r[12] > max_bytes:
                        rows = rows[:k]
                        break
                    total += r[12]
            return [self._load(r) for r in rows]

    def _load(self, row: tuple) -> StoredChunk:
        """A ``_LOAD`` row as a StoredChunk, its record read from its segment (or its schema-1 BLOB)."""
        *meta, segment, offset, digest, blob = row
        if segment is None:
            return StoredChunk(*meta, blob)
        try:
            record = self._segments.read(segment, offset, meta[12])
        except SegmentClosedError as exc:
            raise StoreError(f"store {self.path} is closed") from exc
        except SegmentError as exc:
            raise StoreCorruptError(f"{self.path}: stored chunk {meta[1]}: {exc}") from None
        except OSError as exc:  # EIO
            raise StoreError(f"store {self.path}: reading stored chunk {meta[1]}: {exc}") from exc
        if record[-DIGEST:] != digest:  # cheap: bytes not this chunk's (a segment replaced or misplaced)
            raise StoreCorruptError(f"{self.path}: stored chunk {meta[1]}: segment {segment} at {offset} holds "
                                    "other bytes than the index says")
        return StoredChunk(*meta, record)

    def get(self, chunk_id: str) -> bytes:
        """The stored record bytes of ``chunk_id``, checked; KeyError if it is not stored."""
        rows = self._loaded("chunk_id = ?", (chunk_id,))
        if not rows:
            raise KeyError(chunk_id)
        record = rows[0].record
        try:  # neither SQLite's page checks nor the file system check a record's bytes: its own digest does
            verify_record(record, chunk_id)
        except RecordError as exc:
            raise StoreCorruptError(f"{self.path}: stored chunk {chunk_id} fails its digest ({exc})") from None
        return record

    def __contains__(self, chunk_id: object) -> bool:
        return bool(self._read("SELECT 1 FROM chunks WHERE chunk_id = ?", (chunk_id,)))

    def read_since(self, rowid: int, limit: int = 256, max_bytes: int | None = None) -> list[StoredChunk]:
        """Up to ``limit`` chunks stored after ``rowid``, in commit order (start with 0; pass the last one's
        ``rowid`` next time). Only committed rows are seen, so a tailing reader never skips one. ``max_bytes``
        bounds the records' total size (a reader's memory: 256 chunks of 1 MiB are 256 MiB), always at least one.
        A record that cannot be read as the index says raises StoreCorruptError: readers stop there, loudly."""
        return self._loaded("rowid > ? ORDER BY rowid LIMIT ?", (rowid, limit), max_bytes)

    def last_rowid(self, received_before: float | None = None) -> int:
        """The newest committed row (0 when empty); with ``received_before``, the newest received before then."""
        if received_before is None:
            return self._read("SELECT COALESCE(MAX(rowid), 0) FROM chunks")[0][0]
        return self._read("SELECT COALESCE(MAX(rowid), 0) FROM chunks WHERE received < ?", (received_before,))[0][0]

    def backlog(self, rowid: int) -> tuple[int, float | None]:
        """(chunks stored after ``rowid``, received time of the first of them or None): how far a reader
        at ``rowid`` is behind."""
        n = self._read("SELECT COUNT(*) FROM chunks WHERE rowid > ?", (rowid,))[0][0]
        first = self._read("SELECT received FROM chunks WHERE rowid > ? ORDER BY rowid LIMIT 1", (rowid,))
        return n, (first[0][0] if first else None)

    def steps_before(self, robot_id: str, spool_epoch: str, episode: int, seq: int,
                     up_to_rowid: int | None = None) -> int:
        """Steps of the same episode stored in chunks with a lower sequence number: where a chunk starts
        within its episode when its header does not say. ``up_to_rowid``: only chunks stored as that row or
        before it."""
        where = "robot_id = ? AND spool_epoch = ? AND episode = ? AND seq < ?"
        args: tuple = (robot_id, spool_epoch, episode, seq)
        if up_to_rowid is not None:
            where, args = where + " AND rowid <= ?", (*args, up_to_rowid)
        return self._read(f"SELECT COALESCE(SUM(steps), 0) FROM chunks WHERE {where}", args)[0][0]

    def counts(self) -> dict[str, RobotCounts]:
        """Chunks, transitions and bytes stored per robot."""
        rows = self._read("SELECT robot_id, COUNT(*), SUM(steps), SUM(nbytes) FROM chunks GROUP BY robot_id")
        return {r[0]: RobotCounts(r[1], r[2], r[3]) for r in rows}

    def close(self) -> None:
        """Close the connections (a commit or checkpoint in progress finishes first)."""
        with self._wlock, self._rlock:
            if not self._closed:
                self._closed = True
                self._r.close()
                self._segments.close()
                self._close_writer()
        self._wake_checkpoint.set()
        if self._checkpointer is not None and self._checkpointer is not threading.current_thread():
            self._checkpointer.join(60)

    def __enter__(self) -> ExperienceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GroupWriter:
    """Commits records to a store in groups on its own thread, so the caller (the hub's socket loop) never
    waits on an fsync: ``submit`` returns a Future that resolves to the record's StoreResult after the
    commit of its group (or fails with StoreError, then the record is not stored and must not be acked).

    A group is whatever is queued when the previous commit ends, topped up for at most ``max_wait_s`` after
    its first record, up to ``max_group`` records or ``max_group_bytes`` (the record that crosses it is the last):
    under load, groups grow by themselves while an fsync runs.
    Memory is bounded by the caller's credit; ``pending`` / ``pending_bytes`` say what waits. ``on_commit(records,
    seconds)``, if given, hears how long each group's commit took (on this thread: keep it cheap).

    ``enqueue(record, tag)`` is ``submit`` without a Future: the group's outcomes go to ``on_results`` in one call
    per group, a list of ``(tag, StoreResult or StoreError)`` (the hub: one wake-up per group, not per chunk).
    """

    def __init__(self, store: ExperienceStore, max_group: int = 128, max_wait_s: float = 0.001,
                 on_commit: Callable[[int, float], None] | None = None,
                 on_results: Callable[[list[tuple[Any, StoreResult | StoreError]]], None] | None = None,
                 max_group_bytes: int = 32 * 1024 * 1024):
        if max_group < 1:
            raise ValueError(f"max_group: {max_group!r} must be >= 1")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s: {max_wait_s!r} must be >= 0")
        if max_group_bytes < 1:
            raise ValueError(f"max_group_bytes: {max_group_bytes!r} must be >= 1")
        self.store, self.max_group, self.max_wait_s, self.on_commit = store, max_group, max_wait_s, on_commit
        self.max_group_bytes = max_group_bytes
        self.on_results = on_results
        self._queue: queue.SimpleQueue[tuple[bytes, Any] | None] = queue.SimpleQueue()  # (record, Future or tag)
        self._lock = threading.Lock()
        self.pending = self.pending_bytes = 0
        self.groups = self.committed = self.largest_group = 0  # commit groups, records through them, largest
        self.committed_bytes, self.commit_seconds = 0, 0.0  # bytes committed, time spent committing: the store's rate
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="store-group-writer", daemon=True)
        self._thread.start()

    def submit(self, record: bytes) -> Future:
        """Queue one record; the Future's result is its StoreResult, set after its group's commit."""
        fut: Future = Future()
        self._put(record, fut)
        return fut

    def enqueue(self, record: bytes | memoryview, tag: Any, vetted: dict[str, Any] | None = None) -> None:
        """Queue one record; after its group's commit ``on_results`` hears ``(tag, StoreResult or StoreError)``.
        ``vetted``: its header, parsed by a caller that checked its framing and digest (``put_many``)."""
        if self.on_results is None:
            raise ValueError("enqueue needs a GroupWriter made with on_results")
        self._put(record, _Tag(tag, vetted))

    def _put(self, record: bytes | memoryview, waiter: Any) -> None:
        with self._lock:
            if self._closed:
                raise StoreError("group writer is closed")
            self.pending += 1
            self.pending_bytes += len(record)
            self._queue.put((record, waiter))

    @property
    def finished(self) -> bool:
        """True once the writer's thread has ended: nothing of it runs any more (``on_results`` included)."""
        return not self._thread.is_alive()

    def close(self, timeout: float | None = 30.0) -> None:
        """Commit what is queued, then stop the thread (the store stays open: its owner closes it)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout)

    def _next_group(self) -> tuple[list[tuple[bytes, Any]], bool]:
        first = self._queue.get()
        if first is None:
            return [], True
        group, deadline, size = [first], time.monotonic() + self.max_wait_s, len(first[0])
        while len(group) < self.max_group and size < self.max_group_bytes:
            wait = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return group, True
            group.append(item)
            size += len(item[0])
        return group, False

    def _run(self) -> None:
        done = False
        while not done:
            group, done = self._next_group()
            if not group:
                continue
            started = time.perf_counter()
            try:
                results: list[StoreResult] | None = self.store.put_many(
                    [rec for rec, _ in group], [w.vetted if isinstance(w, _Tag) else None for _, w in group])
                error = None
            except Exception as exc:  # noqa: BLE001 - every waiter must hear it, and the thread must go on
                results, error = None, exc if isinstance(exc, StoreError) else StoreError(str(exc))
            elapsed = time.perf_counter() - started
            if self.on_commit is not None:
                self.on_commit(len(group), elapsed)
            with self._lock:
                self.pending -= len(group)
                self.pending_bytes -= sum(len(rec) for rec, _ in group)
                self.groups += 1
                self.largest_group = max(self.largest_group, len(group))
                self.committed += len(group) if error is None else 0
                self.committed_bytes += sum(len(rec) for rec, _ in group) if error is None else 0
                self.commit_seconds += elapsed
            tagged = []
            for k, (_, waiter) in enumerate(group):
                outcome = results[k] if results is not None else error
                if isinstance(waiter, _Tag):
                    tagged.append((waiter.tag, outcome))
                    continue
                try:
                    if results is not None:
                        waiter.set_result(outcome)
                    else:
                        waiter.set_exception(outcome)
                except InvalidStateError:
                    pass  # the caller cancelled its wait; the record's fate is unchanged
            if tagged:
                self.on_results(tagged)


class _Tag(NamedTuple):
    """What ``enqueue`` queues beside a record instead of a Future (a tuple: one is made per chunk the hub takes)."""

    tag: Any
    vetted: dict[str, Any] | None = None  # the record's header, its framing and digest checked by the caller
