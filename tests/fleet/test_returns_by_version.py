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


def test_episodes_whose_last_chunk_is_unreadable_are_given_up_once_and_not_kept(tmp_path):
    from fleet.record import encode_record
    from fleet.returns_by_version import LATE_EPISODES, EpisodeReturns
    from fleet.store import STORE_FILE, ExperienceStore
    from tests.fleet.chunks import agent_arrays, agent_header, agent_record

    rng = np.random.default_rng(2)
    records, seq, broken_episodes = [], 0, 20
    for episode in range(broken_episodes):  # each: a readable chunk, then its last chunk, which no reader can sum
        records.append(agent_record(rng, "unit-0", seq, episode=episode, steps=10))
        broken = agent_arrays(rng, 10, episode_end=True)
        del broken["rewards"]  # its digest holds, but no reader can sum it
        records.append(encode_record(agent_header("unit-0", "0123456789abcdef", seq + 1, episode,
                                                  {**broken, "rewards": np.zeros(10)}, episode_end=True), broken))
        seq += 2
    records.append(agent_record(rng, "unit-0", seq, episode=broken_episodes, steps=10, episode_end=True))
    store = ExperienceStore(tmp_path / STORE_FILE)
    try:
        store.put_many(records)
        returns = EpisodeReturns(store, history_chunks=len(records))
        returns.catch_up()
        assert len(returns.returns("unit-0")) == 1  # the last episode only
        # the reader's memory stays bounded: only the few newest still wait for a chunk; each other one was
        # counted partial once, when it fell more than LATE_EPISODES behind
        assert returns.pending_episodes <= LATE_EPISODES
        assert returns.partial_episodes + returns.pending_episodes == broken_episodes
        assert sum(len(s.settled) + len(s.open) for s in returns._spools.values()) <= 2 * (LATE_EPISODES + 1)
    finally:
        store.close()


def _stored_in_order(tmp_path, order, chunks):
    """A store holding ``chunks`` (name -> (seq, episode, episode_end)) put one by one in ``order``; the records
    by name."""
    from fleet.store import STORE_FILE, ExperienceStore
    from tests.fleet.chunks import agent_record

    rng = np.random.default_rng(3)
    records = {name: agent_record(rng, "unit-0", seq, episode=episode, steps=10, episode_end=end)
               for name, (seq, episode, end) in chunks.items()}
    store = ExperienceStore(tmp_path / STORE_FILE)
    for name in order:  # one commit each: the rows' order is the order the hub stored them in
        store.put_many([records[name]])
    return store, records


def _return(*records) -> float:
    return round(sum(float(decode_record(r).arrays["rewards"].sum()) for r in records), 4)


def test_an_episode_s_last_chunk_stored_after_the_next_episode_began_is_still_credited(tmp_path):
    from fleet.returns_by_version import EpisodeReturns

    # b, episode 0's last chunk, was nacked for want of credit and resent after episode 1's first chunk c
    chunks = {"a": (0, 0, False), "b": (1, 0, True), "c": (2, 1, False), "d": (3, 1, True)}
    store, records = _stored_in_order(tmp_path, "acbd", chunks)
    try:
        returns = EpisodeReturns(store, history_chunks=10)
        returns.catch_up()
        got = [round(r, 4) for _, r in returns.returns("unit-0")]
        assert got == [_return(records["a"], records["b"]), _return(records["c"], records["d"])]
        assert returns.partial_episodes == 0 and returns.pending_episodes == 0
    finally:
        store.close()


def test_an_episode_waits_for_its_chunk_stored_after_its_done_and_is_credited_whole(tmp_path):
    from fleet.returns_by_version import EpisodeReturns

    # episode 0's middle chunk m was resent and stored after its last chunk b, behind episode 1's first chunk
    chunks = {"a": (0, 0, False), "m": (1, 0, False), "b": (2, 0, True), "c": (3, 1, False), "d": (4, 1, True)}
    store, records = _stored_in_order(tmp_path, "abcmd", chunks)
    try:
        returns = EpisodeReturns(store, history_chunks=10)
        returns.catch_up()
        got = [round(r, 4) for _, r in returns.returns("unit-0")]
        assert got == [_return(records["a"], records["m"], records["b"]), _return(records["c"], records["d"])]
        assert returns.partial_episodes == 0
    finally:
        store.close()


def test_an_episode_that_never_gets_its_last_chunk_is_counted_partial_once(tmp_path):
    from fleet.returns_by_version import LATE_EPISODES, EpisodeReturns

    # episode 0's last chunk never arrives; a chunk of it stored after it was given up is not counted again
    chunks = {"a": (0, 0, False)}
    seq = 2
    for episode in range(1, LATE_EPISODES + 3):
        chunks[f"e{episode}"] = (seq, episode, True)
        seq += 1
    chunks["late"] = (1, 0, False)
    store, _ = _stored_in_order(tmp_path, list(chunks), chunks)
    try:
        returns = EpisodeReturns(store, history_chunks=len(chunks))
        returns.catch_up()
        assert len(returns.returns("unit-0")) == LATE_EPISODES + 2
        assert returns.partial_episodes == 1 and returns.pending_episodes == 0
    finally:
        store.close()


def test_an_episode_whose_middle_chunk_is_still_on_its_way_when_its_done_is_read_waits_for_it(tmp_path):
    from fleet.returns_by_version import EpisodeReturns
    from fleet.store import STORE_FILE, ExperienceStore
    from tests.fleet.chunks import agent_record

    # m was refused NO_CREDIT and resent: the reader reads episode 0's done before m is stored at all
    rng = np.random.default_rng(4)
    spec = {"a": (0, 0, False, 0), "m": (1, 0, False, 10), "b": (2, 0, True, 20), "c": (3, 1, False, 0),
            "d": (4, 1, True, 10)}
    records = {name: agent_record(rng, "unit-0", seq, episode=ep, steps=10, episode_end=end, first_step=first)
               for name, (seq, ep, end, first) in spec.items()}
    store = ExperienceStore(tmp_path / STORE_FILE)
    try:
        returns = EpisodeReturns(store, history_chunks=10)
        for name in "abc":
            store.put_many([records[name]])
        returns.catch_up()
        assert returns.returns("unit-0") == [] and returns.pending_episodes == 2  # a + b is not its return
        for name in "md":
            store.put_many([records[name]])
        returns.catch_up()
        got = [round(r, 4) for _, r in returns.returns("unit-0")]
        assert got == [_return(records["a"], records["m"], records["b"]), _return(records["c"], records["d"])]
        assert returns.partial_episodes == 0 and returns.pending_episodes == 0
    finally:
        store.close()
