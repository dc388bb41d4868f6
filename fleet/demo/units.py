"""The demo's stand-in units: which hardware type each robot id is, its reality gap (sim/unit_gaps.py) and seed,
and which of its gap's parameters lie outside what the trunk was trained on (the task's randomisation)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from configs import CONFIG_DIR
from fleet.demo.config import DemoConfig, unit_ids
from hardware.randomization import RandomizationConfig

# a type with no gap of its own borrows one of the same family (same task, same parameter meanings)
GAP_OF = {"cartpole_pivot": "cartpole"}


@dataclass
class Unit:
    """One stand-in robot of the demo."""

    robot_id: str
    hardware: str
    seed: int
    gap: dict[str, Any]
    outside_training_range: list[str]
    canary: bool


def training_ranges(task: str) -> dict[str, list[float]]:
    """The physics ranges the task trains on: configs/task/<task>.yaml's randomization over the defaults."""
    path = CONFIG_DIR / "task" / f"{task}.yaml"
    if not path.is_file():
        raise ValueError(f"task: no task config {path}")
    merged = OmegaConf.merge(OmegaConf.structured(RandomizationConfig),
                             OmegaConf.load(path).get("randomization", {}))
    return {k: list(v) for k, v in OmegaConf.to_container(merged).items() if isinstance(v, list)}


def outside_range(gap: dict[str, Any], trained: dict[str, list[float]]) -> list[str]:
    """The gap's physics parameters whose range reaches beyond the trained one (e.g. ``motor_strength``)."""
    out = []
    for name, (low, high) in sorted(gap.get("physics", {}).items()):
        if name not in trained:
            raise ValueError(f"gap.physics.{name}: not a randomisation parameter of the task")
        t_low, t_high = trained[name]
        if low < t_low or high > t_high:
            out.append(name)
    return out


def unit_gap(hardware: str) -> dict[str, Any]:
    """The reality-gap distribution units of ``hardware`` are drawn from (sim/unit_gaps.py)."""
    from sim.unit_gaps import UNIT_SETUPS  # the demo app needs sim's unit table; fleet's modules do not

    key = hardware if hardware in UNIT_SETUPS else GAP_OF.get(hardware, hardware)
    if key not in UNIT_SETUPS:
        raise ValueError(f"hardware: {hardware!r} has no reality gap in sim/unit_gaps.py UNIT_SETUPS "
                         f"(known: {sorted(UNIT_SETUPS)})")
    return copy.deepcopy(UNIT_SETUPS[key]["gap"])


def plan_units(cfg: DemoConfig) -> list[Unit]:
    """``cfg.robots`` units, hardware types alternating, each with its gap and its own seed; the canaries are
    ``cfg.hub.canaries`` or the first unit of each type."""
    trained = training_ranges(cfg.task_name)
    units = []
    for i, robot in enumerate(unit_ids(cfg.robots)):
        hw = cfg.types[i % len(cfg.types)]
        gap = unit_gap(hw)
        canary = robot in cfg.hub.canaries if cfg.hub.canaries else i < len(cfg.hardware)
        units.append(Unit(robot, hw, 1000 + i, gap, outside_range(gap, trained), canary))
    return units
