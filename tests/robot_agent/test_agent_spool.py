"""The agent's use of its spool: one agent per directory, episode numbers that go on across restarts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hardware.tasks.config import task_config
from robot_agent.agent import AgentStartupError, RobotAgent
from robot_agent.spool import Spool
from tests.robot_agent.conftest import pretrain


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
    agent_cfg.adapter.steps_per_update = 10_000  # no update in either start: the same policy both times
    agent_cfg.max_episodes = 1
    _agent(agent_cfg).run()
    _agent(agent_cfg).run()  # the restart: its first episode (numbers are reserved in blocks, so 64)
    first, second = _actions_by_episode(agent_cfg.state_dir).values()
    assert len(first) == len(second) and not np.allclose(first, second)  # not the last start's noise again
    agent_cfg.state_dir = str(tmp_path / "other_state")
    _agent(agent_cfg).run()
    (again,) = _actions_by_episode(agent_cfg.state_dir).values()
    np.testing.assert_array_equal(again, first)  # episode 0 of this robot and seed: the same draws, reproducible


@pytest.mark.timeout(300)
def test_a_restarted_agent_draws_new_goals_and_a_fresh_one_with_the_same_seed_repeats_them(agent_cfg, tmp_path):
    # reach draws a target per episode; deterministic actions and the same home pose at each start, so the first
    # reading of the two starts' episodes differs only if the target does
    agent_cfg.hardware = "arm2_planar"
    agent_cfg.checkpoint = str(pretrain(tmp_path / "arm", "arm2_planar", "reach", iterations=1))
    agent_cfg.max_episodes = 1
    task = task_config("reach", {"episode_length_s": 0.2})
    first_readings = []
    for state_dir in ("state", "state", "other_state"):  # a start, its restart, and another robot computer
        agent_cfg.state_dir = str(tmp_path / state_dir)
        RobotAgent(agent_cfg, task).run()
        first_readings.append(_first_observations(agent_cfg.state_dir))
    both_starts, fresh = first_readings[1], first_readings[2]  # "state" holds both starts' episodes by then
    assert len(both_starts) == 2 and len(fresh) == 1
    assert not np.array_equal(both_starts[0], both_starts[1])  # the restart's episode is not the last start's again
    np.testing.assert_array_equal(fresh[0], both_starts[0])  # episode 0 of the same seed and robot: the same target


def _first_observations(state_dir: str) -> list[np.ndarray]:
    with Spool(Path(state_dir) / "spool") as spool:
        chunks = sorted((spool.read(r) for r in spool.pending()), key=lambda c: int(c.header["episode"]))
    return [c.arrays["obs"][0] for c in chunks if int(c.header["first_step"]) == 0]
