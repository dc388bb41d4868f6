import numpy as np
import pytest

from hardware import load_profile
from sim.models import build_model
from sim.physics import MuJoCoBatchBackend


@pytest.mark.parametrize("hardware", ["go2_like", "arm3_planar", "cartpole"])
def test_fast_reset_gives_the_state_and_observed_outputs_of_mujocos_own_reset(hardware):
    robot = build_model(load_profile(hardware))
    ours, ref = MuJoCoBatchBackend(robot, 4, nthread=1, exact_reset=False), MuJoCoBatchBackend(robot, 4, nthread=1)
    rng = np.random.default_rng(0)
    for b in (ours, ref):  # the same history: both mid-motion, with contacts and warm starts
        b.ctrl[:] = rng.uniform(-0.3, 0.3, b.ctrl.shape) if b is ours else ours.ctrl
        b.step(20)
    ids = np.array([1, 3])
    qpos = np.repeat(robot.init_qpos[None], 2, axis=0) + 0.01
    qvel = np.full((2, robot.model.nv), 0.1)
    ours.reset(ids, qpos, qvel)
    ref.reset(ids, qpos, qvel)
    np.testing.assert_array_equal(ours.batch.state, ref.batch.state)
    # what the env's observations read after a reset (actuator torque is read only after a step)
    got, want = vars(ours.state()), vars(ref.state())
    for name, value in want.items():
        if value is not None:
            np.testing.assert_array_equal(got[name][ids], value[ids], err_msg=name)
    # and the worlds go on identically
    for b in (ours, ref):
        b.step(10)
    np.testing.assert_array_equal(ours.batch.state, ref.batch.state)


def test_exact_reset_reads_zero_actuator_torque_as_a_drivers_first_reading_must():
    robot = build_model(load_profile("arm3_planar"))
    b = MuJoCoBatchBackend(robot, 1, nthread=1)
    b.ctrl[:] = 0.5
    b.step(5)
    assert b.actuator_force.any()
    b.reset(np.array([0]), robot.init_qpos[None], np.zeros((1, robot.model.nv)))
    assert not b.state(with_torque=True).joint_torque.any()


@pytest.mark.parametrize("exact", [True, False])
def test_reset_clears_a_worlds_divergence_warnings(exact):
    robot = build_model(load_profile("cartpole"))
    b = MuJoCoBatchBackend(robot, 2, nthread=1, exact_reset=exact)
    b.qvel[1] = 1e30
    b.step(1)
    assert b.batch.warning[1].any()
    b.reset(np.array([1]), robot.init_qpos[None], np.zeros((1, robot.model.nv)))
    assert not b.batch.warning[1].any()
