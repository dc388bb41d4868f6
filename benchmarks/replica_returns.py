"""Several policies side by side on one unit's exact replica: the fleet-round benchmark's return measurements.

A unit's replica (``unit_replica.make_unit_replica``) runs ``len(arms) x episodes`` worlds; arm ``i`` drives its
own slice of worlds with its policy's deterministic mean action (its adapter folded in, or none), or, for an
exploring arm, with actions sampled around that mean with the policy's own std, as a learning robot acts
(``shared_policy.actor``: ``a = mean + std * z``; the noise is seeded by ``seed``). Every world
starts at the same reset, so each arm's returns are the first episode of each of its worlds: ``episodes``
returns per arm from one batched pass, at the cost of about one evaluation (a pass costs per step, not per
world). The arms meet the same unit (physics, latency, offsets, sensor faults) and differ only in the
policy and the worlds' own draws (initial pose, sensor noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from unit_replica import make_unit_replica  # beside this script

from shared_policy.adapter import Adapter
from shared_policy.policy import FleetPolicy


@dataclass(frozen=True)
class Arm:
    """One policy to measure: a trunk and the adapter folded into it (None: the bare trunk); ``explore``: act as a
    learning robot does (sampled actions) instead of with the mean."""

    name: str
    policy: FleetPolicy
    adapter: Adapter | None = None
    explore: bool = False


def arm_actions(arm: Arm, hardware: str, obs: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
    """The arm's actions for ``obs`` (B, O): the mean, or a sample around it with the arm's std."""
    mean = arm.policy.action_mean(hardware, obs, arm.adapter)
    if not arm.explore:
        return mean
    std = arm.policy.log_std(hardware, arm.adapter).exp()
    return mean + std * torch.randn(mean.shape, generator=noise, dtype=mean.dtype)


@torch.no_grad()
def replica_returns(task: str, hardware: str, gap: dict[str, Any], unit_seed: int, arms: list[Arm], episodes: int,
                    seed: int = 11) -> dict[str, np.ndarray]:
    """Each arm's ``episodes`` returns on the unit's replica (module docstring), by arm name."""
    n = len(arms)
    env = make_unit_replica(task, hardware, gap, unit_seed, n * episodes, seed=seed)
    noise = torch.Generator().manual_seed(seed)
    try:
        returns = np.full(n * episodes, np.nan)
        obs, _ = env.reset()
        for _ in range(env.max_episode_length + 1):
            actions = torch.cat([arm_actions(arm, hardware, obs[i * episodes:(i + 1) * episodes], noise)
                                 for i, arm in enumerate(arms)])
            obs, _, _, extras = env.step(actions)
            if "episode" in extras:
                ids, rets = extras["episode"]["ids"], extras["episode"]["returns"]
                first = np.isnan(returns[ids])  # a world's later episodes are not counted
                returns[ids[first]] = rets[first]
                if not np.isnan(returns).any():
                    break
        if np.isnan(returns).any():
            raise RuntimeError(f"{hardware} unit {unit_seed}: {int(np.isnan(returns).sum())} worlds did not finish an "
                               f"episode within {env.max_episode_length + 1} steps")
    finally:
        env.close()
    return {arm.name: returns[i * episodes:(i + 1) * episodes] for i, arm in enumerate(arms)}
