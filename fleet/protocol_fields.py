"""The protocol's building blocks: error codes, ``ProtocolError``, size limits and the checks a header field's
value must pass (fleet/protocol.py declares each message's fields with them)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MAX_INT = 2**63 - 1  # every integer fits SQLite's signed 64 bits


class ErrorCode(StrEnum):
    """Why a message was refused: ``decode``'s codes, then the ones hub and robot logic send in NACK / ERROR."""

    MALFORMED = "MALFORMED"  # no header, not msgpack, not a map, duplicate keys, no version
    VERSION_UNSUPPORTED = "VERSION_UNSUPPORTED"  # a protocol version this side does not speak
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    UNEXPECTED_TYPE = "UNEXPECTED_TYPE"  # a known type sent in the wrong direction
    BAD_FIELD = "BAD_FIELD"  # missing, unknown, wrong type, out of range, too long
    FRAME_COUNT = "FRAME_COUNT"  # data frame missing (truncated multipart) or extra
    SIZE_MISMATCH = "SIZE_MISMATCH"  # the data frame's length is not the header's size
    BAD_DIGEST = "BAD_DIGEST"  # the data frame's sha256 is not the header's
    TOO_LARGE = "TOO_LARGE"  # header or whole message over the limits
    SCHEMA_UNSUPPORTED = "SCHEMA_UNSUPPORTED"  # a chunk record format this side cannot read
    IDENTITY_MISMATCH = "IDENTITY_MISMATCH"  # the header names another robot than the key (or the chunk id does)
    UNKNOWN_KEY = "UNKNOWN_KEY"  # no enrolled key behind the message (never enrolled, or revoked)
    HELLO_REQUIRED = "HELLO_REQUIRED"  # anything but HELLO before WELCOME
    NO_CREDIT = "NO_CREDIT"  # a chunk beyond the robot's byte credit
    BAD_RECORD = "BAD_RECORD"  # the payload is not one valid spool record of that chunk id
    STORAGE_FAILED = "STORAGE_FAILED"  # the hub could not store it: resend later
    UNKNOWN_TRUNK = "UNKNOWN_TRUNK"  # a trunk version the hub does not hold
    BAD_RANGE = "BAD_RANGE"  # a fetch outside the trunk's bytes
    SHUTTING_DOWN = "SHUTTING_DOWN"
    INTERNAL = "INTERNAL"


class ProtocolError(Exception):
    """A message broke the protocol: ``code`` says how (an ErrorCode), ``text`` says what, for a person.
    ``chunk_id`` is set when the header of a chunk was sound but its data was not, so the hub can NACK it."""

    def __init__(self, code: ErrorCode, text: str, chunk_id: str | None = None):
        super().__init__(f"{code}: {text}")
        self.code, self.text, self.chunk_id = ErrorCode(code), text, chunk_id


@dataclass(frozen=True)
class Limits:
    """Size limits a decoder enforces. ``max_message_bytes`` is all frames together."""

    max_header_bytes: int = 64 * 1024
    max_frame_bytes: int = 16 * 1024 * 1024  # a data frame (the socket's MAXMSGSIZE refuses larger first)
    max_message_bytes: int = 16 * 1024 * 1024 + 64 * 1024
    max_ids: int = 1024  # chunk ids in one ACK list
    max_text: int = 1024  # characters of a NACK / ERROR text

    @classmethod
    def for_frames(cls, max_frame_bytes: int) -> Limits:
        """Limits for a socket whose largest frame (ZMQ MAXMSGSIZE) is ``max_frame_bytes``."""
        return cls(max_frame_bytes=max_frame_bytes, max_message_bytes=max_frame_bytes + cls.max_header_bytes)


DEFAULT_LIMITS = Limits()

# --- field checks -------------------------------------------------------------------------------------------


def _refuse(where: str, expected: str, value: Any) -> ProtocolError:
    if isinstance(value, str):
        shown = repr(value[:40]) + ("..." if len(value) > 40 else "")
    else:
        shown = repr(value) if isinstance(value, int | float | bool | None) else type(value).__name__
    return ProtocolError(ErrorCode.BAD_FIELD, f"{where}: expected {expected}, got {shown}")


@dataclass(frozen=True)
class Int:
    """An integer (never a bool or a float: NaN has nowhere to hide) in [lo, hi]."""

    lo: int = 0
    hi: int = MAX_INT

    def check(self, where: str, value: Any, limits: Limits) -> int:
        if type(value) is not int or not self.lo <= value <= self.hi:
            raise _refuse(where, f"an integer in [{self.lo}, {self.hi}]", value)
        return value


@dataclass(frozen=True)
class Str:
    """A string matching ``pattern`` (ids, names, digests: no control characters, bounded length)."""

    pattern: re.Pattern[str]
    what: str

    def check(self, where: str, value: Any, limits: Limits) -> str:
        if type(value) is not str or not self.pattern.fullmatch(value):
            raise _refuse(where, self.what, value)
        return value


@dataclass(frozen=True)
class Text:
    """Free text for a person: printable, at most ``limits.max_text`` characters."""

    def check(self, where: str, value: Any, limits: Limits) -> str:
        if type(value) is not str or len(value) > limits.max_text or not value.isprintable():
            raise _refuse(where, f"printable text of at most {limits.max_text} characters", value)
        return value


@dataclass(frozen=True)
class Code:
    """One of the ErrorCode names."""

    def check(self, where: str, value: Any, limits: Limits) -> ErrorCode:
        if not isinstance(value, str) or value not in ErrorCode.__members__:
            raise _refuse(where, "an error code name", value)
        return ErrorCode(value)


@dataclass(frozen=True)
class IdList:
    """A list of at most ``limits.max_ids`` chunk ids, each at most once."""

    def check(self, where: str, value: Any, limits: Limits) -> list[str]:
        if type(value) is not list or len(value) > limits.max_ids:
            raise _refuse(where, f"a list of at most {limits.max_ids} chunk ids", value)
        for i, item in enumerate(value):
            CHUNK_ID.check(f"{where}[{i}]", item, limits)
        if len(set(value)) != len(value):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"{where}: a chunk id appears twice")
        return list(value)


@dataclass(frozen=True)
class Frame:
    """The raw data frame after the header (never in the header itself)."""

    def check(self, where: str, value: Any, limits: Limits) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise _refuse(where, "bytes", value)
        return value


ROBOT_ID = Str(re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"), "a robot id ([A-Za-z0-9_.-], 1-64 chars)")
CHUNK_ID = Str(re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"), "a chunk id ([A-Za-z0-9_.-], 1-128 chars)")
NAME = Str(re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}"), "a name ([A-Za-z0-9_.+-], 1-64 chars)")
SHA256 = Str(re.compile(r"[0-9a-f]{64}"), "a sha256 as 64 lowercase hex digits")
SHORT_HASH = Str(re.compile(r"[0-9a-f]{8,64}"), "8-64 lowercase hex digits")
COUNT = Int()
VERSION = Int(1)


def wire(check: Any) -> Any:
    """A header field and the check its value must pass."""
    return dataclasses.field(metadata={"check": check})


def data_frame() -> Any:
    """The message's raw data frame."""
    return dataclasses.field(metadata={"check": Frame(), "frame": True}, repr=False)
