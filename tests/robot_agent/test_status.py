"""Control-loop timing: histogram percentiles, and ticks lost to a stall counted as deadline misses."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hardware.tasks.config import task_config
from robot_agent.agent import RobotAgent
from robot_agent.status import LatencyHistogram, status_line


def test_histogram_percentiles_match_numpy_within_one_bin():
    rng = np.random.default_rng(0)
    x = rng.exponential(0.4e-3, 50_000)
    h = LatencyHistogram()
    for v in x.tolist():
        h.add(v)
    got = h.percentiles(50, 99, 99.9)
    want = np.percentile(x, [50, 99, 99.9])
    assert np.all(np.abs(np.array(got) - want) <= LatencyHistogram.BIN_S + 1e-12), (got, want)
    assert h.max == x.max() and h.n == len(x)
    h.add(5.0)  # beyond the last bin: still counted, the max exact
    assert h.max == 5.0 and h.percentiles(100)[0] == 5.0


@pytest.mark.timeout(120)
def test_ticks_lost_to_a_stalled_loop_count_as_deadline_misses(agent_cfg):
    agent_cfg.driver.options = {"realtime": True, "seed": 1}
    agent_cfg.max_episodes = 0
    agent_cfg.max_steps = 150  # 3 s at 50 Hz
    agent = RobotAgent(agent_cfg, task_config("cartpole_swingup", {"episode_length_s": 10.0}))
    act = agent.runtime.act
    calls = [0]

    def stall_once(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 50:
            time.sleep(0.2)  # ten 20 ms periods pass with no command
        return act(*args, **kwargs)

    agent.runtime.act = stall_once
    status = agent.run()
    # the stalled tick is late, and the nine ticks after it that could no longer be met are lost
    assert 10 <= status["deadline_misses"] <= 14, status
    assert status["periods"] >= status["steps"] + 9


@pytest.mark.timeout(120)
def test_the_status_line_says_whether_the_hub_is_up_with_its_window_and_acks(agent_cfg):
    agent_cfg.max_episodes = 0
    agent_cfg.max_steps = 10
    s = RobotAgent(agent_cfg, task_config("cartpole_swingup", {"episode_length_s": 1.0})).run()
    assert " | hub " not in status_line(s)  # no uplink configured: nothing about a hub
    uplink = {"enabled": True, "connected": True, "in_flight": 3, "acked": 24}
    assert " | hub up (3 in flight, 24 acked)" in status_line({**s, "uplink": uplink})
    assert " | hub DOWN (3 in flight, 24 acked)" in status_line({**s, "uplink": {**uplink, "connected": False}})
