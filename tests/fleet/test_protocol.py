"""The wire protocol: every type round-trips, every malformed class is refused with its code, and a fuzz run of
thousands of random and mutated messages raises ProtocolError and nothing else."""

import dataclasses
import hashlib
import math
import random

import msgpack
import numpy as np
import pytest

from fleet.protocol import (
    DOWNLINK,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    UPLINK,
    Ack,
    AdapterUpload,
    Chunk,
    Credit,
    Error,
    ErrorCode,
    Heartbeat,
    Hello,
    Limits,
    Nack,
    ProtocolError,
    TrunkData,
    TrunkFetch,
    TrunkNotice,
    Welcome,
    credit_allows,
    decode,
)
from tests.fleet.chunks import agent_record, as_schema_1

PAYLOAD = agent_record(np.random.default_rng(0), "unit-0", 42, "3f9c2a7d1b0e4c55")  # a real spool record
TRUNK = b"trunk bytes " * 100
R = {"robot_id": "unit-0", "seq": 7}

SAMPLES = [
    Hello(**R, hardware="cartpole", profile_hash="0123abcd" * 8, agent_version="0.1.0", spool_depth=3,
          spool_bytes=1 << 40, trunk_version=2, adapter_version=5),
    Welcome(**R, credit=4 << 20, trunk_version=3, heartbeat_ms=1000, max_message_bytes=16 << 20),
    Heartbeat(**R, t_us=123456789, echo_us=123000000, echo_delay_us=250, spool_depth=0, spool_bytes=0,
              trunk_version=3, adapter_version=0),
    Chunk.of("unit-0", 8, "unit-0-3f9c2a7d1b0e4c55-0000000042", PAYLOAD),
    Ack(**R, stored=["unit-0-e-0000000001", "unit-0-e-0000000002"], duplicate=["unit-0-e-0000000000"]),
    Nack(**R, chunk_id="unit-0-e-0000000003", reason=ErrorCode.NO_CREDIT, text="credit is 0: wait for CREDIT"),
    Credit(**R, credit=0),
    TrunkNotice(**R, trunk_version=4, size=len(TRUNK), sha256=hashlib.sha256(TRUNK).hexdigest()),
    TrunkFetch(**R, trunk_version=4, offset=512, length=256),
    TrunkData(**R, trunk_version=4, offset=512, total_size=len(TRUNK), sha256=hashlib.sha256(TRUNK).hexdigest(),
              size=256, piece_sha256=hashlib.sha256(TRUNK[512:768]).hexdigest(), data=TRUNK[512:768]),
    AdapterUpload(**R, trunk_version=4, adapter_version=6, size=len(PAYLOAD),
                  sha256=hashlib.sha256(PAYLOAD).hexdigest(), data=PAYLOAD),
    Error(**R, code=ErrorCode.VERSION_UNSUPPORTED, text="peer speaks protocol v9; this side speaks v1"),
]


def header_of(msg):
    return msgpack.unpackb(msg.encode()[0], raw=False)


def pack(header, *frames):
    return [msgpack.packb(header, use_bin_type=True), *frames]


def refused(frames, **kw):
    with pytest.raises(ProtocolError) as info:
        decode(frames, **kw)
    return info.value


def test_every_message_type_has_a_sample():
    assert {type(m) for m in SAMPLES} == set(MESSAGE_TYPES.values())
    assert set(UPLINK) | set(DOWNLINK) == set(MESSAGE_TYPES.values())


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.TYPE)
def test_every_type_round_trips_through_its_frames(msg):
    frames = msg.encode()
    assert all(isinstance(f, bytes) for f in frames)
    back = decode(frames)
    assert type(back) is type(msg) and back == msg
    assert decode([memoryview(f) for f in frames]) == msg  # zero-copy buffers decode the same
    assert header_of(msg)["v"] == PROTOCOL_VERSION and header_of(msg)["type"] == msg.TYPE


def test_direction_is_enforced_when_asked():
    hello, welcome = SAMPLES[0], SAMPLES[1]
    assert decode(hello.encode(), accept=UPLINK) == hello
    assert refused(welcome.encode(), accept=UPLINK).code == ErrorCode.UNEXPECTED_TYPE
    assert refused(hello.encode(), accept=DOWNLINK).code == ErrorCode.UNEXPECTED_TYPE


