"""Filling the replay from a real store file (written by the hub's own write path, read while it stays open)
and from its Parquet tier: the same sequences either way, ready for V-trace."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from fleet.parquet_export import ParquetExporter
from fleet.record import decode_record, encode_record
from fleet.replay.config import ReplayConfig
from fleet.replay.feed import ReplayFeeder, robot_shard
from fleet.replay.parquet_reader import ParquetReader
from fleet.replay.replay import FleetReplay
from fleet.replay.sequences import SequenceBuilder, sequence_priority
from fleet.replay.store_reader import StoreReader
from fleet.store import STORE_FILE, ExperienceStore, GroupWriter
from shared_policy.vtrace import VTraceConfig, staleness_mask, vtrace
from tests.fleet.chunks import agent_arrays, agent_header, agent_record

ROOT = Path(__file__).resolve().parents[3]
T = 8
EPOCH = "0123456789abcdef"


def robot_records(robot: str, hardware: str, seed: int, episodes: int = 2) -> list[bytes]:
    """A robot's chunks: episodes of 3 chunks of 3-9 steps each, the last chunk ending the episode; the trunk
    version moves on each episode."""
    rng = np.random.default_rng(seed)
    out, seq = [], 0
    for ep in range(episodes):
        for k in range(3):
            out.append(agent_record(rng, robot, seq, EPOCH, episode=ep, steps=int(rng.integers(3, 10)),
                                    hardware=hardware, versions=(ep + 1, 0), episode_end=k == 2))
            seq += 1
    return out


def fleet_records() -> list[bytes]:
    """Three robots of two hardware types, their chunks interleaved as they would arrive at the hub."""
    streams = [robot_records("unit-a", "cartpole", 1), robot_records("unit-b", "cartpole", 2),
               robot_records("unit-c", "go1_like", 3)]
    return [rec for group in zip(*streams, strict=True) for rec in group]


@contextmanager
def stored(tmp_path, records: list[bytes]) -> Iterator[ExperienceStore]:
    """A store file written through the hub's group writer, open (as the hub keeps it) until the block ends."""
    store = ExperienceStore(tmp_path / STORE_FILE)
    try:
        writer = GroupWriter(store)
        results = [f.result(timeout=30) for f in [writer.submit(r) for r in records]]
        writer.close()
        assert all(r.status == "stored" for r in results)
        yield store
    finally:
        store.close()


def sequences_of(reader) -> list:
    builder = SequenceBuilder(T)
    out = [s for c in reader.read() for s, _ in builder.add(c)]
    return sorted(out, key=lambda s: (s.robot_id, s.episode, float(s.critic_obs[0, 0])))


