"""Replica arms act as the robot they stand for: the mean action, or (exploring) a sample with the policy's std."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their neighbours
from replica_returns import Arm, arm_actions, replica_returns  # noqa: E402

from shared_policy.actor import NumpyActor, actor_layers  # noqa: E402
from shared_policy.adapter import Adapter  # noqa: E402
from shared_policy.config import PolicyConfig  # noqa: E402
from shared_policy.policy import FleetPolicy  # noqa: E402
from tests.fleet.trunks import cartpole_spec  # noqa: E402


def _policy(std: float) -> FleetPolicy:
    torch.manual_seed(0)
    policy = FleetPolicy(PolicyConfig(latent_dim=16, trunk_hidden=[16], stem_hidden=[16], critic_hidden=[16]),
                         {"cartpole": cartpole_spec()})
    with torch.no_grad():
        policy.heads["cartpole"].log_std.fill_(float(np.log(std)))
    return policy


def test_an_exploring_arm_samples_around_the_mean_with_the_policys_std_and_a_mean_arm_does_not():
    policy = _policy(0.3)
    obs = torch.randn(1, policy.spec("cartpole").num_obs).repeat(20000, 1)
    with torch.no_grad():
        mean = policy.action_mean("cartpole", obs[:1])
        sampled = arm_actions(Arm("x", policy, explore=True), "cartpole", obs, torch.Generator().manual_seed(1))
        exact = arm_actions(Arm("m", policy), "cartpole", obs, torch.Generator().manual_seed(1))
    torch.testing.assert_close(exact, mean.expand_as(exact))
    assert abs(float(sampled.mean()) - float(mean.mean())) < 0.01
    assert abs(float(sampled.std()) - 0.3) < 0.01


def test_an_exploring_arm_with_an_adapter_samples_with_the_robots_std_the_adapters_delta_included():
    policy = _policy(0.3)
    adapter = Adapter(policy, "cartpole")
    with torch.no_grad():
        adapter.log_std_delta.fill_(float(np.log(2.0)))  # the robot's actor doubles its std
    robot = NumpyActor(actor_layers(policy, "cartpole", adapter))
    obs = torch.randn(1, policy.spec("cartpole").num_obs).repeat(20000, 1)
    with torch.no_grad():
        sampled = arm_actions(Arm("x", policy, adapter, explore=True), "cartpole", obs,
                              torch.Generator().manual_seed(2))
    np.testing.assert_allclose(robot.std, [0.6] * len(robot.std), rtol=1e-5)
    assert abs(float(sampled.std()) - float(robot.std[0])) < 0.015
    assert abs(float(sampled.mean()) - float(robot.mean_action(obs[0].numpy()).mean())) < 0.015


def test_exploring_returns_are_reproducible_by_seed_and_differ_from_the_mean_actions():
    policy = _policy(0.5)
    arms = [Arm("mean", policy), Arm("explore", policy, explore=True)]
    first = replica_returns("cartpole_swingup", "cartpole", {}, 3, arms, 3, seed=5)
    again = replica_returns("cartpole_swingup", "cartpole", {}, 3, arms, 3, seed=5)
    np.testing.assert_array_equal(first["explore"], again["explore"])
    assert not np.allclose(first["explore"], first["mean"])
