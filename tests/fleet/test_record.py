"""The one record format, shared by the robot's spool and the hub: checks and the chunk contract."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from blake3 import blake3

from fleet.record import (
    DIGEST,
    MAGIC,
    PREFIX,
    RecordError,
    check_chunk,
    decode_record,
    digest_holds,
    encode_record,
    record_schema,
    scan_segment,
    verify_record,
)
from robot_agent.spool_segment import SpoolError
from tests.fleet.chunks import agent_arrays, agent_header, agent_record, as_schema_1


def test_agent_chunk_passes_the_contract_and_round_trips_exactly():
    rng = np.random.default_rng(0)
    arrays = agent_arrays(rng, 12, "go1_like", episode_end=True)
    rec = encode_record(agent_header("unit-0", "0" * 16, 1, 0, arrays, "go1_like"), arrays)
    chunk = decode_record(rec)
    assert check_chunk(chunk) == 12 and chunk.chunk_id == f"unit-0-{'0' * 16}-{1:010d}"
    assert all(np.array_equal(chunk.arrays[k], v) for k, v in arrays.items())


def test_a_record_is_written_as_schema_2_ending_with_the_blake3_of_its_header_and_payload():
    rec = agent_record(np.random.default_rng(3), "unit-0", 1)
    assert rec[:4] == MAGIC == b"FLS3" and record_schema(rec) == 2
    assert rec[-DIGEST:] == blake3(rec[PREFIX.size:-DIGEST]).digest()  # the BLAKE3 team's own hash, not ours


def test_a_schema_1_record_a_spool_held_before_the_upgrade_is_read_and_checked_by_its_sha256():
    new = agent_record(np.random.default_rng(4), "unit-0", 7)
    old = as_schema_1(new)
    assert old[:4] == b"FLSP" and record_schema(old) == 1 and digest_holds(old)
    assert verify_record(old) == verify_record(new)
    back, want = decode_record(old).arrays, decode_record(new).arrays
    assert back.keys() == want.keys() and all(np.array_equal(back[k], want[k]) for k in want)
    spoiled = bytearray(old)
    spoiled[PREFIX.size + 5] ^= 1
    assert not digest_holds(bytes(spoiled))
    with pytest.raises(RecordError):
        verify_record(bytes(spoiled))
    # each magic is held to its own hash: a schema-1 magic over a BLAKE3 digest is no record, nor the reverse
    with pytest.raises(RecordError):
        verify_record(b"FLSP" + new[4:])
    with pytest.raises(RecordError):
        verify_record(MAGIC + old[4:])


def test_a_segment_of_both_schemas_with_garbage_between_yields_every_valid_record(tmp_path):
    rng = np.random.default_rng(5)
    recs = [as_schema_1(agent_record(rng, "unit-0", 1)), agent_record(rng, "unit-0", 2),
            as_schema_1(agent_record(rng, "unit-0", 3))]
    seg = tmp_path / "seg.spool"
    torn = recs[1][:30] + recs[0][:30]  # one gap holding a torn record of each schema: two records lost
    seg.write_bytes(recs[0] + torn + recs[1] + recs[2][:40] + recs[2])
    scan = scan_segment(seg)
    assert [r.header["seq"] for r in scan.refs] == [1, 2, 3] and scan.end == seg.stat().st_size
    assert scan.skipped_bytes == len(torn) + 40 and scan.skipped_records == 3


def test_valid_digest_over_a_payload_that_is_no_npz_is_a_record_error():
    head = json.dumps({"chunk_id": "unit-0-0000000000000000-0000000001"}).encode()
    payload = b"PK\x03\x04 not really a zip archive"
    rec = PREFIX.pack(b"FLSP", len(head), len(payload)) + head + payload + hashlib.sha256(head + payload).digest()
    assert verify_record(rec)["chunk_id"].endswith("1")
    with pytest.raises(RecordError, match="not an npz archive"):
        decode_record(rec)


@pytest.mark.parametrize("spoil,match", [
    (lambda a: a.__setitem__("obs", a["obs"][:-1]), "obs has"),
    (lambda a: a.__setitem__("critic_obs", a["critic_obs"][:-1]), "critic_obs has"),  # no bootstrap row
    (lambda a: a.__setitem__("actions", a["actions"].ravel()), "actions has"),
    (lambda a: a.__setitem__("trunk_version", a["trunk_version"].astype(np.float32)), "trunk_version has"),
    (lambda a: a["obs"].__setitem__((0, 0), np.inf), "obs holds NaN or inf"),
    (lambda a: a.pop("stamp"), r"\['stamp'\] missing"),
])
def test_chunk_that_breaks_the_agent_contract_is_named_by_its_array(spoil, match):
    arrays = agent_arrays(np.random.default_rng(1), 6)
    spoil(arrays)
    header = {"chunk_id": "unit-0-0000000000000000-0000000001", "steps": 6}
    with pytest.raises(RecordError, match=match):
        check_chunk(decode_record(encode_record(header, arrays)))


def test_spool_error_handlers_still_catch_record_errors():
    rec = bytearray(agent_record(np.random.default_rng(2), "unit-0", 1))
    rec[-1] ^= 1
    with pytest.raises(SpoolError):
        verify_record(bytes(rec))


def test_a_deeply_nested_header_is_a_record_error_not_a_crash():
    # json.loads raises RecursionError on '[' * 100000: it must not escape to the hub's loop
    import hashlib

    from fleet.adapter_store import AdapterConflictError, adapter_metadata
    from fleet.record import record_header

    header = b"[" * 100_000
    body = PREFIX.pack(MAGIC, len(header), 0) + header
    record = body + hashlib.sha256(body).digest()[:DIGEST]
    with pytest.raises(RecordError):
        record_header(record, "unit-0-0000000000000000-0000000001")
    with pytest.raises(RecordError):
        verify_record(record)
    with pytest.raises(AdapterConflictError):
        adapter_metadata(len(header).to_bytes(8, "little") + header)
