"""The spool: durable appends, bad records that cost only themselves, ids unique forever, quota policies, acks."""

from __future__ import annotations

import shutil
import struct
import threading

import numpy as np
import pytest

from robot_agent.spool import DROP_OLDEST, REFUSE, Spool, SpoolError, SpoolFullError, SpoolLockedError
from robot_agent.spool_segment import PREFIX, encode_record, scan_segment, verify_record


def _arrays(n: int = 50, fill: float = 1.0) -> dict[str, np.ndarray]:
    return {"obs": np.full((n, 4), fill, np.float32), "rewards": np.arange(n, dtype=np.float32)}


def _size() -> int:
    """A record's size as the spool writes it (ids, seq and epoch in the header), give or take a digit."""
    return len(encode_record({"robot_id": "u1", "k": 0, "chunk_id": "u1-" + "0" * 16 + "-0000000001", "seq": 1,
                              "spool_epoch": "0" * 16}, _arrays()))


def _ids(spool: Spool) -> list[str]:
    return [r.chunk_id for r in spool.pending()]


def _fill(directory, n: int, **kw) -> tuple[list[str], list]:
    """``n`` chunks in a closed spool; their ids and refs."""
    with Spool(directory, **kw) as spool:
        ids = [spool.append({"robot_id": "u1", "k": k}, _arrays(fill=k)) for k in range(n)]
        return ids, spool.pending()


def _corrupt(path, offset: int, edit) -> None:
    data = bytearray(path.read_bytes())
    edit(data, offset)
    path.write_bytes(bytes(data))


def test_chunks_round_trip_and_survive_reopening(tmp_path):
    with Spool(tmp_path) as spool:
        ids = [spool.append({"robot_id": "u1", "episode": k}, _arrays(fill=k)) for k in range(3)]
        epoch = spool.epoch
    assert ids[0] == f"u1-{epoch}-0000000001" and len(epoch) == 16
    with Spool(tmp_path) as again:
        refs = again.pending()
        assert [r.chunk_id for r in refs] == ids and again.epoch == epoch
        chunk = again.read(refs[2])
        assert chunk.header["episode"] == 2 and chunk.header["seq"] == 3 and chunk.header["spool_epoch"] == epoch
        np.testing.assert_array_equal(chunk.arrays["obs"], np.full((50, 4), 2.0, np.float32))
        new = again.append({"robot_id": "u1"}, _arrays())
        assert new not in ids and int(new.rsplit("-", 1)[1]) > 3  # the sequence goes on, never back


def test_read_record_bytes_gives_the_exact_checked_bytes(tmp_path):
    with Spool(tmp_path) as spool:
        ids = [spool.append({"robot_id": "u1"}, _arrays(fill=k)) for k in range(2)]
        ref = spool.pending()[1]
        data = spool.read_record_bytes(ref)
        assert data == ref.segment.read_bytes()[ref.offset:ref.offset + ref.size]
        assert verify_record(data, ids[1])["chunk_id"] == ids[1]
        _corrupt(ref.segment, ref.offset + ref.size - 40, lambda d, o: d.__setitem__(o, d[o] ^ 1))
        with pytest.raises(SpoolError, match=ids[1]):
            spool.read_record_bytes(ref)


