"""Adapter rebasing: carry a unit's adaptation over to a new trunk version.

An adapter is trained against one trunk. Run unchanged on the next trunk it adds its deltas to weights
it never saw, and the unit's behaviour jumps. Rebasing distils the unit's old merged policy (old trunk +
its adapter) into a new adapter over the new trunk, on the unit's own recorded observations: the new
adapter starts from the old one and is trained to minimise KL(old merged policy || new trunk + adapter)
over those observations, with the trunk, stems and heads frozen. The robot then receives the new trunk
and its rebased adapter together and goes on learning on-robot from there.

What the new adapter is distilled towards (``RebaseConfig.target``):

- ``merged``: the old merged policy itself. The unit acts exactly as before the update, so it also gets none
  of what the new trunk learned until its own adapter learning finds it.
- ``residual``: the new trunk plus the unit's own correction, carried over in action space::

      teacher(x) = new(x) + (old_merged(x) - old(x))      (means; log-stds alike)

  The adapter's contribution on the old trunk is kept and the trunk's improvement passes through. Where the
  trunk did not change, both targets are the old merged policy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from shared_policy.actor import MergedActor
from shared_policy.adapter import Adapter
from shared_policy.policy import FleetPolicy

TARGETS = ("merged", "residual")


@dataclass
class RebaseConfig:
    """How hard to distil: steps of Adam on minibatches of the unit's observations."""

    steps: int = 400  # optimiser steps; the tests' small policies converge in ~200
    batch_size: int = 512  # observations per step (sampled with replacement from the unit's data)
    learning_rate: float = 3e-3  # Adam step size on the adapter's parameters
    holdout_fraction: float = 0.2  # observations kept out of training to report the fit honestly
    seed: int = 0  # the hold-out split and minibatch draws
    # merged: reproduce the old merged policy | residual: the new trunk plus the adapter's old correction
    target: str = "merged"

    def validate(self) -> None:
        """Raise ValueError naming the first bad key."""
        if self.target not in TARGETS:
            raise ValueError(f"rebase.target: must be one of {TARGETS}, got {self.target!r}")
        for key in ("steps", "batch_size", "learning_rate"):
            if not getattr(self, key) > 0:
                raise ValueError(f"rebase.{key}: must be > 0, got {getattr(self, key)}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"rebase.holdout_fraction: must be in [0, 1), got {self.holdout_fraction}")


@dataclass(frozen=True)
class RebaseReport:
    """How close the new trunk + rebased adapter comes to its teacher (``RebaseConfig.target``) on held-out
    observations.

    Distances are mean-action differences in units of the old policy's action std (so 0.1 means a tenth of
    the exploration noise the old policy used), and the per-observation Gaussian KL."""

    naive_mean_gap: float  # the old adapter run unchanged on the new trunk, from the teacher
    rebased_mean_gap: float
    rebased_max_gap: float
    rebased_kl: float
    observations: int


def gaussian_kl(mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor,
                log_std_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over actions: (B,)."""
    var_p, var_q = (2 * log_std_p).exp(), (2 * log_std_q).exp()
    return (log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2 * var_q) - 0.5).sum(-1)


def _gap(teacher_mean: torch.Tensor, teacher_std: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    return ((mean - teacher_mean).abs() / teacher_std).mean(-1)  # (B,)


class RebaseTeacher:
    """What a rebased adapter is distilled towards (module docstring): mean actions and the log-std."""

    def __init__(self, old_policy: FleetPolicy, old_adapter: Adapter | None, new_policy: FleetPolicy, hardware: str,
                 target: str):
        self.merged = MergedActor(old_policy, hardware, old_adapter)
        self.log_std = self.merged.log_std
        self.correction: tuple[MergedActor, MergedActor] | None = None
        if target == "residual":
            old_bare, new_bare = MergedActor(old_policy, hardware), MergedActor(new_policy, hardware)
            self.correction = (old_bare, new_bare)
            self.log_std = new_bare.log_std + (self.merged.log_std - old_bare.log_std)

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        """The teacher's mean actions (B, A) on ``obs`` (B, O)."""
        if self.correction is None:
            return self.merged(obs)
        old_bare, new_bare = self.correction
        return new_bare(obs) + (self.merged(obs) - old_bare(obs))


def rebase_adapter(old_policy: FleetPolicy, old_adapter: Adapter | None, new_policy: FleetPolicy, hardware: str,
                   obs: torch.Tensor, cfg: RebaseConfig | None = None) -> tuple[Adapter, RebaseReport]:
    """A new adapter over ``new_policy`` that acts as ``old_policy`` with ``old_adapter`` did on ``obs`` (N, O)
    (``cfg.target`` merged), or as ``new_policy`` plus that adapter's old correction (residual).

    ``old_adapter`` None: the unit ran the bare old trunk; with the merged target the new adapter then absorbs
    the trunk change on this unit's data (useful when a unit must not see a behaviour jump), with the residual
    one it stays near zero. Neither policy is modified.
    """
    cfg = cfg or RebaseConfig()
    cfg.validate()
    obs = torch.as_tensor(obs, dtype=torch.float32)
    spec = new_policy.spec(hardware)
    if obs.ndim != 2 or obs.shape[1] != spec.num_obs:
        raise ValueError(f"rebase: observations must be (N, {spec.num_obs}) for '{hardware}', got {tuple(obs.shape)}")
    if not torch.isfinite(obs).all():
        raise ValueError("rebase: observations contain NaN or inf")
    if len(obs) < 2:
        raise ValueError(f"rebase: need at least 2 observations of the unit, got {len(obs)}")
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(obs), generator=gen)
    n_hold = max(1, int(len(obs) * cfg.holdout_fraction)) if cfg.holdout_fraction > 0 else 0
    held, train = (obs[order[:n_hold]], obs[order[n_hold:]]) if n_hold else (obs, obs)

    teacher = RebaseTeacher(old_policy, old_adapter, new_policy, hardware, cfg.target)
    t_train, t_held = teacher(train), teacher(held)
    t_log_std = teacher.log_std

    frozen = copy.deepcopy(new_policy).requires_grad_(False)
    adapter = Adapter(frozen, hardware, old_adapter.cfg if old_adapter is not None else None)
    if old_adapter is not None:  # the old adaptation is the best first guess: the trunk moved, not the unit
        adapter.load_state_dict(old_adapter.state_dict())
    with torch.no_grad():
        naive = _gap(t_held, t_log_std.exp(), frozen.action_mean(hardware, held, adapter)).mean().item()

    opt = torch.optim.Adam(adapter.parameters(), lr=cfg.learning_rate)
    for _ in range(cfg.steps):
        idx = torch.randint(len(train), (min(cfg.batch_size, len(train)),), generator=gen)
        mean = frozen.action_mean(hardware, train[idx], adapter)
        loss = gaussian_kl(t_train[idx], t_log_std, mean, frozen.log_std(hardware, adapter)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with torch.no_grad():
        mean = frozen.action_mean(hardware, held, adapter)
        gap = _gap(t_held, t_log_std.exp(), mean)
        kl = gaussian_kl(t_held, t_log_std, mean, frozen.log_std(hardware, adapter)).mean().item()
    report = RebaseReport(naive_mean_gap=naive, rebased_mean_gap=gap.mean().item(), rebased_max_gap=gap.max().item(),
                          rebased_kl=kl, observations=len(obs))
    rebased = Adapter(new_policy, hardware, adapter.cfg)  # bound to the caller's policy, not the frozen copy
    rebased.load_state_dict(adapter.state_dict())
    return rebased, report
