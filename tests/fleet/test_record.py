"""The one record format, shared by the robot's spool and the hub: checks and the chunk contract."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from fleet.record import PREFIX, RecordError, check_chunk, decode_record, encode_record, verify_record
from robot_agent.spool_segment import SpoolError
from tests.fleet.chunks import agent_arrays, agent_header, agent_record


def test_agent_chunk_passes_the_contract_and_round_trips_exactly():
    rng = np.random.default_rng(0)
    arrays = agent_arrays(rng, 12, "go1_like", episode_end=True)
    rec = encode_record(agent_header("unit-0", "0" * 16, 1, 0, arrays, "go1_like"), arrays)
    chunk = decode_record(rec)
    assert check_chunk(chunk) == 12 and chunk.chunk_id == f"unit-0-{'0' * 16}-{1:010d}"
    assert all(np.array_equal(chunk.arrays[k], v) for k, v in arrays.items())


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
    from fleet.record import DIGEST, MAGIC, record_header

    header = b"[" * 100_000
    body = PREFIX.pack(MAGIC, len(header), 0) + header
    record = body + hashlib.sha256(body).digest()[:DIGEST]
    with pytest.raises(RecordError):
        record_header(record, "unit-0-0000000000000000-0000000001")
    with pytest.raises(RecordError):
        verify_record(record)
    with pytest.raises(AdapterConflictError):
        adapter_metadata(len(header).to_bytes(8, "little") + header)
