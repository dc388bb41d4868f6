"""The experience record: one chunk's bytes, the same on the robot's disk, on the wire and in the hub's store.

A record is::

    MAGIC "FLS3" | u32 header length | u64 payload length | header JSON | payload | BLAKE3(header JSON + payload)

little-endian, the header a JSON object that holds at least ``chunk_id``, the payload an ``.npz`` archive of the
chunk's arrays (an open format: numpy reads it anywhere). A record is valid when its magic is there, its lengths
land inside the data, its header parses to an object with a ``chunk_id`` and the digest matches; a length field
that is off moves the header and the digest, so it fails one of those checks. These exact bytes travel from the
robot's disk to the hub's, and every hop checks them with ``verify_record``.

The magic names the digest, and with it the record schema: ``FLS3`` (schema 2, written now) ends with the
32-byte BLAKE3 of header and payload, ``FLSP`` (schema 1, written before 2026-12-02) with their sha256. Both are
read everywhere, so a spool written before an upgrade drains into an upgraded hub and a hub's store keeps its
old records. BLAKE3 because the digest is the one hash a chunk costs at each hop, and sha256 was 43% of the
hub's socket loop at 64 KiB chunks (py-spy): BLAKE3 hashes 64 KiB about 4x faster on the same CPU (with its
SHA extensions), with the same 32 bytes and collision resistance.

The arrays of a chunk of T transitions (``robot_agent.recorder``): ``obs`` [T, O], ``critic_obs`` [T + 1, C]
(the last row is the state after the last transition, for bootstrapping), ``actions`` [T, A], ``log_probs``,
``rewards``, ``dones``, ``time_outs`` [T] (float32), ``trunk_version``, ``adapter_version`` [T] (int64) and
``stamp`` [T] (float64, the driver's monotonic clock). ``check_chunk`` holds a decoded chunk to that.

A file of records back to back (a robot spool's segment) is read with ``scan_segment``: a bad record costs only
itself. The spool (robot_agent/spool.py) and fleet-demo's accounting of a stopped spool read it the same way.

Only numpy here: the robot agent imports this module.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from blake3 import blake3

MAGIC = b"FLS3"  # the records written now: schema 2, BLAKE3 digest
MAGIC_SHA256 = b"FLSP"  # schema 1, sha256 digest: still read
MAGICS = (MAGIC, MAGIC_SHA256)
SCHEMAS = {MAGIC_SHA256: 1, MAGIC: 2}  # the wire protocol's chunk ``schema`` for each
_HASHES = {MAGIC: blake3, MAGIC_SHA256: hashlib.sha256}
_ANY_MAGIC = re.compile(b"|".join(re.escape(m) for m in MAGICS))
PREFIX = struct.Struct("<4sIQ")
DIGEST = 32

# name -> (dtype kind the chunk must have, rows relative to T)
TRANSITION_ARRAYS: dict[str, tuple[str, int]] = {
    "obs": ("f", 0), "critic_obs": ("f", 1), "actions": ("f", 0), "log_probs": ("f", 0), "rewards": ("f", 0),
    "dones": ("f", 0), "time_outs": ("f", 0), "trunk_version": ("i", 0), "adapter_version": ("i", 0),
    "stamp": ("f", 0),
}
_VECTORS = ("obs", "critic_obs", "actions")
_FINITE = ("obs", "critic_obs", "actions", "log_probs", "rewards")


class RecordError(RuntimeError):
    """A record failed its checks (magic, lengths, header, digest) or its chunk is not a valid one."""


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
    return record_with_payload(header, npz_payload(arrays))


def npz_payload(arrays: dict[str, np.ndarray]) -> bytes:
    """The ``.npz`` bytes a record carries for ``arrays``."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def record_with_payload(header: dict[str, Any], payload: bytes) -> bytes:
    """One record's bytes around an already encoded ``npz_payload`` (a load generator reuses one payload under
    many headers)."""
    head = json.dumps(header, sort_keys=True).encode()
    digest = blake3(head)
    digest.update(payload)
    return b"".join((PREFIX.pack(MAGIC, len(head), len(payload)), head, payload, digest.digest()))


