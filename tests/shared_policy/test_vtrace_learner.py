"""The fleet learner's update: each column learned with its unit's adapter, stale data ignored, and learning."""

from __future__ import annotations

import copy

import pytest
import torch

from shared_policy.adapter import Adapter
from shared_policy.gaussian import log_prob
from shared_policy.vtrace import VTraceConfig
from shared_policy.vtrace_learner import FleetLearnerConfig, TensorBatch, VTraceLearner

HW = "arm2"


def _acted(policy, adapters: dict, robots: tuple[str, ...], t: int = 4, version: int = 0,
           seed: int = 0) -> TensorBatch:
    """Sequences each robot acted with its own merged policy (behaviour log-probs as its agent records them);
    reward: the first action's value, one-step episodes."""
    gen = torch.Generator().manual_seed(seed)
    spec = policy.spec(HW)
    b = len(robots)
    obs = torch.randn(t, b, spec.num_obs, generator=gen)
    actions, logp = torch.empty(t, b, spec.num_actions), torch.empty(t, b)
    with torch.no_grad():
        for i, robot in enumerate(robots):
            mean = policy.action_mean(HW, obs[:, i], adapters.get(robot))
            log_std = policy.log_std(HW, adapters.get(robot))
            a = mean + log_std.exp() * torch.randn(mean.shape, generator=gen)
            actions[:, i], logp[:, i] = a, log_prob(a, mean, log_std.exp(), log_std)
    ones = torch.ones(t, b)
    return TensorBatch(HW, robots, torch.ones(b), obs, torch.randn(t + 1, b, spec.num_critic_obs, generator=gen),
                       actions, logp, actions[..., 0].clone(), ones, torch.zeros(t, b), ones.clone(),
                       torch.full((t, b), version, dtype=torch.int64))


def _unit_adapter(policy, seed: int) -> Adapter:
    torch.manual_seed(seed)
    adapter = Adapter(policy, HW)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return adapter


def test_each_column_is_scored_with_its_own_units_adapter(policy):
    adapters = {"unit-a": _unit_adapter(policy, 1), "unit-b": _unit_adapter(policy, 2), "unit-c": None}
    batch = _acted(policy, adapters, ("unit-a", "unit-b", "unit-c", "unit-a"))
    learner = VTraceLearner(policy)
    with torch.no_grad():
        target = learner.target_log_probs(batch, adapters)
        torch.testing.assert_close(target, batch.log_probs, atol=1e-4, rtol=1e-4)  # on-policy: every ratio is 1
        bare = learner.target_log_probs(batch, {})  # as if the units ran the bare trunk
    assert (bare[:, [0, 1, 3]] - batch.log_probs[:, [0, 1, 3]]).abs().mean() > 0.1
    torch.testing.assert_close(bare[:, 2], batch.log_probs[:, 2], atol=1e-4, rtol=1e-4)


def test_an_update_moves_the_trunk_and_leaves_the_adapters_alone(policy):
    adapters = {"unit-a": _unit_adapter(policy, 3)}
    before_adapter = copy.deepcopy(adapters["unit-a"].state_dict())
    before_trunk = [p.detach().clone() for p in policy.trunk.parameters()]
    result = VTraceLearner(policy).update(_acted(policy, adapters, ("unit-a", "unit-a")), adapters)
    assert any(not torch.equal(p, q) for p, q in zip(policy.trunk.parameters(), before_trunk, strict=True))
    for key, value in adapters["unit-a"].state_dict().items():
        assert torch.equal(value, before_adapter[key]), key
    assert all(p.requires_grad for p in adapters["unit-a"].parameters())  # still trainable by its own learner
    assert result.metrics["steps_used"] == 8 and result.metrics["rho_mean"] == pytest.approx(1.0, abs=1e-4)
    assert result.td_abs.shape == (4, 2) and torch.isfinite(result.td_abs).all()


def test_a_batch_older_than_the_staleness_limit_changes_nothing(policy):
    learner = VTraceLearner(policy, FleetLearnerConfig(vtrace=VTraceConfig(max_trunk_staleness=2)), trunk_version=5)
    before = copy.deepcopy(policy.state_dict())
    result = learner.update(_acted(policy, {}, ("u", "v"), version=2), {})  # 3 versions behind
    assert result.metrics["steps_used"] == 0 and result.metrics["steps_stale"] == 8
    for key, value in policy.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_the_learner_improves_the_fleets_return(policy):
    # reward = the first action: a fleet acting with its adapters, the trunk learning from what they did
    torch.manual_seed(0)
    adapters = {"unit-a": _unit_adapter(policy, 4), "unit-b": _unit_adapter(policy, 5)}
    learner = VTraceLearner(policy, FleetLearnerConfig(learning_rate=3e-3))
    probe = _acted(policy, adapters, ("unit-a", "unit-b") * 8, t=8, seed=99)

    def fleet_mean_action() -> float:
        with torch.no_grad():
            return float(sum(policy.action_mean(HW, probe.obs[:, i], adapters[r])[:, 0].mean()
                             for i, r in enumerate(probe.robot_ids)) / len(probe.robot_ids))

    start = fleet_mean_action()
    for step in range(60):
        learner.update(_acted(policy, adapters, ("unit-a", "unit-b") * 4, t=8, seed=step), adapters)
    assert fleet_mean_action() > start + 0.5


def test_bad_learner_settings_name_their_key():
    with pytest.raises(ValueError, match="learner.learning_rate"):
        FleetLearnerConfig(learning_rate=0.0).validate()
    with pytest.raises(ValueError, match="learner.entropy_coef"):
        FleetLearnerConfig(entropy_coef=-1.0).validate()


def _mean_abs_log_ratio_after_replaying(policy, loss: str | None, updates: int = 48) -> float:
    """One stored batch learned from ``updates`` times (a fleet round's replay), then how far the policy's
    log-probabilities of its actions have moved from the behaviour's (``loss`` None: the default config)."""
    torch.manual_seed(0)
    batch = _acted(policy, {}, tuple(f"u{i}" for i in range(8)), t=16, seed=1)
    vtrace_cfg = VTraceConfig() if loss is None else VTraceConfig(policy_loss=loss)
    learner = VTraceLearner(policy, FleetLearnerConfig(learning_rate=3e-3, vtrace=vtrace_cfg))
    for _ in range(updates):
        learner.update(batch, {})
    with torch.no_grad():
        return float((learner.target_log_probs(batch, {}) - batch.log_probs).abs().mean())


def test_replaying_one_batch_keeps_the_default_learner_near_the_policy_that_acted(policy):
    # APPO's clip bounds the drift (clip 0.2: |log ratio| about 0.2); IMPALA's gradient on replayed data does not
    untouched = copy.deepcopy(policy)
    assert _mean_abs_log_ratio_after_replaying(policy, None) < 0.6
    assert _mean_abs_log_ratio_after_replaying(untouched, "vtrace") > 2.0
