"""The gate a candidate trunk passes before any robot sees it: sim evaluation on every hardware type.

For each hardware type the fleet runs, the candidate and the current policy each drive the same
``episodes`` worlds (same task, seed, domain randomisation and start states: common random numbers) for
one deterministic episode each. World i's two returns differ only by the policy as long as episodes end
at the same steps under both (a swing-up's time-outs do); once one world ends earlier under one policy, the
shared random stream draws differently for later resets, pushes and noise, and the pairing only loosens
(the interval stays valid, just wider).
The candidate passes a type when the 95% interval of the paired difference (candidate - current) lies
above ``-tolerance x |current mean|``: evidence that it is not worse by more than the tolerance, not merely
an absence of evidence that it is. (Unpaired, the same policy against itself needs hundreds of episodes to
show that on a swing-up whose returns spread +-50.) It must also hold only finite weights and the same hardware specs
(layouts and profile hashes) as the current policy, or robots would refuse it at load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

import sim
from shared_policy.policy import FleetPolicy

T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 10: 2.23, 20: 2.09, 30: 2.04, 60: 2.00, 120: 1.98}


def t95(dof: float) -> float:
    """Two-sided 95% Student-t quantile (conservative: the next tabulated dof below)."""
    return T95[max(k for k in T95 if k <= max(1.0, dof))]


@dataclass
class GateConfig:
    """How the candidate is evaluated and how much worse it may be."""

    tasks: dict[str, str] = field(default_factory=dict)  # hardware type -> its task (every type the fleet runs)
    episodes: int = 64  # worlds per hardware type, one deterministic episode each, the same for both policies
    tolerance: float = 0.05  # the candidate may be this fraction of the current mean return worse, at most
    seed: int = 1234  # the evaluation worlds' seed, the same for both policies

    def validate(self, prefix: str = "gate") -> None:
        """Raise ValueError naming the key of a wrong value."""
        if not self.tasks:
            raise ValueError(f"{prefix}.tasks: name each hardware type's task (e.g. {{cartpole: cartpole_swingup}})")
        if self.episodes < 2:
            raise ValueError(f"{prefix}.episodes: must be >= 2, got {self.episodes}")
        if not 0.0 <= self.tolerance < 1.0:
            raise ValueError(f"{prefix}.tolerance: must be in [0, 1), got {self.tolerance}")


@dataclass(frozen=True)
class HardwareVerdict:
    """One hardware type's evaluation: both means, the difference's 95% interval, and the verdict."""

    hardware: str
    current_mean: float
    candidate_mean: float
    diff_low: float
    diff_high: float
    threshold: float  # diff_low must be at least this
    passed: bool


@dataclass(frozen=True)
class GateVerdict:
    """The candidate's verdict: passed only if every check and every hardware type passed."""

    passed: bool
    reasons: tuple[str, ...]  # why it failed (empty when it passed)
    hardware: tuple[HardwareVerdict, ...]


def paired_interval(current: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """95% t-interval of the mean of ``candidate - current`` (paired by world)."""
    d = candidate - current
    mean = float(d.mean())
    half = t95(len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return mean - half, mean + half


def first_episode_returns(policy: FleetPolicy, env: sim.BatchedEnv) -> np.ndarray:
    """Each world's return over its first episode under the policy's mean action: (num_envs,)."""
    hw = env.profile.name
    total = torch.zeros(env.num_envs, dtype=torch.float64)
    running = torch.ones(env.num_envs, dtype=torch.bool)
    obs, _ = env.reset()
    for _ in range(env.max_episode_length + 1):
        with torch.no_grad():
            obs, rewards, dones, _ = env.step(policy.action_mean(hw, obs))
        total += torch.where(running, rewards.double(), 0.0)
        running &= ~dones.bool()
        if not running.any():
            return total.numpy()
    raise RuntimeError(f"{int(running.sum())} worlds of {hw} did not end an episode within its length")


def check_candidate(current: FleetPolicy, candidate: FleetPolicy, cfg: GateConfig) -> GateVerdict:
    """Evaluate ``candidate`` against ``current`` in sim on every type of ``cfg.tasks``."""
    cfg.validate()
    reasons: list[str] = []
    bad = [name for name, p in candidate.named_parameters() if not torch.isfinite(p).all()]
    bad += [name for name, b in candidate.named_buffers() if b.is_floating_point() and not torch.isfinite(b).all()]
    if bad:
        reasons.append(f"non-finite weights: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}")
    for hw in cfg.tasks:
        for who, policy in (("current", current), ("candidate", candidate)):
            if hw not in policy.specs:
                reasons.append(f"the {who} policy has no hardware type '{hw}'")
        if hw in current.specs and hw in candidate.specs and current.specs[hw] != candidate.specs[hw]:
            reasons.append(f"'{hw}': the candidate's spec (layout or profile) differs from the current one's")
    if reasons:
        return GateVerdict(False, tuple(reasons), ())
    verdicts = []
    for hw, task in cfg.tasks.items():
        returns = {}
        for who, policy in (("current", current), ("candidate", candidate)):
            env = sim.make_env(task, hw, cfg.episodes, seed=cfg.seed)
            try:
                returns[who] = first_episode_returns(policy, env)
            finally:
                env.close()
        low, high = paired_interval(returns["current"], returns["candidate"])
        mean = float(returns["current"].mean())
        threshold = -cfg.tolerance * abs(mean)
        verdict = HardwareVerdict(hw, mean, float(returns["candidate"].mean()), low, high, threshold, low >= threshold)
        verdicts.append(verdict)
        if not verdict.passed:
            reasons.append(f"'{hw}': candidate {verdict.candidate_mean:.1f} vs current {mean:.1f}, difference "
                           f"[{low:.1f}, {high:.1f}] (95%) reaches below {threshold:.1f}")
    return GateVerdict(not reasons, tuple(reasons), tuple(verdicts))
