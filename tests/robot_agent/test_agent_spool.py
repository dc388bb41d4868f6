"""The agent's use of its spool: one agent per directory, episode numbers that go on across restarts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hardware.tasks.config import task_config
from robot_agent.agent import AgentStartupError, RobotAgent
from robot_agent.spool import Spool


def _agent(cfg) -> RobotAgent:
    return RobotAgent(cfg, task_config("cartpole_swingup", {"episode_length_s": 1.0}))


@pytest.mark.timeout(120)
def test_second_agent_on_the_same_state_dir_is_refused_until_the_first_stops(agent_cfg):
    first = _agent(agent_cfg)
    with pytest.raises(AgentStartupError, match="in use by another process"):
        _agent(agent_cfg)
    first.run()
    _agent(agent_cfg).shutdown()  # the first one's shutdown let go of the spool


@pytest.mark.timeout(120)
def test_second_agent_on_the_same_state_dir_with_its_own_spool_dir_is_refused(agent_cfg, tmp_path):
    first = _agent(agent_cfg)
    agent_cfg.spool.dir = str(tmp_path / "elsewhere")  # status, adapter and e-stop files would still be shared
    with pytest.raises(AgentStartupError, match="state_dir .* in use by another process"):
        _agent(agent_cfg)
    first.run()


@pytest.mark.timeout(120)
def test_episode_numbers_go_on_after_a_restart(agent_cfg):
    _agent(agent_cfg).run()
    _agent(agent_cfg).run()
    with Spool(Path(agent_cfg.state_dir) / "spool") as spool:
        episodes = [spool.read(r).header["episode"] for r in spool.pending()]
    numbers = sorted(set(episodes))
    assert len(numbers) == 4 and numbers[:2] == [0, 1]  # two runs of two episodes, no number used twice
    assert episodes == sorted(episodes)


def _actions_by_episode(state_dir: str) -> dict[int, np.ndarray]:
    with Spool(Path(state_dir) / "spool") as spool:
        chunks = [spool.read(r) for r in spool.pending()]
    actions: dict[int, list[np.ndarray]] = {}
    for c in chunks:
        actions.setdefault(int(c.header["episode"]), []).append(c.arrays["actions"])
    return {episode: np.concatenate(rows) for episode, rows in actions.items()}


@pytest.mark.timeout(180)
def test_a_restarted_agent_explores_with_new_noise_and_a_fresh_one_with_the_same_seed_repeats_it(agent_cfg, tmp_path):
    # exploring (learning on) for one 1 s episode per start: too few steps for an update, so the policy is the
    # same in every start, and the stand-in starts from the same state: only the noise can tell the starts apart
    agent_cfg.adapter.enabled = agent_cfg.adapter.learn = agent_cfg.adapter.explore = True
    agent_cfg.max_episodes = 1
    _agent(agent_cfg).run()
    _agent(agent_cfg).run()  # the restart: episode 1
    first, second = _actions_by_episode(agent_cfg.state_dir).values()
    assert len(first) == len(second) and not np.allclose(first, second)  # not the last start's noise again
    agent_cfg.state_dir = str(tmp_path / "other_state")
    _agent(agent_cfg).run()
    (again,) = _actions_by_episode(agent_cfg.state_dir).values()
    np.testing.assert_array_equal(again, first)  # episode 0 of this robot and seed: the same draws, reproducible
