"""The learner throughput figure runs for a policy with two hardware types and leaves the policy unchanged."""

from __future__ import annotations

import math

import torch

from shared_policy.config import PolicyConfig
from shared_policy.learner_throughput import measure_throughput
from shared_policy.policy import FleetPolicy, HardwareSpec


def test_throughput_of_vtrace_and_ppo_updates_is_measured_on_the_same_network_and_batch():
    policy = FleetPolicy(PolicyConfig(latent_dim=16, trunk_hidden=[16], stem_hidden=[16], critic_hidden=[16]),
                         {"a": HardwareSpec("a", 5, 1, 17), "b": HardwareSpec("b", 9, 3, 21)})
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    result = measure_throughput(policy, "b", steps=8, batch=6, updates=2, robots=3)
    assert result.transitions_per_update == 48 and result.updates == 2
    assert math.isfinite(result.vtrace_transitions_per_s) and result.vtrace_transitions_per_s > 0
    assert math.isfinite(result.ppo_transitions_per_s) and result.ppo_transitions_per_s > 0
    assert "V-trace" in result.summary() and "PPO" in result.summary()
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())  # copies learned, not it
