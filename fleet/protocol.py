"""The hub <-> robot wire protocol (version 2): typed messages, one strict decoder, no pickle anywhere.

A message is a list of frames: ``[header, *data]``. The header is a msgpack map that always holds ``v`` (protocol
version), ``type``, ``robot_id`` and ``seq``, plus exactly the fields of its type; a type that carries bytes (a
chunk's spool record, a piece of a trunk, an adapter file) carries them in one raw frame after the header, and its
header names their size and sha256 (for a chunk, the record's own digest, in the field ``sha256`` whatever hash
the record's schema uses: BLAKE3 for schema 2, sha256 for schema 1; version 2, so a chunk is hashed once on its
way into the hub, not twice). ``decode`` checks everything before anything else sees the message and raises
``ProtocolError(code, text)``, never another exception. The table, rules and limits are in docs/protocol.md.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from fleet.protocol_fields import (
    CHUNK_ID,
    COUNT,
    DEFAULT_LIMITS,
    NAME,
    ROBOT_ID,
    SHA256,
    SHORT_HASH,
    VERSION,
    Code,
    ErrorCode,
    IdList,
    Int,
    Limits,
    ProtocolError,
    Text,
    data_frame,
    wire,
)
from fleet.record import DIGEST, SCHEMAS, digest_holds, record_schema

PROTOCOL_VERSION = 2  # what this side speaks (2: a chunk's sha256 is its record's own digest)
MIN_PROTOCOL_VERSION = 2  # the oldest peer it still understands
SCHEMA_VERSIONS = tuple(sorted(SCHEMAS.values()))  # chunk record formats this side reads (fleet/record.py)
MAX_FRAMES = 2  # header + at most one data frame, for every type

# --- messages -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Message:
    """Fields every message has: the robot it is from or to, and the sender's message counter."""

    TYPE: ClassVar[str] = ""
    robot_id: str = wire(ROBOT_ID)
    seq: int = wire(COUNT)

    def encode(self) -> list[bytes]:
        """The frames to send: the msgpack header, then the data frame if the type has one. The header fields
        are checked as ``decode`` checks them, so a sender's bug fails here, not on the hub."""
        header: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": self.TYPE}
        frames: list[bytes] = []
        for name, where, check, is_frame in _plan(type(self)).fields:
            value = getattr(self, name)
            check(where, value, DEFAULT_LIMITS)
            if is_frame:
                frames.append(value)
            else:
                header[name] = value
        return [msgpack.packb(header, use_bin_type=True), *frames]

    def verify(self, limits: Limits) -> None:
        """Checks across fields and the data frame (sizes, digests); each type adds its own."""


def _check_data(msg: Any, data: bytes, size: int, digest: str, chunk_id: str | None = None) -> None:
    if len(data) != size:
        raise ProtocolError(ErrorCode.SIZE_MISMATCH, f"{msg.TYPE}: data frame of {len(data)} bytes, header says "
                            f"{size}", chunk_id)
    if hashlib.sha256(data).hexdigest() != digest:
        raise ProtocolError(ErrorCode.BAD_DIGEST, f"{msg.TYPE}: data frame's sha256 is not the header's "
                            f"{digest[:12]}...", chunk_id)


@dataclass(frozen=True, kw_only=True)
class RobotState(Message):
    """What a robot reports in HELLO and every heartbeat (a hub's heartbeat: zeros, and its current trunk)."""

    spool_depth: int = wire(COUNT)  # chunks not yet acked
    spool_bytes: int = wire(COUNT)
    trunk_version: int = wire(COUNT)  # 0 = none
    adapter_version: int = wire(COUNT)


@dataclass(frozen=True, kw_only=True)
class Hello(RobotState):
    """Robot -> hub, first on every connection. The header's ``v`` is the robot's protocol version."""

    TYPE: ClassVar[str] = "hello"
    hardware: str = wire(NAME)
    profile_hash: str = wire(SHORT_HASH)
    agent_version: str = wire(NAME)


@dataclass(frozen=True, kw_only=True)
class Welcome(Message):
    """Hub -> robot, the answer to HELLO. The header's ``v`` is the hub's protocol version."""

    TYPE: ClassVar[str] = "welcome"
    credit: int = wire(COUNT)  # bytes the robot may have unacked
    trunk_version: int = wire(COUNT)  # the hub's current trunk, 0 = none yet
    heartbeat_ms: int = wire(Int(10, 3_600_000))
    max_message_bytes: int = wire(Int(1))


