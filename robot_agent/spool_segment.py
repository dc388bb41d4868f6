"""The spool's segment files: scan a segment, write a record at an offset, cut a segment back.

The record format itself (``MAGIC | u32 header length | u64 payload length | header JSON | payload | sha256``)
lives in ``fleet.record``, shared with the hub: these exact bytes travel from the robot's disk to the hub's,
and every hop checks them with ``verify_record``. Its names are re-exported here for the spool's users.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from fleet.record import (
    DIGEST,
    MAGIC,
    PREFIX,
    Chunk,
    RecordError,
    decode_record,
    encode_record,
    parse_record,
    verify_record,
)

# A spool record that could not be read back is a record that failed its checks: one error type for both,
# so ``except SpoolError`` keeps catching what ``verify_record`` and ``decode_record`` raise.
SpoolError = RecordError

__all__ = ["DIGEST", "MAGIC", "PREFIX", "Chunk", "ChunkRef", "SegmentScan", "SpoolError", "cut_segment",
           "decode_record", "encode_record", "parse_record", "scan_segment", "verify_record", "write_at"]


@dataclass
class ChunkRef:
    """Where one complete chunk lies."""

    chunk_id: str
    segment: Path
    offset: int
    size: int
    header: dict[str, Any]


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
