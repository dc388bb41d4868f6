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
class SimAppConfig:
    """What every sim app selects: a task, one or more hardware types, and the worlds to run them in."""

    task: Any = None  # validated against the task's own schema (configs/task/*.yaml defaults list)
    hardware: dict[str, Any] = field(default_factory=dict)  # name -> profile, validated at start-up
    sim: SimConfig = field(default_factory=SimConfig)


@dataclass
class DemoConfig(SimAppConfig):
    """fleet-demo: a short random-action rollout per hardware type, with throughput and one frame."""

    logger: LoggerConfig = field(default_factory=LoggerConfig)
    steps: int = 600
    render: bool = True
    output_dir: str = "outputs/demo"


@dataclass
class TrainConfig(SimAppConfig):
    """fleet-train: PPO pretraining of the shared trunk over the selected hardware types."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    algorithm: PPOConfig = field(default_factory=PPOConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    iterations: int = 200
    checkpoint_every: int = 50
    resume: str = ""  # a checkpoint directory to continue from
    output_dir: str = "outputs/train"
    rollout_threads: int = 1  # torch threads while collecting on CPU (0: leave torch's setting)


@dataclass
class EvalConfig(SimAppConfig):
    """fleet-eval: roll out a checkpoint for N episodes."""

    checkpoint: str = ""
    episodes: int = 64


def register_configs() -> None:
    """Register the app and task schemas with Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="demo_schema", node=DemoConfig)
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    register_task_schemas()
