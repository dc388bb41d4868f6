"""Structured config (Hydra schema) of the robot agent daemon."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class AgentConfig:
    """Which robot this is, what it runs, and where it spools and uplinks."""

    robot_id: str = "unit-0"
    hardware: str = "cartpole"
    task: str = "cartpole_swingup"
    driver: str = "mujoco_standin"
    spool_dir: str = "spool"
    hub_endpoint: str = "tcp://127.0.0.1:5555"


def register_configs() -> None:
    """Register the agent schema with Hydra's ConfigStore."""
    ConfigStore.instance().store(name="agent_schema", node=AgentConfig)
