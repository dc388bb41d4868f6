"""Rollout storage for one hardware type, and GAE with terminal and time-out handling."""

from __future__ import annotations

import torch


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, time_outs: torch.Tensor,
                last_values: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns, (T, N) each.

    ``dones[t]`` ends the episode after step t (no value flows back across it). A time-out is a done
    that the policy did not cause: its reward is bootstrapped with gamma * V(s_t), as rsl_rl does,
    so truncation does not look like failure.
    """
    rewards = rewards + gamma * values * time_outs.to(values.dtype)
    not_done = 1.0 - dones.to(values.dtype)
    adv = torch.zeros_like(values)
    running = torch.zeros_like(last_values)
    steps = rewards.shape[0]
    for t in reversed(range(steps)):
        next_values = last_values if t == steps - 1 else values[t + 1]
        delta = rewards[t] + gamma * next_values * not_done[t] - values[t]
        running = delta + gamma * lam * not_done[t] * running
        adv[t] = running
    return adv, adv + values


class RolloutStorage:
    """T steps x N worlds of one hardware type's transitions."""

    FIELDS = ("obs", "critic_obs", "actions", "log_probs", "values", "mu", "sigma", "rewards", "dones", "time_outs")
    # what an update reads, gathered from one (T*N, columns) table: one index per minibatch, not nine
    TRAIN_FIELDS = ("obs", "critic_obs", "actions", "log_probs", "values", "mu", "sigma", "advantages", "returns")

    def __init__(self, steps: int, num_envs: int, num_obs: int, num_critic_obs: int, num_actions: int,
                 device: torch.device | str = "cpu"):
        self.steps, self.num_envs = steps, num_envs
        z = lambda *shape: torch.zeros(steps, num_envs, *shape, device=device)  # noqa: E731
        self.obs, self.critic_obs = z(num_obs), z(num_critic_obs)
        self.actions, self.mu, self.sigma = z(num_actions), z(num_actions), z(num_actions)
        self.log_probs, self.values, self.rewards = z(), z(), z()
        self.dones, self.time_outs = z(), z()
        self.advantages, self.returns = z(), z()
        self.step = 0
        widths = {"obs": num_obs, "critic_obs": num_critic_obs, "actions": num_actions, "mu": num_actions,
                  "sigma": num_actions}
        self._columns: dict[str, slice | int] = {}
        col = 0
        for name in self.TRAIN_FIELDS:
            w = widths.get(name)
            self._columns[name] = col if w is None else slice(col, col + w)  # an int gives a (B,) column
            col += 1 if w is None else w
        self._table: torch.Tensor | None = None

    def add(self, **transition: torch.Tensor) -> None:
        """Record one step for every world."""
        if self.step >= self.steps:
            raise RuntimeError("rollout storage is full: call clear() after the update")
        for name in self.FIELDS:
            getattr(self, name)[self.step].copy_(transition[name])
        self.step += 1

    def clear(self) -> None:
        """Start a new rollout."""
        self.step = 0
        self._table = None

    def compute_returns(self, last_values: torch.Tensor, gamma: float, lam: float) -> None:
        """Fill advantages and returns, then normalise the advantages."""
        self.advantages, self.returns = compute_gae(self.rewards, self.values, self.dones, self.time_outs,
                                                    last_values, gamma, lam)
        a = self.advantages
        self.advantages = (a - a.mean()) / (a.std() + 1e-8)
        self._table = None

    def minibatch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The update's fields of the transitions at indices ``idx`` into T*N."""
        if self._table is None:
            n = self.steps * self.num_envs
            self._table = torch.cat([getattr(self, f).reshape(n, -1) for f in self.TRAIN_FIELDS], dim=1)
        rows = self._table[idx]
        return {name: rows[:, col] for name, col in self._columns.items()}
