import torch

from shared_policy.adapter import Adapter
from shared_policy.config import AdapterConfig
from shared_policy.normalizer import RunningNormalizer


def test_hardware_types_with_different_sizes_share_one_trunk(policy):
    a2 = policy.action_mean("arm2", torch.randn(5, 12))
    a7 = policy.action_mean("arm7", torch.randn(5, 27))
    assert a2.shape == (5, 2) and a7.shape == (5, 7)
    trunk_params = {id(p) for p in policy.trunk.parameters()}
    assert trunk_params <= {id(p) for p in policy.actor_parameters("arm2")}
    assert trunk_params <= {id(p) for p in policy.actor_parameters("arm7")}
    assert policy.value("arm7", torch.randn(5, 39)).shape == (5,)


def test_unknown_hardware_is_a_clear_error(policy):
    import pytest

    with pytest.raises(KeyError, match="no hardware type 'go2'"):
        policy.action_mean("go2", torch.randn(1, 3))


def test_running_normalizer_matches_batch_statistics():
    norm = RunningNormalizer(3)
    data = torch.randn(1000, 3) * torch.tensor([1.0, 5.0, 0.1]) + torch.tensor([2.0, -1.0, 0.0])
    for chunk in data.split(128):
        norm.update(chunk)
    assert torch.allclose(norm.mean, data.mean(0), atol=1e-5)
    assert torch.allclose(norm.var, data.var(0, unbiased=False), rtol=1e-4)


def test_new_adapter_changes_nothing(policy):
    obs = torch.randn(8, 27)
    adapter = Adapter(policy, "arm7", AdapterConfig(rank=4))
    assert torch.equal(policy.action_mean("arm7", obs, adapter), policy.action_mean("arm7", obs))
    assert adapter.num_parameters() > 0
    assert adapter.num_parameters() < sum(p.numel() for p in policy.actor_parameters("arm7"))


def test_training_an_adapter_leaves_every_policy_parameter_bit_identical(policy):
    frozen = {k: v.clone() for k, v in policy.state_dict().items()}
    for p in policy.parameters():
        p.requires_grad_(False)
    adapter = Adapter(policy, "arm7")
    opt = torch.optim.Adam(adapter.parameters(), lr=1e-2)
    obs, target = torch.randn(64, 27), torch.randn(64, 7)
    first = None
    for _ in range(50):
        loss = (policy.action_mean("arm7", obs, adapter) - target).pow(2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first  # the adapter did learn
    for k, v in policy.state_dict().items():
        assert torch.equal(v, frozen[k]), k
