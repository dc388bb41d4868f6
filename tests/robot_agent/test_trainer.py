"""The adapter trainer's side of the guard: candidates, kept versions on disk, rollbacks reaching the learner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robot_agent.config import AdapterTrainingConfig
from robot_agent.drift_anchor import KEPT_ANCHORS, anchor_path, load_anchor
from robot_agent.trainer import KEEP, ROLL_BACK, SEGMENT, TRUNK, AdapterTraining, candidate_path
from robot_agent.trunk_adapter import own_adapter_path
from shared_policy.adapter import Adapter, load_adapter, save_adapter
from shared_policy.checkpoint import save_checkpoint
from shared_policy.config import AdapterConfig, PolicyConfig
from shared_policy.policy import FleetPolicy, HardwareSpec

HW = "arm2"
SPEC = HardwareSpec(HW, num_obs=12, num_actions=2, num_critic_obs=24)


@pytest.fixture()
def policy() -> FleetPolicy:
    torch.manual_seed(0)
    return FleetPolicy(PolicyConfig(latent_dim=32, trunk_hidden=[32], stem_hidden=[32], critic_hidden=[32]),
                       {HW: SPEC})


def _segment(policy: FleetPolicy, rng: np.random.Generator, n: int = 100) -> dict[str, np.ndarray]:
    obs = rng.normal(size=(n, SPEC.num_obs)).astype(np.float32)
    with torch.no_grad():
        mean = policy.action_mean(HW, torch.from_numpy(obs))
        dist = torch.distributions.Normal(mean, policy.log_std(HW).exp().expand_as(mean))  # the behaviour policy
        actions = dist.sample()
    dones = np.zeros(n, np.float32)
    dones[-1] = 1.0
    return {"obs": obs, "critic_obs": rng.normal(size=(n + 1, SPEC.num_critic_obs)).astype(np.float32),
            "actions": actions.numpy(), "log_probs": dist.log_prob(actions).sum(-1).numpy(),
            "rewards": -np.square(actions.numpy() - 0.7).sum(1).astype(np.float32), "dones": dones,
            "time_outs": dones.copy()}


def _until_update(training: AdapterTraining, policy: FleetPolicy, rng: np.random.Generator) -> dict:
    for _ in range(10):
        reports = [r for r in training.handle(SEGMENT, _segment(policy, rng)) if "version" in r]
        if reports:
            return reports[0]
    raise AssertionError("no update after 10 segments")


def _weights(path: str | Path, policy: FleetPolicy) -> tuple[dict[str, torch.Tensor], int]:
    adapter, meta = load_adapter(path, policy, HW)
    return adapter.state_dict(), int(meta["version"])


def _cfg(guard: bool = True, drift_kl: float = 0.0) -> AdapterTrainingConfig:
    return AdapterTrainingConfig(steps_per_update=200, epochs=2, critic_warmup_epochs=1, learning_rate=1e-2,
                                 guard=guard, drift_kl=drift_kl)


def _drift() -> AdapterTrainingConfig:
    return _cfg(drift_kl=0.05)


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rollback_returns_the_learner_to_the_kept_weights_and_only_kept_versions_reach_the_file(policy, tmp_path):
    path = tmp_path / "adapter.safetensors"
    rng = np.random.default_rng(0)
    training = AdapterTraining(policy, HW, _cfg(), path, version=0, trunk_version=3)
    start = training.learner.snapshot()
    first = _until_update(training, policy, rng)
    assert first["version"] == 1 and first["path"] == str(candidate_path(path))
    v1, _ = _weights(first["path"], policy)
    assert not path.exists()  # a candidate is not what a restart loads
    training.handle(KEEP, 1)
    kept, version = _weights(path, policy)
    assert version == 1 and _equal(kept, v1)

    second = _until_update(training, policy, rng)
    assert second["version"] == 2 and not _equal(training.learner.snapshot(), v1)
    training.handle(ROLL_BACK, 2)
    assert _equal(training.learner.snapshot(), v1)  # the learner goes on from the kept version, not from 2
    assert not _equal(v1, start)
    assert _weights(path, policy)[1] == 1  # the rejected version never reached the kept file
    third = _until_update(training, policy, rng)
    assert (third["version"], third["generation"]) == (3, 1)  # numbers go on; the rollback is on record


def test_version_numbers_are_not_reused_after_a_restart(policy, tmp_path):
    path = tmp_path / "adapter.safetensors"
    rng = np.random.default_rng(1)
    training = AdapterTraining(policy, HW, _cfg(), path, version=0, trunk_version=0)
    _until_update(training, policy, rng)
    _until_update(training, policy, rng)  # versions 1 and 2 were handed out (and may sit in the spool)...
    restarted = AdapterTraining(policy, HW, _cfg(), path, version=0, trunk_version=0)  # ...but none was kept
    assert _until_update(restarted, policy, rng)["version"] == 3


def test_without_the_guard_every_update_is_the_kept_file(policy, tmp_path):
    path = tmp_path / "adapter.safetensors"
    training = AdapterTraining(policy, HW, _cfg(guard=False), path, version=4, trunk_version=0)
    report = _until_update(training, policy, np.random.default_rng(2))
    assert report["path"] == str(path) and _weights(path, policy)[1] == 5
    assert not candidate_path(path).exists()


def _anchored(training: AdapterTraining) -> dict[str, torch.Tensor]:
    return training.learner.anchor.state_dict()


def _adapter_file(policy: FleetPolicy, path: Path, version: int, trunk_version: int) -> Adapter:
    adapter = Adapter(policy, HW)
    torch.nn.init.normal_(adapter.head_bias)  # unlike any other
    save_adapter(path, adapter, version, trunk_version)
    return adapter


def test_drift_anchor_survives_restarts_and_returns_to_a_trunk_and_moves_with_a_new_one(policy, tmp_path):
    path, rng = tmp_path / "adapter.safetensors", np.random.default_rng(3)
    training = AdapterTraining(policy, HW, _drift(), path, version=0, trunk_version=1)
    start = training.learner.snapshot()
    assert _equal(_anchored(training), start) and anchor_path(path, 1).is_file()
    _until_update(training, policy, rng)
    training.handle(KEEP, 1)
    assert not _equal(_weights(path, policy)[0], start)
    # a restart loads the kept adapter, but drift is still measured from where this trunk's learning began
    restarted = AdapterTraining(policy, HW, _drift(), path, version=1, trunk_version=1)
    assert _equal(_anchored(restarted), start) and not _equal(restarted.learner.snapshot(), start)
    # a new trunk with its own (rebased) adapter: that adapter is the anchor, also after a restart
    v1 = save_checkpoint(tmp_path / "trunk-v1", policy, trunk_version=1)
    v2 = save_checkpoint(tmp_path / "trunk-v2", policy, trunk_version=2)
    rebased = _adapter_file(policy, tmp_path / "rebased.safetensors", 5, 2)
    restarted.handle(TRUNK, (str(v2), str(tmp_path / "rebased.safetensors")))
    assert _equal(_anchored(restarted), rebased.state_dict())
    _until_update(restarted, policy, rng)
    restarted.handle(KEEP, 6)  # the kept file moves on from the rebased adapter; the anchor does not
    again = AdapterTraining(policy, HW, _drift(), path, version=6, trunk_version=2)
    assert _equal(_anchored(again), rebased.state_dict()) and not _equal(again.learner.snapshot(), rebased.state_dict())
    # back on trunk 1 (a canary rolled back) with the adapter it had there: the budget is trunk 1's, from the start
    own = _adapter_file(policy, tmp_path / "own.safetensors", 1, 1)
    again.handle(TRUNK, (str(v1), str(tmp_path / "own.safetensors")))
    assert _equal(again.learner.snapshot(), own.state_dict()) and _equal(_anchored(again), start)


def test_the_anchor_of_a_trunk_a_canary_keeps_returning_to_is_never_pruned(policy, tmp_path):
    path = tmp_path / "adapter.safetensors"
    home = Adapter(policy, HW)
    torch.nn.init.normal_(home.head_bias)
    load_anchor(path, policy, HW, 1, home, 0)
    for candidate in range(2, 3 + 2 * KEPT_ANCHORS):  # a canary on candidate after candidate, back home each time
        load_anchor(path, policy, HW, candidate, Adapter(policy, HW), 0)
        back = load_anchor(path, policy, HW, 1, Adapter(policy, HW), 0)  # its drifted adapter: not the anchor
        assert _equal(back.state_dict(), home.state_dict()), candidate
    kept = sorted(p.name for p in tmp_path.glob("adapter.anchor-v*.safetensors"))
    assert len(kept) == KEPT_ANCHORS and anchor_path(path, 1).name in kept  # the least recently used went


def test_without_a_drift_budget_no_anchor_is_kept(policy, tmp_path):
    path = tmp_path / "adapter.safetensors"
    training = AdapterTraining(policy, HW, _cfg(), path, version=0, trunk_version=1)
    _until_update(training, policy, np.random.default_rng(7))
    assert not list(tmp_path.glob("adapter.anchor-v*"))


def test_a_trainer_restarted_before_it_took_a_new_trunk_learns_from_that_trunks_adapter(policy, tmp_path):
    path, rng = tmp_path / "adapter.safetensors", np.random.default_rng(8)
    training = AdapterTraining(policy, HW, _drift(), path, version=0, trunk_version=1)
    _until_update(training, policy, rng)
    training.handle(KEEP, 1)  # the adapter file: trunk 1's, learned on
    # the agent swapped to trunk 2 and saved the adapter it runs there, then the process died before TRUNK
    own = _adapter_file(policy, own_adapter_path(tmp_path, 2), 9, 2)
    restarted = AdapterTraining(policy, HW, _drift(), path, version=1, trunk_version=2)
    assert _equal(restarted.learner.snapshot(), own.state_dict())  # not trunk 1's adapter
    assert _equal(_anchored(restarted), own.state_dict())
    assert _weights(path, policy)[1] == 9 and load_adapter(path, policy, HW)[1]["trunk_version"] == "2"


def test_a_corrupted_drift_anchor_is_replaced_by_the_current_adapter(policy, tmp_path, caplog):
    path, rng = tmp_path / "adapter.safetensors", np.random.default_rng(4)
    training = AdapterTraining(policy, HW, _drift(), path, version=0, trunk_version=1)
    _until_update(training, policy, rng)
    training.handle(KEEP, 1)
    raw = bytearray(anchor_path(path, 1).read_bytes())
    raw[-3] ^= 0xFF  # a flipped bit in the weights
    anchor_path(path, 1).write_bytes(bytes(raw))
    restarted = AdapterTraining(policy, HW, _drift(), path, version=1, trunk_version=1)
    assert "anchor" in caplog.text and "unreadable" in caplog.text
    assert _equal(_anchored(restarted), restarted.learner.snapshot())  # the kept adapter, saved afresh
    assert _equal(load_adapter(anchor_path(path, 1), policy, HW)[0].state_dict(), restarted.learner.snapshot())


def test_an_anchor_of_another_rank_is_replaced_not_interpolated_against(policy, tmp_path, caplog):
    path = tmp_path / "adapter.safetensors"
    save_adapter(path, Adapter(policy, HW), 0, 1)
    save_adapter(anchor_path(path, 1), Adapter(policy, HW, AdapterConfig(rank=2)), 0, 1)
    cfg = _drift()
    cfg.drift_kl = 1e-4  # every update is cut back: an interpolation towards the anchor
    training = AdapterTraining(policy, HW, cfg, path, version=0, trunk_version=1)  # rank 4 by config
    assert "another rank or alpha" in caplog.text
    assert _equal(_anchored(training), training.learner.snapshot())
    report = _until_update(training, policy, np.random.default_rng(5))  # learning runs against the replaced anchor
    assert report["stats"]["drift_scale"] < 1.0 and report["stats"]["drift_kl"] <= 1e-4 * 1.0001


def test_an_anchor_of_another_alpha_is_replaced(policy, tmp_path, caplog):
    path = tmp_path / "adapter.safetensors"
    save_adapter(path, Adapter(policy, HW), 0, 1)
    save_adapter(anchor_path(path, 1), Adapter(policy, HW, AdapterConfig(rank=4, alpha=2.0)), 0, 1)
    training = AdapterTraining(policy, HW, _drift(), path, version=0, trunk_version=1)  # alpha 1 by config
    assert "another rank or alpha" in caplog.text and _equal(_anchored(training), training.learner.snapshot())


def test_a_fresh_adapter_is_its_own_anchor_and_a_rollback_keeps_the_anchor(policy, tmp_path):
    path, rng = tmp_path / "adapter.safetensors", np.random.default_rng(6)
    first = AdapterTraining(policy, HW, _drift(), path, version=0, trunk_version=1)
    _until_update(first, policy, rng)
    first.handle(KEEP, 1)
    start = _anchored(first)
    report = _until_update(first, policy, rng)
    first.handle(ROLL_BACK, report["version"])
    assert _equal(_anchored(first), start)  # a rollback moves the adapter back, never the anchor
    path.unlink()  # the operator moved the adapter away: the unit starts afresh on this trunk
    fresh = AdapterTraining(policy, HW, _drift(), path, version=0, trunk_version=1)
    assert _equal(_anchored(fresh), fresh.learner.snapshot())


@pytest.mark.parametrize("guard", [True, False])
def test_a_swapped_restart_neither_reuses_version_numbers_nor_lets_stale_updates_through(policy, tmp_path, guard):
    path, rng = tmp_path / "adapter.safetensors", np.random.default_rng(9)
    training = AdapterTraining(policy, HW, _cfg(guard=guard), path, version=0, trunk_version=1)
    for _ in range(4):
        report = _until_update(training, policy, rng)
        if guard:
            training.handle(KEEP, report["version"])  # v1-v4 issued (and recorded in the spool)
    _adapter_file(policy, own_adapter_path(tmp_path, 2), 1, 2)  # the unit returns to trunk 2 with its own v1
    restarted = AdapterTraining(policy, HW, _cfg(guard=guard), path, version=4, trunk_version=2)
    first = _until_update(restarted, policy, rng)
    assert first["version"] == 5  # not 2: v2-v4 were issued on trunk 1
    assert first["generation"] == 0  # a fresh process's agent side counts no rollback: its reports are current
