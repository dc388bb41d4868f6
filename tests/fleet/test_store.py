"""The hub's experience store: group commit, exactly-once by chunk id, bad records cost only themselves,
acked chunks survive kill -9 of the writing process, a corrupt file is refused at open."""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fleet.record import encode_record, record_fields, verify_record
from fleet.segments import SegmentError
from fleet.store import (
    CHECKPOINT_EVERY_BYTES,
    DUPLICATE,
    REJECTED,
    STORED,
    ExperienceStore,
    GroupWriter,
    RobotCounts,
    StoreCorruptError,
    StoreError,
)
from tests.fleet.chunks import agent_arrays, agent_header, agent_record
from tests.fleet.page_cache import cache_evicts_clean_pages, resident_pages
from tests.fleet.store_stream import chunk_bytes

ROOT = Path(__file__).resolve().parents[2]
EPOCH = "0123456789abcdef"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _with_header(rng, **changes) -> bytes:
    arrays = agent_arrays(rng, 5)
    header = {**agent_header("unit-1", EPOCH, 900, 0, arrays), **changes}
    return encode_record({k: v for k, v in header.items() if v is not None}, arrays)


def test_group_commit_stores_each_chunk_once_and_acks_resends_as_duplicates(tmp_path, rng):
    recs = [agent_record(rng, "unit-0", seq) for seq in range(4)]
    with ExperienceStore(tmp_path / "s.sqlite") as store:
        first = store.put_many([recs[0], recs[1], recs[0]])  # a resend inside the same group
        again = store.put_many([recs[1], recs[2], recs[3]])
        assert [r.status for r in first] == [STORED, STORED, DUPLICATE]
        assert [r.status for r in again] == [DUPLICATE, STORED, STORED]
        assert first[2].rowid == first[0].rowid and again[0].rowid == first[1].rowid
        assert all(r.durable for r in first + again)
        assert [store.get(f"unit-0-{EPOCH}-{s:010d}") for s in range(4)] == recs  # the very bytes
        assert store.counts() == {"unit-0": RobotCounts(4, 80, sum(map(len, recs)))}
        with pytest.raises(KeyError):
            store.get(f"unit-0-{EPOCH}-{9:010d}")


