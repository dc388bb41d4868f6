"""Each robot's episode returns as the roll-out reads them from the hub's store (fleet/returns_by_version.py)."""

from __future__ import annotations

import numpy as np

from fleet.record import decode_record


def test_an_episode_begun_before_the_history_read_is_never_credited(tmp_path):
    from fleet.returns_by_version import EpisodeReturns
    from fleet.store import STORE_FILE, ExperienceStore
    from tests.fleet.chunks import agent_record

    rng = np.random.default_rng(0)
    store = ExperienceStore(tmp_path / STORE_FILE)
    try:
        # episode 0 in three chunks, episode 1 in two; the reader's history starts at episode 0's last chunk
        records = [agent_record(rng, "unit-0", s, episode=e, steps=10, episode_end=end)
                   for s, (e, end) in enumerate([(0, False), (0, False), (0, True), (1, False), (1, True)])]
        store.put_many(records)
        returns = EpisodeReturns(store, history_chunks=3)
        returns.catch_up()
        rewards = [float(decode_record(r).arrays["rewards"].sum()) for r in records]
        got = returns.returns("unit-0")
        assert [round(r, 4) for _, r in got] == [round(rewards[3] + rewards[4], 4)]  # episode 1 only, whole
        assert returns.partial_episodes == 1
        whole = EpisodeReturns(store, history_chunks=5)  # from the start: both episodes
        whole.catch_up()
        assert len(whole.returns("unit-0")) == 2 and whole.partial_episodes == 0
    finally:
        store.close()


def test_an_episode_with_an_unreadable_chunk_is_never_credited(tmp_path):
    from fleet.record import encode_record
    from fleet.returns_by_version import EpisodeReturns
    from fleet.store import STORE_FILE, ExperienceStore
    from tests.fleet.chunks import agent_arrays, agent_header, agent_record

    rng = np.random.default_rng(1)
    broken = agent_arrays(rng, 10)
    del broken["rewards"]  # a record whose digest holds but whose arrays no reader can sum
    middle = encode_record(agent_header("unit-0", "0123456789abcdef", 1, 0, {**broken, "rewards": np.zeros(10)}),
                           broken)
    records = [agent_record(rng, "unit-0", 0, episode=0, steps=10), middle,
               agent_record(rng, "unit-0", 2, episode=0, steps=10, episode_end=True),
               agent_record(rng, "unit-0", 3, episode=1, steps=10, episode_end=True)]
    store = ExperienceStore(tmp_path / STORE_FILE)
    try:
        store.put_many(records)
        returns = EpisodeReturns(store, history_chunks=10)
        returns.catch_up()
        assert len(returns.returns("unit-0")) == 1 and returns.partial_episodes == 1  # episode 1 only
    finally:
        store.close()


def test_episodes_whose_last_chunk_is_unreadable_end_with_the_next_episode_and_are_not_kept(tmp_path):
    from fleet.record import encode_record
    from fleet.returns_by_version import EpisodeReturns
    from fleet.store import STORE_FILE, ExperienceStore
    from tests.fleet.chunks import agent_arrays, agent_header, agent_record

    rng = np.random.default_rng(2)
    records, seq = [], 0
    for episode in range(5):  # each: a readable chunk, then its last chunk, which no reader can sum
        records.append(agent_record(rng, "unit-0", seq, episode=episode, steps=10))
        broken = agent_arrays(rng, 10, episode_end=True)
        del broken["rewards"]  # its digest holds, but no reader can sum it
        records.append(encode_record(agent_header("unit-0", "0123456789abcdef", seq + 1, episode,
                                                  {**broken, "rewards": np.zeros(10)}, episode_end=True), broken))
        seq += 2
    records.append(agent_record(rng, "unit-0", seq, episode=5, steps=10, episode_end=True))
    store = ExperienceStore(tmp_path / STORE_FILE)
    try:
        store.put_many(records)
        returns = EpisodeReturns(store, history_chunks=len(records))
        returns.catch_up()
        assert len(returns.returns("unit-0")) == 1  # episode 5 only
        assert returns.partial_episodes == 5  # each of the others ended, uncredited, when the next one began
        assert not returns._open and not returns._partial  # the reader's memory: nothing of them is kept
    finally:
        store.close()