def test_torn_tail_is_cut_and_complete_chunks_kept(tmp_path):
    ids, _ = _fill(tmp_path, 3)
    seg = sorted(tmp_path.glob("seg-*.spool"))[-1]
    record = encode_record({"robot_id": "u1", "chunk_id": "torn", "seq": 99}, _arrays())
    with open(seg, "ab") as f:
        f.write(record[: len(record) // 2])  # the write in flight when the process died
    with Spool(tmp_path) as again:
        assert _ids(again) == ids and again.torn_bytes == len(record) // 2 and again.skipped_records == 0
        assert seg.stat().st_size == sum(r.size for r in again.pending())


def test_bad_last_record_is_cut_like_a_torn_tail(tmp_path):
    ids, refs = _fill(tmp_path, 2)
    _corrupt(refs[1].segment, refs[1].offset + refs[1].size - 40, lambda d, o: d.__setitem__(o, d[o] ^ 0xFF))
    with Spool(tmp_path) as again:
        assert _ids(again) == ids[:1] and again.torn_bytes == refs[1].size
        ids.append(again.append({"robot_id": "u1"}, _arrays()))
    with Spool(tmp_path) as again:
        assert _ids(again) == [ids[0], ids[2]] and again.torn_bytes == 0


def test_flipped_bit_costs_only_its_own_record(tmp_path, caplog):
    ids, refs = _fill(tmp_path, 10)
    seg, bad = refs[3].segment, refs[3]
    size = seg.stat().st_size
    _corrupt(seg, bad.offset + bad.size // 2, lambda d, o: d.__setitem__(o, d[o] ^ 0x10))  # one bit, mid-payload
    with Spool(tmp_path) as again:
        assert _ids(again) == ids[:3] + ids[4:]  # 9 of 10
        assert (again.skipped_records, again.skipped_bytes, again.torn_bytes) == (1, bad.size, 0)
        assert all(again.read(r).header["k"] == int(r.chunk_id[-2:]) - 1 for r in again.pending())
        assert seg.stat().st_size == size  # nothing valid cut away
        new = again.append({"robot_id": "u1"}, _arrays())
    assert "skipped 1 bad record" in caplog.text
    with Spool(tmp_path) as again:
        assert _ids(again) == ids[:3] + ids[4:] + [new]


def _set_plen(d: bytearray, o: int, plen: int) -> None:
    magic, hlen, _ = PREFIX.unpack_from(d, o)
    d[o:o + PREFIX.size] = PREFIX.pack(magic, hlen, plen)


CORRUPTIONS = {
    "magic": lambda d, o, refs: d.__setitem__(o, d[o] ^ 1),
    "header length": lambda d, o, refs: d.__setitem__(o + 4, d[o + 4] ^ 1),
    "payload length, low bit": lambda d, o, refs: d.__setitem__(o + 8, d[o + 8] ^ 1),
    "payload length, past the end": lambda d, o, refs: d.__setitem__(o + 15, d[o + 15] ^ 0x80),
    # the worst case: a length that makes the bad record end exactly where a good one ends
    "payload length spanning the next record": lambda d, o, refs: _set_plen(
        d, o, struct.unpack_from("<Q", d, o + 8)[0] + refs[4].size),
    "header": lambda d, o, refs: d.__setitem__(o + PREFIX.size, d[o + PREFIX.size] ^ 1),
    "digest": lambda d, o, refs: d.__setitem__(o + refs[3].size - 1, d[o + refs[3].size - 1] ^ 1),
}


@pytest.mark.parametrize("where", list(CORRUPTIONS))
def test_corrupted_prefix_or_digest_costs_only_its_own_record(tmp_path, where):
    ids, refs = _fill(tmp_path, 10)
    _corrupt(refs[3].segment, refs[3].offset, lambda d, o: CORRUPTIONS[where](d, o, refs))
    with Spool(tmp_path) as again:
        assert _ids(again) == ids[:3] + ids[4:]
        assert (again.skipped_records, again.skipped_bytes, again.torn_bytes) == (1, refs[3].size, 0)


def test_bad_records_in_a_non_last_segment_cost_only_themselves(tmp_path):
    ids, refs = _fill(tmp_path, 9, segment_bytes=3 * _size() + 10)
    segs = sorted({r.segment for r in refs})
    assert len(segs) == 3
    flip = lambda d, o: d.__setitem__(o, d[o] ^ 4)  # noqa: E731
    _corrupt(refs[1].segment, refs[1].offset + 100, flip)  # middle of the first segment
    _corrupt(refs[5].segment, refs[5].offset + 100, flip)  # last record of the second one
    with Spool(tmp_path, segment_bytes=3 * _size() + 10) as again:
        assert _ids(again) == [ids[0]] + ids[2:5] + ids[6:]
        assert (again.skipped_records, again.skipped_bytes) == (1, refs[1].size)
        assert again.torn_bytes == refs[5].size and again.depth == 7


def test_ids_stay_unique_after_every_segment_was_acked_and_deleted(tmp_path):
    ids, _ = _fill(tmp_path, 5, segment_bytes=2 * _size())
    with Spool(tmp_path, segment_bytes=2 * _size()) as spool:
        spool.ack(ids)
        assert spool.depth == 0 and spool.bytes == 0
    for seg in tmp_path.glob("seg-*.spool"):  # nothing the spool kept of acked chunks (it keeps none now)
        seg.unlink()
    again, _ = _fill(tmp_path, 5, segment_bytes=2 * _size())
    assert not set(ids) & set(again)


def test_ids_are_unique_across_two_spools_with_the_same_robot_id(tmp_path):
    one, _ = _fill(tmp_path / "robot-a", 3)
    two, _ = _fill(tmp_path / "robot-b", 3)  # the same robot_id "u1", by mistake
    assert not set(one) & set(two)


def test_ids_stay_unique_after_a_reinstall_wipes_the_spool(tmp_path):
    before, _ = _fill(tmp_path / "spool", 3)
    shutil.rmtree(tmp_path / "spool")
    after, _ = _fill(tmp_path / "spool", 3)
    assert not set(before) & set(after)


def test_unreadable_ids_file_starts_a_new_epoch_and_keeps_ids_unique(tmp_path, caplog):
    before, _ = _fill(tmp_path, 3)
    (tmp_path / "ids.json").write_text('{"epoch": "abc", "se')
    with Spool(tmp_path) as spool:
        assert _ids(spool) == before  # nothing on disk is lost
        new = spool.append({"robot_id": "u1"}, _arrays())
    assert new not in before and new.split("-")[1] != before[0].split("-")[1]
    assert "starting a new spool epoch" in caplog.text


def test_episode_numbers_continue_after_reopening(tmp_path):
    with Spool(tmp_path) as spool:
        first = [spool.next_episode() for _ in range(3)]
    with Spool(tmp_path) as spool:
        later = spool.next_episode()
    assert first == [0, 1, 2] and later > 2


def test_second_open_of_an_open_spool_is_refused_and_allowed_after_close(tmp_path):
    spool = Spool(tmp_path)
    spool.append({"robot_id": "u1"}, _arrays())
    with pytest.raises(SpoolLockedError, match="in use by another process"):
        Spool(tmp_path)
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        spool.append({"robot_id": "u1"}, _arrays())
    with Spool(tmp_path) as again:
        assert again.depth == 1


def test_acks_log_keeps_only_ids_of_chunks_still_on_disk(tmp_path):
    with Spool(tmp_path, segment_bytes=2 * _size()) as spool:
        for _ in range(10):
            ids = [spool.append({"robot_id": "u1"}, _arrays()) for _ in range(3)]
            spool.ack(ids[:2])
            logged = (tmp_path / "acks.log").read_text().split()
            on_disk = {r.chunk_id for seg in tmp_path.glob("seg-*.spool") for r in scan_segment(seg).refs}
            assert set(logged) <= on_disk and len(logged) == len(set(logged))  # bounded by the spool, not history
        kept = _ids(spool)
        assert len(logged) == len(on_disk) - len(kept) < 20
    with Spool(tmp_path, segment_bytes=2 * _size()) as again:
        assert _ids(again) == kept and again.depth == 10


def test_stale_and_torn_acks_log_is_rewritten_at_open(tmp_path):
    ids, _ = _fill(tmp_path, 3)
    # a crash after a segment's deletion (stale ids) and one in the middle of an ack (a torn last line)
    (tmp_path / "acks.log").write_text(f"gone-1\ngone-2\n{ids[0]}\n{ids[1][:5]}")
    with Spool(tmp_path) as spool:
        assert _ids(spool) == ids[1:]
        assert (tmp_path / "acks.log").read_text() == f"{ids[0]}\n"
        spool.ack([ids[2]])
    with Spool(tmp_path) as again:
        assert _ids(again) == [ids[1]]


def test_a_flipped_bit_in_the_acks_log_costs_only_its_line(tmp_path):
    ids, _ = _fill(tmp_path, 3)
    with Spool(tmp_path) as spool:
        spool.ack(ids[:2])
    log = tmp_path / "acks.log"
    data = bytearray(log.read_bytes())
    data[2] ^= 0x80  # the first id's line is no longer UTF-8 (it once kept the spool from opening)
    log.write_bytes(bytes(data))
    with Spool(tmp_path) as spool:
        assert _ids(spool) == [ids[0], ids[2]]  # its chunk is taken as unacked and resent (the hub dedupes)


def test_depth_and_bytes_stay_exact_under_concurrent_appends_and_acks(tmp_path):
    spool = Spool(tmp_path, segment_bytes=4 * _size(), fsync=False)

    def write() -> None:
        for _ in range(25):
            spool.append({"robot_id": "u1"}, _arrays(n=5))

    def ack() -> None:
        for _ in range(50):
            spool.ack([r.chunk_id for r in spool.pending()[:3]])

    threads = [threading.Thread(target=write) for _ in range(4)] + [threading.Thread(target=ack)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert spool.depth == len(spool.pending())
    assert spool.bytes == sum(p.stat().st_size for p in tmp_path.glob("seg-*.spool"))
    spool.close()
    with Spool(tmp_path) as again:
        assert again.depth == len(again.pending()) and again.bytes == spool.bytes


def test_refuse_policy_raises_when_full_and_keeps_old_chunks(tmp_path):
    size = _size()
    with Spool(tmp_path, quota_bytes=int(2.5 * size), when_full=REFUSE) as spool:
        spool.append({"robot_id": "u1"}, _arrays())
        spool.append({"robot_id": "u1"}, _arrays())
        with pytest.raises(SpoolFullError, match="quota"):
            spool.append({"robot_id": "u1"}, _arrays())
        assert spool.depth == 2 and spool.refused == 1 and not spool.has_room(size)


def test_drop_oldest_policy_drops_whole_old_segments_and_counts_them(tmp_path):
    size = _size()
    with Spool(tmp_path, quota_bytes=4 * size, when_full=DROP_OLDEST, segment_bytes=2 * size) as spool:
        ids = [spool.append({"robot_id": "u1"}, _arrays()) for _ in range(7)]
        kept = _ids(spool)
        assert kept == ids[-len(kept):] and ids[-1] in kept
        assert spool.dropped == 7 - len(kept) > 0
        assert spool.bytes <= 4 * size


def test_a_chunk_larger_than_the_whole_quota_is_refused_and_drops_nothing(tmp_path):
    size = _size()
    with Spool(tmp_path, quota_bytes=4 * size, when_full=DROP_OLDEST, segment_bytes=2 * size) as spool:
        ids = [spool.append({"robot_id": "u1"}, _arrays()) for _ in range(3)]
        with pytest.raises(SpoolFullError):
            spool.append({"robot_id": "u1"}, _arrays(n=400))  # more than the quota by itself
        assert _ids(spool) == ids and spool.dropped == 0 and spool.refused == 1


def test_acked_segments_are_deleted_and_stay_acked_after_reopening(tmp_path):
    size = _size()
    with Spool(tmp_path, segment_bytes=2 * size) as spool:
        ids = [spool.append({"robot_id": "u1"}, _arrays()) for _ in range(5)]
        assert spool.ack(ids[:3]) == 3
        assert _ids(spool) == ids[3:]
        assert len(list(tmp_path.glob("seg-*.spool"))) == 2  # the fully acked first segment is gone
    with Spool(tmp_path, segment_bytes=2 * size) as again:
        assert _ids(again) == ids[3:]


def test_bad_policy_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="when_full"):
        Spool(tmp_path, when_full="overwrite")
