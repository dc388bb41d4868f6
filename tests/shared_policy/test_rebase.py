"""Adapter rebasing: a unit's adaptation carried over to a new trunk reproduces its old merged policy."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from shared_policy.adapter import Adapter
from shared_policy.rebase import RebaseConfig, RebaseTeacher, gaussian_kl, rebase_adapter

# The stated tolerance: on held-out observations of the unit, the rebased policy's mean action is within
# 0.05 of the old merged policy's action std on average (a twentieth of the exploration noise it ran with).
TOLERANCE_STD = 0.05
FAST = RebaseConfig(steps=200, batch_size=256, target="merged")


def _adapted_unit(policy, hardware: str, seed: int) -> Adapter:
    """An adapter that has clearly moved its unit away from the fleet policy (as on-robot training does), on a
    policy whose action noise has narrowed to a trained one's (std 0.1)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        policy.heads[hardware].log_std.fill_(torch.log(torch.tensor(0.1)).item())
    adapter = Adapter(policy, hardware)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.3 * torch.randn_like(p))
        adapter.log_std_delta.zero_()
    return adapter


def _next_trunk(policy, seed: int):
    """The fleet learner's next version: the shared trunk moved, stems and heads kept."""
    torch.manual_seed(seed)
    new = copy.deepcopy(policy)
    with torch.no_grad():
        for p in new.trunk.parameters():
            p.add_(0.3 * p.abs().mean() * torch.randn_like(p))
    return new


@pytest.mark.parametrize("hardware", ["arm2", "arm7"])
def test_rebased_adapter_reproduces_the_old_merged_policy_on_the_units_data(policy, hardware):
    old_adapter = _adapted_unit(policy, hardware, seed=1)
    new_policy = _next_trunk(policy, seed=2)
    obs = torch.randn(1500, policy.spec(hardware).num_obs, generator=torch.Generator().manual_seed(3))
    rebased, report = rebase_adapter(policy, old_adapter, new_policy, hardware, obs, FAST)
    assert report.naive_mean_gap > 2 * TOLERANCE_STD  # running the old adapter as if nothing changed is wrong
    assert report.rebased_mean_gap < TOLERANCE_STD
    assert report.rebased_mean_gap < report.naive_mean_gap / 5
    # the returned adapter, on the caller's new policy, reproduces the old policy on observations it never saw
    held = torch.randn(500, policy.spec(hardware).num_obs, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        old = policy.action_mean(hardware, held, old_adapter)
        new = new_policy.action_mean(hardware, held, rebased)
    std = policy.log_std(hardware, old_adapter).exp()
    assert ((new - old).abs() / std).mean() < TOLERANCE_STD


def test_rebasing_leaves_both_policies_and_the_old_adapter_unchanged(policy):
    old_adapter = _adapted_unit(policy, "arm2", seed=4)
    new_policy = _next_trunk(policy, seed=5)
    before = [copy.deepcopy(m.state_dict()) for m in (policy, new_policy, old_adapter)]
    rebase_adapter(policy, old_adapter, new_policy, "arm2", torch.randn(300, 12), RebaseConfig(steps=20))
    for was, module in zip(before, (policy, new_policy, old_adapter), strict=True):
        for key, value in module.state_dict().items():
            assert torch.equal(value, was[key]), key


def test_bad_observations_are_refused_with_a_clear_error(policy):
    new_policy = _next_trunk(policy, seed=6)
    with pytest.raises(ValueError, match=r"\(N, 12\)"):
        rebase_adapter(policy, None, new_policy, "arm2", torch.randn(100, 11))
    bad = torch.randn(100, 12)
    bad[7, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        rebase_adapter(policy, None, new_policy, "arm2", bad)
    with pytest.raises(ValueError, match="rebase.steps"):
        rebase_adapter(policy, None, new_policy, "arm2", torch.randn(100, 12), RebaseConfig(steps=0))


def test_gaussian_kl_is_zero_for_equal_policies_and_matches_the_closed_form():
    mean, log_std = torch.tensor([[0.5, -1.0]]), torch.tensor([0.1, -0.3])
    assert gaussian_kl(mean, log_std, mean, log_std).item() == pytest.approx(0.0, abs=1e-7)
    # one dimension: KL(N(0,1) || N(1, 2^2)) = log 2 + (1 + 1) / 8 - 1/2
    kl = gaussian_kl(torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1), torch.log(torch.tensor([2.0])))
    assert kl.item() == pytest.approx(torch.log(torch.tensor(2.0)).item() + 0.25 - 0.5)


def test_residual_rebase_keeps_the_new_trunks_change_and_the_units_own_correction(policy):
    old_adapter = _adapted_unit(policy, "arm2", seed=7)
    new_policy = _next_trunk(policy, seed=8)
    with torch.no_grad():  # the version also moved the type's actions (heads learn too): 3 action stds
        new_policy.heads["arm2"].mean.bias.add_(0.3)
    obs = torch.randn(1500, 12, generator=torch.Generator().manual_seed(9))
    rebased, report = rebase_adapter(policy, old_adapter, new_policy, "arm2", obs, replace(FAST, target="residual"))
    held = torch.randn(500, 12, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        correction = policy.action_mean("arm2", held, old_adapter) - policy.action_mean("arm2", held)
        wanted = new_policy.action_mean("arm2", held) + correction
        got = new_policy.action_mean("arm2", held, rebased)
        old_merged = policy.action_mean("arm2", held, old_adapter)
    std = policy.log_std("arm2", old_adapter).exp()
    assert report.rebased_mean_gap < TOLERANCE_STD
    assert ((got - wanted).abs() / std).mean() < TOLERANCE_STD
    # not the merged target: the trunk's change reaches the unit (the old merged policy is clearly left)
    assert ((got - old_merged).abs() / std).mean() > 4 * TOLERANCE_STD


def test_residual_and_merged_teachers_agree_when_the_trunk_did_not_change(policy):
    old_adapter = _adapted_unit(policy, "arm7", seed=11)
    same = copy.deepcopy(policy)
    obs = torch.randn(200, policy.spec("arm7").num_obs, generator=torch.Generator().manual_seed(12))
    merged = RebaseTeacher(policy, old_adapter, same, "arm7", "merged")
    residual = RebaseTeacher(policy, old_adapter, same, "arm7", "residual")
    torch.testing.assert_close(residual(obs), merged(obs), atol=1e-5, rtol=0)
    torch.testing.assert_close(residual.log_std, merged.log_std, atol=1e-6, rtol=0)


def test_an_unknown_rebase_target_is_refused_naming_the_key(policy):
    with pytest.raises(ValueError, match="rebase.target"):
        rebase_adapter(policy, None, _next_trunk(policy, seed=13), "arm2", torch.randn(100, 12),
                       RebaseConfig(target="trunk"))