def test_bad_records_are_rejected_with_a_reason_and_cost_only_themselves(tmp_path, rng):
    good = [agent_record(rng, "unit-0", seq) for seq in range(3)]
    flipped = bytearray(agent_record(rng, "unit-0", 10))
    flipped[len(flipped) // 2] ^= 0x10
    bad = {
        "flipped bit": (bytes(flipped), "digest"),
        "truncated": (good[0][:-7], "failed its checks"),
        "random bytes": (rng.bytes(300), "failed its checks"),
        "empty": (b"", "failed its checks"),
        "robot mismatch": (_with_header(rng, robot_id="unit-2"), "unit-2"),
        "bad id": (_with_header(rng, chunk_id="unit-1-xyz-1"), "not <robot_id>"),
        "id seq mismatch": (_with_header(rng, seq=5), "seq"),
        "path in hardware": (_with_header(rng, hardware="../../etc"), "hardware"),
        "no task": (_with_header(rng, task=None), "task"),
        "steps as bool": (_with_header(rng, steps=True), "steps"),
        "negative episode": (_with_header(rng, episode=-1), "episode"),
        # past SQLite's INTEGER: it once failed its whole group's insert with the transaction left open
        "huge episode": (_with_header(rng, episode=10**30), "episode"),
    }
    group = [good[0], *[rec for rec, _ in bad.values()], good[1], good[2]]
    with ExperienceStore(tmp_path / "s.sqlite") as store:
        results = store.put_many(group)
        assert [r.status for r in results] == [STORED] + [REJECTED] * len(bad) + [STORED, STORED]
        for (name, (_, why)), res in zip(bad.items(), results[1:-2], strict=True):
            assert why in res.reason, f"{name}: {res.reason}"
        assert results[5].chunk_id == f"unit-1-{EPOCH}-{900:010d}"  # digest held: the reject names its chunk
        assert results[1].chunk_id is None  # digest failed: no name to trust
        assert store.counts()["unit-0"].chunks == 3 and "unit-1" not in store.counts()


def test_same_id_with_other_bytes_is_refused_and_the_stored_bytes_kept(tmp_path):
    a = agent_record(np.random.default_rng(1), "unit-0", 7)
    b = agent_record(np.random.default_rng(2), "unit-0", 7)
    with ExperienceStore(tmp_path / "s.sqlite") as store:
        store.put_many([a])
        (res,) = store.put_many([b])
        assert res.status == REJECTED and "other bytes" in res.reason and not res.durable
        assert store.get(res.chunk_id) == a


def test_failed_commit_stores_none_of_its_group_and_the_store_goes_on(tmp_path, rng):
    with ExperienceStore(tmp_path / "s.sqlite") as store:
        store.put_many([agent_record(rng, "unit-0", 0)])
        pages = store._w.execute("PRAGMA page_count").fetchone()[0]
        store._w.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own 'database or disk is full'
        many = [agent_record(rng, "unit-0", seq, steps=2) for seq in range(1, 301)]  # index rows need new pages
        with pytest.raises(StoreError, match="not committed"):
            store.put_many(many)
        assert store.counts()["unit-0"].chunks == 1 and all(f"unit-0-{EPOCH}-{s:010d}" not in store for s in range(1, 301))
        store._w.execute("PRAGMA max_page_count=1073741823")
        assert [r.status for r in store.put_many(many)] == [STORED] * 300
        assert all(store.get(verify_record(r)["chunk_id"]) == r for r in many)  # the failed group's bytes skipped


class _FailingSecondInsert:
    """The store's write connection, whose second INSERT of a group raises what is not a ``sqlite3.Error`` (as
    an integer past SQLite's range once did)."""

    def __init__(self, conn):
        self.conn, self.inserts = conn, 0

    def execute(self, sql, *args):
        if sql.lstrip().upper().startswith("INSERT"):
            self.inserts += 1
            if self.inserts == 2:
                raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_any_failure_inside_a_groups_transaction_rolls_it_back_so_a_resend_is_stored_not_called_a_duplicate(
        tmp_path, rng):
    good, other = agent_record(rng, "unit-0", 0), agent_record(rng, "unit-0", 1)
    with ExperienceStore(tmp_path / "s.sqlite") as store:
        conn, store._w = store._w, _FailingSecondInsert(store._w)
        with pytest.raises(StoreError, match="not committed"):
            store.put_many([good, other])  # good's row inserted, then other's fails: the group is nacked
        store._w = conn
        # left open, the transaction's uncommitted row made this resend a DUPLICATE, acked and never stored
        assert [r.status for r in store.put_many([good])] == [STORED]
        assert store.put_many([other])[0].status == STORED and store.get(verify_record(good)["chunk_id"]) == good


def _fsize_limited(limit: int):
    """The kernel refuses writes past ``limit`` bytes in any file of this process (EFBIG), as a full disk does."""
    import contextlib
    import resource

    @contextlib.contextmanager
    def limited():
        old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
        old = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old)
            signal.signal(signal.SIGXFSZ, old_handler)
    return limited()


def test_a_failed_segment_write_stores_none_of_its_group_and_costs_no_later_one(tmp_path, rng):
    path = tmp_path / "s.sqlite"
    first = [agent_record(rng, "unit-0", seq, steps=40) for seq in range(4)]
    big = [agent_record(rng, "unit-0", seq, steps=400) for seq in range(4, 12)]
    with ExperienceStore(path) as store:
        store.put_many(first)
        segment = path.with_suffix(".segments") / "00000001.seg"
        with _fsize_limited(segment.stat().st_size + len(big[0]) * 3), pytest.raises(StoreError, match="not committed"):
            store.put_many(big)  # the 4th record's write fails half-way
        assert all(verify_record(r)["chunk_id"] not in store for r in big)
        assert [r.status for r in store.put_many(big)] == [STORED] * 8  # after the gap the failed group left
        assert all(store.get(verify_record(r)["chunk_id"]) == r for r in first + big)
    with ExperienceStore(path) as store:  # reopened: nothing torn, nothing lost
        assert all(store.get(verify_record(r)["chunk_id"]) == r for r in first + big)


