"""Structured configs (Hydra schemas) of the sim apps: fleet-train, fleet-eval."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from shared_policy.config import PolicyConfig, PPOConfig
from sim.config import register_task_schemas


@dataclass
class SimConfig:
    """How many worlds, on which device, with which seed and thread count."""

    num_envs: int = 256  # worlds per hardware type (and torchrun rank); rollout = this x num_steps_per_env
    seed: int = 0  # seeds the worlds (physics draws, goals, noise) and torch; rank r's worlds: seed + 1000 r
    device: str = "cpu"  # torch device of observations, actions and policy: cpu | cuda[:N] (physics: CPU)
    nthread: int = 0  # MuJoCo threads stepping the worlds (0 = all cores)


@dataclass
class LoggerConfig:
    """Experiment tracking: ``wandb`` (offline unless WANDB_MODE says otherwise) or ``none``."""

    backend: str = "wandb"  # wandb | none
    project: str = "fleet-learning"  # the W&B project runs are logged to
    run_name: str = ""  # the W&B run name ("" = W&B picks one)
    video_every: int = 0  # iterations between rollout videos (0: none)


@dataclass
class SimAppConfig:
    """What every sim app selects: a task, one or more hardware types, and the worlds to run them in."""

    task: Any = None  # validated against the task's own schema (configs/task/*.yaml defaults list)
    hardware: dict[str, Any] = field(default_factory=dict)  # name -> profile, validated at start-up
    sim: SimConfig = field(default_factory=SimConfig)


@dataclass
class TrainConfig(SimAppConfig):
    """fleet-train: PPO pretraining of the shared trunk over the selected hardware types."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    algorithm: PPOConfig = field(default_factory=PPOConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    iterations: int = 200  # PPO iterations (rollout + update) to run; after resume, this many more
    checkpoint_every: int = 50  # iterations between writes of output_dir/checkpoints/latest (and at the end)
    resume: str = ""  # a checkpoint directory to continue from
    output_dir: str = "outputs/train"  # checkpoints/ and videos/ are written under it
    rollout_threads: int = 1  # torch threads while collecting on CPU (0: leave torch's setting)


@dataclass
class EvalConfig(SimAppConfig):
    """fleet-eval: roll out a checkpoint for N episodes."""

    checkpoint: str = ""  # checkpoint directory to evaluate (required), e.g. outputs/train/checkpoints/latest
    episodes: int = 64  # finished episodes per hardware type, mean action; more narrows the 95% CI


def register_configs() -> None:
    """Register the app and task schemas with Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    register_task_schemas()
