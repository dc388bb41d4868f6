"""benchmarks/guard_noise.py drives the agent's own guard through chains of decisions."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from guard_noise import guard_for, run_chain  # noqa: E402


def test_the_guard_is_built_with_each_presets_settings():
    assert guard_for("solo").floor == 0.0
    assert guard_for("fleet").floor == 0.1
    assert guard_for("solo").episodes == 4 and guard_for("solo").reference_episodes == 16


def test_a_chain_of_noiseless_equal_updates_keeps_every_one():
    assert run_chain(guard_for("solo"), [100.0] * 6, 0.0, np.random.default_rng(0)) == [False] * 6


def test_an_update_far_below_the_others_is_rolled_back_and_the_chain_goes_on_from_the_kept_version():
    rolled = run_chain(guard_for("solo"), [100.0, 100.0, 40.0, 100.0], 1.0, np.random.default_rng(0))
    assert rolled[2] is True and len(rolled) == 4


def test_the_fleet_floor_rolls_back_a_drop_of_more_than_a_tenth_that_the_noise_hides_from_solo():
    # 100 vs 85 with sd 20: two Welch standard errors are ~28, so only the floor (0.1 x 100) resolves it
    rng = np.random.default_rng(0)
    fleet = [run_chain(guard_for("fleet"), [100.0, 85.0], 20.0, rng)[-1] for _ in range(200)]
    solo = [run_chain(guard_for("solo"), [100.0, 85.0], 20.0, rng)[-1] for _ in range(200)]
    assert np.mean(fleet) > np.mean(solo) + 0.2


def test_after_a_rollback_the_kept_version_runs_the_gap_before_the_next_trial():
    guard = guard_for("solo")
    ran: list[int] = []
    record = guard.record

    def counting(version, episode_return, trunk_version=0):
        ran.append(version)
        return record(version, episode_return, trunk_version)

    guard.record = counting
    assert run_chain(guard, [100.0, 40.0, 100.0], 0.0, np.random.default_rng(0), gap_episodes=2) == [False, True, False]
    # the first version fills the reference; update 1 kept, update 2 on trial at once and rolled back; 2 episodes
    # of the kept update 1 while the learner makes update 3
    assert ran == [0] * 4 + [1] * 4 + [2] * 4 + [1] * 2 + [3] * 4


def test_a_trial_length_other_than_the_presets_is_used():
    assert guard_for("fleet", episodes=3).episodes == 3 and guard_for("fleet", episodes=3).floor == 0.1