def test_bytes_appended_but_never_indexed_are_cut_at_open_and_the_store_goes_on(tmp_path, rng):
    # a crash after the group's fdatasync and before its index commit: the bytes are on disk, no row names them
    path = tmp_path / "s.sqlite"
    recs = [agent_record(rng, "unit-0", seq) for seq in range(6)]
    with ExperienceStore(path) as store:
        store.put_many(recs[:3])
        end = store._segment_writer.end
        store._segment_writer.append(recs[3:])  # what the crash left
    segment = path.with_suffix(".segments") / "00000001.seg"
    assert segment.stat().st_size == end + sum(map(len, recs[3:]))
    with ExperienceStore(path) as store:
        assert segment.stat().st_size == end and store._segment_writer.truncated_bytes == sum(map(len, recs[3:]))
        assert [r.status for r in store.put_many(recs)] == [DUPLICATE] * 3 + [STORED] * 3  # the resends
        assert [r.record for r in store.read_since(0)] == recs


def test_a_segment_shorter_than_its_index_is_refused_at_open(tmp_path, rng):
    path = tmp_path / "s.sqlite"
    with ExperienceStore(path) as store:
        store.put_many([agent_record(rng, "unit-0", seq) for seq in range(3)])
    segment = path.with_suffix(".segments") / "00000001.seg"
    os.truncate(segment, segment.stat().st_size - 1)
    with pytest.raises(StoreCorruptError, match="00000001.seg.*restore it from a backup"):
        ExperienceStore(path)


def test_a_missing_segment_the_index_names_is_refused_at_open(tmp_path, rng):
    path = tmp_path / "s.sqlite"
    with ExperienceStore(path) as store:
        store.put_many([agent_record(rng, "unit-0", seq) for seq in range(3)])
    (path.with_suffix(".segments") / "00000001.seg").unlink()
    with pytest.raises(StoreCorruptError, match="00000001.seg is missing"):
        ExperienceStore(path)


def test_a_read_after_close_is_a_store_error_not_another_files_bytes(tmp_path, rng):
    path = tmp_path / "s.sqlite"
    with ExperienceStore(path) as store:
        (res,) = store.put_many([agent_record(rng, "unit-0", 0)])
    reader = ExperienceStore(path, read_only=True)
    reader.close()
    with pytest.raises(StoreError, match="closed"):
        reader.read_since(0)
    with pytest.raises(SegmentError, match="closed"):  # no descriptor reopened after close
        reader._segments.read(1, 0, 10)


def test_a_second_writer_on_the_same_store_is_refused_and_readers_are_not(tmp_path, rng):
    path = tmp_path / "s.sqlite"
    with ExperienceStore(path) as store:
        (res,) = store.put_many([agent_record(rng, "unit-0", 0)])
        with pytest.raises(StoreError, match="open for writing by another store"):
            ExperienceStore(path)
        with ExperienceStore(path, read_only=True) as reader:
            assert reader.get(res.chunk_id) == store.get(res.chunk_id)
            with pytest.raises(StoreError, match="read-only"):
                reader.put_many([agent_record(rng, "unit-0", 1)])
    with pytest.raises(StoreError, match="does not exist"):
        ExperienceStore(tmp_path / "none.sqlite", read_only=True)


def _store_in_small_segments(path: Path, rng, monkeypatch) -> tuple[ExperienceStore, list[bytes]]:
    """An open store at ``path`` whose segments roll over every 40 kB, holding 40 records put 4 to a group."""
    import fleet.segments
    monkeypatch.setattr(fleet.segments, "SEGMENT_BYTES", 40_000)
    monkeypatch.setattr(fleet.segments.SegmentWriter.__init__, "__defaults__", (40_000,))
    recs = [agent_record(rng, "unit-0", seq, steps=50) for seq in range(40)]
    store = ExperienceStore(path)
    for k in range(0, len(recs), 4):
        store.put_many(recs[k:k + 4])
    return store, recs


