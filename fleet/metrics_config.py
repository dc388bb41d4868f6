"""Structured config (Hydra schema) of where the hub's metrics go: a Prometheus endpoint and a W&B run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MetricsConfig:
    """The hub's metrics outlets (docs/observability.md). Both read the snapshot the registry is written from."""

    # Prometheus: 0 = no endpoint (the default: an open port is the operator's choice, and two hubs on one
    # machine must not fight over a fixed one). Set a port, e.g. 9464, to serve http://ADDR:PORT/metrics.
    prometheus_port: int = 0
    prometheus_addr: str = "127.0.0.1"  # 0.0.0.0 exposes it beyond this machine
    max_robot_series: int = 1000  # per-robot series for at most this many robots (most recently heard first)
    # W&B: hub-wide metrics every wandb_every_s, offline unless WANDB_MODE says otherwise; WANDB_MODE=disabled
    # or wandb=false: no run at all.
    wandb: bool = True
    wandb_project: str = "fleet-learning"  # the W&B project of the hub's run
    wandb_run_name: str = ""  # "" = W&B's generated name
    wandb_every_s: float = 10.0  # seconds between logged snapshots (and one at stop)

    def validate(self, prefix: str = "metrics") -> None:
        """Raise ValueError naming the key of a wrong value."""
        if not 0 <= self.prometheus_port <= 65535:
            raise ValueError(f"{prefix}.prometheus_port: {self.prometheus_port} is not a port (0 = off, 1-65535)")
        if self.prometheus_port and not self.prometheus_addr:
            raise ValueError(f"{prefix}.prometheus_addr: required when {prefix}.prometheus_port is set")
        if self.max_robot_series < 0:
            raise ValueError(f"{prefix}.max_robot_series: {self.max_robot_series} is negative")
        if self.wandb_every_s <= 0:
            raise ValueError(f"{prefix}.wandb_every_s: {self.wandb_every_s} must be > 0")
        if self.wandb and not self.wandb_project:
            raise ValueError(f"{prefix}.wandb_project: required when {prefix}.wandb is true")
