"""One actor: the training forward, the merged actor, the numpy actor and the ONNX graph compute the same thing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from torch.distributions import Normal

from shared_policy.actor import MergedActor, NumpyActor, actor_layers
from shared_policy.adapter import Adapter
from shared_policy.checkpoint import save_checkpoint
from shared_policy.config import AdapterConfig, PolicyConfig
from shared_policy.export import export_onnx
from shared_policy.gaussian import entropy, log_prob, standard_log_prob
from shared_policy.modules import ACTIVATIONS
from shared_policy.policy import FleetPolicy, HardwareSpec
from tests.shared_policy.conftest import SPECS

# three layouts of different observation and action sizes on one trunk
THREE = {**SPECS, "pole": HardwareSpec("pole", num_obs=5, num_actions=1, num_critic_obs=9)}


def _policy(activation: str) -> FleetPolicy:
    """A policy with deeper stems and trunk than the default fixture, random weights and fitted normalisers."""
    torch.manual_seed(0)
    cfg = PolicyConfig(latent_dim=24, trunk_hidden=[32, 16], stem_hidden=[20, 12], critic_hidden=[16],
                       activation=activation)
    policy = FleetPolicy(cfg, THREE)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    for hw, spec in THREE.items():
        policy.stems[hw].normalizer.update(torch.randn(200, spec.num_obs) * 3 + 1)
    return policy


def _adapter(policy: FleetPolicy, hardware: str) -> Adapter:
    """An adapter with every weight non-zero, as after some learning."""
    adapter = Adapter(policy, hardware, AdapterConfig(rank=3, alpha=2.0))
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return adapter


def _reference_mean(policy: FleetPolicy, hardware: str, obs: torch.Tensor, adapter: Adapter) -> torch.Tensor:
    """The adapted actor computed the unmerged way: the policy's own modules, each delta run beside its layer."""
    def delta(d, x):
        return d.scale * F.linear(F.linear(x, d.down), d.up)

    stem = policy.stems[hardware]
    x = stem.normalizer(obs)
    deltas = iter([*adapter.stem_deltas, *adapter.trunk_deltas])
    for module in [*stem.net, *policy.trunk]:
        x = module(x) + delta(next(deltas), x) if isinstance(module, nn.Linear) else module(x)
    return policy.heads[hardware].mean(x) + delta(adapter.head_delta, x) + adapter.head_bias


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("hardware", sorted(THREE))
def test_training_merged_and_numpy_actors_compute_the_adapted_actor(activation, hardware):
    policy = _policy(activation)
    adapter = _adapter(policy, hardware)
    obs = torch.randn(16, THREE[hardware].num_obs) * 4  # wide enough to reach the normaliser's clip
    with torch.no_grad():
        expected = _reference_mean(policy, hardware, obs, adapter)
        trained = policy.action_mean(hardware, obs, adapter)
        merged = MergedActor(policy, hardware, adapter)(obs)
    numpy_actor = NumpyActor(actor_layers(policy, hardware, adapter))
    torch.testing.assert_close(trained, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(numpy_actor.mean_action(obs.numpy()), expected.numpy(), atol=1e-5, rtol=1e-4)
    for row, want in zip(obs.numpy(), expected.numpy(), strict=True):  # the robot's one observation at a time
        np.testing.assert_allclose(numpy_actor.mean_action(row), want, atol=1e-5, rtol=1e-4)
    assert expected.abs().max() > 1e-2  # the actor's output is not trivially zero
    assert (expected - policy.action_mean(hardware, obs).detach()).abs().max() > 1e-2  # the adapter matters


@pytest.mark.parametrize("hardware", sorted(THREE))
def test_every_actor_form_gives_the_same_log_density(hardware):
    policy = _policy("elu")
    adapter = _adapter(policy, hardware)
    obs = torch.randn(8, THREE[hardware].num_obs)
    log_std = policy.heads[hardware].log_std + adapter.log_std_delta
    with torch.no_grad():
        torch.testing.assert_close(policy.log_std(hardware, adapter), log_std)
        torch.testing.assert_close(MergedActor(policy, hardware, adapter).log_std, log_std)
        reference = Normal(_reference_mean(policy, hardware, obs, adapter), log_std.exp())
        actions = reference.sample()
        ours = log_prob(actions, policy.action_mean(hardware, obs, adapter), log_std.exp(), log_std)
    torch.testing.assert_close(ours, reference.log_prob(actions).sum(-1), atol=1e-4, rtol=1e-5)
    numpy_actor = NumpyActor(actor_layers(policy, hardware, adapter))
    rng = np.random.default_rng(0)
    for row in obs:
        action, logp = numpy_actor.act(row.numpy(), explore=True, rng=rng)
        with torch.no_grad():
            dist = Normal(_reference_mean(policy, hardware, row[None], adapter)[0], log_std.exp())
        assert logp == pytest.approx(dist.log_prob(torch.from_numpy(action)).sum().item(), abs=1e-4)
        mean, peak = numpy_actor.act(row.numpy(), explore=False)
        np.testing.assert_allclose(mean, dist.mean.numpy(), atol=1e-5, rtol=1e-4)
        assert peak == pytest.approx(dist.log_prob(dist.mean).sum().item(), abs=1e-4)


def test_gaussian_density_and_entropy_agree_with_torch_distributions_for_tensors_and_arrays():
    torch.manual_seed(1)
    mean, log_std = torch.randn(10, 4), torch.randn(4) * 0.5
    actions = mean + torch.randn(10, 4) * 2
    reference = Normal(mean, log_std.exp().expand_as(mean))
    expected = reference.log_prob(actions).sum(-1)
    torch.testing.assert_close(log_prob(actions, mean, log_std.exp(), log_std), expected)
    np.testing.assert_allclose(log_prob(actions.numpy(), mean.numpy(), log_std.exp().numpy(), log_std.numpy()),
                               expected.numpy(), rtol=1e-5)
    z = (actions - mean) / log_std.exp()
    np.testing.assert_allclose(standard_log_prob(z.numpy()[3], log_std.numpy()), expected[3].item(), rtol=1e-5)
    torch.testing.assert_close(entropy(log_std), reference.entropy()[0].sum())


@pytest.mark.parametrize("hardware", sorted(THREE))
def test_onnx_export_includes_the_units_adapter(tmp_path, hardware):
    import onnxruntime as ort

    policy = _policy("elu")
    adapter = _adapter(policy, hardware)
    path = export_onnx(policy, hardware, tmp_path / f"{hardware}.onnx", adapter=adapter)
    session = ort.InferenceSession(str(path))
    obs = torch.randn(33, THREE[hardware].num_obs) * 4
    onnx_out = session.run(None, {"obs": obs.numpy()})[0]
    with torch.no_grad():
        adapted = policy.action_mean(hardware, obs, adapter).numpy()
        frozen = policy.action_mean(hardware, obs).numpy()
    np.testing.assert_allclose(onnx_out, adapted, atol=1e-5, rtol=1e-4)
    assert np.abs(onnx_out - frozen).max() > 1e-2


def test_an_adapter_of_another_hardware_type_is_refused():
    policy = _policy("elu")
    with pytest.raises(ValueError, match="adapts hardware 'arm2', not 'arm7'"):
        policy.action_mean("arm7", torch.randn(1, 27), _adapter(policy, "arm2"))


def test_training_through_the_merged_weights_reaches_the_adapter_and_not_the_frozen_actor():
    policy = _policy("elu")
    for p in policy.parameters():
        p.requires_grad_(False)
    adapter = _adapter(policy, "arm7")
    policy.action_mean("arm7", torch.randn(4, 27), adapter).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for name, p in adapter.named_parameters()
               if name != "log_std_delta")
    assert all(p.grad is None for p in policy.parameters())