def test_segments_roll_over_and_every_record_reads_back_after_reopen(tmp_path, rng, monkeypatch):
    path = tmp_path / "s.sqlite"
    store, recs = _store_in_small_segments(path, rng, monkeypatch)
    store.close()
    assert len(list(path.with_suffix(".segments").glob("*.seg"))) > 3
    with ExperienceStore(path) as store:
        assert [r.record for r in store.read_since(0, limit=100)] == recs


def test_a_full_segment_leaves_the_page_cache_and_still_reads_back(tmp_path, rng, monkeypatch):
    if not cache_evicts_clean_pages(tmp_path):  # tmpfs: its pages are the storage, and nothing leaves
        pytest.skip(f"{tmp_path}'s file system keeps a clean file's pages after DONTNEED")
    path = tmp_path / "s.sqlite"
    store, recs = _store_in_small_segments(path, rng, monkeypatch)
    with store:
        *full, newest = sorted(path.with_suffix(".segments").glob("*.seg"))
        assert len(full) >= 3
        assert [resident_pages(f) for f in full] == [0] * len(full)  # written once, durable: evicted
        assert resident_pages(newest) > 0  # still being appended to: left alone
        assert [r.record for r in store.read_since(0, limit=100)] == recs


def test_a_chunk_twice_in_one_group_is_stored_once(tmp_path, rng):
    rec = agent_record(rng, "unit-0", 0)
    with ExperienceStore(tmp_path / "s.sqlite") as store:
        a, b = store.put_many([rec, rec])
        assert (a.status, b.status) == (STORED, DUPLICATE) and a.rowid == b.rowid
        assert store.counts()["unit-0"].chunks == 1


def _schema_1_store(path: Path, record: bytes) -> dict:
    """A store as schema 1 wrote it (the record's bytes in a BLOB) holding ``record``; the record's header."""
    header = verify_record(record)
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_1 + "PRAGMA user_version=1; PRAGMA journal_mode=WAL;")
    conn.execute("INSERT INTO chunks (chunk_id, robot_id, spool_epoch, seq, hardware, task, episode, steps, "
                 "trunk_version, adapter_version, received, nbytes, digest, record) "
                 "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                 (header["chunk_id"], "unit-0", EPOCH, 0, header["hardware"], header["task"], header["episode"],
                  header["steps"], 0, 0, time.time(), len(record), record[-32:], record))
    conn.commit()
    conn.close()
    return header


def test_a_schema_1_store_is_migrated_at_open_and_its_blobs_still_read(tmp_path, rng):
    path = tmp_path / "s.sqlite"
    old, new = agent_record(rng, "unit-0", 0), agent_record(rng, "unit-0", 1)
    header = _schema_1_store(path, old)
    early = ExperienceStore(path, read_only=True)  # a reader open before any hub migrated it, and after
    assert early.get(header["chunk_id"]) == old and [r.record for r in early.read_since(0)] == [old]
    with ExperienceStore(path) as store:
        assert store.put_many([old, new])[0].status == DUPLICATE
        assert [r.record for r in store.read_since(0)] == [old, new]
        assert [r.record for r in early.read_since(0)] == [old, new]  # the new row's bytes, not an empty BLOB
    early.close()
    with ExperienceStore(path, read_only=True) as store:
        assert store.get(header["chunk_id"]) == old and store.get(verify_record(new)["chunk_id"]) == new


def test_a_reader_racing_the_migration_never_reads_a_new_row_as_an_empty_record(tmp_path, rng):
    # the hub migrates the store and commits a group between the reader's schema check and its query: one
    # snapshot for both, so the query sees the store as the check did (never a new row through the old columns)
    path = tmp_path / "s.sqlite"
    old, new = agent_record(rng, "unit-0", 0), agent_record(rng, "unit-0", 1)
    _schema_1_store(path, old)
    reader = ExperienceStore(path, read_only=True)
    schema_check = reader._load_sql

    def check_then_hub_migrates():
        sql = schema_check()
        with ExperienceStore(path) as hub:  # migrates to schema 2 and stores a chunk in a segment
            hub.put_many([new])
        return sql

    reader._load_sql = check_then_hub_migrates
    assert [r.record for r in reader.read_since(0)] == [old]  # the snapshot of the check: no new row yet
    reader._load_sql = schema_check
    assert [r.record for r in reader.read_since(0)] == [old, new]
    reader.close()


