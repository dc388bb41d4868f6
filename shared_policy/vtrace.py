"""V-trace (IMPALA, Espeholt et al. 2018): off-policy value targets and policy-gradient advantages.

Everything is batched over [T, B]: T steps of B sequences. For each step t, with the importance ratio
``r_t = pi(a_t|x_t) / mu(a_t|x_t)`` of the policy being learned (target) over the policy that acted (behaviour)::

    rho_t = min(rho_bar, r_t)            c_t = lam * min(c_bar, r_t)
    delta_t = rho_t * (reward_t + gamma * V(x_{t+1}) - V(x_t))
    vs_t = V(x_t) + delta_t + gamma * c_t * (vs_{t+1} - V(x_{t+1}))
    pg_advantage_t = min(pg_rho_bar, r_t) * (reward_t + gamma * vs_{t+1} - V(x_t))

Episode ends follow the project's transition contract (``dones`` includes ``time_outs``; see
``shared_policy.storage.compute_gae``): after a true termination nothing is bootstrapped; after a time-out the
value of the observation the step ended in (``next_values[t]``, the robot records it) is, as it is at the end
of the sequence. Either way the trace stops there: no correction flows back across an episode end. A step
with ``mask`` 0 (padding, or a step too stale to learn from) is not learned from, and the trace of the step
before it stops there too, bootstrapping from that step's ``next_values``.

``next_values[t]`` is V of the observation step t ended in: ``values[t + 1]`` inside an episode, the value
of the recorded final observation at a time-out or at the end of the data. Passing it whole (instead of one
bootstrap value per sequence) is what lets a time-out in the middle of a sequence bootstrap correctly.

The targets are computed without gradients: ``vs`` is a regression target for the critic and the
advantages weight the actor's log-probabilities; only the losses below carry gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

LOSSES = ("vtrace", "appo")


@dataclass
class VTraceConfig:
    """Off-policy correction of fleet experience (a Hydra structured config)."""

    gamma: float = 0.99  # discount per control step
    lam: float = 1.0  # IMPALA's lambda in c_t = lam * min(c_bar, ratio); 1 is the paper's V-trace
    rho_bar: float = 1.0  # truncation of the ratio in the value target's TD errors
    c_bar: float = 1.0  # truncation of the ratio in the trace (how far corrections flow back)
    pg_rho_bar: float = 1.0  # truncation of the ratio weighting the policy-gradient advantage
    # "appo": PPO's clipped surrogate of the ratio to the behaviour policy; "vtrace": IMPALA's policy gradient.
    # appo by default: a fleet round replays each stored step several times, and IMPALA's gradient (made for
    # one pass) has no bound on how far that moves the policy: on the fleet-round data 135 updates drove the
    # mean ratio to 0.35-0.5 and fresh units' returns from ~160 to ~70, where appo's ratio stayed ~0.9
    policy_loss: str = "appo"
    clip_param: float = 0.2  # the clip of "appo"
    # steps acted by a trunk more than this many versions older than the learner's are dropped (masked)
    max_trunk_staleness: int = 4

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, prefix: str = "vtrace") -> None:
        """Raise ValueError naming the key of a wrong value (call again after a Hydra merge)."""
        checks = {"gamma": 0.0 <= self.gamma <= 1.0, "lam": 0.0 <= self.lam <= 1.0, "rho_bar": self.rho_bar > 0,
                  "c_bar": self.c_bar > 0, "pg_rho_bar": self.pg_rho_bar > 0,
                  "policy_loss": self.policy_loss in LOSSES, "clip_param": 0.0 < self.clip_param < 1.0,
                  "max_trunk_staleness": self.max_trunk_staleness >= 0}
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"{prefix}.{key}: invalid value {getattr(self, key)!r}")


class VTraceReturns(NamedTuple):
    """V-trace's outputs, [T, B] each, no gradients."""

    vs: torch.Tensor  # value targets
    pg_advantages: torch.Tensor  # min(pg_rho_bar, ratio) * (q - V): IMPALA's policy-gradient weight
    advantages: torch.Tensor  # q - V, unweighted: APPO's (the surrogate applies the ratio itself)
    rhos: torch.Tensor  # min(rho_bar, ratio), for logging how off-policy the data is


def staleness_mask(trunk_version: torch.Tensor, current_version: int, max_staleness: int) -> torch.Tensor:
    """1.0 where a step was acted by a trunk at most ``max_staleness`` versions older than ``current_version``,
    0.0 where it is older (too off-policy to correct), as a float mask of ``trunk_version``'s shape."""
    return (trunk_version >= current_version - max_staleness).to(torch.float32)


