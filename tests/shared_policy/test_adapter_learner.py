"""The on-robot adapter learner and the merged inference actor."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from shared_policy.actor import MergedActor
from shared_policy.adapter import Adapter, AdapterFileError, load_adapter, save_adapter
from shared_policy.adapter_learner import AdapterLearner
from shared_policy.config import AdapterLearnerConfig
from tests.shared_policy.conftest import reference_normal

HW = "arm2"


def _segment(policy, n: int, rng: np.random.Generator, reward_of, adapter=None) -> dict[str, np.ndarray]:
    """Transitions of the (adapted) policy's own behaviour, rewarded by ``reward_of(actions)``."""
    spec = policy.spec(HW)
    obs = rng.normal(size=(n, spec.num_obs)).astype(np.float32)
    with torch.no_grad():
        dist = reference_normal(policy, HW, torch.from_numpy(obs), adapter)
        actions = dist.sample()
        logp = dist.log_prob(actions).sum(-1)
    dones = np.zeros(n, np.float32)
    dones[-1] = 1.0
    return {"obs": obs, "critic_obs": rng.normal(size=(n + 1, spec.num_critic_obs)).astype(np.float32),
            "actions": actions.numpy(), "log_probs": logp.numpy(), "rewards": reward_of(actions.numpy()),
            "dones": dones, "time_outs": dones.copy()}


def test_learner_moves_the_adapter_toward_reward_and_leaves_the_actor_bit_identical(policy):
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    learner = AdapterLearner(policy, HW, AdapterLearnerConfig(steps_per_update=512, critic_warmup_epochs=2))
    rng = np.random.default_rng(0)
    target = np.array([0.8, -0.8], np.float32)  # the unit rewards this constant action

    def reward(a):
        return -np.square(a - target).sum(1).astype(np.float32)

    def mean_action():
        with torch.no_grad():
            return policy.action_mean(HW, torch.zeros(1, 12), learner.adapter)[0].numpy()

    start = np.square(mean_action() - target).sum()
    for _ in range(6):
        while not learner.ready():
            learner.add(_segment(learner.policy, 128, rng, reward, learner.adapter))
        stats = learner.update()
    assert np.isfinite(list(stats.values())).all()
    assert np.square(mean_action() - target).sum() < 0.5 * start
    for k, v in policy.state_dict().items():  # the caller's policy: nothing changed
        assert torch.equal(v, before[k]), k
    for p_learn, p_orig in zip(learner.policy.actor_parameters(HW), policy.actor_parameters(HW), strict=True):
        assert torch.equal(p_learn, p_orig)  # the learner's copy of the actor: frozen


def test_learner_refuses_malformed_segments(policy):
    learner = AdapterLearner(policy, HW)
    seg = _segment(policy, 16, np.random.default_rng(0), lambda a: np.zeros(len(a), np.float32))
    with pytest.raises(ValueError, match="critic_obs"):
        learner.add({**seg, "critic_obs": seg["critic_obs"][:-1]})
    with pytest.raises(ValueError, match="NaN"):
        learner.add({**seg, "rewards": np.full(16, np.nan, np.float32)})
    with pytest.raises(ValueError, match="lacks"):
        learner.add({k: v for k, v in seg.items() if k != "log_probs"})
    assert learner.buffered_steps == 0


def test_merged_actor_computes_the_adapted_actor(policy):
    adapter = Adapter(policy, HW)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.05 * torch.randn_like(p))
    obs = torch.randn(64, 12)
    merged = MergedActor(policy, HW, adapter)
    torch.testing.assert_close(merged(obs), policy.action_mean(HW, obs, adapter), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged.log_std, policy.log_std(HW, adapter))


def test_adapter_file_round_trip_and_corruption_refused(policy, tmp_path):
    adapter = Adapter(policy, HW)
    with torch.no_grad():
        adapter.head_bias.fill_(0.25)
    path = save_adapter(tmp_path / "adapter.safetensors", adapter, version=3, trunk_version=9)
    loaded, meta = load_adapter(path, policy, HW)
    assert meta["version"] == "3" and meta["trunk_version"] == "9"
    assert torch.equal(loaded.head_bias, adapter.head_bias)
    with pytest.raises(AdapterFileError, match="arm7"):
        load_adapter(path, policy, "arm7")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(AdapterFileError, match="corrupted"):
        load_adapter(path, policy, HW)


def test_steps_of_an_older_adapter_are_down_weighted_and_fresh_steps_weigh_one(policy):
    learner = AdapterLearner(policy, HW, AdapterLearnerConfig(steps_per_update=256))
    rng = np.random.default_rng(0)
    older = Adapter(policy, HW)
    with torch.no_grad():
        older.head_bias.fill_(0.5)  # the version that acted while the learner moved on

    def zero(a):
        return np.zeros(len(a), np.float32)

    learner.add(_segment(learner.policy, 128, rng, zero, learner.adapter))  # the current adapter's own steps
    learner.add(_segment(learner.policy, 128, rng, zero, older))
    batch = learner._batch()
    fresh, stale = batch["weights"][:128], batch["weights"][128:]
    torch.testing.assert_close(fresh, torch.ones(128), atol=1e-5, rtol=0)
    assert stale.max() <= 1.0 and stale.mean() < 0.9
    assert 0.0 < learner.update()["behaviour_weight"] < 1.0