SCHEMA_1 = """
CREATE TABLE chunks (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id TEXT NOT NULL UNIQUE, robot_id TEXT NOT NULL,
    spool_epoch TEXT NOT NULL, seq INTEGER NOT NULL, hardware TEXT NOT NULL, task TEXT NOT NULL,
    episode INTEGER NOT NULL, steps INTEGER NOT NULL, trunk_version INTEGER NOT NULL,
    adapter_version INTEGER NOT NULL, received REAL NOT NULL, nbytes INTEGER NOT NULL, digest BLOB NOT NULL,
    record BLOB NOT NULL
);
"""


def test_reader_tailing_by_rowid_sees_every_committed_chunk_once_in_order(tmp_path):
    path = tmp_path / "s.sqlite"
    recs = [chunk_bytes("unit-0", EPOCH, seq) for seq in range(120)]
    with ExperienceStore(path) as store:
        def write():
            for k in range(0, len(recs), 7):
                store.put_many(recs[k:k + 7] + recs[max(0, k - 3):k])  # resends ride along
        writer = threading.Thread(target=write)
        writer.start()
        reader = ExperienceStore(path, read_only=True)  # another connection, as a learner process has
        seen, last, deadline = [], 0, time.monotonic() + 60
        while len(seen) < len(recs) and time.monotonic() < deadline:
            for row in reader.read_since(last, limit=10):
                assert row.rowid > last
                seen.append(row.chunk_id)
                last = row.rowid
                assert verify_record(row.record, row.chunk_id)["steps"] == row.steps
        writer.join(timeout=60)
        reader.close()
    assert seen == [verify_record(r)["chunk_id"] for r in recs]


