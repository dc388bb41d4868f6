"""The update loop of one fleet learning round: V-trace on the fleet's experience, sim PPO kept in the mix.

``updates`` slots; a fraction ``sim_fraction`` of them, spread evenly, are sim PPO iterations (a rollout on every
hardware type of the trunk, then one PPO update, with :class:`sim.pretrain.PretrainRunner`'s own collect and
:class:`shared_policy.ppo.PPO`), so the trunk does not forget what sim taught it. Every other slot is one
V-trace update (:class:`shared_policy.vtrace_learner.VTraceLearner`) per hardware type with data, each column
learned with its robot's latest adapter applied (a robot with none: the bare policy). The sampled sequences'
priorities are then set from the learner's |TD errors|.

Data-parallel under torchrun: each rank feeds its own shard of the replay (robots hashed to ranks); per slot the
ranks agree on which types any of them has a batch of, and a rank without one still joins the gradient
all-reduce (``fleet.rank_gradients``), so every rank takes the same steps and ends with the same weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from fleet.rank_gradients import raise_if_any_rank_nonfinite
from fleet.replay.feed import ReplayFeeder
from fleet.replay.rate_limiter import RateLimitTimeout
from fleet.replay.replay import FleetReplay
from fleet.replay.sequences import sequence_priority
from shared_policy.adapter import Adapter
from shared_policy.tracking import CurveFile, RunLogger
from shared_policy.vtrace_learner import VTraceLearner
from sim.pretrain import PretrainRunner


def curve_columns(hardware: list[str]) -> list[str]:
    """The learner curve's columns (``<output_dir>/curve.csv``): per update slot the losses per type."""
    per_type = [f"{hw}/{k}" for hw in sorted(hardware) for k in ("policy_loss", "value_loss", "rho_mean")]
    return ["update", "round", "sim", "steps_used", "steps_stale", *per_type, "sim/loss/policy", "sim/loss/value"]


class NoFleetData(RuntimeError):
    """No rank had a single sequence to learn from for the whole round."""


@dataclass
class RoundStats:
    """What a round's updates did (this rank's view; the update counts are the same on every rank)."""

    vtrace_updates: int = 0  # slots with at least one type learned from
    sim_updates: int = 0
    steps_used: float = 0.0  # sampled steps learned from (this rank)
    steps_stale: float = 0.0  # sampled steps masked as too stale (this rank)
    last: dict[str, float] = field(default_factory=dict)  # the latest metrics, by name
    slot: dict[str, float] = field(default_factory=dict)  # the metrics the current update slot computed


def is_sim_slot(i: int, fraction: float) -> bool:
    """Whether update slot ``i`` is a sim PPO iteration: ``fraction`` of the slots, spread evenly."""
    return math.floor((i + 1) * fraction + 1e-9) > math.floor(i * fraction + 1e-9)