def test_replay_window_learns_from_the_last_updates_steps_and_drops_older_ones(policy):
    cfg = AdapterLearnerConfig(steps_per_update=256, replay_updates=2, epochs=1, critic_warmup_epochs=1)
    learner = AdapterLearner(policy, HW, cfg)
    rng = np.random.default_rng(0)

    def zero(a):
        return np.zeros(len(a), np.float32)

    sizes = []
    for _ in range(3):
        learner.add(_segment(learner.policy, 256, rng, zero, learner.adapter))
        sizes.append(learner.update()["steps"])
    assert sizes == [256.0, 512.0, 512.0]  # the first update has nothing to replay; the oldest steps leave
    assert learner.buffered_steps == 0 and sum(len(s["rewards"]) for s in learner.replayed) == 256


def _learn_toward(learner: AdapterLearner, policy, updates: int, seed: int = 0) -> list[dict[str, float]]:
    """``updates`` updates on a reward for a constant action far from the policy's."""
    rng, target = np.random.default_rng(seed), np.array([0.8, -0.8], np.float32)
    out = []
    for _ in range(updates):
        while not learner.ready():
            learner.add(_segment(learner.policy, 128, rng, lambda a: -np.square(a - target).sum(1).astype(np.float32),
                                 learner.adapter))
        out.append(learner.update())
    return out


def test_drift_budget_holds_the_policy_within_its_kl_of_the_anchor(policy):
    cfg = dict(steps_per_update=512, critic_warmup_epochs=2)
    free = AdapterLearner(policy, HW, AdapterLearnerConfig(**cfg))
    free_stats = _learn_toward(free, policy, 6)
    budget = free_stats[-1]["drift_kl"] / 10  # well inside what unbounded learning reaches
    bounded = AdapterLearner(policy, HW, AdapterLearnerConfig(**cfg, drift_kl=budget))
    stats = _learn_toward(bounded, policy, 6)
    obs = torch.from_numpy(np.random.default_rng(7).normal(size=(512, 12)).astype(np.float32))
    assert free.drift_kl(obs) > 5 * budget  # unbounded, it walks far from where it started
    assert all(s["drift_kl"] <= budget * 1.0001 for s in stats)  # on each update's own observations
    assert min(s["drift_scale"] for s in stats) < 1.0  # the budget cut some updates back
    assert 0.5 * budget < stats[-1]["drift_kl"]  # it uses the budget rather than freezing at the anchor
    assert bounded.drift_kl(obs) < 3 * budget  # and stays near it on observations it did not learn from


def test_drift_is_measured_from_the_given_anchor_not_the_starting_adapter(policy):
    cfg = AdapterLearnerConfig(steps_per_update=512, critic_warmup_epochs=2)
    learned = AdapterLearner(policy, HW, cfg)
    _learn_toward(learned, policy, 3)
    obs = torch.from_numpy(np.random.default_rng(7).normal(size=(256, 12)).astype(np.float32))
    assert learned.drift_kl(obs) > 1e-3  # from where it started
    anchored = AdapterLearner(policy, HW, cfg, Adapter(policy, HW), anchor=learned.adapter)
    assert anchored.drift_kl(obs) > 1e-3  # a fresh adapter, measured from the learned one
    at_anchor = AdapterLearner(policy, HW, cfg, learned.adapter, anchor=learned.adapter)
    assert at_anchor.drift_kl(obs) == pytest.approx(0.0, abs=1e-9)


def test_drift_is_kl_from_the_anchor_to_the_adapter_worked_by_hand(policy):
    anchor, wider = Adapter(policy, HW), Adapter(policy, HW)
    with torch.no_grad():
        wider.log_std_delta.fill_(np.log(2.0))  # same means, twice the std on both actions
    learner = AdapterLearner(policy, HW, adapter=wider, anchor=anchor)
    obs = torch.zeros(4, 12)
    # KL(anchor || adapter) per action: log(2) + 1 / (2 * 4) - 1/2 = 0.318 (the other way round it is 0.807)
    assert learner.drift_kl(obs) == pytest.approx(2 * (np.log(2.0) + 0.125 - 0.5), rel=1e-5)


def test_frozen_log_std_stays_as_received_while_the_mean_learns(policy):
    cfg = dict(steps_per_update=512, critic_warmup_epochs=2)
    given = Adapter(policy, HW)
    with torch.no_grad():
        given.log_std_delta.fill_(-0.3)  # what the trunk's rebased adapter brought
    free = AdapterLearner(policy, HW, AdapterLearnerConfig(**cfg), copy.deepcopy(given))
    _learn_toward(free, policy, 4)
    frozen = AdapterLearner(policy, HW, AdapterLearnerConfig(**cfg, learn_log_std=False), copy.deepcopy(given))
    start = frozen.snapshot()
    _learn_toward(frozen, policy, 4)
    # learning on its own moves the noise (the reward for a constant action narrows it) ...
    assert not torch.allclose(free.adapter.log_std_delta, given.log_std_delta, atol=1e-3)
    # ... held, it stays bit for bit as received, through updates and a rollback's restore, while the mean learns
    assert torch.equal(frozen.adapter.log_std_delta, given.log_std_delta)
    assert not torch.allclose(frozen.adapter.head_bias, start["head_bias"], atol=1e-3)
    frozen.restore(start)
    # the rebuilt optimiser leaves it out, whatever its requires_grad says (each guards the other's regression)
    assert all(p is not frozen.adapter.log_std_delta for g in frozen.actor_opt.param_groups for p in g["params"])
    _learn_toward(frozen, policy, 1, seed=1)
    assert torch.equal(frozen.adapter.log_std_delta, given.log_std_delta)
