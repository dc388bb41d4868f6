"""PPO over several hardware types at once: every minibatch holds a slice of every type's rollout."""

from __future__ import annotations

import torch
from torch import nn

from shared_policy.config import AdapterLearnerConfig, PPOConfig
from shared_policy.gaussian import entropy, gaussian_kl, log_prob, standard_log_prob
from shared_policy.policy import FleetPolicy
from shared_policy.storage import RolloutStorage


def adapt_learning_rate(lr: float, kl: float, cfg: PPOConfig | AdapterLearnerConfig) -> float:
    """rsl_rl's KL-adaptive rule: / 1.5 above 2x the target KL, x 1.5 below half of it, within bounds."""
    if kl > 2.0 * cfg.desired_kl:
        return max(cfg.lr_min, lr / 1.5)
    if 0.0 < kl < 0.5 * cfg.desired_kl:
        return min(cfg.lr_max, lr * 1.5)
    return lr


def make_adam(params, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where torch has one for these tensors (CPU and CUDA float): on this
    size of network the per-tensor Python loop of the default CPU Adam costs more than the maths."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without a fused kernel
        return torch.optim.Adam(params, lr=lr)


class PPO:
    """Clipped-surrogate PPO with clipped value loss, entropy bonus and gradient clipping."""

    def __init__(self, policy: FleetPolicy, cfg: PPOConfig, num_envs: dict[str, int],
                 device: torch.device | str = "cpu", grad_hook=None, mean_over_ranks=None):
        if cfg.schedule not in ("adaptive", "fixed"):
            raise ValueError(f"algorithm.schedule must be 'adaptive' or 'fixed', got '{cfg.schedule}'")
        self.policy, self.cfg, self.device = policy, cfg, device
        self.learning_rate = cfg.learning_rate
        self.optimizer = make_adam(policy.parameters(), cfg.learning_rate)
        self._clip_groups = policy.parameter_groups()  # fixed for the policy's life: not rebuilt per minibatch
        self.storage = {
            hw: RolloutStorage(cfg.num_steps_per_env, n, s.num_obs, s.num_critic_obs, s.num_actions, device)
            for hw, n in num_envs.items() for s in [policy.spec(hw)]
        }
        self.grad_hook = grad_hook  # e.g. all-reduce across ranks, called after backward
        # data-parallel ranks must adapt the learning rate from the same KL, or their weights drift apart
        self.mean_over_ranks = mean_over_ranks or (lambda x: x)

    @torch.no_grad()
    def act(self, hardware: str, obs: torch.Tensor, critic_obs: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Sample actions; returns them and the transition fields to record."""
        mu = self.policy.action_mean(hardware, obs)
        log_std = self.policy.log_std(hardware)
        sigma = log_std.exp().expand_as(mu)
        eps = torch.randn_like(mu)
        actions = torch.addcmul(mu, sigma, eps)
        log_probs = standard_log_prob(eps, log_std)  # a = mu + sigma * eps: eps is its standardised offset
        return actions, {"obs": obs, "critic_obs": critic_obs, "actions": actions, "log_probs": log_probs,
                         "values": self.policy.value(hardware, critic_obs), "mu": mu, "sigma": sigma}

    def update(self) -> dict[str, float]:
        """Epochs x minibatches over all hardware types' rollouts; returns mean losses and KL."""
        cfg, policy = self.cfg, self.policy
        sizes = {hw: s.steps * s.num_envs for hw, s in self.storage.items()}
        total = sum(sizes.values())
        stats = {"loss/policy": 0.0, "loss/value": 0.0, "loss/entropy": 0.0, "kl": 0.0}
        updates = 0
        for _ in range(cfg.num_learning_epochs):
            perms = {hw: torch.randperm(n, device=self.device) for hw, n in sizes.items()}
            for m in range(cfg.num_mini_batches):
                loss = torch.zeros((), device=self.device)
                kl_mean = 0.0
                for hw, store in self.storage.items():
                    chunk = sizes[hw] // cfg.num_mini_batches
                    b = store.minibatch(perms[hw][m * chunk:(m + 1) * chunk])
                    weight = sizes[hw] / total
                    mu = policy.action_mean(hw, b["obs"])
                    log_std = policy.log_std(hw)
                    sigma = log_std.exp()
                    logp = log_prob(b["actions"], mu, sigma, log_std)
                    with torch.no_grad():
                        kl_mean += weight * gaussian_kl(b["mu"], b["sigma"], mu, sigma).mean().item()
                    ratio = torch.exp(logp - b["log_probs"])
                    adv = b["advantages"]
                    surrogate = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_param, 1 + cfg.clip_param))
                    value = policy.value(hw, b["critic_obs"])
                    if cfg.use_clipped_value_loss:
                        clipped = b["values"] + (value - b["values"]).clamp(-cfg.clip_param, cfg.clip_param)
                        value_loss = torch.max((value - b["returns"]).pow(2), (clipped - b["returns"]).pow(2))
                    else:
                        value_loss = (value - b["returns"]).pow(2)
                    ent = entropy(log_std)
                    hw_loss = surrogate.mean() + cfg.value_loss_coef * value_loss.mean() - cfg.entropy_coef * ent
                    loss = loss + weight * hw_loss
                    stats["loss/policy"] += weight * surrogate.mean().item()
                    stats["loss/value"] += weight * value_loss.mean().item()
                    stats["loss/entropy"] += weight * ent.item()
                if cfg.schedule == "adaptive":
                    kl_mean = self.mean_over_ranks(kl_mean)
                    self.learning_rate = adapt_learning_rate(self.learning_rate, kl_mean, cfg)
                    for group in self.optimizer.param_groups:
                        group["lr"] = self.learning_rate
                self.optimizer.zero_grad()
                loss.backward()
                if self.grad_hook is not None:
                    self.grad_hook(policy)
                # actor and critic clipped apart (as rsl_rl does): a large value gradient must not
                # shrink the policy's step by a factor that changes every minibatch
                for group in self._clip_groups:
                    nn.utils.clip_grad_norm_(group, cfg.max_grad_norm)
                self.optimizer.step()
                stats["kl"] += kl_mean
                updates += 1
        for store in self.storage.values():
            store.clear()
        return {k: v / updates for k, v in stats.items()}