@dataclass(frozen=True, kw_only=True)
class Heartbeat(RobotState):
    """Both ways. RTT = now - echo_us - echo_delay_us on the side whose clock echo_us is."""

    TYPE: ClassVar[str] = "heartbeat"
    t_us: int = wire(COUNT)  # the sender's monotonic clock
    echo_us: int = wire(COUNT)  # t_us of the last heartbeat received from the peer (0: none yet)
    echo_delay_us: int = wire(COUNT)  # how long the sender held that one before this


@dataclass(frozen=True, kw_only=True)
class Chunk(Message):
    """Robot -> hub: one spool record, byte for byte. Its id starts with ``<robot_id>-`` (the spool makes it)."""

    TYPE: ClassVar[str] = "chunk"
    chunk_id: str = wire(CHUNK_ID)
    schema: int = wire(Int(1, 65535))  # the record format
    size: int = wire(COUNT)
    sha256: str = wire(SHA256)  # the record's digest (its last 32 bytes), of the hash its schema names
    payload: bytes = data_frame()

    @classmethod
    def of(cls, robot_id: str, seq: int, chunk_id: str, payload: bytes, schema: int | None = None) -> Chunk:
        """A chunk message for the spool record ``payload``: its schema (by default the one its magic names), its
        size, and as its digest the one the record ends with (the spool checked it when it read the record; the
        hub checks it again: one hash per hop)."""
        digest = bytes(memoryview(payload)[-DIGEST:]) if len(payload) >= DIGEST else hashlib.sha256(payload).digest()
        return cls(robot_id=robot_id, seq=seq, chunk_id=chunk_id,
                   schema=(record_schema(payload) or 1) if schema is None else schema, size=len(payload),
                   sha256=digest.hex(), payload=payload)

    def verify(self, limits: Limits) -> None:
        if not self.chunk_id.startswith(f"{self.robot_id}-"):
            raise ProtocolError(ErrorCode.IDENTITY_MISMATCH,
                                f"chunk {self.chunk_id} is not robot {self.robot_id}'s (its id must start with "
                                f"'{self.robot_id}-')", self.chunk_id)
        if self.schema not in SCHEMA_VERSIONS:
            raise ProtocolError(ErrorCode.SCHEMA_UNSUPPORTED, f"chunk record schema {self.schema}; this side "
                                f"reads {list(SCHEMA_VERSIONS)}", self.chunk_id)
        if len(self.payload) != self.size:
            raise ProtocolError(ErrorCode.SIZE_MISMATCH, f"chunk: data frame of {len(self.payload)} bytes, header "
                                f"says {self.size}", self.chunk_id)
        if record_schema(self.payload) != self.schema or memoryview(self.payload)[-DIGEST:].hex() != self.sha256 \
                or not digest_holds(self.payload):
            raise ProtocolError(ErrorCode.BAD_DIGEST, f"chunk: the record is not of schema {self.schema}, does not "
                                f"end with its schema's digest of its header and payload, or that is not the "
                                f"header's {self.sha256[:12]}...", self.chunk_id)


@dataclass(frozen=True, kw_only=True)
class Ack(Message):
    """Hub -> robot: chunks now durable on the hub (``stored``) or already were (``duplicate``)."""

    TYPE: ClassVar[str] = "ack"
    stored: list[str] = wire(IdList())
    duplicate: list[str] = wire(IdList())


@dataclass(frozen=True, kw_only=True)
class Nack(Message):
    """Hub -> robot: a chunk was not stored, and why (NO_CREDIT, STORAGE_FAILED: resend later; others: don't)."""

    TYPE: ClassVar[str] = "nack"
    chunk_id: str = wire(CHUNK_ID)
    reason: ErrorCode = wire(Code())
    text: str = wire(Text())


@dataclass(frozen=True, kw_only=True)
class Credit(Message):
    """Hub -> robot: the robot's new byte credit (a window, not an increment: resending it is harmless)."""

    TYPE: ClassVar[str] = "credit"
    credit: int = wire(COUNT)


@dataclass(frozen=True, kw_only=True)
class TrunkNotice(Message):
    """Hub -> robot: trunk ``trunk_version`` is current; it is ``size`` bytes with this sha256."""

    TYPE: ClassVar[str] = "trunk_notice"
    trunk_version: int = wire(VERSION)
    size: int = wire(COUNT)
    sha256: str = wire(SHA256)


@dataclass(frozen=True, kw_only=True)
class TrunkFetch(Message):
    """Robot -> hub: send me ``length`` bytes of trunk ``trunk_version`` from ``offset`` (resumable)."""

    TYPE: ClassVar[str] = "trunk_fetch"
    trunk_version: int = wire(VERSION)
    offset: int = wire(COUNT)
    length: int = wire(Int(1))


