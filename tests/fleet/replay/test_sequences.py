"""Sequences of T steps cut from a robot's chunks: within one episode, across chunk borders, padded at the end,
with the observation each step ended in one row below it."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.record import RecordError
from fleet.replay.sequences import ChunkSteps, SequenceBuilder, sequence_priority


def chunk(seq: int, first: int, n: int, episode: int = 0, end: str | None = None, robot: str = "r1",
          priorities: list[float] | None = None) -> ChunkSteps:
    """Steps ``first .. first + n - 1`` of a robot: every array holds the global step number, so a window shows
    which steps it got; critic_obs row k is observation ``first + k`` (row n: the one the last step ended in)."""
    steps = np.arange(first, first + n)
    dones = np.zeros(n, np.float32)
    time_outs = np.zeros(n, np.float32)
    if end is not None:
        dones[-1] = 1.0
        time_outs[-1] = float(end == "time_out")
    arrays = {"obs": steps[:, None].astype(np.float32), "actions": -steps[:, None].astype(np.float32),
              "critic_obs": np.arange(first, first + n + 1)[:, None].astype(np.float32) + 0.5,
              "log_probs": steps.astype(np.float32), "rewards": steps.astype(np.float32), "dones": dones,
              "time_outs": time_outs, "trunk_version": np.full(n, 3), "adapter_version": np.full(n, 1),
              "priorities": np.full(n, np.nan, np.float32) if priorities is None else np.float32(priorities)}
    return ChunkSteps(robot, "0123456789abcdef", seq, "cartpole", episode, 1000.0 + seq, arrays)


def test_windows_join_chunks_of_an_episode_and_pad_its_end():
    b = SequenceBuilder(4)
    assert b.add(chunk(0, 0, 3)) == []  # 3 steps: no full window yet
    (w1, p1), = b.add(chunk(1, 3, 4))  # steps 0..6: one window 0..3, steps 4..6 wait
    out = b.add(chunk(2, 7, 2, end="terminal"))  # 4..7 full, then 8 ends the episode: padded
    assert [w.obs[:, 0].tolist() for w, _ in [(w1, p1), *out]] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 0, 0, 0]]
    # critic row t + 1 is the observation step t ended in, across chunk borders (step 2 -> obs 3 of chunk 1)
    np.testing.assert_array_equal(w1.critic_obs[:, 0], [0.5, 1.5, 2.5, 3.5, 4.5])
    last = out[1][0]
    np.testing.assert_array_equal(last.critic_obs[:, 0], [8.5, 9.5, 0, 0, 0])  # 9.5: the final observation
    np.testing.assert_array_equal(last.mask, [1, 0, 0, 0])
    np.testing.assert_array_equal(last.dones, [1, 0, 0, 0])
    assert w1.mask.all() and not w1.dones.any() and last.received == 1002.0
    assert (w1.trunk_version == 3).all() and w1.trunk_version.dtype == np.int64
    assert p1 is None  # no robot priorities: the table gives it the largest seen


def test_a_time_out_keeps_its_flag_and_its_final_observation():
    b = SequenceBuilder(4)
    (w, _), = b.add(chunk(0, 0, 2, end="time_out"))
    np.testing.assert_array_equal(w.time_outs, [0, 1, 0, 0])
    np.testing.assert_array_equal(w.critic_obs[:3, 0], [0.5, 1.5, 2.5])  # 2.5: what V-trace bootstraps from


def test_a_new_episode_or_a_missing_chunk_ends_the_pending_steps_with_their_own_bootstrap():
    b = SequenceBuilder(4)
    b.add(chunk(0, 0, 2))
    (w, _), = b.add(chunk(1, 2, 1, episode=1))  # episode 0's last chunk never came: its 2 steps end here
    np.testing.assert_array_equal(w.obs[:, 0], [0, 1, 0, 0])
    np.testing.assert_array_equal(w.critic_obs[:3, 0], [0.5, 1.5, 2.5])
    assert w.episode == 0 and not w.dones.any()  # not an episode end: the trace stops at the mask
    (w, _), = b.add(chunk(3, 10, 2, episode=1))  # seq 2 missing: the step of seq 1 does not join seq 3's
    np.testing.assert_array_equal(w.obs[:, 0], [2, 0, 0, 0])
    (w, _), = b.flush()
    np.testing.assert_array_equal(w.obs[:, 0], [10, 11, 0, 0])


def test_robots_are_joined_separately():
    b = SequenceBuilder(2)
    assert b.add(chunk(0, 0, 1, robot="a")) == []
    assert b.add(chunk(0, 100, 1, robot="b")) == []
    (wa, _), = b.add(chunk(1, 1, 1, robot="a"))
    (wb, _), = b.add(chunk(1, 101, 1, robot="b"))
    assert (wa.robot_id, wa.obs[:, 0].tolist()) == ("a", [0, 1])
    assert (wb.robot_id, wb.obs[:, 0].tolist()) == ("b", [100, 101])


def test_robot_priorities_give_the_r2d2_mix_of_the_window():
    b = SequenceBuilder(4, priority_eta=0.9)
    (w, p), = b.add(chunk(0, 0, 3, end="terminal", priorities=[1.0, 4.0, 1.0]))
    assert p == pytest.approx(0.9 * 4.0 + 0.1 * 2.0)  # max 4, mean 2 over the 3 real steps (not the padding)
    np.testing.assert_allclose(sequence_priority(np.array([[1.0, 5.0], [4.0, 0.0], [1.0, 9.0], [0.0, 9.0]]),
                                                 np.array([[1, 1], [1, 1], [1, 0], [0, 0]]), 0.9), [3.8, 4.75])


def test_a_chunk_with_an_episode_end_before_its_last_step_is_refused():
    b = SequenceBuilder(4)
    bad = chunk(0, 0, 3)
    bad.arrays["dones"][1] = 1.0
    with pytest.raises(RecordError, match="before its last step"):
        b.add(bad)
    assert b.flush() == []  # nothing of it was kept