@pytest.mark.parametrize("frames", [[], [b""], [b"\xc1"], [b"\x93\x01\x02\x03"], [b"\x81\xa1v\x01\x00"],
                                    [b"\x82\xa1v\x01\xa1v\x01"], [msgpack.packb({"type": "hello"})],
                                    [random.Random(0).randbytes(300)], [b"\x81\xa1v" + b"\x91" * 60000 + b"\x01"]],
                         ids=["no frames", "empty header", "bad msgpack", "array", "trailing byte",
                              "duplicate key", "no version", "random bytes", "nesting bomb"])
def test_a_header_that_is_not_one_msgpack_map_with_a_version_is_malformed(frames):
    assert refused(frames).code == ErrorCode.MALFORMED


@pytest.mark.parametrize("version", [PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, 99, 0, -1, 2**64 - 1])
def test_an_unknown_or_newer_version_is_refused_naming_both_versions(version):
    header = {**header_of(SAMPLES[0]), "v": version, "brand_new_field": 1}  # a newer peer's fields too
    err = refused(pack(header))
    assert err.code == ErrorCode.VERSION_UNSUPPORTED
    assert f"v{version}" in err.text and f"v{PROTOCOL_VERSION}" in err.text


@pytest.mark.parametrize("version", [1.0, "1", True, None, math.nan])
def test_a_version_that_is_not_an_integer_is_malformed(version):
    assert refused(pack({**header_of(SAMPLES[0]), "v": version})).code == ErrorCode.MALFORMED


def test_an_unknown_type_is_refused():
    for kind in ("shutdown", "", 3, None, "Hello"):
        assert refused(pack({**header_of(SAMPLES[0]), "type": kind})).code == ErrorCode.UNKNOWN_TYPE


def test_a_missing_or_unknown_field_is_refused_by_name():
    header = header_of(SAMPLES[0])
    del header["spool_depth"]
    assert "spool_depth" in refused(pack(header)).text
    err = refused(pack({**header_of(SAMPLES[0]), "admin": True}))
    assert err.code == ErrorCode.BAD_FIELD and "admin" in err.text


BAD_VALUES = [
    (0, "seq", "1"), (0, "seq", 1.5), (0, "seq", True), (0, "seq", -1), (0, "seq", 2**64 - 1), (0, "seq", None),
    (1, "credit", math.nan), (1, "credit", math.inf), (1, "credit", -5), (1, "heartbeat_ms", 0),
    (2, "t_us", math.nan), (0, "robot_id", "../etc"), (0, "robot_id", ""), (0, "robot_id", "u" * 65),
    (0, "robot_id", b"unit-0"), (0, "robot_id", "unit\n0"), (0, "hardware", {"nested": "map"}),
    (0, "profile_hash", "XYZ"), (0, "agent_version", "0.1 ; rm -rf"), (3, "chunk_id", "unit-0-\x00"),
    (3, "sha256", "AB" * 32), (3, "sha256", "ab" * 31), (3, "size", [1]), (4, "stored", "unit-0-e-1"),
    (4, "stored", [1, 2]), (4, "stored", ["unit-0-e-1", "unit-0-e-1"]), (4, "duplicate", ["x"] * 1025),
    (5, "reason", "NOT_A_CODE"), (5, "text", "\x1b[31mred"), (5, "text", "x" * 1025), (6, "credit", 2**63),
    (8, "length", 0), (8, "trunk_version", 0), (11, "code", 42),
]


@pytest.mark.parametrize(("sample", "field", "value"), BAD_VALUES,
                         ids=[f"{SAMPLES[s].TYPE}.{f}={v!r:.20}" for s, f, v in BAD_VALUES])
def test_a_field_of_the_wrong_type_or_range_is_refused_by_name(sample, field, value):
    msg = SAMPLES[sample]
    frames = msg.encode()
    err = refused(pack({**header_of(msg), field: value}, *frames[1:]))
    assert err.code == ErrorCode.BAD_FIELD and f"{msg.TYPE}.{field}" in err.text