@dataclass(frozen=True, kw_only=True)
class TrunkData(Message):
    """Hub -> robot: one piece of a trunk, with its own digest and the digest of the whole."""

    TYPE: ClassVar[str] = "trunk_data"
    trunk_version: int = wire(VERSION)
    offset: int = wire(COUNT)
    total_size: int = wire(COUNT)
    sha256: str = wire(SHA256)  # of the whole trunk
    size: int = wire(COUNT)  # of this piece
    piece_sha256: str = wire(SHA256)
    data: bytes = data_frame()

    def verify(self, limits: Limits) -> None:
        if self.offset + self.size > self.total_size:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"trunk_data: piece [{self.offset}, {self.offset + self.size})"
                                f" ends past the trunk's {self.total_size} bytes")
        _check_data(self, self.data, self.size, self.piece_sha256)


@dataclass(frozen=True, kw_only=True)
class AdapterUpload(Message):
    """Robot -> hub: this unit's adapter file after a kept update, and the trunk it was trained on."""

    TYPE: ClassVar[str] = "adapter_upload"
    trunk_version: int = wire(VERSION)
    adapter_version: int = wire(COUNT)
    size: int = wire(COUNT)
    sha256: str = wire(SHA256)
    data: bytes = data_frame()

    def verify(self, limits: Limits) -> None:
        _check_data(self, self.data, self.size, self.sha256)

    @property
    def ack_id(self) -> str:
        """The id the hub's ACK / NACK names this upload by (in the chunk id lists): ``<robot_id>-adapter-<v>``."""
        return adapter_ack_id(self.robot_id, self.adapter_version)

    @classmethod
    def of(cls, robot_id: str, seq: int, adapter_version: int, trunk_version: int, data: bytes) -> AdapterUpload:
        """An upload of the adapter file ``data`` with its size and digest filled in."""
        return cls(robot_id=robot_id, seq=seq, trunk_version=trunk_version, adapter_version=adapter_version,
                   size=len(data), sha256=hashlib.sha256(data).hexdigest(), data=data)


def adapter_ack_id(robot_id: str, adapter_version: int) -> str:
    """How ACK and NACK name robot ``robot_id``'s upload of adapter ``adapter_version``."""
    return f"{robot_id}-adapter-{adapter_version}"


@dataclass(frozen=True, kw_only=True)
class Error(Message):
    """Either way: a refusal of a message or of the connection (e.g. VERSION_UNSUPPORTED)."""

    TYPE: ClassVar[str] = "error"
    code: ErrorCode = wire(Code())
    text: str = wire(Text())


MESSAGE_TYPES: dict[str, type[Message]] = {cls.TYPE: cls for cls in (
    Hello, Welcome, Heartbeat, Chunk, Ack, Nack, Credit, TrunkNotice, TrunkFetch, TrunkData, AdapterUpload, Error)}
UPLINK = (Hello, Heartbeat, Chunk, TrunkFetch, AdapterUpload, Error)  # what a hub accepts
DOWNLINK = (Welcome, Heartbeat, Ack, Nack, Credit, TrunkNotice, TrunkData, Error)  # what a robot accepts
COMMON = ("v", "type", "robot_id", "seq")

# --- decoding -----------------------------------------------------------------------------------------------


def _unique_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a map key appears twice")
    return out


def _header(frame: memoryview, limits: Limits) -> dict[str, Any]:
    if frame.nbytes > limits.max_header_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"header of {frame.nbytes} bytes; the limit is "
                            f"{limits.max_header_bytes}")
    try:  # one call (an Unpacker per message cost more); bytes after the map raise ExtraData
        header = msgpack.unpackb(
            frame, raw=False, strict_map_key=True, use_list=True, object_pairs_hook=_unique_map,
            max_str_len=limits.max_header_bytes, max_bin_len=limits.max_header_bytes,
            max_array_len=limits.max_header_bytes, max_map_len=64, max_ext_len=0)
    except Exception as exc:  # untrusted bytes: msgpack raises many kinds (ValueError, ExtraData, StackError...)
        raise ProtocolError(ErrorCode.MALFORMED, f"header is not exactly one msgpack map ({type(exc).__name__})") \
            from None
    if not isinstance(header, dict):
        raise ProtocolError(ErrorCode.MALFORMED, "header is not exactly one msgpack map")
    return header


def _check_version(header: dict[str, Any]) -> None:
    v = header.get("v")
    if type(v) is not int:
        raise ProtocolError(ErrorCode.MALFORMED, f"header has no integer protocol version 'v' (got {v!r:.40})")
    if not MIN_PROTOCOL_VERSION <= v <= PROTOCOL_VERSION:
        ours = f"v{PROTOCOL_VERSION}" if MIN_PROTOCOL_VERSION == PROTOCOL_VERSION else \
            f"v{MIN_PROTOCOL_VERSION}..v{PROTOCOL_VERSION}"
        raise ProtocolError(ErrorCode.VERSION_UNSUPPORTED,
                            f"peer speaks protocol v{v}; this side speaks {ours}"
                            + (" (upgrade this side)" if v > PROTOCOL_VERSION else " (upgrade the peer)"))


