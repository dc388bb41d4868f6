"""The fleet-round benchmark's fleet: stand-in units run by real robot agents against a real ``fleet-hub`` process.

Each unit is a MuJoCo stand-in with its own reality gap draw (``sim/unit_gaps.py``: the gap plus the unit's seed)
on a simulated clock (``realtime=false``), driven by a :class:`robot_agent.agent.RobotAgent` in a thread of this
process: adapter learning on (its own trainer process, guarded), the uplink on (CURVE keys enrolled with
``fleet-keys``' functions), trunks the hub announces downloaded into the unit's ``trunk_dir`` and swapped in
between episodes. The agents run in phases (:meth:`Fleet.run_episodes`, :meth:`Fleet.run_until`): a phase
starts every agent and stops them all at its end, so a fleet-learn round never competes with eight control
loops for the GIL; a restarted agent resumes from its state directory (trunk, adapter, spool), as a
rebooted robot does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub_processes import robot_keys  # beside this script

from fleet.config import SecurityConfig, SocketConfig
from fleet.rollout_log import read_steps
from hardware.tasks.config import task_config
from robot_agent.agent import RobotAgent
from robot_agent.config import AgentConfig, AgentUplinkConfig, apply_adapter_preset
from sim.unit_gaps import UNIT_SETUPS

SETTLED = ("promoted", "rolled_back")  # the roll-out steps that end a candidate's trial


@dataclass(frozen=True)
class Unit:
    """A stand-in unit: its hardware type, task, reality gap and the seed that draws its true physics."""

    hardware: str
    seed: int

    @property
    def robot_id(self) -> str:
        """Its id in the fleet (chunk ids, the hub's registry, the adapter store)."""
        return f"{self.hardware}-{self.seed}"

    @property
    def task(self) -> str:
        """Its task (UNIT_SETUPS)."""
        return UNIT_SETUPS[self.hardware]["task"]

    @property
    def gap(self) -> dict[str, Any]:
        """The reality gap its physics are drawn from (UNIT_SETUPS)."""
        return UNIT_SETUPS[self.hardware]["gap"]


def make_units(types: list[str], per_type: int, first_seed: int) -> list[Unit]:
    """``per_type`` units of each type, seeds ``first_seed, first_seed + 1, ...`` (distinct across types too)."""
    return [Unit(hw, first_seed + i * per_type + u) for i, hw in enumerate(types) for u in range(per_type)]


@dataclass
class AgentSettings:
    """What every unit's agent shares: the trunk it starts from, the hub, adapter learning."""

    checkpoint: Path  # the v1 trunk every unit starts on
    endpoint: str
    keys: Path | None  # fleet-keys dir (robots under robots/<id>); None: plain text
    guard_episodes: int = 4
    steps_per_update: int = 1000
    drift_kl: float = 0.0  # adapter.drift_kl: how far on-robot learning may move from the trunk's adapter
    adapter_preset: str = "fleet"  # adapter_preset=<name> (configs/adapter_preset/): a unit in a fleet
    # None: the preset's. adapter.guard_floor: roll back updates measuring more than this fraction worse
    guard_floor: float | None = None
    learn_log_std: bool | None = None  # None: the preset's. adapter.learn_log_std: false holds the noise as received


def agent_config(unit: Unit, work: Path, s: AgentSettings, max_episodes: int) -> AgentConfig:
    """The unit's agent: its stand-in, adapter learning guarded, uplink and trunk downloads on."""
    udir = work / "agents" / unit.robot_id
    cfg = AgentConfig(robot_id=unit.robot_id, hardware=unit.hardware, checkpoint=str(s.checkpoint),
                      trunk_dir=str(udir / "trunks"), state_dir=str(udir / "state"), max_episodes=max_episodes,
                      seed=unit.seed, status_every_s=1e9)
    cfg.driver.options = {"realtime": False, "seed": unit.seed, "gap": unit.gap}
    a = cfg.adapter
    apply_adapter_preset(a, s.adapter_preset)  # first: the settings below win over it, as overrides do in Hydra
    a.enabled = True  # learning and exploring as the preset sets them (on unless it turns them off)
    a.wait_for_learner = True  # a simulated clock outruns any learner; a real robot's learner keeps up
    a.guard_episodes, a.steps_per_update, a.drift_kl = s.guard_episodes, s.steps_per_update, s.drift_kl
    if s.guard_floor is not None:
        a.guard_floor = s.guard_floor
    if s.learn_log_std is not None:
        a.learn_log_std = s.learn_log_std
    cfg.logger.backend = "none"
    security = SecurityConfig(keys_dir=robot_keys(s.keys, unit.robot_id)) if s.keys else \
        SecurityConfig(mode="plaintext", keys_dir="")
    cfg.uplink = AgentUplinkConfig(enabled=True, endpoint=s.endpoint, security=security, backoff_min_s=0.05,
                                   backoff_max_s=1.0, socket=SocketConfig(reconnect_ivl_ms=50, reconnect_ivl_max_ms=500),
                                   drain_on_stop_s=5.0)
    cfg.stop_timeout_s = 15.0  # a loaded machine: the spool's drain to the hub and the learner's stop share it
    return cfg


class Fleet:
    """The units' agents, run phase by phase (module docstring)."""

    def __init__(self, units: list[Unit], work: Path, settings: AgentSettings):
        self.units, self.work, self.settings = units, work, settings
        self.agents: dict[str, RobotAgent] = {}
        self.episodes: dict[str, int] = {u.robot_id: 0 for u in units}  # over all phases
        self.faults: list[str] = []
        self.verdicts: dict[str, list[dict[str, Any]]] = {}  # each unit's guard verdicts since take_verdicts()

    def _start(self, max_episodes: int) -> list[threading.Thread]:
        self.agents = {u.robot_id: RobotAgent(agent_config(u, self.work, self.settings, max_episodes),
                                              task_config(u.task)) for u in self.units}
        threads = [threading.Thread(target=a.run, name=f"agent-{r}", daemon=True) for r, a in self.agents.items()]
        for t in threads:
            t.start()
        return threads

    def _join(self, threads: list[threading.Thread]) -> None:
        for t in threads:
            t.join(300)
        for robot, agent in self.agents.items():
            self.episodes[robot] += agent.episodes
            if agent.fault:
                self.faults.append(f"{robot}: {agent.fault}")
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"agents did not stop: {alive}")
        for robot, agent in self.agents.items():  # every agent thread has ended: its verdicts are final
            self.verdicts.setdefault(robot, []).extend(agent.guard_verdicts)

    def run_episodes(self, episodes: int) -> None:
        """Every unit runs ``episodes`` episodes (learning its adapter, uploading), then its agent stops."""
        self._join(self._start(episodes))

    def run_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Every unit runs until ``done()`` (polled between episodes' worth of time) or the timeout; then all
        stop. Whether ``done()`` held."""
        threads = self._start(0)
        end = time.monotonic() + timeout_s
        try:
            while not (ok := done()) and time.monotonic() < end and any(t.is_alive() for t in threads):
                time.sleep(0.5)
        finally:
            for agent in self.agents.values():
                agent.request_stop()
            self._join(threads)
        return ok

    def take_verdicts(self) -> dict[str, list[dict[str, Any]]]:
        """Each unit's adapter guard verdicts (kept, rolled back, by the floor) since the last call."""
        out, self.verdicts = self.verdicts, {}
        return out

    def trunk_versions(self) -> dict[str, int]:
        """The trunk each unit's agent runs now (or ran last)."""
        return {r: a.runtime.trunk_version for r, a in self.agents.items()}

    def adapter_sources(self) -> dict[str, str]:
        """Where each unit's adapter came from at its last trunk swap in this phase (``rebased``: the one the hub
        packed with the trunk; ``own``, ``fresh``; ``start``: no swap)."""
        return {r: a.trunk_adapter_source for r, a in self.agents.items()}


def rollout_settled(storage: Path, version: int) -> dict[str, Any] | None:
    """The step that ended ``version``'s canary trial (promoted or rolled back), if it has ended."""
    return next((s for s in read_steps(storage) if s["version"] == version and s["event"] in SETTLED), None)


def rollout_steps(storage: Path, version: int) -> list[dict[str, Any]]:
    """Every logged roll-out step of ``version``."""
    return [s for s in read_steps(storage) if s["version"] == version]
