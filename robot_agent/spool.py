"""The experience spool: an append-only, crash-safe store of chunks on the robot's own disk.

Layout of a spool directory::

    seg-<first seq>.spool   records appended in order, a new segment every ``segment_bytes``; named by the
                            sequence number of its first record, so a name is never reused (older spools
                            named them seg-<n>: segments are read in numeric order either way)
    acks.log                ids of acknowledged chunks still on disk, one a line; rewritten atomically
                            whenever segments are deleted, so it stays as small as the spool
    ids.json                the spool epoch and the persisted counters (``spool_ids``)
    spool.lock              flock'ed by the one process that has the spool open; holds its pid

A record (format in ``spool_segment``) is ``MAGIC | u32 header length | u64 payload length | header JSON |
npz payload | BLAKE3(header JSON + payload)``; the spool adds ``chunk_id``, ``seq`` and ``spool_epoch`` to
each header.

Chunk ids are ``<robot_id>-<spool epoch>-<seq>``, e.g. ``unit-0-3f9c2a7d1b0e4c55-0000000042``: the epoch is 16
random hex digits made once, when the spool directory is created; the sequence number (10 digits) is persisted
and never handed out twice, not after a crash and not after every segment was acked and deleted. So an id is
unique across restarts, re-installs and robots that share a name by mistake, and the hub can store by it.

Durability: an append is written and fsynced before it counts, and a failed write or fsync cuts the segment
back to where the record began, so no half record is left to cost good ones. At open, a bad record (flipped
bits anywhere, its length fields included) costs only itself: the scan resyncs at the next valid record and
counts and logs what it skipped; only the bytes after a segment's last valid record (a torn write) are cut
off. A segment is deleted once every chunk in it is acknowledged, or, under ``when_full=drop_oldest``, to make
room. One process at a time has a spool open (a lock); within it, every method is thread-safe.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import IO, Any

import numpy as np

from robot_agent.spool_ids import EPISODE, IDS_FILE, SEQ, SpoolIds
from robot_agent.spool_segment import (
    Chunk,
    ChunkRef,
    SpoolError,
    cut_segment,
    decode_record,
    encode_record,
    scan_segment,
    verify_record,
    write_at,
)
from shared_policy.durable import fsync_dir, write_atomic

__all__ = ["DROP_OLDEST", "REFUSE", "Chunk", "ChunkRef", "Spool", "SpoolError", "SpoolFullError",
           "SpoolLockedError", "SpoolWriteError", "encode_record"]

log = logging.getLogger(__name__)

REFUSE, DROP_OLDEST = "refuse", "drop_oldest"
LOCK_FILE, ACKS_FILE = "spool.lock", "acks.log"


class SpoolFullError(RuntimeError):
    """The spool is at its quota and its policy is to refuse new data."""


class SpoolLockedError(RuntimeError):
    """Another process has this spool directory open."""


class SpoolWriteError(OSError):
    """A chunk could not be written (ENOSPC, EIO, EFBIG, ...); the spool was left as it was before it."""


def _segment_number(path: Path) -> int:
    return int(path.stem.split("-")[1])


def take_directory_lock(directory: Path) -> IO[str]:
    """Hold ``directory``'s lock for as long as the returned file stays open, or raise SpoolLockedError."""
    f = open(directory / LOCK_FILE, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise SpoolLockedError(f"{directory} is in use by another process (pid {holder}): refusing to "
                               "open it; stop that agent, or give this one its own state_dir / spool.dir") from None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


class Spool:
    """Append chunks durably, list the unacknowledged ones, drop or refuse at the quota. Holds its directory's
    lock until ``close`` (or the end of a ``with`` block)."""

    def __init__(self, directory: str | Path, quota_bytes: int = 1 << 30, when_full: str = REFUSE,
                 segment_bytes: int = 8 << 20, fsync: bool = True):
        if when_full not in (REFUSE, DROP_OLDEST):
            raise ValueError(f"spool.when_full must be '{REFUSE}' or '{DROP_OLDEST}', got '{when_full}'")
        if quota_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("spool.quota_bytes and spool.segment_bytes must be > 0")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.quota_bytes, self.when_full = int(quota_bytes), when_full
        self.segment_bytes, self.fsync = int(segment_bytes), fsync
        self.dropped = 0  # unsent chunks deleted to make room
        self.refused = 0  # chunks not written because the spool was full
        self.write_errors = 0  # appends that failed to write (and were cut back)
        self.torn_bytes = 0  # bytes cut off torn tails at open
        self.skipped_bytes = self.skipped_records = 0  # bad records between valid ones, found at open
        self._lock = threading.Lock()
        self._lock_file: IO[str] | None = take_directory_lock(self.dir)  # before anything is read or cut
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        self._segs: dict[Path, list[ChunkRef]] = {}  # in numeric order: the last one is appended to
        self._sizes: dict[Path, int] = {}
        self._where: dict[str, Path] = {}  # every chunk id on disk
        self._bytes = 0
        for seg in sorted(self.dir.glob("seg-*.spool"), key=_segment_number):
            scan = scan_segment(seg)
            size = seg.stat().st_size
            if scan.skipped_bytes:
                self.skipped_bytes += scan.skipped_bytes
                self.skipped_records += scan.skipped_records
                log.warning("spool: %s: skipped %d bad record(s), %d bytes, between valid ones (kept %d chunks)",
                            seg.name, scan.skipped_records, scan.skipped_bytes, len(scan.refs))
            if scan.end < size:  # a torn write: the one in flight when the process died
                self.torn_bytes += size - scan.end
                log.warning("spool: %s: cut a torn tail of %d bytes after %d complete chunks",
                            seg.name, size - scan.end, len(scan.refs))
                cut_segment(seg, scan.end, self.fsync)
            self._segs[seg], self._sizes[seg] = [], scan.end
            self._bytes += scan.end
            for ref in scan.refs:
                if ref.chunk_id in self._where:
                    log.warning("spool: %s: chunk id %s seen before: kept the first", seg.name, ref.chunk_id)
                    continue
                self._segs[seg].append(ref)
                self._where[ref.chunk_id] = seg
        logged, clean = self._read_acks()
        self._acked = logged & self._where.keys()
        self._depth = len(self._where) - len(self._acked)
        self._acks_stale = not clean or len(self._acked) < len(logged)
        seq_floor = 1 + max((int(r.header.get("seq", 0)) for refs in self._segs.values() for r in refs), default=0)
        self._ids = SpoolIds(self.dir, seq_floor, self.fsync)
        self._drop_fully_acked()

    @property
    def epoch(self) -> str:
        """This spool's random id, made once at its creation; part of every chunk id."""
        return self._ids.epoch

    # -- writing -------------------------------------------------------------------------------------
    def append(self, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
        """Write one chunk durably; returns its id. ``header`` gets ``chunk_id``, ``seq`` and ``spool_epoch``."""
        with self._lock:
            self._check_open()
            try:
                seq = self._ids.take(SEQ)
            except OSError as exc:
                raise self._write_error(exc, f"reserving sequence numbers in {IDS_FILE}") from exc
            chunk_id = f"{header.get('robot_id', 'robot')}-{self._ids.epoch}-{seq:010d}"
            header = {**header, "chunk_id": chunk_id, "seq": seq, "spool_epoch": self._ids.epoch}
            record = encode_record(header, arrays)
            if not self._make_room(len(record)):
                self.refused += 1
                raise SpoolFullError(f"spool {self.dir} is at its quota ({self.quota_bytes} bytes) and "
                                     f"refuses new chunks; {self._depth} chunks wait for the hub")
            seg = self._segment_for(len(record), seq)
            offset = self._sizes[seg]
            try:
                write_at(seg, offset, record, self.fsync)
            except OSError as exc:
                try:  # leave no half record behind: the next open would have to skip or cut it
                    cut_segment(seg, offset, self.fsync)
                    cut = f"{seg.name} cut back to {offset} bytes"
                except OSError as cut_exc:  # the next append overwrites it from the same offset
                    cut = f"cutting {seg.name} back failed too ({cut_exc})"
                raise self._write_error(exc, f"writing chunk {chunk_id}", cut) from exc
            self._segs[seg].append(ChunkRef(chunk_id, seg, offset, len(record), header))
            self._where[chunk_id] = seg
            self._sizes[seg] += len(record)
            self._bytes += len(record)
            self._depth += 1
            return chunk_id

    def next_episode(self) -> int:
        """A new episode number: increasing, never handed out twice by this spool (persisted in blocks)."""
        self._check_open()  # not under the spool's lock: the control thread must not wait for a chunk's fsync
        try:
            return self._ids.take(EPISODE)
        except OSError as exc:
            raise self._write_error(exc, f"reserving episode numbers in {IDS_FILE}") from exc

    def has_room(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit under the quota without dropping anything."""
        return self._bytes + nbytes <= self.quota_bytes

    def _write_error(self, exc: OSError, what: str, then: str = "nothing written") -> SpoolWriteError:
        self.write_errors += 1
        err = SpoolWriteError(exc.errno or errno.EIO, f"spool {self.dir}: {what} failed ({exc.strerror or exc}); {then}")
        log.error("%s", err)
        return err

    def _make_room(self, nbytes: int) -> bool:
        if self._bytes + nbytes <= self.quota_bytes:
            return True
        if self.when_full == REFUSE or nbytes > self.quota_bytes:  # a chunk that cannot fit costs no other
            return False
        for seg in list(self._segs):
            if self._bytes + nbytes <= self.quota_bytes:
                break
            lost = sum(1 for r in self._segs[seg] if r.chunk_id not in self._acked)
            self.dropped += lost
            log.warning("spool: full: dropped %s with %d unsent chunks (%d dropped so far)", seg.name, lost,
                        self.dropped)
            self._delete(seg)
        self._compact_acks()
        return self._bytes + nbytes <= self.quota_bytes

    def _segment_for(self, nbytes: int, seq: int) -> Path:
        if self._segs:
            last = next(reversed(self._segs))
            if self._sizes[last] + nbytes <= self.segment_bytes or not self._segs[last]:
                return last
        seg = self.dir / f"seg-{seq:012d}.spool"
        seg.touch()
        if self.fsync:
            fsync_dir(self.dir)
        self._segs[seg], self._sizes[seg] = [], 0
        return seg

    # -- reading and acknowledging -------------------------------------------------------------------
    def pending(self) -> list[ChunkRef]:
        """Complete, unacknowledged chunks, oldest first."""
        with self._lock:
            return [r for refs in self._segs.values() for r in refs if r.chunk_id not in self._acked]

    def read_record_bytes(self, ref: ChunkRef) -> bytes:
        """The exact bytes of ``ref``'s record (what the uplink sends), checked: SpoolError if they fail their
        checks or are gone (acknowledged or dropped since ``pending``)."""
        try:
            with open(ref.segment, "rb") as f:
                f.seek(ref.offset)
                data = f.read(ref.size)
            verify_record(data, ref.chunk_id)
        except FileNotFoundError:
            raise SpoolError(f"chunk {ref.chunk_id}: its segment {ref.segment.name} is gone") from None
        except SpoolError as exc:
            raise SpoolError(f"chunk {ref.chunk_id} in {ref.segment.name} at {ref.offset}: {exc}") from None
        return data

    def read(self, ref: ChunkRef) -> Chunk:
        """Load one chunk, checking its digest."""
        return decode_record(self.read_record_bytes(ref))

    def ack(self, chunk_ids: list[str]) -> int:
        """Mark chunks as stored by the hub; segments with nothing left to send are deleted. Ids not on disk
        (already acked, dropped) are ignored. Returns how many chunks were newly acknowledged."""
        with self._lock:
            self._check_open()
            new = [c for c in dict.fromkeys(chunk_ids) if c in self._where and c not in self._acked]
            if new:
                with open(self.dir / ACKS_FILE, "a") as f:
                    f.write("".join(f"{c}\n" for c in new))
                    f.flush()
                    if self.fsync:
                        os.fsync(f.fileno())
                self._acked.update(new)
                self._depth -= len(new)
                self._drop_fully_acked()
            return len(new)

    @property
    def depth(self) -> int:
        """Chunks waiting for the hub (O(1); any thread reads it without waiting for a write in flight)."""
        return self._depth

    @property
    def bytes(self) -> int:
        """Bytes on disk in segments, bad records included (O(1), like ``depth``)."""
        return self._bytes

    def counters(self) -> dict[str, int]:
        """What the spool counted: chunks dropped and refused, write errors, bytes and records lost at open."""
        return {"dropped": self.dropped, "refused": self.refused, "write_errors": self.write_errors,
                "torn_bytes": self.torn_bytes, "skipped_bytes": self.skipped_bytes,
                "skipped_records": self.skipped_records}

    def _read_acks(self) -> tuple[set[str], bool]:
        """The logged ids, and whether the log ends cleanly (a torn last line is dropped, and the log rewritten
        so that the next ack does not continue it)."""
        path = self.dir / ACKS_FILE
        if not path.exists():
            return set(), True
        # bytes, not text: a flipped bit that makes a line not UTF-8 costs only that line (its chunk is taken as
        # unacked and resent; the hub acks it as a duplicate), never the spool's opening
        lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
        return {line for line in lines[:-1] if line}, lines[-1] == ""

    def _drop_fully_acked(self) -> None:
        for seg in list(self._segs):
            if all(r.chunk_id in self._acked for r in self._segs[seg]):
                self._delete(seg)
        self._compact_acks()

    def _delete(self, seg: Path) -> None:
        for r in self._segs.pop(seg):
            del self._where[r.chunk_id]
            if r.chunk_id in self._acked:
                self._acked.discard(r.chunk_id)
            else:
                self._depth -= 1
        self._bytes -= self._sizes.pop(seg)
        seg.unlink(missing_ok=True)
        self._acks_stale = True

    def _compact_acks(self) -> None:
        # The segment is unlinked before its ids leave the log: a crash in between leaves stale ids, which the
        # next open ignores, never a segment whose acked chunks would be sent again.
        if not self._acks_stale:
            return
        try:
            write_atomic(self.dir / ACKS_FILE, "".join(f"{c}\n" for c in self._acked).encode(), fsync=self.fsync)
            self._acks_stale = False
        except OSError as exc:  # the log is only longer than it needs to be: try again at the next deletion
            log.warning("spool: compacting %s failed: %s", ACKS_FILE, exc)

    # -- life ----------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._lock_file is None:
            raise SpoolError(f"spool {self.dir} is closed")

    def close(self, timeout: float = 10.0) -> None:
        """Release the directory's lock; later appends and acks raise. Waits up to ``timeout`` s for a write in
        flight (a write that finishes later fails: the lock file is closed)."""
        got = self._lock.acquire(timeout=max(timeout, 0.0))
        if not got:
            log.warning("spool: a write is still in flight after %.1f s; releasing the lock anyway", timeout)
        try:
            if self._lock_file is not None:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
                self._lock_file.close()
                self._lock_file = None
        finally:
            if got:
                self._lock.release()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
