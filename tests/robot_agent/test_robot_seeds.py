"""A robot's random streams: reproducible per (seed, robot, episode), never shared between robots or episodes."""

from __future__ import annotations

import random

import numpy as np
import pytest

from robot_agent.config import AgentConfig
from robot_agent.robot_seeds import LEARNER, UPLINK, RobotSeeds
from robot_agent.uplink import backoff_s


def _draws(seeds: RobotSeeds, episode: int) -> tuple[np.ndarray, np.ndarray]:
    goals, noise = seeds.episode(episode)
    return goals.standard_normal(8), noise.standard_normal(8)


def test_the_same_seed_robot_and_episode_draw_the_same_goals_and_noise():
    for a, b in zip(_draws(RobotSeeds(3, "unit-7"), 41), _draws(RobotSeeds(3, "unit-7"), 41), strict=True):
        np.testing.assert_array_equal(a, b)


def test_each_episode_draws_its_own_goals_and_noise_apart_from_each_other():
    seeds = RobotSeeds(0, "unit-0")
    goals0, noise0 = _draws(seeds, 0)
    goals1, noise1 = _draws(seeds, 1)
    assert not np.array_equal(goals0, goals1) and not np.array_equal(noise0, noise1)
    assert not np.array_equal(goals0, noise0)  # goal draws and noise are two streams, not one


def test_robots_sharing_a_configs_seed_draw_different_noise_and_reconnect_jitter():
    a, b = RobotSeeds(0, "unit-0"), RobotSeeds(0, "unit-1")
    assert not np.array_equal(_draws(a, 0)[1], _draws(b, 0)[1])
    assert a.stream(UPLINK) != b.stream(UPLINK) and a.stream(LEARNER) != b.stream(LEARNER)
    assert a.stream(UPLINK) != a.stream(LEARNER)
    ra, rb = random.Random(a.stream(UPLINK)), random.Random(b.stream(UPLINK))
    waits = [(backoff_s(n, 0.1, 5.0, ra), backoff_s(n, 0.1, 5.0, rb)) for n in range(1, 6)]
    assert all(x != y for x, y in waits)  # after a hub restart the two do not come back in lockstep


def test_a_negative_seed_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="seed"):
        RobotSeeds(-1, "unit-0")
    cfg = AgentConfig(checkpoint="x", seed=-1)
    with pytest.raises(ValueError, match=r"^seed: invalid value -1"):
        cfg.validate()
