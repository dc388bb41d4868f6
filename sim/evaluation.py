"""Evaluate a policy in sim: N finished episodes of its deterministic actions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from shared_policy.policy import FleetPolicy
from sim.env import BatchedEnv


@dataclass
class EvalResult:
    """Per-episode returns and successes, with their summary."""

    returns: np.ndarray
    successes: np.ndarray

    @property
    def mean_return(self) -> float:
        """Mean episode return."""
        return float(self.returns.mean())

    @property
    def ci95(self) -> float:
        """Half-width of the normal-approximation 95% confidence interval of the mean return."""
        n = len(self.returns)
        return float(1.96 * self.returns.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")

    @property
    def success_rate(self) -> float:
        """Fraction of episodes counted as solved."""
        return float(self.successes.mean())

    def summary(self) -> str:
        """One line for the terminal."""
        return (f"mean return {self.mean_return:.2f} +- {self.ci95:.2f} (95% CI, {len(self.returns)} episodes), "
                f"success rate {self.success_rate:.2f}")


@torch.no_grad()
def evaluate(policy: FleetPolicy, env: BatchedEnv, episodes: int, max_steps: int | None = None) -> EvalResult:
    """Run the policy's mean action until ``episodes`` episodes have finished."""
    hw = env.profile.name
    returns: list[float] = []
    successes: list[float] = []
    obs, _ = env.reset()
    limit = max_steps or (episodes // env.num_envs + 2) * env.max_episode_length
    for _ in range(limit):
        obs, _, _, extras = env.step(policy.action_mean(hw, obs))
        if "episode" in extras:
            returns += extras["episode"]["returns"].tolist()
            successes += extras["episode"]["successes"].tolist()
            if len(returns) >= episodes:
                break
    if len(returns) < episodes:
        raise RuntimeError(f"only {len(returns)} of {episodes} episodes finished within {limit} steps")
    return EvalResult(np.array(returns[:episodes]), np.array(successes[:episodes]))