def test_a_byte_bounded_read_returns_the_prefix_that_fits_and_never_nothing(tmp_path):
    recs = [chunk_bytes("unit-0", EPOCH, seq) for seq in range(20)]
    size = len(recs[0])
    with ExperienceStore(tmp_path / "s.sqlite") as store:
        store.put_many(recs)
        assert [r.seq for r in store.read_since(0, 256, max_bytes=3 * size + size // 2)] == [0, 1, 2]
        assert [r.seq for r in store.read_since(0, 256, max_bytes=1)] == [0]  # one record bigger than the bound
        assert [r.seq for r in store.read_since(0, 4, max_bytes=100 * size)] == [0, 1, 2, 3]  # the count still bounds
        tail = store.read_since(store.last_rowid() - 2, 256, max_bytes=100 * size)
        assert [r.seq for r in tail] == [18, 19] and all(r.record == recs[r.seq] for r in tail)
        assert store.read_since(store.last_rowid(), 256, max_bytes=100 * size) == []


def test_corrupt_store_file_is_refused_at_open_with_a_clear_error(tmp_path, rng):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database " * 400)
    with pytest.raises(StoreCorruptError, match="junk.sqlite.*not a readable SQLite store"):
        ExperienceStore(junk)
    path = tmp_path / "s.sqlite"
    with ExperienceStore(path) as store:
        store.put_many([agent_record(rng, "unit-0", seq, steps=60) for seq in range(40)])
        store._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = 4096
    data = bytearray(path.read_bytes())
    # every b-tree page header (leaf 0x0d, interior 0x05, index 0x0a/0x02) after page 1 gets a wrong cell count
    hit = 0
    for off in range(page, len(data), page):
        if data[off] in (0x02, 0x05, 0x0A, 0x0D):
            data[off + 3:off + 5] = b"\xff\xf0"
            hit += 1
    assert hit
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match="s.sqlite"):
        ExperienceStore(path)


def test_stored_bytes_that_no_longer_match_their_digest_are_an_error_not_data(tmp_path, rng):
    path = tmp_path / "s.sqlite"
    recs = [agent_record(rng, "unit-0", seq) for seq in range(3)]
    with ExperienceStore(path) as store:
        res = store.put_many(recs)
        segment = path.with_suffix(".segments") / "00000001.seg"
        with open(segment, "r+b") as f:  # one bit rots on disk in the second record
            f.seek(len(recs[0]) + 100)
            byte = f.read(1)
            f.seek(len(recs[0]) + 100)
            f.write(bytes([byte[0] ^ 1]))
        with pytest.raises(StoreCorruptError, match=res[1].chunk_id):
            store.get(res[1].chunk_id)
        assert store.get(res[0].chunk_id) == recs[0] and store.get(res[2].chunk_id) == recs[2]


def test_group_writer_resolves_each_future_after_its_group_is_committed(tmp_path):
    path = tmp_path / "s.sqlite"
    recs = [chunk_bytes("unit-0", EPOCH, seq) for seq in range(200)]
    with ExperienceStore(path) as store, ExperienceStore(path, read_only=True) as other:
        writer = GroupWriter(store, max_group=8, max_wait_s=0.01)
        futs: queue.SimpleQueue = queue.SimpleQueue()

        def submit(part):
            for rec in part:
                futs.put(writer.submit(rec))
        threads = [threading.Thread(target=submit, args=(recs[k::4],)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for _ in recs:
            res = futs.get(timeout=5).result(timeout=60)
            assert res.status == STORED
            assert other.get(res.chunk_id)  # another connection sees only committed rows
        writer.close()
        assert writer.committed == len(recs) and writer.largest_group <= 8
        assert writer.groups >= len(recs) // 8 and writer.pending == writer.pending_bytes == 0


def test_a_vetted_record_is_not_hashed_or_parsed_again_and_an_unvetted_one_is(tmp_path, rng):
    good = agent_record(rng, "unit-0", 0)
    flipped = bytearray(agent_record(rng, "unit-0", 1))
    flipped[len(flipped) // 2] ^= 0x10  # a payload bit: the header still parses, the digest fails
    header = record_fields(bytes(flipped))
    with ExperienceStore(tmp_path / "s.sqlite") as store:
        unvetted = store.put_many([good, bytes(flipped)])
        assert [r.status for r in unvetted] == [STORED, REJECTED] and "digest" in unvetted[1].reason
        # the caller vouches for the second (as the hub does after its decode checked the digest): taken as is,
        # and a caller's false word is still caught where the bytes are read
        vetted = store.put_many([bytes(flipped)], [header])
        assert vetted[0].status == STORED
        with pytest.raises(StoreCorruptError, match="fails its digest"):
            store.get(header["chunk_id"])


def test_a_group_closes_at_its_byte_limit_with_the_record_that_crosses_it(tmp_path):
    recs = [chunk_bytes("unit-0", EPOCH, seq) for seq in range(7)]
    small, big = min(map(len, recs)), max(map(len, recs))
    assert 2 * big < 3 * small  # any 2 are under the limit below, any 3 reach it
    with ExperienceStore(tmp_path / "s.sqlite") as store:
        # a 60 s wait: only the byte limit (or close) can end a group here
        writer = GroupWriter(store, max_group=100, max_wait_s=60.0, max_group_bytes=2 * big + 1)
        futs = [writer.submit(rec) for rec in recs]
        assert all(f.result(timeout=30).status == STORED for f in futs[:6])  # two groups of 3, no 60 s wait
        writer.close()
        assert futs[6].result(timeout=30).status == STORED
        assert (writer.groups, writer.largest_group, writer.committed) == (3, 3, 7)


def test_group_writer_fails_the_futures_of_a_failed_group_and_keeps_going(tmp_path, rng):
    store = ExperienceStore(tmp_path / "s.sqlite")
    writer = GroupWriter(store, max_group=4, max_wait_s=0.0)
    store.close()  # every commit now fails
    fut = writer.submit(agent_record(rng, "unit-0", 0))
    with pytest.raises(StoreError, match="closed"):
        fut.result(timeout=30)
    writer.store = ExperienceStore(tmp_path / "s.sqlite")
    assert writer.submit(agent_record(rng, "unit-0", 1)).result(timeout=30).status == STORED
    writer.close()
    with pytest.raises(StoreError, match="closed"):
        writer.submit(agent_record(rng, "unit-0", 2))
    assert f"unit-0-{EPOCH}-{0:010d}" not in writer.store
    writer.store.close()


def _stream(db: Path, first_seq: int, mode: str, acks_before_kill: int, rng) -> tuple[dict[str, str], int]:
    """Run store_stream.py, kill -9 it mid-stream once it has acked enough; its acks and its last sequence."""
    errors = db.with_name(f"stream-{first_seq}.err")
    with open(errors, "wb") as err:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests/fleet/store_stream.py"), str(db), "unit-0",
                                 EPOCH, str(first_seq), mode], stdout=subprocess.PIPE, stderr=err,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)], daemon=True).start()
    acked: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 90
        while len(acked) < acks_before_kill and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            _, cid, status = line.decode().split()
            acked[cid] = status
        assert len(acked) >= acks_before_kill, f"stream acked {len(acked)}: {errors.read_text()[-2000:]}"
        time.sleep(float(rng.uniform(0, 0.05)))  # land the kill anywhere in the stream, mostly mid-commit
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    while (line := lines.get(timeout=30)) is not None:
        if line.endswith(b"\n"):  # an ack line cut by the kill was never complete: not an ack
            _, cid, status = line.decode().split()
            acked[cid] = status
    assert proc.returncode == -signal.SIGKILL
    return acked, max(int(c.rsplit("-", 1)[1]) for c in acked)