class FleetRoundLoop:
    """Runs the update slots of a round on this rank (module docstring)."""

    def __init__(self, learner: VTraceLearner, replay: FleetReplay, feeder: ReplayFeeder, hardware: list[str],
                 adapters: Mapping[str, Adapter], batch_size: int, sample_timeout_s: float,
                 sim: PretrainRunner | None, logger: RunLogger, is_main: bool = True):
        self.learner, self.replay, self.feeder = learner, replay, feeder
        self.hardware, self.adapters = sorted(hardware), adapters
        self.batch_size, self.sample_timeout_s = batch_size, sample_timeout_s
        self.sim, self.logger, self.is_main = sim, logger, is_main
        self.global_step = 0  # slots over every round (the logger's step)
        self.curve: CurveFile | None = None  # set by the app: one row per update slot (learning curve)

    def fill(self) -> int:
        """Insert what the reader has now (as far as the rate limiter lets it); returns sequences inserted."""
        total = 0
        while n := self.feeder.step():
            total += n
        return total

    def _sample(self, hw: str):
        if hw not in self.replay.hardware or not len(self.replay.table(hw)):
            return None
        try:
            return self.replay.sample(hw, self.batch_size, timeout=self.sample_timeout_s)
        except RateLimitTimeout:
            return None  # under min_size, or sampling ran ahead of inserts: this type sits this slot out

    def _agree(self, have: list[bool]) -> list[int]:
        """How many ranks have a batch of each type."""
        flags = torch.tensor(have, dtype=torch.float32)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flags)
        return [int(x) for x in flags.tolist()]

    def vtrace_slot(self, stats: RoundStats) -> bool:
        """One V-trace update per type any rank has a batch of; False if no rank had any."""
        self.feeder.step()
        batches = {hw: self._sample(hw) for hw in self.hardware}
        counts = self._agree([batches[hw] is not None for hw in self.hardware])
        for hw, n in zip(self.hardware, counts, strict=True):
            if n == 0:
                continue
            batch = batches[hw]
            if batch is None:
                self.learner.update_without_batch()
                continue
            result = self.learner.update(batch, self.adapters)
            eta = self.replay.cfg.priority_eta
            self.replay.update_priorities(hw, batch.keys,
                                          sequence_priority(result.td_abs.numpy(), batch.mask.numpy(), eta))
            m = result.metrics
            stats.steps_used += m["steps_used"]
            stats.steps_stale += m["steps_stale"]
            stats.slot.update({f"{hw}/{k}": v for k, v in m.items()})
        stats.last.update(stats.slot)
        return any(counts)

    def sim_slot(self, stats: RoundStats) -> None:
        """One sim PPO iteration over every hardware type."""
        assert self.sim is not None
        self.sim.collect()
        stats.slot.update({f"sim/{k}": v for k, v in self.sim.ppo.update().items()})
        stats.last.update(stats.slot)
        stats.sim_updates += 1

    def run(self, updates: int, sim_fraction: float, log_every: int, round_label: str,
            round_number: int = 1) -> RoundStats:
        """The round's ``updates`` slots; NoFleetData if no V-trace slot found any data on any rank."""
        stats, t0 = RoundStats(), time.perf_counter()
        fraction = sim_fraction if self.sim is not None else 0.0
        for i in range(updates):
            stats.slot = {}
            if is_sim_slot(i, fraction):
                self.sim_slot(stats)
            elif self.vtrace_slot(stats):
                stats.vtrace_updates += 1
            self.global_step += 1
            raise_if_any_rank_nonfinite(stats.last, f"update {i + 1} of {round_label}")
            if self.is_main:
                self.logger.log({**stats.last, "steps_used": stats.steps_used, "steps_stale": stats.steps_stale},
                                step=self.global_step)
                if self.curve is not None:
                    # this slot's own metrics only: a type with no batch, or the other kind of slot, stays empty
                    self.curve.append({"update": self.global_step, "round": round_number,
                                       "sim": int(is_sim_slot(i, fraction)), "steps_used": stats.steps_used,
                                       "steps_stale": stats.steps_stale, **stats.slot})
                if (i + 1) % log_every == 0 or i + 1 == updates:
                    print(self._line(stats, i + 1, updates, time.perf_counter() - t0, round_label), flush=True)
        if stats.vtrace_updates == 0 and fraction < 1.0:
            raise NoFleetData(f"{round_label}: no fleet sequences to learn from in {updates} updates (replay "
                              f"tables: { {hw: len(self.replay.table(hw)) for hw in self.replay.hardware} })")
        return stats

    def _line(self, s: RoundStats, done: int, total: int, elapsed: float, label: str) -> str:
        parts = []
        for hw in self.hardware:
            if f"{hw}/policy_loss" in s.last:
                parts.append(f"{hw} pi {s.last[f'{hw}/policy_loss']:+.3f} v {s.last[f'{hw}/value_loss']:.3f} "
                             f"rho {s.last[f'{hw}/rho_mean']:.2f}")
        if "sim/loss/policy" in s.last:
            parts.append(f"sim pi {s.last['sim/loss/policy']:+.3f} v {s.last['sim/loss/value']:.3f}")
        return (f"[learn] {label} update {done}/{total} | {done / max(elapsed, 1e-9):.1f} updates/s | "
                f"{' | '.join(parts) or 'no data yet'} | steps used {s.steps_used:.0f} stale {s.steps_stale:.0f} "
                f"(fleet {s.vtrace_updates}, sim {s.sim_updates})")
