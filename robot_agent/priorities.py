"""Ape-X's initial priorities, computed on the robot: each step's |TD error| under the robot's own critic.

An Ape-X actor scores its own experience before it leaves, so a learner's prioritised replay can sample a new
item by what it teaches instead of by the largest priority seen. The score here is the learner's own one
(``shared_policy/vtrace_learner.py``): |V-trace target - V| per step, with behaviour and target policies the
same (the robot acted on-policy, so V-trace is the lambda-return), ends handled by the recorder's contract
(bootstrap after a time-out, not after a termination), at the V-trace settings of the agent's
``spool.priority_vtrace`` (the learner's defaults unless set to its configured ones). It runs on the spool writer's thread, never on the
control thread, with the critic of the trunk the robot is running when the chunk is written.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from shared_policy.policy import FleetPolicy
from shared_policy.vtrace import VTraceConfig, vtrace


@torch.no_grad()
def td_priorities(policy: FleetPolicy, hardware: str, arrays: dict[str, np.ndarray],
                  cfg: VTraceConfig) -> np.ndarray | None:
    """[T] float32 |TD errors| of one chunk's steps under ``policy``'s critic, or None if any is not finite
    (a chunk goes without priorities rather than with a wrong one; the replay then starts it at the top)."""
    critic = torch.as_tensor(np.asarray(arrays["critic_obs"], np.float32))
    v = policy.value(hardware, critic).reshape(-1)  # [T + 1]: row t + 1 is the observation step t ended in
    col = {k: torch.as_tensor(np.asarray(arrays[k], np.float32)).reshape(-1, 1)
           for k in ("log_probs", "rewards", "dones", "time_outs")}
    values, next_values = v[:-1].reshape(-1, 1), v[1:].reshape(-1, 1)
    ret = vtrace(col["log_probs"], col["log_probs"], col["rewards"], values, next_values, col["dones"],
                 col["time_outs"], cfg)
    p = (ret.vs - values).abs().reshape(-1).numpy().astype(np.float32)
    return p if np.isfinite(p).all() else None


def critic_prioritiser(current_policy: Callable[[], FleetPolicy], hardware: str,
                       cfg: VTraceConfig | None = None) -> Callable[[dict[str, np.ndarray]], None]:
    """A spool-writer hook that adds ``priorities`` to a chunk's arrays, scored by ``current_policy()``'s critic."""
    cfg = cfg or VTraceConfig()

    def add(arrays: dict[str, np.ndarray]) -> None:
        p = td_priorities(current_policy(), hardware, arrays, cfg)
        if p is not None:
            arrays["priorities"] = p

    return add
