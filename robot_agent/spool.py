"""The experience spool: an append-only, crash-safe store of chunks on the robot's own disk.

Layout of a spool directory::

    seg-00000001.spool   records appended in order; a new segment every ``segment_bytes``
    acks.log             one acknowledged chunk id per line (the hub uplink writes it)

A record is ``MAGIC | u32 header length | u64 payload length | header JSON | payload | sha256`` where
the digest covers header and payload, and the payload is an ``.npz`` archive of the chunk's arrays
(an open format: numpy reads it anywhere). Each append is written and fsynced before it counts, so
after ``kill -9`` or a power cut every complete record is found again; a torn tail (a record cut
short, or one whose digest does not match) is cut off at open and counted. A segment is deleted once
every chunk in it is acknowledged, or, under ``when_full=drop_oldest``, to make room.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared_policy.durable import fsync_dir

log = logging.getLogger(__name__)

MAGIC = b"FLSP"
_PREFIX = struct.Struct("<4sIQ")
_DIGEST = 32
REFUSE, DROP_OLDEST = "refuse", "drop_oldest"


class SpoolFullError(RuntimeError):
    """The spool is at its quota and its policy is to refuse new data."""


class SpoolError(RuntimeError):
    """A spool record could not be read back (missing, or failed its checksum)."""


@dataclass
class ChunkRef:
    """Where one complete chunk lies."""

    chunk_id: str
    segment: Path
    offset: int
    size: int
    header: dict[str, Any]


@dataclass
class Chunk:
    """A chunk's header (ids, versions, counts) and its arrays."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def chunk_id(self) -> str:
        """The chunk's unique id."""
        return str(self.header["chunk_id"])


