"""The agent checks the whole hardware profile (gains, limits, action scale, rates) of its driver and checkpoint."""

from __future__ import annotations

import dataclasses

import pytest

from hardware.profile import LimitSpec, load_profile
from hardware.tasks.config import task_config
from robot_agent.agent import AgentStartupError, RobotAgent
from robot_agent.runtime import load_verified, robot_spec
from shared_policy.checkpoint import CheckpointError
from sim.standin import MuJoCoStandInDriver


def _cartpole(**slider) -> object:
    p = load_profile("cartpole")
    return dataclasses.replace(p, joints=[dataclasses.replace(p.joints[0], **slider), *p.joints[1:]])


class OtherGainDriver(MuJoCoStandInDriver):
    """A cart-pole driver whose slider motor has another gain and torque than the agent's profile says."""

    def __init__(self, profile, **options):
        super().__init__(_cartpole(kp=5.0, max_torque=12.0), **options)


@pytest.mark.timeout(120)
def test_agent_refuses_a_driver_whose_profile_differs_in_a_gain_naming_the_fields(agent_cfg):
    agent_cfg.driver.name = f"{__name__}:OtherGainDriver"  # a driver named module:Class, as a vendor may
    with pytest.raises(AgentStartupError, match=r"joints\[slider\].kp: driver 5.0, agent 0.0; "
                                                r"joints\[slider\].max_torque: driver 12.0, agent 10.0.*refusing"):
        RobotAgent(agent_cfg, task_config("cartpole_swingup", {"episode_length_s": 2.0}))


@pytest.mark.timeout(120)
def test_checkpoint_trained_on_other_limits_or_gains_is_refused_naming_the_field(cartpole_checkpoint):
    terms = task_config("cartpole_swingup", {}).privileged_observation
    load_verified(cartpole_checkpoint, robot_spec(load_profile("cartpole"), terms))  # its own profile: accepted
    stricter = dataclasses.replace(load_profile("cartpole"), limits=LimitSpec(torque_rate=0.5))
    with pytest.raises(CheckpointError, match=r"limits.torque_rate: checkpoint 1.0, expected 0.5"):
        load_verified(cartpole_checkpoint, robot_spec(stricter, terms))
    with pytest.raises(CheckpointError, match=r"joints\[slider\].max_torque: checkpoint 10.0, expected 20.0"):
        load_verified(cartpole_checkpoint, robot_spec(_cartpole(max_torque=20.0), terms))
