"""The agent's use of its spool: one agent per directory, episode numbers that go on across restarts."""

from __future__ import annotations

from pathlib import Path

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