@torch.no_grad()
def vtrace(behaviour_log_probs: torch.Tensor, target_log_probs: torch.Tensor, rewards: torch.Tensor,
           values: torch.Tensor, next_values: torch.Tensor, dones: torch.Tensor, time_outs: torch.Tensor,
           cfg: VTraceConfig, mask: torch.Tensor | None = None) -> VTraceReturns:
    """V-trace targets and advantages (module docstring); every input [T, B], ``dones`` and ``time_outs``
    0/1 (a time-out is also a done), ``mask`` 1 on steps to learn from (default: all)."""
    shape = rewards.shape
    for name, x in (("behaviour_log_probs", behaviour_log_probs), ("target_log_probs", target_log_probs),
                    ("values", values), ("next_values", next_values), ("dones", dones), ("time_outs", time_outs)):
        if x.shape != shape:
            raise ValueError(f"vtrace: {name} has shape {tuple(x.shape)}, rewards {tuple(shape)}")
    if mask is not None and mask.shape != shape:
        raise ValueError(f"vtrace: mask has shape {tuple(mask.shape)}, rewards {tuple(shape)}")
    f = values.dtype
    mask = torch.ones_like(values) if mask is None else mask.to(f)
    time_outs = time_outs.to(f)
    dones = torch.maximum(dones.to(f), time_outs)  # a time-out ends the episode even if dones missed it
    ratios = torch.exp(target_log_probs.detach() - behaviour_log_probs)
    rhos = ratios.clamp(max=cfg.rho_bar)
    cs = cfg.lam * ratios.clamp(max=cfg.c_bar)
    values, next_values = values.detach(), next_values.detach()

    bootstrap = 1.0 - (dones - time_outs).clamp(min=0.0)  # 0 only after a true termination
    next_mask = torch.cat([mask[1:], torch.zeros_like(mask[:1])])
    carry_on = (1.0 - dones) * next_mask  # the trace continues into step t + 1 of the same sequence
    # at a stop, vs_{t+1} - V(x_{t+1}) is taken as 0: the target bootstraps from next_values alone
    deltas = rhos * (rewards + cfg.gamma * bootstrap * next_values - values)

    vs_minus_v = torch.zeros_like(values)
    acc = torch.zeros_like(values[0])
    for t in reversed(range(shape[0])):
        acc = deltas[t] + cfg.gamma * cs[t] * carry_on[t] * acc
        vs_minus_v[t] = acc
    vs = values + vs_minus_v

    vs_next = torch.cat([vs[1:], torch.zeros_like(vs[:1])])
    # vs_{t+1} where the trace goes on, else the bootstrapped value (0 after a termination)
    q = rewards + cfg.gamma * (carry_on * vs_next + (1.0 - carry_on) * bootstrap * next_values)
    advantages = (q - values) * mask
    pg_advantages = ratios.clamp(max=cfg.pg_rho_bar) * advantages
    vs = torch.where(mask > 0, vs, values)  # no target on a masked step: its value loss is 0 anyway
    return VTraceReturns(vs, pg_advantages, advantages, rhos)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` [T, B] over the steps where ``mask`` is 1 (0 if there are none), each sequence's steps
    scaled by its ``weights`` [B] if given (prioritised replay's importance weights)."""
    if weights is not None:
        x = x * weights.to(x.dtype)
    # where, not a product: a stale step's ratio may overflow to inf, and inf * 0 is NaN
    return torch.where(mask > 0, x, torch.zeros_like(x)).sum() / mask.sum().clamp(min=1.0)


def policy_loss(target_log_probs: torch.Tensor, behaviour_log_probs: torch.Tensor, returns: VTraceReturns,
                mask: torch.Tensor, cfg: VTraceConfig, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The actor's loss (scalar) over the unmasked steps; gradients flow only into ``target_log_probs``.

    ``vtrace``: -pg_advantage * log pi (IMPALA). ``appo``: PPO's clipped surrogate with the ratio taken to the
    behaviour policy, -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A), A the unweighted V-trace advantage.
    ``weights`` [B]: importance weights of prioritised replay.
    """
    if cfg.policy_loss == "vtrace":
        return -masked_mean(returns.pg_advantages * target_log_probs, mask, weights)
    # masked steps get ratio 1 before exp: a stale step's exp(200) is inf, and backward's 0 * inf is NaN
    log_ratio = torch.where(mask > 0, target_log_probs - behaviour_log_probs.detach(), torch.zeros_like(target_log_probs))
    ratio = torch.exp(log_ratio)
    adv = returns.advantages
    surrogate = torch.min(ratio * adv, ratio.clamp(1.0 - cfg.clip_param, 1.0 + cfg.clip_param) * adv)
    return -masked_mean(surrogate, mask, weights)


def value_loss(values: torch.Tensor, returns: VTraceReturns, mask: torch.Tensor,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """The critic's loss (scalar): half the squared error to the V-trace targets over the unmasked steps
    (each sequence's scaled by its importance weight, if given)."""
    return 0.5 * masked_mean((returns.vs - values).pow(2), mask, weights)
