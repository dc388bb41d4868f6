"""Fixtures for the robot agent: a small pretrained checkpoint and agent configs on stand-in robots."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import sim
from robot_agent.config import AgentConfig
from robot_agent.spool import Spool
from robot_agent.uplink import HubUplink
from shared_policy.config import PolicyConfig, PPOConfig
from shared_policy.tracking import NullLogger
from sim.pretrain import PretrainRunner


def pretrain(out: Path, hardware: str = "cartpole", task: str = "cartpole_swingup", iterations: int = 2) -> Path:
    """A real (briefly) pretrained checkpoint for one hardware type."""
    env = sim.make_env(task, hardware, 32, seed=0)
    runner = PretrainRunner([env], PolicyConfig(), PPOConfig(num_steps_per_env=16), out, NullLogger(),
                            checkpoint_every=10**6)
    runner.learn(iterations, log_every=10**6)
    return runner.save()


@pytest.fixture(scope="session")
def cartpole_checkpoint(tmp_path_factory) -> Path:
    return pretrain(tmp_path_factory.mktemp("pretrained"))


@pytest.fixture()
def agent_cfg(tmp_path, cartpole_checkpoint) -> AgentConfig:
    """A cartpole agent on a fast (not real-time) stand-in, adapter learning off, no logging."""
    cfg = AgentConfig(checkpoint=str(cartpole_checkpoint), state_dir=str(tmp_path / "state"), max_episodes=2)
    cfg.driver.options = {"realtime": False, "seed": 1}
    cfg.adapter.enabled = False
    cfg.logger.backend = "none"
    cfg.status_every_s = 0.5
    return cfg


@pytest.fixture
def spool(tmp_path):
    """A spool without fsync (the uplink tests' robots)."""
    s = Spool(tmp_path / "spool", fsync=False)
    yield s
    s.close()


@pytest.fixture
def uplinks():
    """Start HubUplinks; each is stopped at the end of the test."""
    made = []

    def make(*args, **kw):
        made.append(HubUplink(*args, **kw))
        made[-1].start()
        return made[-1]

    yield make
    for u in made:
        u.stop(time.monotonic() + 5)
