"""The oracle's training env is the stand-in unit: the same readings for the same commands."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.unit_replica import make_unit_replica
from hardware.action import ActionMap
from hardware.profile import load_profile
from hardware.safety import SafetyLayer
from sim.standin import MuJoCoStandInDriver

PHYSICS = {"motor_strength": [0.5, 0.7], "mass_scale": [1.0, 1.4], "damping_scale": [1.0, 3.0],
           "latency_steps": [1, 3]}


@pytest.mark.parametrize("task, hardware", [("cartpole_swingup", "cartpole"), ("cartpole_swingup", "cartpole_pivot"),
                                             ("reach", "arm2_planar")])
def test_replica_reads_what_the_unit_reads_for_the_same_commands(task, hardware):
    # offsets, latency and physics outside the training ranges; no noise, so that readings compare exactly
    gap = {"physics": PHYSICS, "joint_offset": 0.1, "home_noise": 0.0}
    unit = MuJoCoStandInDriver(load_profile(hardware), gap=gap, seed=7)
    unit.connect()
    env = make_unit_replica(task, hardware, gap, unit_seed=7, num_envs=1)
    env.reset()
    assert env.physics_params.latency_steps[0] == unit.true_params.latency_steps[0]
    action_map = ActionMap(unit.profile)
    layer = SafetyLayer(unit.profile)  # the sim filters every command as the agent's safety layer does
    reading = unit.read_state().state
    rng = np.random.default_rng(0)
    for _ in range(60):
        a = rng.uniform(-1.0, 1.0, (1, env.num_actions))
        unit.send_command(layer.filter(action_map.to_command(a)[0], reading))
        env.step(a)
        reading = unit.read_state().state
        np.testing.assert_allclose(env.state.joint_pos, reading.joint_pos, atol=1e-9)
        np.testing.assert_allclose(env.state.joint_vel, reading.joint_vel, atol=1e-9)
        if reading.ee_pos is not None:
            np.testing.assert_allclose(env.state.ee_pos, reading.ee_pos, atol=1e-9)
    assert int(env.episode_length_buf[0]) == 60  # one episode throughout: no reset hid a difference


def test_replica_sensors_carry_the_units_noise_and_the_sim_adds_none():
    gap = {"joint_pos_noise": 0.02, "joint_vel_noise": 0.1, "joint_offset": 0.05}
    env = make_unit_replica("cartpole_swingup", "cartpole", gap, unit_seed=3, num_envs=512)
    true = env.backend.state()
    err = env.state.joint_pos - true.joint_pos - env.joint_offset
    assert np.std(err[:, 0]) == pytest.approx(0.02, rel=0.15)
    assert np.std(env.state.joint_vel - true.joint_vel) == pytest.approx(0.1, rel=0.15)
    assert np.abs(env.joint_offset).max() > 0
    # the policy's observation is built from the reading alone: the task's own sim noise is off
    np.testing.assert_array_equal(env.get_observations().numpy(),
                                  env.get_privileged_observations().numpy()[:, :env.num_obs])