def _digest_of(magic: bytes, body: bytes | memoryview) -> bytes:
    """The digest a record with ``magic`` ends with, of its header and payload (``body``)."""
    return _HASHES[magic](body).digest()


def record_schema(data: bytes | memoryview) -> int:
    """The schema a record's magic names (``SCHEMAS``); 0 for bytes that start with no known magic."""
    return SCHEMAS.get(bytes(memoryview(data)[:len(MAGIC)]), 0)


def parse_record(data: bytes | memoryview, offset: int) -> tuple[dict[str, Any], int] | None:
    """The header and end offset of the valid record at ``offset`` in ``data``, or None if there is none."""
    view = memoryview(data)
    if offset + PREFIX.size + DIGEST > len(view):
        return None
    magic, hlen, plen = PREFIX.unpack_from(view, offset)
    start = offset + PREFIX.size
    end = start + hlen + plen + DIGEST
    if magic not in _HASHES or end > len(view):
        return None
    try:  # the cheap check first: a garbled header fails here without hashing the payload
        header = json.loads(bytes(view[start:start + hlen]))
    except (ValueError, RecursionError):  # RecursionError: a hostile, deeply nested header
        return None
    if not isinstance(header, dict) or "chunk_id" not in header:
        return None
    if _digest_of(magic, view[start:end - DIGEST]) != view[end - DIGEST:end]:
        return None
    return header, end


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
            nxt = _next_magic(raw, nxt + 1)
            if nxt < 0:
                return SegmentScan(refs, off, skipped_bytes, skipped_records)
            parsed = parse_record(raw, nxt)
        if nxt > off:
            skipped_bytes += nxt - off
            skipped_records += max(1, len(_ANY_MAGIC.findall(raw, off, nxt)))
        header, end = parsed
        refs.append(ChunkRef(str(header["chunk_id"]), path, nxt, end - nxt, header))
        off = end
    return SegmentScan(refs, off, skipped_bytes, skipped_records)


def _next_magic(raw: bytes, start: int) -> int:
    """Where the next record magic of either schema starts at or after ``start``; -1 if none does."""
    found = _ANY_MAGIC.search(raw, start)
    return found.start() if found else -1


def record_fields(data: bytes | memoryview) -> dict[str, Any]:
    """The header of ``data`` if its magic, lengths and header JSON hold; else RecordError. The digest is NOT
    checked: for a caller that has checked it already (``digest_holds``) or whose next step checks it."""
    view = memoryview(data)
    if len(view) < PREFIX.size + DIGEST:
        raise RecordError(f"record of {len(view)} bytes is shorter than its fixed fields")
    magic, hlen, plen = PREFIX.unpack_from(view, 0)
    if magic not in _HASHES or PREFIX.size + hlen + plen + DIGEST != len(view):
        raise RecordError(f"record of {len(view)} bytes failed its checks (magic or lengths)")
    try:
        header = json.loads(bytes(view[PREFIX.size:PREFIX.size + hlen]))
    except (ValueError, RecursionError):  # RecursionError: a hostile, deeply nested header
        header = None
    if not isinstance(header, dict) or "chunk_id" not in header:
        raise RecordError("record's header is not an object naming its chunk")
    return header


def record_header(data: bytes | memoryview, chunk_id: str) -> dict[str, Any]:
    """The header of ``data`` if its magic, lengths and header hold and it names ``chunk_id``; else RecordError.
    The digest is NOT checked (``record_fields``)."""
    header = record_fields(data)
    if header.get("chunk_id") != chunk_id:
        raise RecordError(f"record's header is not an object naming chunk {chunk_id}")
    return header