def encode_record(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """One record's bytes."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    head = json.dumps(header, sort_keys=True).encode()
    digest = hashlib.sha256(head + payload).digest()
    return _PREFIX.pack(MAGIC, len(head), len(payload)) + head + payload + digest


def _scan(path: Path) -> tuple[list[ChunkRef], int]:
    """Complete records of a segment and the offset where the good data ends."""
    refs: list[ChunkRef] = []
    data = path.read_bytes()
    off = 0
    while off + _PREFIX.size <= len(data):
        magic, hlen, plen = _PREFIX.unpack_from(data, off)
        end = off + _PREFIX.size + hlen + plen + _DIGEST
        if magic != MAGIC or end > len(data):
            break
        body = data[off + _PREFIX.size:end - _DIGEST]
        if hashlib.sha256(body).digest() != data[end - _DIGEST:end]:
            break
        try:
            header = json.loads(body[:hlen])
        except ValueError:
            break
        refs.append(ChunkRef(str(header["chunk_id"]), path, off, end - off, header))
        off = end
    return refs, off


class Spool:
    """Append chunks durably, list the unacknowledged ones, drop or refuse at the quota."""

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
        self.torn_bytes = 0  # bytes cut off torn tails at open
        self._lock = threading.Lock()
        self._acked = self._read_acks()
        self._chunks: dict[Path, list[ChunkRef]] = {}
        for seg in sorted(self.dir.glob("seg-*.spool")):
            refs, good = _scan(seg)
            size = seg.stat().st_size
            if good < size:  # a torn tail: the write that was in flight when the process died
                self.torn_bytes += size - good
                log.warning("spool: %s: cut a torn tail of %d bytes after %d complete chunks",
                            seg.name, size - good, len(refs))
                with open(seg, "r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
            self._chunks[seg] = refs
        self._seq = 1 + max((int(r.header.get("seq", 0)) for refs in self._chunks.values() for r in refs),
                            default=0)
        self._drop_fully_acked()

    # -- writing -------------------------------------------------------------------------------------
    def append(self, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
        """Write one chunk durably; returns its id. ``header`` gets ``chunk_id`` and ``seq`` added."""
        with self._lock:
            seq = self._seq
            header = {**header, "seq": seq}
            header.setdefault("chunk_id", f"{header.get('robot_id', 'robot')}-{seq:010d}")
            record = encode_record(header, arrays)
            if not self._make_room(len(record)):
                self.refused += 1
                raise SpoolFullError(f"spool {self.dir} is at its quota ({self.quota_bytes} bytes) and "
                                     f"refuses new chunks; {self.depth} chunks wait for the hub")
            seg = self._segment_for(len(record))
            with open(seg, "ab") as f:
                offset = f.tell()
                f.write(record)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            self._chunks[seg].append(ChunkRef(header["chunk_id"], seg, offset, len(record), header))
            self._seq += 1
            return header["chunk_id"]

    def has_room(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit under the quota without dropping anything."""
        return self.bytes + nbytes <= self.quota_bytes

    def _make_room(self, nbytes: int) -> bool:
        if self.bytes + nbytes <= self.quota_bytes:
            return True
        if self.when_full == REFUSE:
            return False
        for seg in sorted(self._chunks):
            if self.bytes + nbytes <= self.quota_bytes:
                break
            lost = sum(1 for r in self._chunks[seg] if r.chunk_id not in self._acked)
            self.dropped += lost
            log.warning("spool: full: dropped %s with %d unsent chunks (%d dropped so far)", seg.name, lost,
                        self.dropped)
            self._delete(seg)
        return self.bytes + nbytes <= self.quota_bytes

    def _segment_for(self, nbytes: int) -> Path:
        if self._chunks:
            last = max(self._chunks)
            if last.stat().st_size + nbytes <= self.segment_bytes or not self._chunks[last]:
                return last
            n = int(last.stem.split("-")[1]) + 1
        else:
            n = 1
        seg = self.dir / f"seg-{n:08d}.spool"
        seg.touch()
        fsync_dir(self.dir)
        self._chunks[seg] = []
        return seg

    # -- reading and acknowledging -------------------------------------------------------------------
    def pending(self) -> list[ChunkRef]:
        """Complete, unacknowledged chunks, oldest first."""
        with self._lock:
            return [r for seg in sorted(self._chunks) for r in self._chunks[seg] if r.chunk_id not in self._acked]

    def read(self, ref: ChunkRef) -> Chunk:
        """Load one chunk, checking its digest."""
        with open(ref.segment, "rb") as f:
            f.seek(ref.offset)
            data = f.read(ref.size)
        magic, hlen, plen = _PREFIX.unpack_from(data, 0) if len(data) >= _PREFIX.size else (b"", 0, 0)
        body = data[_PREFIX.size:len(data) - _DIGEST]
        if magic != MAGIC or len(data) != ref.size or hashlib.sha256(body).digest() != data[-_DIGEST:]:
            raise SpoolError(f"chunk {ref.chunk_id} in {ref.segment.name} at {ref.offset} failed its checksum")
        with np.load(io.BytesIO(body[hlen:hlen + plen])) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return Chunk(json.loads(body[:hlen]), arrays)

    def ack(self, chunk_ids: list[str]) -> None:
        """Mark chunks as stored by the hub; segments with nothing left to send are deleted."""
        with self._lock:
            new = [c for c in chunk_ids if c not in self._acked]
            if new:
                with open(self.dir / "acks.log", "a") as f:
                    f.write("".join(f"{c}\n" for c in new))
                    f.flush()
                    if self.fsync:
                        os.fsync(f.fileno())
                self._acked.update(new)
            self._drop_fully_acked()

    @property
    def depth(self) -> int:
        """Chunks waiting for the hub."""
        return sum(1 for refs in self._chunks.values() for r in refs if r.chunk_id not in self._acked)

    @property
    def bytes(self) -> int:
        """Bytes on disk in segments."""
        return sum(r.size for refs in self._chunks.values() for r in refs)

    def _read_acks(self) -> set[str]:
        path = self.dir / "acks.log"
        if not path.exists():
            return set()
        lines = path.read_text().split("\n")
        return {line for line in lines[:-1] if line}  # the last piece is "" or a torn line

    def _drop_fully_acked(self) -> None:
        segs = sorted(self._chunks)
        for seg in segs[:-1]:  # never the segment being appended to
            if all(r.chunk_id in self._acked for r in self._chunks[seg]):
                self._delete(seg)

    def _delete(self, seg: Path) -> None:
        self._acked.difference_update(r.chunk_id for r in self._chunks.pop(seg))
        seg.unlink(missing_ok=True)
