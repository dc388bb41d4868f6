"""Learner throughput: transitions per second of a V-trace update against a PPO update of the same network and
batch, measured in the same process (``benchmarks/fleet_round.py`` prints it).

Both learn from ``steps x batch`` transitions of one hardware type per gradient step: V-trace as one update on a
[T, B] batch of sequences (with an adapter per column, as fleet data comes; its V-trace targets are part of the update), PPO as one
epoch of one minibatch over a rollout of T steps of B worlds (timed from the update on: its GAE is computed at
the rollout's end, where PPO computes it, untimed). The data are
random tensors of the right shapes: the maths does not care what the numbers mean, only how many there are.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace

import torch

from shared_policy.adapter import Adapter
from shared_policy.config import PPOConfig
from shared_policy.policy import FleetPolicy
from shared_policy.ppo import PPO
from shared_policy.vtrace_learner import FleetLearnerConfig, TensorBatch, VTraceLearner


@dataclass(frozen=True)
class Throughput:
    """Transitions learned from per second by each learner, and how many each timing covered."""

    vtrace_transitions_per_s: float
    ppo_transitions_per_s: float
    transitions_per_update: int
    updates: int

    def summary(self) -> str:
        """One line for a benchmark's output."""
        return (f"learner throughput: V-trace {self.vtrace_transitions_per_s:,.0f} transitions/s, PPO "
                f"{self.ppo_transitions_per_s:,.0f} transitions/s ({self.transitions_per_update} transitions per "
                f"update, {self.updates} updates each)")


def synthetic_batch(policy: FleetPolicy, hardware: str, steps: int, batch: int, robots: int,
                    gen: torch.Generator) -> TensorBatch:
    """A random [steps, batch] batch of ``hardware``, its columns spread over ``robots`` robot ids."""
    spec = policy.spec(hardware)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    return TensorBatch(hardware, tuple(f"unit-{i % robots}" for i in range(batch)), torch.ones(batch),
                          rand(steps, batch, spec.num_obs), rand(steps + 1, batch, spec.num_critic_obs),
                          rand(steps, batch, spec.num_actions), rand(steps, batch) - 1.0, rand(steps, batch),
                          torch.zeros(steps, batch), torch.zeros(steps, batch), torch.ones(steps, batch),
                          torch.zeros(steps, batch, dtype=torch.int64))


def measure_throughput(policy: FleetPolicy, hardware: str, steps: int = 32, batch: int = 64, updates: int = 10,
                       robots: int = 8, learner_cfg: FleetLearnerConfig | None = None,
                       ppo_cfg: PPOConfig | None = None, seed: int = 0) -> Throughput:
    """Time ``updates`` V-trace updates and ``updates`` PPO updates of copies of ``policy`` (left unchanged) on
    ``steps x batch`` transitions each, after one untimed warm-up update of each."""
    gen = torch.Generator().manual_seed(seed)
    vt_policy = copy.deepcopy(policy)
    learner = VTraceLearner(vt_policy, learner_cfg)
    adapters = {f"unit-{i}": Adapter(vt_policy, hardware) for i in range(robots)}
    data = synthetic_batch(vt_policy, hardware, steps, batch, robots, gen)
    learner.update(data, adapters)
    t0 = time.perf_counter()
    for _ in range(updates):
        learner.update(data, adapters)
    vtrace_s = time.perf_counter() - t0

    ppo_policy = copy.deepcopy(policy)
    cfg = replace(ppo_cfg or PPOConfig(), num_steps_per_env=steps, num_learning_epochs=1, num_mini_batches=1)
    ppo = PPO(ppo_policy, cfg, {hardware: batch})

    def one_ppo_update() -> float:
        with torch.no_grad():
            for t in range(steps):
                obs, critic = data.obs[t], data.critic_obs[t]
                _, transition = ppo.act(hardware, obs, critic)
                ppo.storage[hardware].add(**transition, rewards=data.rewards[t], dones=data.dones[t],
                                          time_outs=data.time_outs[t])
            ppo.storage[hardware].compute_returns(ppo_policy.value(hardware, data.critic_obs[-1]), cfg.gamma,
                                                  cfg.lam)
        t0 = time.perf_counter()
        ppo.update()
        return time.perf_counter() - t0

    one_ppo_update()
    ppo_s = sum(one_ppo_update() for _ in range(updates))
    n = steps * batch
    return Throughput(n * updates / vtrace_s, n * updates / ppo_s, n, updates)
