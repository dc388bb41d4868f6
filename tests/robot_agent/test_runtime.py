"""The policy as the control loop runs it: numpy inference equal to the torch policy."""

from __future__ import annotations

import numpy as np
import torch

from robot_agent.runtime import PolicyRuntime
from shared_policy.adapter import Adapter
from shared_policy.checkpoint import load_checkpoint
from tests.shared_policy.conftest import reference_normal


def test_numpy_inference_matches_the_adapted_torch_policy(cartpole_checkpoint):
    policy, manifest = load_checkpoint(cartpole_checkpoint)
    adapter = Adapter(policy, "cartpole")
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.1 * torch.randn_like(p))
    rt = PolicyRuntime(policy, "cartpole", int(manifest["trunk_version"]), adapter, 3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        obs = rng.normal(size=policy.spec("cartpole").num_obs).astype(np.float32)
        with torch.no_grad():
            dist = reference_normal(policy, "cartpole", torch.from_numpy(obs[None]), adapter)
        mean, logp_mean = rt.act(obs, explore=False)
        np.testing.assert_allclose(mean, dist.mean[0].numpy(), atol=1e-5)
        action, logp = rt.act(obs, explore=True, rng=rng)
        expected = dist.log_prob(torch.from_numpy(action[None]).float()).sum().item()
        assert abs(logp - expected) < 1e-4
        assert logp <= logp_mean + 1e-6  # the mean is the density's peak


def test_adapter_swap_changes_the_actions_from_the_next_call(cartpole_checkpoint):
    policy, manifest = load_checkpoint(cartpole_checkpoint)
    rt = PolicyRuntime(policy, "cartpole", int(manifest["trunk_version"]), Adapter(policy, "cartpole"), 0)
    obs = np.ones(policy.spec("cartpole").num_obs, np.float32)
    before = rt.act(obs, explore=False)[0]
    adapter = Adapter(policy, "cartpole")
    with torch.no_grad():
        adapter.head_bias.fill_(0.5)
    rt.swap_adapter(adapter, 1)
    np.testing.assert_allclose(rt.act(obs, explore=False)[0], before + 0.5, atol=1e-5)
    assert rt.adapter_version == 1
