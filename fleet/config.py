"""Structured config (Hydra schema) of the hub daemon."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore


@dataclass
class HubConfig:
    """Where the hub listens and stores experience."""

    bind: str = "tcp://127.0.0.1:5555"
    storage_dir: str = "fleet_data"  # the experience store: <storage_dir>/experience.sqlite
    max_frame_bytes: int = 16 * 1024 * 1024
    # Group commit: a commit group closes at this many chunks, or this long after its first chunk
    # (0 = take what queued during the previous fsync, wait no longer).
    store_group_chunks: int = 32
    store_group_wait_ms: float = 1.0
    parquet_dir: str = ""  # the Parquet tier; "" = <storage_dir>/parquet
    parquet_file_mb: float = 128.0  # roll Parquet files at about this size ...
    parquet_roll_s: float = 300.0  # ... or when their oldest row is this old (the tier's worst freshness)

    def parquet_path(self) -> Path:
        """The Parquet tier's directory."""
        return Path(self.parquet_dir) if self.parquet_dir else Path(self.storage_dir) / "parquet"

    def validate(self) -> None:
        """Range checks beyond the schema's types; raise ValueError naming the key."""
        checks = {
            "max_frame_bytes": self.max_frame_bytes > 0,
            "store_group_chunks": self.store_group_chunks >= 1,
            "store_group_wait_ms": self.store_group_wait_ms >= 0,
            "parquet_file_mb": self.parquet_file_mb > 0,
            "parquet_roll_s": self.parquet_roll_s > 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"{key}: invalid value {getattr(self, key)!r}")


def register_configs() -> None:
    """Register the hub schema with Hydra's ConfigStore."""
    ConfigStore.instance().store(name="hub_schema", node=HubConfig)
