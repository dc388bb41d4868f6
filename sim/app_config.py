"""Structured configs (Hydra schemas) of the sim apps: fleet-demo, fleet-train, fleet-eval."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from shared_policy.config import PolicyConfig, PPOConfig
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
    video_every: int = 0  # iterations between rollout videos (0: none)


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
    """fleet-train: PPO pretraining of the shared trunk over the selected hardware types."""

    task: Any = None
    hardware: dict[str, Any] = field(default_factory=dict)
    sim: SimConfig = field(default_factory=SimConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    algorithm: PPOConfig = field(default_factory=PPOConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    iterations: int = 200
    checkpoint_every: int = 50
    resume: str = ""  # a checkpoint directory to continue from
    output_dir: str = "outputs/train"


@dataclass
class EvalConfig:
    """fleet-eval: roll out a checkpoint for N episodes."""

    task: Any = None
    hardware: dict[str, Any] = field(default_factory=dict)
    sim: SimConfig = field(default_factory=SimConfig)
    checkpoint: str = ""
    episodes: int = 64


def register_configs() -> None:
    """Register the app and task schemas with Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="demo_schema", node=DemoConfig)
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    register_task_schemas()
