"""Structured configs (Hydra schemas) of the sim apps: fleet-demo, fleet-train, fleet-eval."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from sim.config import register_task_schemas


@dataclass
class SimConfig:
    """How many worlds, on which device, with which seed and thread count."""

    num_envs: int = 256
    seed: int = 0
    device: str = "cpu"
    nthread: int = 0  # 0 = all cores


@dataclass
class LoggerConfig:
    """Experiment tracking: ``wandb`` (offline unless WANDB_MODE says otherwise) or ``none``."""

    backend: str = "wandb"
    project: str = "fleet-learning"
    run_name: str = ""


@dataclass
class DemoConfig:
    """fleet-demo: a short random-action rollout per hardware type, with throughput and one frame."""

    task: Any = None
    hardware: dict[str, Any] = field(default_factory=dict)
    sim: SimConfig = field(default_factory=SimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    steps: int = 600
    render: bool = True
    output_dir: str = "outputs/demo"


@dataclass
class TrainConfig:
    """fleet-train: sim pretraining of the shared trunk (the PPO learner lands with its own issue)."""

    task: Any = None
    hardware: dict[str, Any] = field(default_factory=dict)
    sim: SimConfig = field(default_factory=SimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    iterations: int = 1000
    output_dir: str = "outputs/train"


@dataclass
class EvalConfig:
    """fleet-eval: roll out a checkpoint for N episodes."""

    task: Any = None
    hardware: dict[str, Any] = field(default_factory=dict)
    sim: SimConfig = field(default_factory=SimConfig)
    checkpoint: str = ""
    episodes: int = 20


def register_configs() -> None:
    """Register the app and task schemas with Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="demo_schema", node=DemoConfig)
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    register_task_schemas()