def expected_windows(records: list[bytes]) -> int:
    """Windows per episode: ceil(steps / T), from the records' headers."""
    steps: dict[tuple[str, int], int] = {}
    for rec in records:
        h = decode_record(rec).header
        steps[(h["robot_id"], h["episode"])] = steps.get((h["robot_id"], h["episode"]), 0) + h["steps"]
    return sum(-(-n // T) for n in steps.values())


@pytest.mark.timeout(60)
def test_store_reader_tails_a_live_store_read_only_from_its_cursor(tmp_path):
    records = fleet_records()
    with stored(tmp_path, records[:9]) as store:
        reader = StoreReader(store.path, batch_chunks=4)
        first = [c for _ in range(3) for c in reader.read()]
        assert [(c.robot_id, c.seq) for c in first] == [(decode_record(r).header["robot_id"],
                                                          decode_record(r).header["seq"]) for r in records[:9]]
        assert reader.read() == [] and reader.cursor == store.last_rowid()
        store.put_many(records[9:])  # the hub goes on committing while the reader is open
        rest = reader.read() + reader.read() + reader.read()
        assert len(rest) == len(records) - 9 and reader.cursor == store.last_rowid()
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            reader._store._r.execute("DELETE FROM chunks")
        assert store.counts()["unit-a"].chunks == 6  # nothing was removed
        # a reader started later with an age limit begins after the chunks received before it
        time.sleep(0.01)  # receive times differ from the next group's (not a timing assert)
        cut = time.time()
        store.put_many([agent_record(np.random.default_rng(9), "unit-d", 0, EPOCH, steps=4)])
        young = StoreReader(store.path, min_received=cut).read()
        assert [c.robot_id for c in young] == ["unit-d"]
        c = first[0]
        a = decode_record(records[0]).arrays
        for k in ("obs", "critic_obs", "actions", "log_probs", "rewards", "dones", "time_outs", "trunk_version"):
            np.testing.assert_array_equal(c.arrays[k], a[k])
        reader.close()


@pytest.mark.timeout(60)
def test_store_and_parquet_tier_give_the_same_sequences(tmp_path):
    records = fleet_records()
    with stored(tmp_path, records) as store:
        ParquetExporter(store, tmp_path / "parquet", fsync=False).catch_up()
        from_store = sequences_of(StoreReader(store.path))
        from_parquet = sequences_of(ParquetReader(tmp_path / "parquet"))
    assert len(from_store) == expected_windows(records) == len(from_parquet)
    for s, p in zip(from_store, from_parquet, strict=True):
        assert (s.robot_id, s.hardware, s.episode) == (p.robot_id, p.hardware, p.episode)
        assert s.received == pytest.approx(p.received, abs=1e-6)
        for k in ("obs", "critic_obs", "actions", "log_probs", "rewards", "dones", "time_outs", "mask",
                  "trunk_version", "adapter_version"):
            np.testing.assert_array_equal(getattr(s, k), getattr(p, k), err_msg=k)
    # each episode's windows: full ones, then its end padded; an end is a done on the last real step
    for s in from_store:
        k = int(s.mask.sum())
        assert s.mask[:k].all() and not s.mask[k:].any() and not s.dones[:k - 1].any()
    assert sum(s.dones.sum() for s in from_store) == 6  # one end per episode, 3 robots x 2 episodes


@pytest.mark.timeout(60)
def test_parquet_reader_reads_each_new_file_once(tmp_path):
    records = fleet_records()
    with stored(tmp_path, records[:6]) as store:
        exporter = ParquetExporter(store, tmp_path / "parquet", fsync=False)
        exporter.catch_up()
        reader = ParquetReader(tmp_path / "parquet")
        assert len(reader.read()) == 6 and reader.read() == []
        store.put_many(records[6:])
        exporter.catch_up()
        assert len(reader.read()) == len(records) - 6


def test_a_bad_parquet_file_costs_only_itself(tmp_path):
    records = fleet_records()
    with stored(tmp_path, records[:6]) as store:
        exporter = ParquetExporter(store, tmp_path / "parquet", fsync=False)
        exporter.catch_up()
        store.put_many(records[6:])
        exporter.catch_up()
    files = sorted((tmp_path / "parquet").rglob("*.parquet"))
    assert len(files) >= 2
    files[-1].write_bytes(b"not a parquet file")  # the newest file torn
    reader = ParquetReader(tmp_path / "parquet")
    chunks = reader.read()
    assert len(chunks) > 0 and [p for p, _ in reader.skipped] == [str(files[-1].relative_to(tmp_path / "parquet"))]
    assert reader.read() == []  # neither file is read twice


@pytest.mark.timeout(60)
def test_robot_priorities_become_initial_priorities_and_unusable_chunks_are_skipped(tmp_path):
    rng = np.random.default_rng(5)
    arrays = agent_arrays(rng, 5, episode_end=True)
    arrays["priorities"] = np.float32([0.5, 3.0, 0.5, 0.5, 0.5])  # |TD| under the robot's own critic
    with_prio = encode_record(agent_header("unit-p", EPOCH, 0, 0, arrays, episode_end=True), arrays)
    broken = agent_arrays(rng, 4)
    del broken["rewards"]  # a valid record whose chunk no learner can use
    bad = encode_record(agent_header("unit-p", EPOCH, 1, 1, {**broken, "rewards": np.zeros(4)}), broken)
    plain = agent_record(rng, "unit-q", 0, EPOCH, steps=5, episode_end=True)
    with stored(tmp_path, [with_prio, bad, plain]) as store:
        cfg = ReplayConfig(sequence_length=T, priority_eps=0.0, alpha=1.0)
        replay = FleetReplay(cfg)
        reader = StoreReader(store.path)
        feeder = ReplayFeeder(reader, replay)
        assert feeder.step() == 2
        assert [cid for cid, _ in reader.skipped] == [f"unit-p-{EPOCH}-0000000001"]
        assert "rewards" in reader.skipped[0][1]
        table = replay.table("cartpole")
        expected = sequence_priority(np.r_[arrays["priorities"], np.zeros(3)], np.r_[np.ones(5), np.zeros(3)], 0.9)
        # unit-p's window gets the robot's priority; unit-q's (none sent) the largest seen so far
        np.testing.assert_allclose(table.priorities(table.keys()), [expected, max(1.0, expected)])


@pytest.mark.timeout(60)
def test_ranks_feed_disjoint_shards_that_cover_every_robot(tmp_path):
    records = fleet_records()
    with stored(tmp_path, records) as store:
        robots = []
        for rank in range(2):
            replay = FleetReplay(ReplayConfig(sequence_length=T))
            ReplayFeeder(StoreReader(store.path), replay, rank=rank, world_size=2).step()
            robots.append({s.robot_id for hw in replay.hardware for s in replay.table(hw).items()})
    assert robots[0].isdisjoint(robots[1]) and robots[0] | robots[1] == {"unit-a", "unit-b", "unit-c"}
    assert all(robot_shard(r, 2) == rank for rank in range(2) for r in robots[rank])


@pytest.mark.timeout(60)
def test_a_sampled_batch_feeds_vtrace_as_it_is(tmp_path):
    records = fleet_records()
    with stored(tmp_path, records) as store:
        replay = FleetReplay(ReplayConfig(sequence_length=T, min_size=2))
        ReplayFeeder(StoreReader(store.path), replay).step()
    batch = replay.sample("cartpole", 16, timeout=5.0)
    obs_dim, critic_dim = 5, 7
    assert batch.obs.shape == (T, 16, obs_dim) and batch.critic_obs.shape == (T + 1, 16, critic_dim)
    assert batch.log_probs.shape == batch.mask.shape == batch.trunk_version.shape == (T, 16)
    assert len(batch.robot_ids) == 16 and set(batch.robot_ids) <= {"unit-a", "unit-b"}
    critic = torch.nn.Linear(critic_dim, 1).double()
    values_all = critic(batch.critic_obs.double()).squeeze(-1)  # [T + 1, B]
    mask = batch.mask.double() * staleness_mask(batch.trunk_version, current_version=2, max_staleness=0).double()
    out = vtrace(batch.log_probs.double(), batch.log_probs.double() + 0.1, batch.rewards.double(), values_all[:-1],
                 values_all[1:], batch.dones, batch.time_outs, VTraceConfig(), mask=mask)
    assert torch.isfinite(out.vs).all() and (out.advantages[mask == 0] == 0).all()
    assert (batch.trunk_version[mask.bool()] == 2).all() and mask.sum() > 0
    replay.update_priorities("cartpole", batch.keys, sequence_priority(out.advantages.abs().numpy(),
                                                                       mask.numpy(), 0.9))


@pytest.mark.timeout(60)
def test_a_feeder_held_back_by_the_rate_limiter_loses_and_repeats_nothing(tmp_path):
    records = fleet_records()
    with stored(tmp_path, records) as store:
        # one sample per insert, at most 2 ahead: the feeder stalls until the learner samples
        replay = FleetReplay(ReplayConfig(sequence_length=T, samples_per_insert=1.0, min_size=1, error_buffer=2.0))
        feeder = ReplayFeeder(StoreReader(store.path), replay, insert_timeout_s=0.01)
        total = feeder.step()
        assert 0 < total < expected_windows(records) and feeder.step() == 0  # held back: reads nothing new
        while total < expected_windows(records):
            for hw in replay.hardware:
                table = replay.table(hw)
                if table.limiter.can_sample(1):
                    table.sample(1, timeout=1.0)
            total += feeder.step()
    assert total == feeder.inserted == expected_windows(records) and feeder.step() == 0
    items = [s for hw in replay.hardware for s in replay.table(hw).items()]
    firsts = [(s.robot_id, s.episode, float(s.critic_obs[0, 0])) for s in items]
    assert len(set(firsts)) == len(firsts) == expected_windows(records)  # each window once


@pytest.mark.timeout(120)
def test_store_reader_tails_a_store_another_process_is_writing(tmp_path):
    """The hub in its own process commits groups while the learner's reader tails the file: every committed
    chunk is read once, in commit order, none half-written."""
    db = tmp_path / STORE_FILE
    ExperienceStore(db).close()  # the file exists before the reader opens it read-only
    with open(tmp_path / "writer.err", "wb") as err:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests/fleet/store_stream.py"), str(db), "unit-0", EPOCH,
                                 "0", "writer"], stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    reader = StoreReader(db, batch_chunks=32)
    seen: list[tuple[int, int]] = []  # (seq, steps)
    try:
        deadline = time.monotonic() + 60
        while len(seen) < 300:  # reads run while the writer commits
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "writer.err").read_text()
            got = reader.read()
            seen += [(c.seq, len(c.arrays["rewards"])) for c in got]
            if not got:
                time.sleep(0.01)  # nothing new yet: leave the CPU to the writer
    finally:
        proc.kill()
        proc.wait(30)
    while chunks := reader.read():  # and what it committed before it died
        seen += [(c.seq, len(c.arrays["rewards"])) for c in chunks]
    with ExperienceStore(db) as store:
        stored_rows = store.read_since(0, 1_000_000)
    assert [(r.seq, r.steps) for r in stored_rows] == seen and not reader.skipped
    reader.close()
