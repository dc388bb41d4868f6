"""Models generated from hardware profiles: every joint and motor the profile names, with its limits."""

import mujoco
import numpy as np
import pytest

from hardware import available_profiles, load_profile
from sim.models import build_model


@pytest.mark.parametrize("name", available_profiles())
def test_every_profile_builds_a_model_whose_joints_and_motors_match(name):
    profile = load_profile(name)
    robot = build_model(profile)
    m = robot.model
    assert len(robot.actuator_ids) == profile.num_actions == m.nu
    for j, adr in zip(profile.joints, robot.joint_qpos_adr, strict=True):
        assert m.jnt_qposadr[m.joint(j.name).id] == adr
    assert m.opt.timestep == pytest.approx(1.0 / profile.physics_hz)
    # the default pose is a valid, finite state
    d = mujoco.MjData(m)
    d.qpos[:] = robot.init_qpos
    mujoco.mj_forward(m, d)
    assert np.isfinite(d.qacc).all()


def test_pd_joint_limits_and_torque_limits_reach_the_model():
    robot = build_model(load_profile("arm7"))
    j4 = robot.profile.joints[3]
    act = robot.model.actuator(j4.name)
    assert list(act.ctrlrange) == pytest.approx(j4.range)
    assert list(act.forcerange) == pytest.approx([-j4.max_torque, j4.max_torque])
    assert act.gainprm[0] == pytest.approx(j4.kp)
