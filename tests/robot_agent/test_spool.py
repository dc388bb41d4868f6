"""The spool: durable appends, torn tails cut at open, quota policies, acknowledgements."""

from __future__ import annotations

import numpy as np
import pytest

from robot_agent.spool import DROP_OLDEST, REFUSE, Spool, SpoolFullError, encode_record


def _arrays(n: int = 50, fill: float = 1.0) -> dict[str, np.ndarray]:
    return {"obs": np.full((n, 4), fill, np.float32), "rewards": np.arange(n, dtype=np.float32)}


def test_chunks_round_trip_and_survive_reopening(tmp_path):
    spool = Spool(tmp_path)
    ids = [spool.append({"robot_id": "u1", "episode": k}, _arrays(fill=k)) for k in range(3)]
    again = Spool(tmp_path)
    refs = again.pending()
    assert [r.chunk_id for r in refs] == ids
    chunk = again.read(refs[2])
    assert chunk.header["episode"] == 2 and chunk.header["seq"] == 3
    np.testing.assert_array_equal(chunk.arrays["obs"], np.full((50, 4), 2.0, np.float32))
    assert again.append({"robot_id": "u1"}, _arrays()) == "u1-0000000004"  # sequence continues


def test_torn_tail_is_cut_and_complete_chunks_kept(tmp_path):
    spool = Spool(tmp_path)
    for k in range(3):
        spool.append({"robot_id": "u1"}, _arrays(fill=k))
    seg = sorted(tmp_path.glob("seg-*.spool"))[-1]
    record = encode_record({"robot_id": "u1", "chunk_id": "torn", "seq": 99}, _arrays())
    with open(seg, "ab") as f:
        f.write(record[: len(record) // 2])  # the write in flight when the process died
    again = Spool(tmp_path)
    assert [r.chunk_id for r in again.pending()] == ["u1-0000000001", "u1-0000000002", "u1-0000000003"]
    assert again.torn_bytes == len(record) // 2
    assert seg.stat().st_size == sum(r.size for r in again.pending())


def test_record_with_a_bad_checksum_ends_the_readable_log(tmp_path):
    spool = Spool(tmp_path)
    for k in range(2):
        spool.append({"robot_id": "u1"}, _arrays(fill=k))
    seg = sorted(tmp_path.glob("seg-*.spool"))[-1]
    data = bytearray(seg.read_bytes())
    data[-40] ^= 0xFF  # flip a byte inside the last record's payload
    seg.write_bytes(bytes(data))
    again = Spool(tmp_path)
    assert [r.chunk_id for r in again.pending()] == ["u1-0000000001"]
    assert again.torn_bytes > 0


def test_refuse_policy_raises_when_full_and_keeps_old_chunks(tmp_path):
    size = len(encode_record({"robot_id": "u1", "chunk_id": "u1-0000000001", "seq": 1}, _arrays()))
    spool = Spool(tmp_path, quota_bytes=int(2.5 * size), when_full=REFUSE)
    spool.append({"robot_id": "u1"}, _arrays())
    spool.append({"robot_id": "u1"}, _arrays())
    with pytest.raises(SpoolFullError, match="quota"):
        spool.append({"robot_id": "u1"}, _arrays())
    assert spool.depth == 2 and spool.refused == 1 and not spool.has_room(size)


def test_drop_oldest_policy_drops_whole_old_segments_and_counts_them(tmp_path):
    size = len(encode_record({"robot_id": "u1", "chunk_id": "u1-0000000001", "seq": 1}, _arrays()))
    spool = Spool(tmp_path, quota_bytes=4 * size, when_full=DROP_OLDEST, segment_bytes=2 * size)
    ids = [spool.append({"robot_id": "u1"}, _arrays()) for _ in range(7)]
    kept = [r.chunk_id for r in spool.pending()]
    assert kept == ids[-len(kept):] and ids[-1] in kept
    assert spool.dropped == 7 - len(kept) > 0
    assert spool.bytes <= 4 * size


def test_acked_segments_are_deleted_and_stay_acked_after_reopening(tmp_path):
    size = len(encode_record({"robot_id": "u1", "chunk_id": "u1-0000000001", "seq": 1}, _arrays()))
    spool = Spool(tmp_path, segment_bytes=2 * size)
    ids = [spool.append({"robot_id": "u1"}, _arrays()) for _ in range(5)]
    spool.ack(ids[:3])
    assert [r.chunk_id for r in spool.pending()] == ids[3:]
    assert len(list(tmp_path.glob("seg-*.spool"))) == 2  # the fully acked first segment is gone
    assert [r.chunk_id for r in Spool(tmp_path, segment_bytes=2 * size).pending()] == ids[3:]


def test_bad_policy_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="when_full"):
        Spool(tmp_path, when_full="overwrite")
