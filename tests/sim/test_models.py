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


def test_an_actuated_hinge_gets_a_motor_geared_to_its_torque_and_keeps_no_limit():
    profile = load_profile("cartpole_pivot")
    m = build_model(profile).model
    assert [m.actuator(i).name for i in range(m.nu)] == ["slider", "hinge"]
    hinge = m.actuator("hinge")
    assert hinge.trnid[0] == m.joint("hinge").id
    assert hinge.gear[0] == pytest.approx(profile.joints[1].max_torque)
    assert not m.jnt_limited[m.joint("hinge").id]  # continuous: the pole may turn any number of times
    assert build_model(load_profile("cartpole")).model.nu == 1  # the passive pole of cartpole has none


def test_pd_joint_limits_and_torque_limits_reach_the_model():
    robot = build_model(load_profile("arm7"))
    j4 = robot.profile.joints[3]
    act = robot.model.actuator(j4.name)
    assert list(act.ctrlrange) == pytest.approx(j4.range)
    assert list(act.forcerange) == pytest.approx([-j4.max_torque, j4.max_torque])
    assert act.gainprm[0] == pytest.approx(j4.kp)
