"""The spool's records and segment files: encode one chunk, check and decode one record, scan a segment, write
a record at an offset, cut a segment back.

A record is::

    MAGIC "FLSP" | u32 header length | u64 payload length | header JSON | payload | sha256(header JSON + payload)

little-endian, the header a JSON object that holds at least ``chunk_id``, the payload an ``.npz`` archive of the
chunk's arrays (an open format: numpy reads it anywhere). A record is valid when its magic is there, its lengths
land inside the data, its header parses to an object with a ``chunk_id`` and the digest matches; a length field
that is off moves the header and the digest, so it fails one of those checks. These exact bytes travel from the
robot's disk to the hub's, and every hop checks them with ``verify_record``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

MAGIC = b"FLSP"
PREFIX = struct.Struct("<4sIQ")
DIGEST = 32


class SpoolError(RuntimeError):
    """A spool record could not be read back (missing, or failed its checks)."""


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
    return PREFIX.pack(MAGIC, len(head), len(payload)) + head + payload + digest


def parse_record(data: bytes | memoryview, offset: int) -> tuple[dict[str, Any], int] | None:
    """The header and end offset of the valid record at ``offset`` in ``data``, or None if there is none."""
    view = memoryview(data)
    if offset + PREFIX.size + DIGEST > len(view):
        return None
    magic, hlen, plen = PREFIX.unpack_from(view, offset)
    start = offset + PREFIX.size
    end = start + hlen + plen + DIGEST
    if magic != MAGIC or end > len(view):
        return None
    try:  # the cheap check first: a garbled header fails here without hashing the payload
        header = json.loads(bytes(view[start:start + hlen]))
    except ValueError:
        return None
    if not isinstance(header, dict) or "chunk_id" not in header:
        return None
    if hashlib.sha256(view[start:end - DIGEST]).digest() != view[end - DIGEST:end]:
        return None
    return header, end


def verify_record(data: bytes, chunk_id: str | None = None) -> dict[str, Any]:
    """The header of ``data`` if it is exactly one valid record (of ``chunk_id``, if given); else SpoolError."""
    parsed = parse_record(data, 0)
    if parsed is None or parsed[1] != len(data):
        raise SpoolError(f"record of {len(data)} bytes failed its checks (magic, lengths, header or sha256)")
    if chunk_id is not None and parsed[0]["chunk_id"] != chunk_id:
        raise SpoolError(f"record holds chunk {parsed[0]['chunk_id']}, not {chunk_id}")
    return parsed[0]


def decode_record(data: bytes) -> Chunk:
    """A chunk from one record's bytes, checked first."""
    header = verify_record(data)
    _, hlen, plen = PREFIX.unpack_from(data, 0)
    start = PREFIX.size + hlen
    with np.load(io.BytesIO(data[start:start + plen])) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return Chunk(header, arrays)


class SegmentScan(NamedTuple):
    """What one pass over a segment found."""

    refs: list[ChunkRef]  # its valid records, in file order
    end: int  # where the last valid record ends: what lies after it is a torn tail
    skipped_bytes: int  # bad bytes between valid records
    skipped_records: int  # records those bytes held (the magics among them; at least one per bad stretch)


def scan_segment(path: Path) -> SegmentScan:
    """Every valid record of a segment. A bad record costs only itself: the scan resyncs at the next magic
    that starts a valid record, never trusting the bad record's own lengths."""
    raw = path.read_bytes()
    refs: list[ChunkRef] = []
    off = skipped_bytes = skipped_records = 0
    while off < len(raw):
        parsed = parse_record(raw, off)
        nxt = off
        while parsed is None:
            nxt = raw.find(MAGIC, nxt + 1)
            if nxt < 0:
                return SegmentScan(refs, off, skipped_bytes, skipped_records)
            parsed = parse_record(raw, nxt)
        if nxt > off:
            skipped_bytes += nxt - off
            skipped_records += max(1, raw.count(MAGIC, off, nxt))
        header, end = parsed
        refs.append(ChunkRef(str(header["chunk_id"]), path, nxt, end - nxt, header))
        off = end
    return SegmentScan(refs, off, skipped_bytes, skipped_records)


def write_at(path: Path, offset: int, data: bytes, fsync: bool) -> None:
    """Write ``data`` into ``path`` at ``offset`` (over whatever a failed write left there), then fsync."""
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            if n <= 0:
                raise OSError(errno.EIO, f"write to {path.name} returned {n}")
            view, offset = view[n:], offset + n
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def cut_segment(path: Path, size: int, fsync: bool) -> None:
    """Truncate a segment to ``size`` bytes, durably."""
    os.truncate(path, size)
    if fsync:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