@dataclass(frozen=True)
class _DecodePlan:
    """What ``decode`` needs of a message type, worked out once per type (not per message): every field as
    (name, where for errors, its check, whether it is the data frame), the header's field names, the keys a
    header may hold, and whether a data frame follows."""

    fields: tuple[tuple[str, str, Any, bool], ...]  # the check: its bound ``check`` method
    names: tuple[str, ...]
    allowed: frozenset[str]
    has_frame: bool


@functools.cache
def _plan(cls: type[Message]) -> _DecodePlan:
    fields = dataclasses.fields(cls)
    names = tuple(f.name for f in fields if not f.metadata.get("frame"))
    return _DecodePlan(fields=tuple((f.name, f"{cls.TYPE}.{f.name}", f.metadata["check"].check,
                                     bool(f.metadata.get("frame"))) for f in fields),
                       names=names, allowed=frozenset((*COMMON, *names)), has_frame=len(names) < len(fields))


def decode(frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS,
           accept: Iterable[type[Message]] | None = None, keep_chunk_frame: bool = False) -> Message:
    """The message in ``frames`` (bytes, memoryviews or zmq.Frames; for a ROUTER, the frames after the routing
    id), checked completely: sizes, version, type (one of ``accept`` if given), every field's type and range,
    frame count, data size and digest. Raises ProtocolError, and nothing else, on any fault. A data frame becomes
    ``bytes``; with ``keep_chunk_frame`` a chunk's payload stays a memoryview of its frame (no copy)."""
    if not isinstance(frames, list | tuple) or not frames:
        raise ProtocolError(ErrorCode.MALFORMED, "empty message (no header frame)")
    if len(frames) > MAX_FRAMES:
        raise ProtocolError(ErrorCode.FRAME_COUNT, f"{len(frames)} frames; a message has at most {MAX_FRAMES}")
    try:
        views = [memoryview(getattr(f, "buffer", f)) for f in frames]
    except TypeError:
        raise ProtocolError(ErrorCode.MALFORMED, "a frame is not bytes") from None
    total = sum(v.nbytes for v in views)
    if total > limits.max_message_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"message of {total} bytes; the limit is "
                            f"{limits.max_message_bytes}")
    if len(views) > 1 and views[1].nbytes > limits.max_frame_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"data frame of {views[1].nbytes} bytes; the limit is "
                            f"{limits.max_frame_bytes}")
    header = _header(views[0], limits)
    _check_version(header)
    kind = header.get("type")
    cls = MESSAGE_TYPES.get(kind) if type(kind) is str else None
    if cls is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind!r:.40}")
    if accept is not None and cls not in tuple(accept):
        raise ProtocolError(ErrorCode.UNEXPECTED_TYPE, f"{kind} is not accepted on this side")
    plan = _plan(cls)
    if len(header) != len(plan.allowed) or not plan.allowed.issuperset(header):  # the usual case skips the lists
        missing = [n for n in ("robot_id", "seq", *plan.names) if n not in header]
        unknown = sorted(str(k)[:40] for k in header if k not in plan.allowed)
        if missing or unknown:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"{kind}: " + "; ".join(
                ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])))
    if len(views) != 1 + plan.has_frame:
        cid = header.get("chunk_id")  # named for a NACK only if it is a chunk id (a NACK cannot carry another)
        raise ProtocolError(ErrorCode.FRAME_COUNT, f"{kind}: {len(views)} frames, expected {1 + plan.has_frame}",
                            cid if type(cid) is str and CHUNK_ID.pattern.fullmatch(cid) else None)
    values = {}
    for name, where, check, is_frame in plan.fields:
        if not is_frame:
            value = header[name]
        else:
            value = views[1] if keep_chunk_frame and cls is Chunk else bytes(views[1])
        values[name] = check(where, value, limits)
    msg = object.__new__(cls)  # every field is checked above: its __init__ would only set them again, slower
    msg.__dict__.update(values)
    msg.verify(limits)
    return msg


def credit_allows(in_flight_bytes: int, size: int, credit: int) -> bool:
    """Whether a robot with ``in_flight_bytes`` sent and not yet acked or nacked may send a chunk of ``size``
    bytes under ``credit``: it fits, or nothing is in flight (so a chunk larger than the credit still moves).
    Credit 0 stops the robot. Robot and hub both apply this rule; the hub NACKs NO_CREDIT what breaks it."""
    return credit > 0 and (in_flight_bytes == 0 or in_flight_bytes + size <= credit)