def test_checkpoint_tensor_names_are_those_older_checkpoints_hold(tmp_path, policy):
    """Names as written before the actor was defined once: checkpoints and adapters saved then still load."""
    save_checkpoint(tmp_path / "ck", policy, 1, adapters={"unit-1": Adapter(policy, "arm2")})

    def names(rel):
        with safe_open(str(tmp_path / "ck" / rel), "pt") as f:
            return sorted(f.keys())

    assert names("trunk.safetensors") == ["trunk.0.bias", "trunk.0.weight", "trunk.2.bias", "trunk.2.weight"]
    actor = [k for k in names("hardware/arm2.safetensors") if k.startswith(("stems.", "heads."))]
    assert actor == ["heads.arm2.log_std", "heads.arm2.mean.bias", "heads.arm2.mean.weight",
                     "stems.arm2.net.0.bias", "stems.arm2.net.0.weight", "stems.arm2.net.2.bias",
                     "stems.arm2.net.2.weight", "stems.arm2.normalizer.count", "stems.arm2.normalizer.mean",
                     "stems.arm2.normalizer.var"]
    assert names("adapters/unit-1.safetensors") == [
        "adapter.head_bias", "adapter.head_delta.down", "adapter.head_delta.up", "adapter.log_std_delta",
        "adapter.stem_deltas.0.down", "adapter.stem_deltas.0.up", "adapter.stem_deltas.1.down",
        "adapter.stem_deltas.1.up", "adapter.trunk_deltas.0.down", "adapter.trunk_deltas.0.up",
        "adapter.trunk_deltas.1.down", "adapter.trunk_deltas.1.up"]
