"""One V-trace update of the fleet policy from robots' experience, each step learned as the unit ran it.

A batch holds sequences of one hardware type from several robots. Each column's target log-probabilities
come from the policy with *that robot's* adapter folded in (:func:`shared_policy.actor.actor_layers`): the
trunk learns what the fleet really ran, and the ratio to the recorded behaviour log-probability is 1 where
nothing changed. The adapters are fixed inputs here (a unit trains its own on the robot); the trunk, the
hardware type's stem and head, and the critic learn.

The critic on fleet data sees what a robot records: the recorder fills the sim critic's privileged physics
columns with their nominal value (0), so the value function learns V(observation, nominal physics). Sim
rollouts mixed in keep their true columns; the critic serves both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from shared_policy.gaussian import entropy, log_prob
from shared_policy.policy import FleetPolicy
from shared_policy.vtrace import VTraceConfig, masked_mean, policy_loss, staleness_mask, value_loss, vtrace


class VTraceBatch(Protocol):
    """What the learner reads from a replay batch (``fleet.replay.batch.SequenceBatch`` is one)."""

    hardware: str
    robot_ids: tuple[str, ...]  # (B,)
    weights: torch.Tensor  # (B,)
    obs: torch.Tensor  # [T, B, O]
    critic_obs: torch.Tensor  # [T + 1, B, C]
    actions: torch.Tensor  # [T, B, A]
    log_probs: torch.Tensor  # [T, B] behaviour
    rewards: torch.Tensor
    dones: torch.Tensor
    time_outs: torch.Tensor
    mask: torch.Tensor
    trunk_version: torch.Tensor


@dataclass(frozen=True)
class TensorBatch:
    """A plain batch with :class:`VTraceBatch`'s fields, for feeding the learner without a replay (throughput
    measurements, tests)."""

    hardware: str
    robot_ids: tuple[str, ...]
    weights: torch.Tensor
    obs: torch.Tensor
    critic_obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    time_outs: torch.Tensor
    mask: torch.Tensor
    trunk_version: torch.Tensor


@dataclass
class FleetLearnerConfig:
    """The fleet learner's optimiser and loss weights (V-trace settings under ``vtrace``)."""

    vtrace: VTraceConfig = field(default_factory=VTraceConfig)
    learning_rate: float = 3e-4  # Adam step size; small: the trunk is shared by every robot in the fleet
    max_grad_norm: float = 1.0  # global gradient-norm clip per update
    value_loss_coef: float = 0.5  # weight of the critic's loss beside the policy's
    entropy_coef: float = 0.0  # bonus on the actor's entropy (0: none; the robots' own noise explores)

    def validate(self, prefix: str = "learner") -> None:
        """Raise ValueError naming the key of a wrong value."""
        self.vtrace.validate(f"{prefix}.vtrace")
        for key in ("learning_rate", "max_grad_norm"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{prefix}.{key}: must be > 0, got {getattr(self, key)}")
        for key in ("value_loss_coef", "entropy_coef"):
            if getattr(self, key) < 0:
                raise ValueError(f"{prefix}.{key}: must be >= 0, got {getattr(self, key)}")


@dataclass(frozen=True)
class UpdateResult:
    """What one update did: its losses and diagnostics, and each step's |TD error| for new priorities."""

    metrics: dict[str, float]
    td_abs: torch.Tensor  # [T, B], 0 on masked steps


class VTraceLearner:
    """Adam on the fleet policy from V-trace targets; :meth:`update` takes one batch."""

    def __init__(self, policy: FleetPolicy, cfg: FleetLearnerConfig | None = None, trunk_version: int = 0,
                 grad_hook: Callable[[nn.Module], None] | None = None):
        self.cfg = cfg or FleetLearnerConfig()
        self.cfg.validate()
        self.policy = policy
        self.trunk_version = trunk_version  # the version the policy's weights descend from (staleness)
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=self.cfg.learning_rate)
        self.grad_hook = grad_hook  # e.g. the all-reduce of data-parallel ranks, called after backward

    def target_log_probs(self, batch: VTraceBatch, adapters: Mapping[str, nn.Module | None]) -> torch.Tensor:
        """[T, B] log-probabilities of the recorded actions under the policy, each column with its robot's
        adapter (a robot missing from ``adapters`` ran no adapter)."""
        hw, (t, b, o) = batch.hardware, batch.obs.shape
        out = torch.empty(t, b, dtype=batch.obs.dtype, device=batch.obs.device)
        columns: dict[str, list[int]] = {}
        for i, robot in enumerate(batch.robot_ids):
            columns.setdefault(robot, []).append(i)
        for robot, cols in columns.items():
            adapter = adapters.get(robot)
            idx = torch.as_tensor(cols, device=batch.obs.device)
            obs = batch.obs.index_select(1, idx).reshape(-1, o)
            mean = self.policy.action_mean(hw, obs, adapter)
            log_std = self.policy.log_std(hw, adapter)
            actions = batch.actions.index_select(1, idx).reshape(-1, mean.shape[-1])
            out[:, idx] = log_prob(actions, mean, log_std.exp(), log_std).reshape(t, len(cols))
        return out

    def update(self, batch: VTraceBatch, adapters: Mapping[str, nn.Module | None]) -> UpdateResult:
        """One gradient step on ``batch``; adapters are held fixed (no gradient reaches them)."""
        frozen = [p for a in adapters.values() if a is not None for p in a.parameters() if p.requires_grad]
        for p in frozen:  # fixed inputs here; given back as they were, for a caller that trains them later
            p.requires_grad_(False)
        try:
            return self._update(batch, adapters)
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def _update(self, batch: VTraceBatch, adapters: Mapping[str, nn.Module | None]) -> UpdateResult:
        cfg, hw = self.cfg, batch.hardware
        mask = batch.mask * staleness_mask(batch.trunk_version, self.trunk_version, cfg.vtrace.max_trunk_staleness)
        target = self.target_log_probs(batch, adapters)
        t1, b, c = batch.critic_obs.shape
        all_values = self.policy.value(hw, batch.critic_obs.reshape(-1, c)).reshape(t1, b)
        values, next_values = all_values[:-1], all_values[1:]
        returns = vtrace(batch.log_probs, target, batch.rewards, values, next_values, batch.dones, batch.time_outs,
                         cfg.vtrace, mask)
        pi_loss = policy_loss(target, batch.log_probs, returns, mask, cfg.vtrace, batch.weights)
        v_loss = value_loss(values, returns, mask, batch.weights)
        ent = entropy(self.policy.log_std(hw))
        loss = pi_loss + cfg.value_loss_coef * v_loss - cfg.entropy_coef * ent
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = self._apply_gradients()
        td_abs = torch.where(mask > 0, (returns.vs - values.detach()).abs(), torch.zeros_like(values)).detach()
        metrics = {"policy_loss": pi_loss.item(), "value_loss": v_loss.item(), "entropy": ent.item(),
                   "grad_norm": float(grad_norm), "steps_used": mask.sum().item(),
                   "steps_stale": (batch.mask.sum() - mask.sum()).item(),
                   "rho_mean": masked_mean(returns.rhos, mask).item()}
        return UpdateResult(metrics, td_abs)

    def update_without_batch(self) -> None:
        """The step of a data-parallel rank that has no batch of a hardware type this time: no gradients of its
        own, the other ranks' through ``grad_hook``, so every rank takes the same optimiser step."""
        self.optimizer.zero_grad(set_to_none=True)
        self._apply_gradients()

    def _apply_gradients(self) -> float:
        if self.grad_hook is not None:
            self.grad_hook(self.policy)
        grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        return float(grad_norm)
