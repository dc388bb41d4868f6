"""The on-robot learner: PPO on one unit's adapter, with the trunk, stem and head frozen.

It learns from the unit's own transitions as the robot agent recorded them, behaviour log-probs
included: steps that an older adapter took are weighted by their truncated importance ratio. The
value function is this learner's own copy of the pretrained critic, fine-tuned on the unit's returns;
the physics parameters the critic saw in sim are unknown on a robot and enter as zeros (nominal).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from shared_policy.adapter import Adapter
from shared_policy.config import AdapterConfig, AdapterLearnerConfig
from shared_policy.gaussian import entropy, gaussian_kl, log_prob
from shared_policy.policy import FleetPolicy
from shared_policy.ppo import adapt_learning_rate
from shared_policy.storage import compute_gae

# what one recorded segment of experience holds (arrays, leading dimension T; critic_obs has T + 1 rows)
SEGMENT_KEYS = ("obs", "critic_obs", "actions", "log_probs", "rewards", "dones", "time_outs")


class AdapterLearner:
    """Collects segments, and every ``steps_per_update`` steps runs PPO on the adapter only.

    With ``cfg.learn_log_std`` false the given adapter's ``log_std_delta`` is marked ``requires_grad=False`` (the
    object itself: do not share one adapter between learners that differ in this setting).
    """

    def __init__(self, policy: FleetPolicy, hardware: str, cfg: AdapterLearnerConfig | None = None,
                 adapter: Adapter | None = None, anchor: Adapter | None = None):
        self.cfg = cfg = cfg or AdapterLearnerConfig()
        self.hardware = hardware
        self.policy = copy.deepcopy(policy)  # the critic copy is trained; the actor is only read
        for p in self.policy.actor_parameters(hardware):
            p.requires_grad_(False)
        self.adapter = adapter if adapter is not None else Adapter(self.policy, hardware,
                                                                   AdapterConfig(cfg.rank, cfg.alpha))
        if not cfg.learn_log_std:
            self.adapter.log_std_delta.requires_grad_(False)
        # the policy ``cfg.drift_kl`` measures drift from (default: the adapter learning starts from)
        self.anchor = copy.deepcopy(anchor if anchor is not None else self.adapter).requires_grad_(False)
        self.critic_params = [*self.policy.critic_stems[hardware].parameters(),
                              *self.policy.value_heads[hardware].parameters()]
        if self.policy.critic_trunk is not None:
            self.critic_params += list(self.policy.critic_trunk.parameters())
        self.lr = cfg.learning_rate
        self.actor_opt = torch.optim.Adam(self._learned(), lr=self.lr)
        self.critic_opt = torch.optim.Adam(self.critic_params, lr=cfg.critic_learning_rate)
        self.segments: list[dict[str, np.ndarray]] = []
        self.replayed: list[dict[str, np.ndarray]] = []  # segments of earlier updates that are learned from again
        self.updates = 0

    @property
    def buffered_steps(self) -> int:
        """Transitions waiting for the next update."""
        return sum(len(s["rewards"]) for s in self.segments)

    def add(self, segment: dict[str, np.ndarray]) -> None:
        """Queue one recorded segment (see ``SEGMENT_KEYS``); refuses wrong shapes and non-finite values."""
        missing = [k for k in SEGMENT_KEYS if k not in segment]
        if missing:
            raise ValueError(f"segment lacks {missing}")
        t = len(segment["rewards"])
        if t == 0 or len(segment["critic_obs"]) != t + 1 or any(len(segment[k]) != t for k in SEGMENT_KEYS
                                                                 if k != "critic_obs"):
            raise ValueError(f"segment arrays disagree in length (rewards: {t}, critic_obs must have {t + 1})")
        if not all(np.isfinite(segment[k]).all() for k in SEGMENT_KEYS):
            raise ValueError("segment holds NaN or inf")
        self.segments.append({k: np.asarray(segment[k]) for k in SEGMENT_KEYS})

    def ready(self) -> bool:
        """Whether enough steps are buffered for an update."""
        return self.buffered_steps >= self.cfg.steps_per_update

    def update(self) -> dict[str, float]:
        """PPO epochs over the buffered steps; clears the buffer; returns losses and KL."""
        cfg, hw, pol = self.cfg, self.hardware, self.policy
        batch = self._batch()
        if self.updates == 0:
            for _ in range(cfg.critic_warmup_epochs):
                self._critic_epoch(batch)
            batch = self._batch()  # advantages from the fitted critic
        n = len(batch["rewards"])
        stats = {"loss/policy": 0.0, "loss/value": 0.0, "kl": 0.0}
        steps = 0
        for _ in range(cfg.epochs):
            perm = torch.randperm(n)
            size = max(1, n // cfg.minibatches)
            for m in range(cfg.minibatches):
                idx = perm[m * size:(m + 1) * size]
                mu = pol.action_mean(hw, batch["obs"][idx], self.adapter)
                log_std = pol.log_std(hw, self.adapter)
                sigma = log_std.exp()
                ratio = torch.exp(log_prob(batch["actions"][idx], mu, sigma, log_std) - batch["prox_log_probs"][idx])
                adv = batch["advantages"][idx] * batch["weights"][idx]
                surrogate = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_param, 1 + cfg.clip_param))
                loss = surrogate.mean() - cfg.entropy_coef * entropy(log_std)
                with torch.no_grad():
                    kl = gaussian_kl(batch["mu"][idx], batch["sigma"][idx], mu, sigma).mean().item()
                self.lr = adapt_learning_rate(self.lr, kl, cfg)
                for g in self.actor_opt.param_groups:
                    g["lr"] = self.lr
                self.actor_opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self._learned(), cfg.max_grad_norm)
                self.actor_opt.step()
                stats["loss/policy"] += surrogate.mean().item()
                stats["kl"] += kl
                steps += 1
            stats["loss/value"] += self._critic_epoch(batch) / cfg.epochs
        scale = self._hold_to_drift_budget(batch["obs"])
        self._keep_for_replay()
        self.updates += 1
        out = {k: (v / steps if k != "loss/value" else v) for k, v in stats.items()}
        return {**out, "learning_rate": self.lr, "steps": float(n),
                "behaviour_weight": float(batch["weights"].mean()), "drift_kl": self.drift_kl(batch["obs"]),
                "drift_scale": scale}

    @torch.no_grad()
    def drift_kl(self, obs: torch.Tensor) -> float:
        """Mean KL(anchor || adapter) of the action distributions on ``obs``."""
        hw, pol = self.hardware, self.policy
        mu0, mu = pol.action_mean(hw, obs, self.anchor), pol.action_mean(hw, obs, self.adapter)
        sigma0, sigma = pol.log_std(hw, self.anchor).exp(), pol.log_std(hw, self.adapter).exp()
        return gaussian_kl(mu0, sigma0.expand_as(mu0), mu, sigma.expand_as(mu)).mean().item()

    @torch.no_grad()
    def _hold_to_drift_budget(self, obs: torch.Tensor, steps: int = 12) -> float:
        """Move the adapter back along the straight line to the anchor until its drift is within
        ``cfg.drift_kl``: bisection for the largest fraction of the way from the anchor that stays within
        (the anchor itself, fraction 0, always does). Returns the fraction kept (1: within already)."""
        budget = self.cfg.drift_kl
        if budget <= 0 or self.drift_kl(obs) <= budget:
            return 1.0
        start, end = self.anchor.state_dict(), self.snapshot()
        lo, hi = 0.0, 1.0
        for _ in range(steps):
            mid = (lo + hi) / 2
            self.adapter.load_state_dict({k: start[k] + mid * (end[k] - start[k]) for k in end})
            lo, hi = (mid, hi) if self.drift_kl(obs) <= budget else (lo, mid)
        self.restore({k: start[k] + lo * (end[k] - start[k]) for k in end})  # moments of the cut steps go too
        return lo

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the adapter's weights as they are now: what one adapter version is."""
        return {k: v.detach().clone() for k, v in self.adapter.state_dict().items()}

    def restore(self, weights: dict[str, torch.Tensor]) -> None:
        """Go back to an earlier version's weights (a rejected update is discarded).

        The adapter's weights are replaced in place and the actor optimiser's moments cleared (they carry the
        rejected steps' direction); the critic, the learning rate and the experience collected stay: those
        steps are real transitions with the behaviour log-probabilities that produced them.
        """
        self.adapter.load_state_dict(weights)
        self.actor_opt = torch.optim.Adam(self._learned(), lr=self.lr)

    def _learned(self) -> list[nn.Parameter]:
        """The adapter's parameters PPO moves: all of them, or all but the log-std offset (``cfg.learn_log_std``)."""
        return [p for name, p in self.adapter.named_parameters() if self.cfg.learn_log_std or name != "log_std_delta"]

    def _keep_for_replay(self) -> None:
        """Move this update's segments into the replay window of the last ``replay_updates - 1`` updates."""
        self.replayed += self.segments
        self.segments = []
        keep = (self.cfg.replay_updates - 1) * self.cfg.steps_per_update
        while self.replayed and sum(len(s["rewards"]) for s in self.replayed) > keep:
            self.replayed.pop(0)

    def _critic_epoch(self, batch: dict[str, torch.Tensor]) -> float:
        n, hw = len(batch["rewards"]), self.hardware
        perm = torch.randperm(n)
        size = max(1, n // self.cfg.minibatches)
        total = 0.0
        for m in range(self.cfg.minibatches):
            idx = perm[m * size:(m + 1) * size]
            loss = (self.policy.value(hw, batch["critic_obs"][idx]) - batch["returns"][idx]).pow(2).mean()
            self.critic_opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.critic_params, self.cfg.max_grad_norm)
            self.critic_opt.step()
            total += loss.item() / self.cfg.minibatches
        return total

    @torch.no_grad()
    def _batch(self) -> dict[str, torch.Tensor]:
        """Flatten the segments with GAE advantages (normalised) from the current critic."""
        cfg, hw, pol = self.cfg, self.hardware, self.policy
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("obs", "critic_obs", "actions", "log_probs",
                                                              "advantages", "returns", "rewards")}
        for s in [*self.replayed, *self.segments]:
            t = {k: torch.as_tensor(s[k], dtype=torch.float32) for k in SEGMENT_KEYS}
            values = pol.value(hw, t["critic_obs"])
            adv, ret = compute_gae(t["rewards"][:, None], values[:-1, None], t["dones"][:, None],
                                   t["time_outs"][:, None], values[-1:], cfg.gamma, cfg.lam)
            for k in ("obs", "actions", "log_probs", "rewards"):
                parts[k].append(t[k])
            parts["critic_obs"].append(t["critic_obs"][:-1])
            parts["advantages"].append(adv[:, 0])
            parts["returns"].append(ret[:, 0])
        batch = {k: torch.cat(v) for k, v in parts.items()}
        adv = batch["advantages"]
        batch["advantages"] = (adv - adv.mean()) / (adv.std() + 1e-8)
        mu, log_std = pol.action_mean(hw, batch["obs"], self.adapter), pol.log_std(hw, self.adapter)
        batch["mu"], batch["sigma"] = mu, log_std.exp().expand_as(mu)
        # Decoupled PPO (Hilton et al. 2021): the ratio is clipped around the adapter as this update starts, and
        # each step is weighted by its importance ratio to the adapter that acted, truncated at 1. On a
        # real-time robot the agent keeps acting with the previous version while an update runs, so some
        # steps come from an adapter one version older; on fresh steps the weight is 1.
        batch["prox_log_probs"] = log_prob(batch["actions"], mu, batch["sigma"], log_std)
        batch["weights"] = torch.exp(batch["prox_log_probs"] - batch["log_probs"]).clamp(max=1.0)
        return batch