@pytest.mark.timeout(400)
def test_every_acked_chunk_survives_kill_9_of_the_writing_process(tmp_path):
    db, rng = tmp_path / "experience.sqlite", np.random.default_rng(3)
    acked: dict[str, str] = {}
    first = 0
    for run, mode in enumerate(["put_many", "writer", "put_many", "writer", "put_many"]):
        got, last = _stream(db, first, mode, acks_before_kill=150 + 50 * run, rng=rng)
        acked.update(got)
        first = max(0, last - 20)  # the next run resends what was acked and what may have been stored unacked
    assert "duplicate" in acked.values()
    with ExperienceStore(db) as store:  # quick_check at open: nothing torn
        for cid in acked:
            seq = int(cid.rsplit("-", 1)[1])
            assert store.get(cid) == chunk_bytes("unit-0", EPOCH, seq), cid
        rows, last = [], 0
        while batch := store.read_since(last, limit=500):
            rows += batch
            last = batch[-1].rowid
        ids = [r.chunk_id for r in rows]
        assert len(ids) == len(set(ids)) == store.counts()["unit-0"].chunks  # stored once each
        assert all(verify_record(r.record, r.chunk_id) for r in rows)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    print(json.dumps({"acked": len(acked), "stored": len(ids)}))


@pytest.mark.timeout(60)
def test_commits_leave_the_wal_checkpoint_to_a_thread_of_its_own(tmp_path, rng):
    # A commit that also checkpoints copies up to 32 MiB of WAL and fsyncs the database before its group is acked
    # (the hub's ack p99 showed it). The store's checkpointer copies the WAL into the database file long before the
    # writer's auto-checkpoint threshold: the index rows of a few thousand chunks reach the database file by
    # themselves (the file alone, without its WAL, holds them).
    import shutil
    path = tmp_path / "s.sqlite"
    recs = [agent_record(rng, "unit-0", seq, steps=1) for seq in range(1, 2601)]
    with ExperienceStore(path) as store:
        for i in range(0, len(recs), 100):
            assert all(r.status == STORED for r in store.put_many(recs[i:i + 100]))
        want = len(recs) - CHECKPOINT_EVERY_BYTES // 512  # all but what has not yet woken the checkpointer
        end, found = time.monotonic() + 30, 0
        while found < want and time.monotonic() < end:
            time.sleep(0.1)
            shutil.copyfile(path, tmp_path / "copy.sqlite")  # the database file without its -wal
            conn = sqlite3.connect(tmp_path / "copy.sqlite")
            try:
                found = conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
            except sqlite3.DatabaseError:  # copied while a checkpoint was writing it: look again
                found = 0
            finally:
                conn.close()
            (tmp_path / "copy.sqlite").unlink()
        assert found >= want, f"{found} of {len(recs)} rows in the database file: the rest are only in the WAL"
