"""The simulator's action path runs the robot's safety filter: same limits, same changes, counted in extras."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sim
from hardware.safety import KINDS, SafetyLayer
from hardware.state import RobotState


def _copy(state: RobotState) -> RobotState:
    return RobotState(joint_pos=state.joint_pos.copy(), joint_vel=state.joint_vel.copy())


@pytest.mark.parametrize(("task", "hardware", "latency"), [
    ("locomotion", "go2_like", 0), ("cartpole_swingup", "cartpole", 0), ("cartpole_swingup", "cartpole", 2),
    ("cartpole_swingup", "cartpole_pivot", 1)])
def test_sim_changes_each_command_exactly_as_the_robots_safety_layer_and_counts_it(task, hardware, latency):
    n = 4
    env = sim.make_env(task, hardware, num_envs=n, seed=0,
                       randomization={"latency_steps": [latency, latency], "push_interval_s": 0.0})
    layers = [SafetyLayer(env.profile) for _ in range(n)]  # one robot per world
    # what each world's robot would hand its driver, step by step (the actuators start with the neutral command)
    sent = [env.action_map.neutral(n)] * latency
    gen = torch.Generator().manual_seed(0)
    seen = dict.fromkeys(KINDS, 0)
    for _ in range(12):
        actions = (torch.rand(n, env.num_actions, generator=gen) * 2 - 1) * 8  # far past every limit
        state = _copy(env.state)  # the reading the policy acts on
        commands = env.action_map.to_command(actions.numpy().astype(np.float64))
        before = [layer.counts.copy() for layer in layers]
        robot = np.stack([layer.filter(commands[i], RobotState(state.joint_pos[i:i + 1], state.joint_vel[i:i + 1]))
                          for i, layer in enumerate(layers)])
        sent.append(robot)
        _, _, done, extras = env.step(actions)
        assert not done.any()
        applied = sent[-1 - latency]
        np.testing.assert_allclose(env.backend.ctrl[:, env.robot.actuator_ids], applied, rtol=0, atol=1e-12)
        for kind in KINDS:
            changed = sum(layer.counts[kind] - b[kind] for layer, b in zip(layers, before, strict=True))
            assert extras["safety"][kind] == changed, kind
            seen[kind] += changed
    assert seen["rate_limit"] > 0  # the comparison covered real interventions


def test_a_reset_world_starts_its_rate_limit_from_its_new_reading():
    env = sim.make_env("locomotion", "go2_like", num_envs=2, seed=0,
                       randomization={"push_interval_s": 0.0, "latency_steps": [0, 0]})
    big = torch.full((2, 12), 8.0)
    for _ in range(3):
        env.step(big)
    env.backend.qpos[1, 2] = 0.05  # world 1's trunk on the floor: it terminates and resets
    _, _, done, _ = env.step(big)
    assert done.tolist() == [False, True]
    state = _copy(env.state)
    layer = SafetyLayer(env.profile)  # a robot at the start of an episode
    cmd = env.action_map.to_command(np.full((1, 12), -8.0))[0]
    want = layer.filter(cmd, RobotState(state.joint_pos[1:2], state.joint_vel[1:2]))
    env.step(torch.full((2, 12), -8.0))
    np.testing.assert_allclose(env.backend.ctrl[1], want, rtol=0, atol=1e-12)


@pytest.mark.timeout(120)
def test_training_logs_the_share_of_world_steps_the_safety_filter_changed(tmp_path):
    from shared_policy.config import PolicyConfig, PPOConfig
    from shared_policy.tracking import NullLogger
    from sim.pretrain import PretrainRunner

    env = sim.make_env("locomotion", "go2_like", 16, seed=0)
    runner = PretrainRunner([env], PolicyConfig(latent_dim=32, trunk_hidden=[32], stem_hidden=[32],
                                                critic_hidden=[32]),
                            PPOConfig(num_steps_per_env=8), tmp_path, NullLogger(), checkpoint_every=1000)
    before = env.safety.counts.copy()
    m = runner.learn(1, log_every=1000)[-1]
    changed = env.safety.counts - before
    for kind, n in zip(KINDS, changed.tolist(), strict=True):
        assert m[f"go2_like/safety/{kind}"] == pytest.approx(n / (16 * 8)), kind
    assert m["go2_like/safety/rate_limit"] > 0  # an untrained policy's targets jump