def test_a_truncated_or_padded_multipart_is_refused():
    chunk, hello = SAMPLES[3].encode(), SAMPLES[0].encode()
    err = refused(chunk[:1])
    assert err.code == ErrorCode.FRAME_COUNT and err.chunk_id == SAMPLES[3].chunk_id
    assert refused(hello + [b"extra"]).code == ErrorCode.FRAME_COUNT
    assert refused(chunk + [b"extra"]).code == ErrorCode.FRAME_COUNT


def test_a_truncated_chunk_names_no_chunk_id_that_is_not_one():
    # a NACK carries only a valid chunk id: a malformed one named here would make the hub's NACK fail to encode
    msg = SAMPLES[3]
    err = refused([msgpack.packb({**header_of(msg), "chunk_id": "bad id!"})])
    assert err.code == ErrorCode.FRAME_COUNT and err.chunk_id is None


def test_a_data_frame_that_does_not_match_its_header_is_refused_with_its_chunk_id():
    chunk = SAMPLES[3]
    header, payload = chunk.encode()
    flipped = bytearray(payload)
    flipped[100] ^= 1
    err = refused([header, bytes(flipped)])
    assert (err.code, err.chunk_id) == (ErrorCode.BAD_DIGEST, chunk.chunk_id)
    assert refused([header, payload[:-1]]).code == ErrorCode.SIZE_MISMATCH
    upload = SAMPLES[10].encode()
    assert refused([upload[0], upload[1][::-1]]).code == ErrorCode.BAD_DIGEST
    piece = SAMPLES[9].encode()
    assert refused([piece[0], b"\0" * 256]).code == ErrorCode.BAD_DIGEST


def test_a_trunk_piece_past_the_end_of_its_trunk_is_refused():
    msg = SAMPLES[9]
    err = refused(pack({**header_of(msg), "offset": len(TRUNK) - 10}, msg.data))
    assert err.code == ErrorCode.BAD_FIELD and "past" in err.text


def test_a_chunk_of_another_robot_or_an_unknown_schema_is_refused():
    other = Chunk.of("unit-1", 1, "unit-0-3f9c2a7d1b0e4c55-0000000042", PAYLOAD)  # replayed under its own name
    assert refused(other.encode()).code == ErrorCode.IDENTITY_MISMATCH
    prefix = Chunk.of("unit-0", 1, "unit-01-e-0000000001", PAYLOAD)  # 'unit-0' is a prefix of 'unit-01'
    assert refused(prefix.encode()).code == ErrorCode.IDENTITY_MISMATCH
    assert refused(Chunk.of("unit-0", 1, "unit-0-e-1", PAYLOAD, schema=3).encode()).code == \
        ErrorCode.SCHEMA_UNSUPPORTED
    old = as_schema_1(PAYLOAD)  # a record a spool wrote before the upgrade: schema 1, sha256
    assert decode(Chunk.of("unit-0", 1, "unit-0-e-1", old).encode()).schema == 1
    # a record sent as a schema other than its magic's is not hashed as that schema: refused as a bad digest
    assert refused(Chunk.of("unit-0", 1, "unit-0-e-1", PAYLOAD, schema=1).encode()).code == ErrorCode.BAD_DIGEST


def test_oversize_headers_and_messages_are_refused_before_parsing():
    limits = Limits(max_header_bytes=256, max_message_bytes=4096)
    assert refused(SAMPLES[3].encode(), limits=limits).code == ErrorCode.TOO_LARGE  # 10 KiB payload
    long_ack = Ack(**R, stored=[f"unit-0-e-{i:010d}" for i in range(100)], duplicate=[])
    assert refused(long_ack.encode(), limits=limits).code == ErrorCode.TOO_LARGE
    assert refused([b"\x81" + b"\xda\xff\xff" + b"a" * 65535], limits=limits).code == ErrorCode.TOO_LARGE
    assert decode(SAMPLES[3].encode(), limits=Limits.for_frames(len(PAYLOAD))) == SAMPLES[3]
    assert refused(SAMPLES[3].encode(), limits=Limits.for_frames(len(PAYLOAD) - 1000)).code == ErrorCode.TOO_LARGE


def test_msgpack_extension_types_in_a_header_are_malformed():
    header = {**header_of(SAMPLES[0]), "hardware": msgpack.ExtType(5, b"evil")}
    assert refused(pack(header)).code == ErrorCode.MALFORMED


