"""Structured config (Hydra schema) of ``fleet-demo``: every phase's budget, the fleet's size and types, where
the run goes. ``validate`` names the key of a wrong value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from configs import CONFIG_DIR, group_options
from hardware.tasks.config import register_task_schemas


@dataclass
class PretrainPhase:
    """Phase 1: ``fleet-train`` on every hardware type of the demo."""

    iterations: int = 60  # PPO iterations (each: num_envs x 24 steps per type)
    num_envs: int = 256  # worlds per hardware type
    seed: int = 0  # the training worlds' seed
    overrides: list[str] = field(default_factory=list)  # more fleet-train overrides, e.g. [policy=small]


@dataclass
class OraclePhase:
    """Phase 2: the pretrained trunk in sim per type (``fleet-eval``): what sim promised."""

    episodes: int = 64  # finished episodes per hardware type
    num_envs: int = 64  # worlds evaluated at once per type


@dataclass
class HubPhase:
    """Phase 3: the hub (CURVE on) and its canary roll-out."""

    port: int = 0  # 0: a free port on 127.0.0.1
    # robot ids that are canaries; [] = the first unit of each hardware type
    canaries: list[str] = field(default_factory=list)
    min_episodes: int = 3  # a canary's episodes on the candidate before its verdict
    history_episodes: int = 3  # its last episodes on the previous trunk: the baseline
    tolerance: float = 0.5  # pass iff candidate mean >= previous mean - tolerance x |previous mean|
    overrides: list[str] = field(default_factory=list)  # more fleet-hub overrides


@dataclass
class AgentsPhase:
    """Phase 4: the robot agent daemons on stand-in units (real time: they play physical robots)."""

    episode_length_s: float = 4.0  # shorter than the task's 10 s, so a unit runs more episodes in the demo
    adapt_s: float = 90.0  # on-robot adaptation before the fleet round (faults at half of it)
    steps_per_update: int = 400  # adapter PPO: transitions per update
    guard_episodes: int = 3  # the adapter guard's episodes per side
    adapter_preset: str = "fleet"  # robot-agent adapter_preset (configs/adapter_preset/): units in a fleet
    status_every_s: float = 1.0  # each agent's status.json (what the demo watches) this often
    drain_on_stop_s: float = 8.0  # at SIGTERM, keep sending the spool to the hub this long at most
    connect_timeout_s: float = 120.0  # every unit connected to the hub by then, or the demo fails
    overrides: list[str] = field(default_factory=list)  # more robot-agent overrides (every unit)


@dataclass
class FaultsPhase:
    """Phase 5: what the demo breaks on purpose, halfway through adaptation."""

    kill_hub: bool = True  # SIGKILL the hub, restart it on the same store
    kill_agent: bool = True  # SIGKILL one agent (its whole process group), restart it on the same state_dir
    agent: str = ""  # which robot; "" = the last unit
    down_s: float = 2.0  # how long each stays down


@dataclass
class LearnPhase:
    """Phase 6: one ``fleet-learn`` round, its candidate through the canaries to every unit."""

    updates: int = 30  # update slots of the round (fleet-learn updates)
    sim_fraction: float = 0.25  # share of them that are sim PPO iterations (fleet-learn sim_fraction)
    batch_size: int = 16  # sequences per V-trace batch (fleet-learn batch_size)
    gate_episodes: int = 32  # sim episodes per type the candidate is gated on (fleet-learn gate.episodes)
    gate_tolerance: float = 0.2  # how much worse than v1 in sim it may be, as a fraction (fleet-learn gate.tolerance)
    learning_rate: float = 1e-4  # the V-trace learner's step size (fleet-learn learner.learning_rate)
    rebase_steps: int = 200  # optimiser steps distilling each unit's adapter onto the candidate (fleet-learn rebase.steps)
    rollout_timeout_s: float = 240.0  # candidate verdict + every unit on the new trunk by then
    episodes_after: int = 2  # episodes per unit on the fleet-updated trunk before shutdown
    overrides: list[str] = field(default_factory=list)  # more fleet-learn overrides


@dataclass
class DemoConfig:
    """fleet-demo: the whole loop in one command (fleet/demo/app.py)."""

    # the task and hardware config groups, as in the sim apps: task=<name>, hardware=[<type>,<type>,...]
    task: Any = None  # configs/task/<name>.yaml: what every unit and the sim run
    hardware: dict[str, Any] = field(default_factory=dict)  # >= 2 types (by name); units alternate between them
    robots: int = 4  # agents, hardware types alternating; at least 2 per type
    run_dir: str = ""  # "" = outputs/demo/<YYYY-mm-dd_HH-MM-SS>
    wandb: bool = True  # every part logs to W&B (offline unless WANDB_MODE says otherwise) under <run>/wandb
    progress_every_s: float = 5.0  # not a terminal: one progress line this often
    stop_timeout_s: float = 30.0  # SIGTERM to a part: it must exit by then, else it is killed (and reported)
    report: bool = True  # build the report (fleet.report) as the last phase
    report_timeout_s: float = 300.0  # the report (a part of its own: fleet-eval report) is killed past this
    pretrain: PretrainPhase = field(default_factory=PretrainPhase)
    oracle: OraclePhase = field(default_factory=OraclePhase)
    hub: HubPhase = field(default_factory=HubPhase)
    agents: AgentsPhase = field(default_factory=AgentsPhase)
    faults: FaultsPhase = field(default_factory=FaultsPhase)
    learn: LearnPhase = field(default_factory=LearnPhase)

    @property
    def task_name(self) -> str:
        """The selected task's name."""
        return str(self.task["name"] if isinstance(self.task, dict) else getattr(self.task, "name", self.task))

    @property
    def types(self) -> list[str]:
        """The selected hardware types, in order."""
        return list(self.hardware)

    def validate(self) -> None:
        """Raise ValueError naming the key of a wrong value."""
        if len(self.hardware) < 2:
            raise ValueError(f"hardware: need at least two different types, got {self.types}")
        if not self.task_name or self.task_name == "None":
            raise ValueError("task: choose one, e.g. task=cartpole_swingup")
        if self.robots < 2 * len(self.hardware):
            raise ValueError(f"robots: need at least 2 per hardware type ({2 * len(self.hardware)}), got {self.robots}")
        positive = {
            "progress_every_s": self.progress_every_s, "stop_timeout_s": self.stop_timeout_s,
            "report_timeout_s": self.report_timeout_s,
            "pretrain.iterations": self.pretrain.iterations, "pretrain.num_envs": self.pretrain.num_envs,
            "oracle.episodes": self.oracle.episodes, "oracle.num_envs": self.oracle.num_envs,
            "hub.min_episodes": self.hub.min_episodes, "hub.history_episodes": self.hub.history_episodes,
            "agents.episode_length_s": self.agents.episode_length_s, "agents.adapt_s": self.agents.adapt_s,
            "agents.steps_per_update": self.agents.steps_per_update,
            "agents.status_every_s": self.agents.status_every_s,
            "agents.connect_timeout_s": self.agents.connect_timeout_s,
            "learn.updates": self.learn.updates, "learn.batch_size": self.learn.batch_size,
            "learn.gate_episodes": self.learn.gate_episodes, "learn.learning_rate": self.learn.learning_rate,
            "learn.rebase_steps": self.learn.rebase_steps,
            "learn.rollout_timeout_s": self.learn.rollout_timeout_s,
        }
        for key, value in positive.items():
            if not value > 0:
                raise ValueError(f"{key}: must be > 0, got {value}")
        nonneg = {"agents.drain_on_stop_s": self.agents.drain_on_stop_s, "faults.down_s": self.faults.down_s,
                  "learn.episodes_after": self.learn.episodes_after}
        for key, value in nonneg.items():
            if value < 0:
                raise ValueError(f"{key}: must be >= 0, got {value}")
        if self.agents.guard_episodes < 2:
            raise ValueError(f"agents.guard_episodes: must be >= 2, got {self.agents.guard_episodes}")
        presets = group_options("adapter_preset")
        if self.agents.adapter_preset not in presets:
            raise ValueError(f"agents.adapter_preset: one of {presets}, got {self.agents.adapter_preset!r}")
        if any(o.lstrip("+~").split("=", 1)[0] == "adapter_preset" for o in self.agents.overrides):
            # Hydra keeps the last adapter_preset= silently: the check below and the demo's record would miss it
            raise ValueError("agents.overrides: sets adapter_preset; set agents.adapter_preset instead")
        learning = [p for p in presets if _preset_learns(p)]
        if self.agents.adapter_preset not in learning:  # the demo's agents are started with adapter.learn=true
            raise ValueError(f"agents.adapter_preset: {self.agents.adapter_preset!r} turns on-robot learning or "
                             f"exploring off and the demo's robots learn on-robot: use one of {learning}")
        if not 0 <= self.learn.sim_fraction < 1:
            raise ValueError(f"learn.sim_fraction: must be in [0, 1), got {self.learn.sim_fraction}")
        if not 0 <= self.learn.gate_tolerance < 1:
            raise ValueError(f"learn.gate_tolerance: must be in [0, 1), got {self.learn.gate_tolerance}")
        if not 0 <= self.hub.tolerance < 10:
            raise ValueError(f"hub.tolerance: must be in [0, 10), got {self.hub.tolerance}")
        if not 0 <= self.hub.port < 65536:
            raise ValueError(f"hub.port: must be in [0, 65535], got {self.hub.port}")
        ids = unit_ids(self.robots)
        for robot in self.hub.canaries:
            if robot not in ids:
                raise ValueError(f"hub.canaries: {robot!r} is not one of the demo's units {ids}")
        if self.hub.canaries:  # the hub tries a trunk only when every type has a canary (fleet/rollout.py)
            covered = {self.types[ids.index(r) % len(self.types)] for r in self.hub.canaries}
            if missing := [t for t in self.types if t not in covered]:
                raise ValueError(f"hub.canaries: {self.hub.canaries} has no unit of hardware type(s) {missing} "
                                 f"(units alternate types: {ids[:len(self.types)]} are one of each)")
        if self.faults.agent and self.faults.agent not in ids:
            raise ValueError(f"faults.agent: {self.faults.agent!r} is not one of the demo's units {ids}")


def unit_ids(robots: int) -> list[str]:
    """The demo's robot ids: unit-0 ... unit-<robots-1>."""
    return [f"unit-{i}" for i in range(robots)]


def register_configs() -> None:
    """Register the demo schema (and the task schemas its task group uses) with Hydra's ConfigStore."""
    ConfigStore.instance().store(name="demo_schema", node=DemoConfig)
    register_task_schemas()


def _preset_learns(name: str) -> bool:
    """Whether ``adapter_preset=<name>`` leaves on-robot learning and the exploring it needs on
    (configs/adapter_preset/<name>.yaml): the demo starts its agents with ``adapter.learn=true``, and an agent
    refuses learning without exploring."""
    preset = OmegaConf.load(CONFIG_DIR / "adapter_preset" / f"{name}.yaml")
    return all(str(preset.get(key, True)).lower() not in ("false", "0", "no", "off") for key in ("learn", "explore"))
