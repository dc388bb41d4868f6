"""The spool's segment files: scan a segment, write a record at an offset, cut a segment back.

The record format itself (``MAGIC | u32 header length | u64 payload length | header JSON | payload | digest``)
lives in ``fleet.record``, shared with the hub: these exact bytes travel from the robot's disk to the hub's,
and every hop checks them with ``verify_record``. The segment scan lives there too, so that fleet-demo counts a
stopped robot's spool exactly as the spool reads it (fleet never imports robot_agent). Those names are
re-exported here for the spool's users.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from fleet.record import (
    DIGEST,
    MAGIC,
    MAGICS,
    PREFIX,
    Chunk,
    ChunkRef,
    RecordError,
    SegmentScan,
    decode_record,
    encode_record,
    parse_record,
    scan_segment,
    verify_record,
)

# A spool record that could not be read back is a record that failed its checks: one error type for both,
# so ``except SpoolError`` keeps catching what ``verify_record`` and ``decode_record`` raise.
SpoolError = RecordError

__all__ = ["DIGEST", "MAGIC", "MAGICS", "PREFIX", "Chunk", "ChunkRef", "SegmentScan", "SpoolError", "cut_segment",
           "decode_record", "encode_record", "parse_record", "scan_segment", "verify_record", "write_at"]


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