def digest_holds(data: bytes | memoryview) -> bool:
    """Whether ``data`` starts with a record magic and ends with that schema's digest of its header and payload
    (the bytes after the fixed prefix): the one hash a record costs on its way into the hub (the wire protocol's
    chunk digest is this one)."""
    view = memoryview(data)
    magic = bytes(view[:len(MAGIC)])
    return len(view) >= PREFIX.size + DIGEST and magic in _HASHES and \
        _digest_of(magic, view[PREFIX.size:len(view) - DIGEST]) == view[len(view) - DIGEST:]


def verify_record(data: bytes | memoryview, chunk_id: str | None = None) -> dict[str, Any]:
    """The header of ``data`` if it is exactly one valid record (of ``chunk_id``, if given); else RecordError."""
    parsed = parse_record(data, 0)
    if parsed is None or parsed[1] != len(data):
        raise RecordError(f"record of {len(data)} bytes failed its checks (magic, lengths, header or digest)")
    if chunk_id is not None and parsed[0]["chunk_id"] != chunk_id:
        raise RecordError(f"record holds chunk {parsed[0]['chunk_id']}, not {chunk_id}")
    return parsed[0]


def record_digest(data: bytes | memoryview) -> bytes:
    """The digest a record ends with (call after ``verify_record``): two records are the same iff it is."""
    return bytes(data[-DIGEST:])


def decode_record(data: bytes | memoryview) -> Chunk:
    """A chunk from one record's bytes, checked first."""
    header = verify_record(data)
    _, hlen, plen = PREFIX.unpack_from(data, 0)
    start = PREFIX.size + hlen
    try:
        with np.load(io.BytesIO(bytes(data[start:start + plen])), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - a valid digest over a payload that no npz reader takes
        raise RecordError(f"chunk {header['chunk_id']}: payload is not an npz archive ({exc})") from None
    return Chunk(header, arrays)


def check_chunk(chunk: Chunk) -> int:
    """The number of transitions T of a decoded chunk; RecordError naming the array if any name, dtype,
    shape or value (NaN, inf) is not what a robot agent records."""
    arrays, cid = chunk.arrays, chunk.chunk_id
    missing = sorted(set(TRANSITION_ARRAYS) - set(arrays))
    if missing:
        raise RecordError(f"chunk {cid}: arrays {missing} missing")
    n = arrays["rewards"].shape[0] if arrays["rewards"].ndim == 1 else -1
    if n < 1:
        raise RecordError(f"chunk {cid}: rewards must be a non-empty vector, got shape {arrays['rewards'].shape}")
    if chunk.header.get("steps") != n:
        raise RecordError(f"chunk {cid}: header steps {chunk.header.get('steps')!r} but {n} transitions")
    for name, (kind, extra) in TRANSITION_ARRAYS.items():
        a = arrays[name]
        ndim = 2 if name in _VECTORS else 1
        if a.dtype.kind != kind or a.ndim != ndim or a.shape[0] != n + extra or (ndim == 2 and a.shape[1] < 1):
            raise RecordError(f"chunk {cid}: {name} has dtype {a.dtype} shape {a.shape}, expected kind "
                              f"{kind!r} with {ndim} dims and {n + extra} rows")
        if name in _FINITE and not np.isfinite(a).all():
            raise RecordError(f"chunk {cid}: {name} holds NaN or inf")
    return n


def robot_priorities(arrays: dict[str, np.ndarray], n: int) -> np.ndarray:
    """A chunk's ``priorities`` [T] as float32 when present, finite and >= 0; else all NaN (unknown: the replay
    starts the item at its largest priority). A bad array never costs the chunk itself."""
    try:
        prios = np.asarray(arrays["priorities"], np.float32)
    except (KeyError, ValueError, TypeError):
        return np.full(n, np.nan, np.float32)
    if prios.shape != (n,) or not (np.isfinite(prios) & (prios >= 0)).all():
        return np.full(n, np.nan, np.float32)
    return prios
