"""Structured config (Hydra schema) of the hub daemon."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class HubConfig:
    """Where the hub listens and stores experience."""

    bind: str = "tcp://127.0.0.1:5555"
    storage_dir: str = "fleet_data"
    max_frame_bytes: int = 16 * 1024 * 1024


def register_configs() -> None:
    """Register the hub schema with Hydra's ConfigStore."""
    ConfigStore.instance().store(name="hub_schema", node=HubConfig)