def test_encode_refuses_a_message_that_breaks_the_protocol():
    with pytest.raises(ProtocolError) as info:
        Credit(robot_id="unit-0", seq=1, credit=-1).encode()
    assert info.value.code == ErrorCode.BAD_FIELD
    with pytest.raises(ProtocolError):
        Hello(robot_id="unit 0", seq=0, hardware="c", profile_hash="0" * 8, agent_version="1", spool_depth=0,
              spool_bytes=0, trunk_version=0, adapter_version=0).encode()


def test_credit_bounds_unacked_bytes_but_never_blocks_a_lone_chunk():
    assert credit_allows(0, 100, 1000) and credit_allows(900, 100, 1000)
    assert not credit_allows(901, 100, 1000)
    assert credit_allows(0, 5000, 1000)  # larger than the whole credit, nothing in flight: it may go alone
    assert not credit_allows(1, 5000, 1000)
    assert not credit_allows(0, 1, 0)  # credit 0 stops the robot


NASTY = [math.nan, math.inf, -math.inf, -1, 2**63, 2**64 - 1, -(2**63), True, None, "", "x" * 2000,
         "\x00", "unit-0", b"bytes", [], [1, "a"], {}, {"a": {"b": [1]}}, 1.5, 0, 1, "AB" * 32]


def _mutant(rng: random.Random) -> list:
    base = rng.choice(SAMPLES)
    frames = base.encode()
    kind = rng.randrange(9)
    if kind == 0:  # random bytes, 1-3 frames
        return [rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randrange(1, 4))]
    if kind == 1:  # flipped bits anywhere
        which = rng.randrange(len(frames))
        f = bytearray(frames[which])
        for _ in range(rng.randrange(1, 4)):
            if f:
                f[rng.randrange(len(f))] ^= 1 << rng.randrange(8)
        frames[which] = bytes(f)
        return frames
    if kind == 2:  # truncated header or frames dropped
        if rng.random() < 0.5:
            frames[0] = frames[0][:rng.randrange(len(frames[0]))]
        else:
            frames = frames[:rng.randrange(len(frames))]
        return frames
    header = header_of(base)
    keys = list(header)
    if kind in (3, 4, 5):  # one value replaced by a nasty one
        header[rng.choice(keys)] = rng.choice(NASTY)
    elif kind == 6:  # a key dropped, or one added
        if rng.random() < 0.5:
            del header[rng.choice(keys)]
        else:
            header[rng.choice(["x", "v2", "admin", "payload"])] = rng.choice(NASTY)
    elif kind == 7:  # version or type swapped
        header["v"] = rng.choice([0, 2, 3, -1, 1, 1.0, "1"])
        header["type"] = rng.choice([*MESSAGE_TYPES, "nope", 1])
    else:  # frames reshuffled
        frames.insert(rng.randrange(len(frames) + 1), rng.randbytes(rng.randrange(0, 64)))
        return frames
    return pack(header, *frames[1:])


@pytest.mark.timeout(120)
def test_thousands_of_random_and_mutated_messages_only_ever_raise_protocol_error():
    rng = random.Random(20261201)
    codes = {}
    for _ in range(6000):
        frames = _mutant(rng)
        try:
            msg = decode(frames)
        except ProtocolError as exc:
            codes[exc.code] = codes.get(exc.code, 0) + 1
            continue
        assert decode(msg.encode()) == msg  # whatever gets through is a valid message
    assert {ErrorCode.MALFORMED, ErrorCode.BAD_FIELD, ErrorCode.FRAME_COUNT, ErrorCode.BAD_DIGEST,
            ErrorCode.VERSION_UNSUPPORTED, ErrorCode.UNKNOWN_TYPE} <= set(codes)


def test_every_message_type_can_be_built_the_way_decode_builds_it():
    """decode fills a checked message's fields without calling its __init__: that is the same message only while
    no type has a __post_init__, __slots__ or a field left out of __init__ (this fails the day one does)."""
    for cls in MESSAGE_TYPES.values():
        assert not hasattr(cls, "__post_init__"), cls
        assert "__slots__" not in vars(cls), cls
        assert all(f.init for f in dataclasses.fields(cls)), cls
