"""A spool that cannot be written stops the agent before another episode runs, whatever the writer's lag, the
spool's ``when_full`` mode, or how episodes split into chunks (robot_agent/agent.py ``_spool_has_room``)."""

from __future__ import annotations

import errno
import threading

import pytest

from hardware.tasks.config import task_config
from robot_agent.agent import RobotAgent
from robot_agent.spool import Spool

EPISODE_S = 2.0  # 100 control periods of the cart-pole at 50 Hz
WRITER_HELD_S = 60.0  # the longest the writer is held back when the agent never waits for it (the old drop_oldest)


@pytest.fixture
def full_disk(monkeypatch):
    """Every spool write fails as on a full device (ENOSPC), from the agent's start."""

    def disk_full(self, header, arrays):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Spool, "append", disk_full)


def _hold_writer_until_the_agent_waits_for_it(agent: RobotAgent) -> None:
    """The spool writer is as far behind as it can be: it starts on the chunks of the first episode only once the
    agent, after that episode, waits for it to be idle. Until then no write has failed that the agent could see."""
    agent_waits = threading.Event()
    wait_idle, before_write = agent.writer.wait_idle, agent.writer.before_write

    def waited_for(timeout: float) -> bool:
        if agent.episodes >= 1:
            agent_waits.set()
        return wait_idle(timeout)

    def held(arrays) -> None:  # on the writer's thread, before its first write
        agent_waits.wait(WRITER_HELD_S)
        if before_write is not None:
            before_write(arrays)

    agent.writer.wait_idle = waited_for
    agent.writer.before_write = held


@pytest.mark.timeout(180)
@pytest.mark.parametrize("when_full", ["refuse", "drop_oldest"])
def test_a_writer_behind_its_failing_disk_lets_no_second_episode_start(agent_cfg, full_disk, when_full):
    agent_cfg.spool.when_full = when_full
    agent_cfg.spool.chunk_steps = 10  # ten chunks an episode: each one fails once the writer gets to it
    agent_cfg.max_episodes = 10
    agent = RobotAgent(agent_cfg, task_config("cartpole_swingup", {"episode_length_s": EPISODE_S}))
    _hold_writer_until_the_agent_waits_for_it(agent)
    status = agent.run()
    assert status["episodes"] == 1, status["fault"]  # its chunks were judged once written, before another start
    assert "cannot be written" in status["fault"] and "No space left" in status["fault"], status["fault"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("when_full", ["refuse", "drop_oldest"])
def test_episodes_shorter_than_a_chunk_stop_at_the_first_one_the_disk_lost(agent_cfg, full_disk, when_full):
    agent_cfg.spool.when_full = when_full
    agent_cfg.spool.chunk_steps = 500  # longer than an episode: one chunk each, at the episode's end
    agent_cfg.max_episodes = 10
    status = RobotAgent(agent_cfg, task_config("cartpole_swingup", {"episode_length_s": EPISODE_S})).run()
    assert status["episodes"] == 1, status["fault"]  # its one chunk was lost: no second episode runs
    assert "cannot be written" in status["fault"] and "(1 in a row)" in status["fault"], status["fault"]
