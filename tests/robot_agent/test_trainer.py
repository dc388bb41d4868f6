"""The adapter trainer's side of the guard: candidates, kept versions on disk, rollbacks reaching the learner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robot_agent.config import AdapterTrainingConfig
from robot_agent.trainer import KEEP, ROLL_BACK, SEGMENT, TRUNK, AdapterTraining, anchor_path, candidate_path
from shared_policy.adapter import Adapter, load_adapter, save_adapter
from shared_policy.checkpoint import save_checkpoint
from shared_policy.config import PolicyConfig
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


def _cfg(guard: bool = True) -> AdapterTrainingConfig:
    return AdapterTrainingConfig(steps_per_update=200, epochs=2, critic_warmup_epochs=1, learning_rate=1e-2,
                                 guard=guard)


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


def test_drift_anchor_survives_a_restart_and_moves_with_a_new_trunk(policy, tmp_path):
    path, rng = tmp_path / "adapter.safetensors", np.random.default_rng(3)
    training = AdapterTraining(policy, HW, _cfg(), path, version=0, trunk_version=1)
    start = training.learner.snapshot()
    assert _equal(_anchored(training), start) and anchor_path(path).is_file()
    _until_update(training, policy, rng)
    training.handle(KEEP, 1)
    assert not _equal(_weights(path, policy)[0], start)
    # a restart loads the kept adapter, but drift is still measured from where this trunk's learning began
    restarted = AdapterTraining(policy, HW, _cfg(), path, version=1, trunk_version=1)
    assert _equal(_anchored(restarted), start) and not _equal(restarted.learner.snapshot(), start)
    # a new trunk with its own (rebased) adapter: that adapter is the anchor, also after a restart
    checkpoint = save_checkpoint(tmp_path / "trunk-v2", policy, trunk_version=2)
    rebased = Adapter(policy, HW)
    torch.nn.init.normal_(rebased.head_bias)
    save_adapter(tmp_path / "rebased.safetensors", rebased, 5, 2)
    restarted.handle(TRUNK, (str(checkpoint), str(tmp_path / "rebased.safetensors")))
    assert _equal(_anchored(restarted), rebased.state_dict())
    again = AdapterTraining(policy, HW, _cfg(), path, version=5, trunk_version=2)
    assert _equal(_anchored(again), rebased.state_dict())


def test_a_corrupted_drift_anchor_is_replaced_by_the_current_adapter(policy, tmp_path, caplog):
    path, rng = tmp_path / "adapter.safetensors", np.random.default_rng(4)
    training = AdapterTraining(policy, HW, _cfg(), path, version=0, trunk_version=1)
    _until_update(training, policy, rng)
    training.handle(KEEP, 1)
    raw = bytearray(anchor_path(path).read_bytes())
    raw[-3] ^= 0xFF  # a flipped bit in the weights
    anchor_path(path).write_bytes(bytes(raw))
    restarted = AdapterTraining(policy, HW, _cfg(), path, version=1, trunk_version=1)
    assert "anchor" in caplog.text and "unreadable" in caplog.text
    assert _equal(_anchored(restarted), restarted.learner.snapshot())  # the kept adapter, saved afresh
    assert _equal(load_adapter(anchor_path(path), policy, HW)[0].state_dict(), restarted.learner.snapshot())
