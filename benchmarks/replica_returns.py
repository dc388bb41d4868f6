"""Several policies side by side on one unit's exact replica: the fleet-round benchmark's return measurements.

A unit's replica (``unit_replica.make_unit_replica``) runs ``len(arms) x episodes`` worlds; arm ``i`` drives its
own slice of worlds with its policy's deterministic mean action (its adapter folded in, or none). Every world
starts at the same reset, so each arm's returns are the first episode of each of its worlds: ``episodes``
returns per arm from one batched pass, at the cost of about one evaluation (a pass costs per step, not per
world). The arms meet the same unit (physics, latency, offsets, sensor faults) and differ only in the
policy and the worlds' own draws (initial pose, sensor noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from unit_replica import make_unit_replica  # beside this script

from shared_policy.adapter import Adapter
from shared_policy.policy import FleetPolicy

# two-sided 95% t quantiles by degrees of freedom (beyond the table: 2.0, within 2% for n > 30)
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 11: 2.20,
       12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13, 16: 2.12, 17: 2.11, 18: 2.10, 19: 2.09, 20: 2.09, 24: 2.06,
       30: 2.04}


@dataclass(frozen=True)
class Arm:
    """One policy to measure: a trunk and the adapter folded into it (None: the bare trunk)."""

    name: str
    policy: FleetPolicy
    adapter: Adapter | None = None


def t_interval(values: Any) -> tuple[float, float]:
    """Mean and half-width of its 95% t-interval (nan half-width for fewer than 2 values)."""
    a = np.asarray(values, dtype=float)
    if len(a) == 0:
        return float("nan"), float("nan")
    if len(a) < 2:
        return float(a.mean()), float("nan")
    dof = len(a) - 1
    t = T95[max(k for k in T95 if k <= dof)] if dof <= 30 else 2.0  # the table's nearest smaller dof: wider
    return float(a.mean()), float(t * a.std(ddof=1) / math.sqrt(len(a)))


@torch.no_grad()
def replica_returns(task: str, hardware: str, gap: dict[str, Any], unit_seed: int, arms: list[Arm], episodes: int,
                    seed: int = 11) -> dict[str, np.ndarray]:
    """Each arm's ``episodes`` returns on the unit's replica (module docstring), by arm name."""
    n = len(arms)
    env = make_unit_replica(task, hardware, gap, unit_seed, n * episodes, seed=seed)
    try:
        returns = np.full(n * episodes, np.nan)
        obs, _ = env.reset()
        for _ in range(env.max_episode_length + 1):
            actions = torch.cat([arm.policy.action_mean(hardware, obs[i * episodes:(i + 1) * episodes], arm.adapter)
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
