"""Structured config (Hydra schema) of the hub daemon, and of the link settings hub and robot share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore

from fleet.metrics_config import MetricsConfig
from fleet.rollout import RolloutConfig

SECURITY_MODES = ("curve", "plaintext")


@dataclass
class SecurityConfig:
    """CURVE with an allow-list of robot keys (the default), or plain text for a lab network only."""

    mode: str = "curve"  # curve | plaintext (no encryption, no authentication: identity is HELLO's robot id)
    keys_dir: str = "fleet_keys"  # hub: the directory of `fleet-keys init`; robot: the one `enrol` wrote
    allowlist_reload_ms: int = 500  # hub: how often the allow-list file is checked for changes (revocations)

    def validate(self, prefix: str = "security") -> None:
        """Raise ValueError naming the key of a wrong value."""
        if self.mode not in SECURITY_MODES:
            raise ValueError(f"{prefix}.mode: {self.mode!r} is not one of {list(SECURITY_MODES)}")
        if self.mode == "curve" and not self.keys_dir:
            raise ValueError(f"{prefix}.keys_dir: required when {prefix}.mode is curve")
        if self.allowlist_reload_ms < 0:
            raise ValueError(f"{prefix}.allowlist_reload_ms: {self.allowlist_reload_ms} is negative")


@dataclass
class SocketConfig:
    """ZeroMQ socket options (fleet/sockets.py applies them; docs/protocol.md says why each)."""

    linger_ms: int = 100  # unsent messages at close wait at most this long
    sndhwm: int = 1000  # messages queued per peer before sends say 'full'
    rcvhwm: int = 1000  # messages queued per peer before the socket stops reading that peer
    io_timeout_ms: int = 1000  # SNDTIMEO / RCVTIMEO: the backstop deadline of any blocking call
    reconnect_ivl_ms: int = 100  # robot: first reconnect delay ...
    reconnect_ivl_max_ms: int = 10_000  # ... doubling up to this
    zmtp_heartbeat_ms: int = 5000  # ZMTP-level pings that find a dead TCP peer (0 = off); timeout 3x

    def validate(self, prefix: str = "socket") -> None:
        """Raise ValueError naming the key of a wrong value."""
        for key in ("linger_ms", "sndhwm", "rcvhwm", "io_timeout_ms", "zmtp_heartbeat_ms"):
            if getattr(self, key) < 0:
                raise ValueError(f"{prefix}.{key}: {getattr(self, key)} is negative")
        if self.io_timeout_ms == 0:
            raise ValueError(f"{prefix}.io_timeout_ms: must be > 0 (every blocking call has a deadline)")
        if not 0 < self.reconnect_ivl_ms <= self.reconnect_ivl_max_ms:
            raise ValueError(f"{prefix}.reconnect_ivl_ms / reconnect_ivl_max_ms: need 0 < "
                             f"{self.reconnect_ivl_ms} <= {self.reconnect_ivl_max_ms}")


@dataclass
class HubConfig:
    """Where the hub listens and stores experience."""

    bind: str = "tcp://127.0.0.1:5555"  # ZeroMQ endpoint the hub's ROUTER binds (tcp://host:* picks a free port)
    storage_dir: str = "fleet_data"  # the experience store: <storage_dir>/experience.sqlite
    max_frame_bytes: int = 16 * 1024 * 1024  # largest frame accepted, bytes (ZMQ MAXMSGSIZE: bigger cuts the peer)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    socket: SocketConfig = field(default_factory=SocketConfig)
    # 512, not 128: under 128 robots a group then holds a few chunks of each, so one fsync and one ACK per robot
    # cover ~4x the chunks (benchmarks/hub_ingest.py, 64 KiB x 128 robots: +16-26% chunks/s; BENCHMARKS.md)
    store_group_chunks: int = 512  # group commit: a group (one fsync) closes at this many chunks ...
    store_group_mb: float = 32.0  # ... or this many MiB (the chunk that crosses it is the group's last) ...
    store_group_wait_ms: float = 1.0  # ... or this many ms after its first (0: only what queued during the last fsync)
    store_direct_io: bool = True  # write segments' whole blocks O_DIRECT, past the page cache (fleet/segments.py)
    parquet_dir: str = ""  # the Parquet tier; "" = <storage_dir>/parquet
    parquet_file_mb: float = 128.0  # roll Parquet files at about this size ...
    parquet_roll_s: float = 300.0  # ... or when their oldest row is this old (the tier's worst freshness)
    parquet_export: bool = True  # the hub exports to the Parquet tier in a process of its own (fleet/export_process.py)
    parquet_every_s: float = 1.0  # how often that thread looks for newly stored chunks when it has caught up
    parquet_busy_max: float = 0.5  # the share of time it may export while behind (the rest: ingest's, for the CPU)
    # Flow control and liveness (docs/protocol.md): each robot may have this many chunk bytes unacked ...
    credit_bytes: int = 8 * 1024 * 1024
    # ... and all robots together this many: a robot's credit is min(credit_bytes, this / robots connected), and the
    # hub's queue of chunks never holds more (a robot with nothing queued may still send one chunk) ...
    credit_total_bytes: int = 256 * 1024 * 1024
    # ... and the shares shrink to what the store commits in this long (measured; 0 = off): a slow disk shortens the
    # queue, so acks keep coming within the robots' resend timeout (uplink.resend_s, 10 s)
    credit_queue_s: float = 5.0
    heartbeat_ms: int = 1000  # the hub heartbeats each robot this often, and tells robots to do the same
    dead_after_heartbeats: int = 5  # a robot silent for this many heartbeat intervals is dead (its session ends)
    forget_after_s: float = 3600.0  # a robot gone (dead, cut, disconnected) this long leaves the registry and metrics
    registry_every_s: float = 1.0  # <storage_dir>/registry.json (what `fleet-hub status` prints) this often
    stop_timeout_s: float = 10.0  # SIGTERM: commit and ack what is queued within this, then exit
    run_for_s: float = 0.0  # stop by itself after this long, as at SIGTERM (0 = until signalled): smoke tests
    metrics: MetricsConfig = field(default_factory=MetricsConfig)  # Prometheus endpoint and W&B run
    trunk_piece_bytes: int = 1024 * 1024  # the most trunk bytes one TRUNK_DATA carries (robots ask for less)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # canary trials of candidate trunks

    def parquet_path(self) -> Path:
        """The Parquet tier's directory."""
        return Path(self.parquet_dir) if self.parquet_dir else Path(self.storage_dir) / "parquet"

    def validate(self) -> None:
        """Range checks beyond the schema's types; raise ValueError naming the key."""
        checks = {
            "max_frame_bytes": self.max_frame_bytes > 0,
            "store_group_chunks": self.store_group_chunks >= 1,
            "store_group_mb": self.store_group_mb * 1024 * 1024 >= 1,
            "store_group_wait_ms": self.store_group_wait_ms >= 0,
            "parquet_file_mb": self.parquet_file_mb > 0,
            "parquet_roll_s": self.parquet_roll_s > 0,
            "parquet_every_s": self.parquet_every_s > 0,
            "parquet_busy_max": 0 < self.parquet_busy_max <= 1,
            "credit_bytes": self.credit_bytes > 0,
            "credit_total_bytes": self.credit_total_bytes > 0,
            "credit_queue_s": self.credit_queue_s >= 0,
            "heartbeat_ms": 10 <= self.heartbeat_ms <= 3_600_000,
            "dead_after_heartbeats": self.dead_after_heartbeats >= 1,
            "forget_after_s": self.forget_after_s > 0,
            "registry_every_s": self.registry_every_s > 0,
            "stop_timeout_s": self.stop_timeout_s > 0,
            "run_for_s": self.run_for_s >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"{key}: invalid value {getattr(self, key)!r}")
        self.security.validate()
        self.socket.validate()
        self.metrics.validate()
        self.rollout.validate()
        if not 1 <= self.trunk_piece_bytes <= self.max_frame_bytes:
            raise ValueError(f"trunk_piece_bytes: {self.trunk_piece_bytes!r} must be in [1, max_frame_bytes]")


@dataclass
class UplinkConfig:
    """A robot's link to the hub (the agent's uplink embeds it)."""

    endpoint: str = "tcp://127.0.0.1:5555"  # the hub this robot connects to (tcp:// or ipc://)
    max_frame_bytes: int = 16 * 1024 * 1024  # largest frame sent or received, bytes (ZMQ MAXMSGSIZE); keep it equal to the hub's
    security: SecurityConfig = field(default_factory=lambda: SecurityConfig(keys_dir="robot_keys"))
    socket: SocketConfig = field(default_factory=SocketConfig)


def register_configs() -> None:
    """Register the hub schema with Hydra's ConfigStore."""
    ConfigStore.instance().store(name="hub_schema", node=HubConfig)
