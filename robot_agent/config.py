"""Structured config (Hydra schema) of the robot agent daemon."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from configs import CONFIG_DIR, group_options
from fleet.config import UplinkConfig
from hardware.profile import HardwareProfile, ProfileError, load_profile, profile_from_config
from hardware.tasks.config import register_task_schemas
from robot_agent.safe_driver import SafetyConfig
from shared_policy.config import AdapterLearnerConfig

MIN_STOP_TIMEOUT_S = 5.0  # RobotAgent.shutdown keeps 4 s for the uplink, spool, watcher and trainer

@dataclass
class DriverConfig:
    """Which driver (a registered name, or ``module:Class``) and its own options (e.g. the stand-in's reality gap)."""

    name: str = "mujoco_standin"  # a built-in or `fleet.drivers` entry-point name, or module:Class
    # keyword arguments of the driver class (the stand-in: realtime, seed, gap, process)
    options: dict[str, Any] = field(default_factory=lambda: {"realtime": True, "seed": 0})


@dataclass
class PriorityVTraceConfig:
    """The V-trace settings the robot scores its Ape-X priorities with: set them to the fleet learner's
    (fleet-learn's ``learner.vtrace.*``); the defaults are the learner's defaults (shared_policy.vtrace.VTraceConfig)."""

    gamma: float = 0.99  # discount per control step (fleet-learn's learner.vtrace.gamma)
    lam: float = 1.0  # IMPALA's lambda (learner.vtrace.lam)
    rho_bar: float = 1.0  # ratio truncation in the TD errors (learner.vtrace.rho_bar); on-policy the ratio is 1
    c_bar: float = 1.0  # ratio truncation in the trace (learner.vtrace.c_bar)


@dataclass
class SpoolConfig:
    """The local experience spool: where, how big, and what to do when full."""

    dir: str = ""  # default: <state_dir>/spool
    quota_mb: float = 1024.0  # MiB of chunks the spool may hold on disk; at it, when_full decides
    when_full: str = "refuse"  # refuse new episodes | drop_oldest unsent chunks
    segment_mb: float = 8.0  # MiB per segment file; a fully acked one is deleted (smaller: space back sooner)
    chunk_steps: int = 250  # a chunk is written at least this often, and at every episode end; with the uplink on, a full chunk must fit uplink.max_frame_bytes (checked at start)
    # each chunk carries Ape-X initial priorities (|TD error| per step under the running trunk's critic),
    # computed by the spool writer's thread; the fleet learner's prioritised replay starts its items there
    priorities: bool = True
    priority_vtrace: PriorityVTraceConfig = field(default_factory=PriorityVTraceConfig)


@dataclass
class AdapterTrainingConfig(AdapterLearnerConfig):
    """On-robot adapter learning (PPO on the adapter only), in its own process."""

    enabled: bool = True  # run this unit's adapter (loaded from state_dir, or a fresh one)
    learn: bool = True  # train it on this unit's experience
    explore: bool = True  # sample actions from the policy's distribution (needed to learn)
    # Simulated clocks only (a stand-in with realtime=false outruns any learner): at each episode end,
    # wait until the learner has consumed everything sent, as it keeps up on a real-time robot.
    wait_for_learner: bool = False
    # Keep an update only when its first guard_episodes complete episodes do not measure worse than the best kept
    # version so far (its last guard_reference_episodes recent episodes), by more than guard_tolerance Welch
    # standard errors (one-sided), nor has every return below every reference return (where that is rare by
    # chance); a worse one is rolled back, in the learner too. See robot_agent/adapter_guard.py.
    guard: bool = True
    guard_episodes: int = 4  # the candidate's trial (>= 2): short, so updates reach the robot while they are fresh
    guard_tolerance: float = 2.0  # standard errors (>= 0): rolls back ~5% of equal updates, ~14% in a chain
    guard_reference_episodes: int = 16  # the best kept version's last episodes compared (>= guard_episodes)
    # episodes count for the reference only this many decisions (>= 1): it follows wear and changed conditions
    guard_reference_decisions: int = 8
    # also roll back an update whose mean measures more than this fraction of the reference's below it, resolved
    # or not (0: off; in [0, 1)): stops losses the noise hides, at the cost of some equal updates
    guard_floor: float = 0.0


@dataclass
class AgentLoggerConfig:
    """W&B (offline unless WANDB_MODE says otherwise) or none."""

    backend: str = "wandb"  # wandb | none
    project: str = "fleet-learning"  # the W&B project the agent logs to
    run_name: str = ""  # the W&B run name ("" = W&B picks one)


@dataclass
class AgentUplinkConfig(UplinkConfig):
    """The agent's link to the fleet hub (robot_agent/uplink.py): endpoint, keys and socket options as every
    robot link has them, and how this agent sends, resends and reconnects. Off unless ``enabled``."""

    enabled: bool = False  # stream the spool's chunks to the hub; off, they stay in the spool (to its quota)
    max_in_flight: int = 256  # chunks sent and not yet answered, whatever the hub's byte credit allows
    resend_s: float = 10.0  # a chunk unanswered this long is sent again (the hub stores it once)
    retry_s: float = 0.5  # a chunk nacked NO_CREDIT / STORAGE_FAILED / SHUTTING_DOWN waits this long
    hello_timeout_s: float = 5.0  # no WELCOME within this: the attempt failed (hub down, key refused)
    backoff_min_s: float = 0.2  # reconnect delay after a failed attempt: doubling from this ...
    backoff_max_s: float = 30.0  # ... up to this, each drawn between half and all of it (jitter)
    missed_heartbeats: int = 5  # the hub silent this many of its heartbeat intervals: reconnect
    drain_on_stop_s: float = 2.0  # at shutdown, while connected, keep sending and collecting acks this long
    # trunks the hub announces are downloaded into the agent's trunk_dir (robot_agent/trunk_download.py)
    trunk_piece_bytes: int = 256 * 1024  # asked for per TRUNK_FETCH (the hub may send less)
    trunk_window: int = 4  # pieces asked for and not yet received
    trunk_fetch_timeout_s: float = 10.0  # a piece not received this long is asked for again
    trunk_max_bytes_per_s: float = 0.0  # cap on the download rate, leaving the link to experience (0 = none)

    def validate(self, prefix: str = "uplink") -> None:
        """Raise ValueError naming the key of a wrong value."""
        checks = {
            "endpoint": self.endpoint.startswith(("tcp://", "ipc://", "inproc://")),
            "max_frame_bytes": self.max_frame_bytes > 0, "max_in_flight": self.max_in_flight >= 1,
            "resend_s": self.resend_s > 0, "retry_s": self.retry_s >= 0, "hello_timeout_s": self.hello_timeout_s > 0,
            "backoff_min_s": 0 < self.backoff_min_s <= self.backoff_max_s,
            "missed_heartbeats": self.missed_heartbeats >= 1, "drain_on_stop_s": self.drain_on_stop_s >= 0,
            "trunk_piece_bytes": 1 <= self.trunk_piece_bytes <= self.max_frame_bytes,
            "trunk_window": self.trunk_window >= 1, "trunk_fetch_timeout_s": self.trunk_fetch_timeout_s > 0,
            "trunk_max_bytes_per_s": self.trunk_max_bytes_per_s >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"{prefix}.{key}: invalid value {getattr(self, key)!r}")
        self.security.validate(f"{prefix}.security")
        self.socket.validate(f"{prefix}.socket")


@dataclass
class AgentConfig:
    """One robot unit: what it is, what it runs, where it keeps its state."""

    robot_id: str = "unit-0"  # this unit's name in chunk ids, its HELLO to the hub, status and W&B; unique
    # A shipped profile's name, a profile YAML path, or a HardwareProfile (anything load_profile takes).
    # robot-agent composes the hardware config group here ({type: profile}); run_agent turns it into the
    # HardwareProfile with `selected_profile`, so command-line overrides of the profile take effect.
    hardware: Any = "cartpole"
    task: Any = None  # the task group (configs/task/*.yaml), validated against the task's schema
    checkpoint: str = "???"  # the pretrained policy to start from
    trunk_dir: str = ""  # watched for new trunk versions (hot-swapped between episodes); "" = none
    state_dir: str = "agent_state"  # adapter, status.json, e-stop file, spool (default)
    driver: DriverConfig = field(default_factory=DriverConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    adapter: AdapterTrainingConfig = field(default_factory=AdapterTrainingConfig)
    logger: AgentLoggerConfig = field(default_factory=AgentLoggerConfig)
    max_episodes: int = 0  # 0 = run until stopped
    max_steps: int = 0  # 0 = no limit
    shutdown_timeout_s: float = 3.0  # SIGTERM: finish the episode within this, else abort it safely
    # After the episode, flushing the spool and stopping the learner, watcher, driver and reporter share this
    # much (at least 5 s: 4 s of it are kept for all but the spool's flush); shutdown_timeout_s + this (plus a
    # couple of seconds) must stay under the service's TimeoutStopSec.
    stop_timeout_s: float = 8.0
    status_every_s: float = 10.0  # status line on the terminal and to W&B
    # SCHED_FIFO priority (1-99) of the control thread; 0 = normal scheduling. Needs root, CAP_SYS_NICE
    # or LimitRTPRIO (see deploy/robot-agent.service); refused permission falls back with one warning.
    control_priority: int = 0
    # with robot_id, keys every random stream of the robot: each episode's goal draws and exploration noise (by its
    # durable number: a restart never replays them), the learner's and the uplink's reconnect jitter (>= 0)
    seed: int = 0
    uplink: AgentUplinkConfig = field(default_factory=AgentUplinkConfig)  # streams the spool to the fleet hub

    def validate(self) -> None:
        """Range checks beyond the schema's types; raise ValueError naming the key."""
        self.safety.validate()
        if self.uplink.enabled:
            self.uplink.validate()
        checks = {
            "spool.when_full": self.spool.when_full in ("refuse", "drop_oldest"),
            "spool.quota_mb": self.spool.quota_mb > 0, "spool.segment_mb": self.spool.segment_mb > 0,
            "spool.chunk_steps": self.spool.chunk_steps >= 1,
            "spool.priority_vtrace.gamma": 0.0 <= self.spool.priority_vtrace.gamma <= 1.0,
            "spool.priority_vtrace.lam": 0.0 <= self.spool.priority_vtrace.lam <= 1.0,
            "spool.priority_vtrace.rho_bar": self.spool.priority_vtrace.rho_bar > 0,
            "spool.priority_vtrace.c_bar": self.spool.priority_vtrace.c_bar > 0,
            "adapter.rank": self.adapter.rank >= 1, "adapter.steps_per_update": self.adapter.steps_per_update >= 1,
            "adapter.replay_updates": self.adapter.replay_updates >= 1,
            "adapter.learning_rate": self.adapter.learning_rate > 0,
            "adapter.drift_kl": self.adapter.drift_kl >= 0,
            "adapter.guard_episodes": self.adapter.guard_episodes >= 2,
            "adapter.guard_tolerance": self.adapter.guard_tolerance >= 0,
            "adapter.guard_reference_episodes": self.adapter.guard_reference_episodes >= self.adapter.guard_episodes,
            "adapter.guard_reference_decisions": self.adapter.guard_reference_decisions >= 1,
            "adapter.guard_floor": 0 <= self.adapter.guard_floor < 1,
            "shutdown_timeout_s": self.shutdown_timeout_s > 0, "stop_timeout_s": self.stop_timeout_s > 0,
            "status_every_s": self.status_every_s > 0,
            "max_episodes": self.max_episodes >= 0, "max_steps": self.max_steps >= 0,
            "control_priority": 0 <= self.control_priority <= 99, "seed": self.seed >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"{key}: invalid value {eval_key(self, key)!r}")
        if self.stop_timeout_s < MIN_STOP_TIMEOUT_S:
            # the spool writer's flush gets what is left after the 4 s the others keep (RobotAgent.shutdown):
            # less than a second and the last episode's chunks could be cut off at the spool's close
            raise ValueError(f"stop_timeout_s: {self.stop_timeout_s!r} is under {MIN_STOP_TIMEOUT_S} s (the spool "
                             "flush, uplink drain and every service share it; 4 s of it are kept back)")
        a = self.adapter
        if a.enabled and a.learn and not a.explore:
            # the learner weighs each step by its recorded log-probability: that of the mean action under
            # deterministic control is not the probability of the action taken by a sampling policy
            raise ValueError("adapter.learn=true needs adapter.explore=true (the recorded log-probabilities must "
                             "be those of the actions the policy sampled); set adapter.explore=true or "
                             "adapter.learn=false")


def adapter_preset(name: str) -> dict[str, Any]:
    """The adapter settings ``adapter_preset=<name>`` composes (configs/adapter_preset/<name>.yaml): for code
    that builds an AgentConfig without Hydra, so that it runs the same preset the daemon would."""
    path = CONFIG_DIR / "adapter_preset" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"adapter_preset: no preset {name!r} (known: {', '.join(group_options('adapter_preset'))})")
    return OmegaConf.to_container(OmegaConf.load(path))  # type: ignore[return-value]


def apply_adapter_preset(adapter: AdapterTrainingConfig, name: str) -> None:
    """Set ``adapter``'s fields as ``adapter_preset=<name>`` would; a key the config lacks is an error."""
    for key, value in adapter_preset(name).items():
        if not hasattr(adapter, key):
            raise ValueError(f"adapter_preset/{name}.yaml: adapter.{key} is not an adapter setting")
        setattr(adapter, key, value)


def selected_profile(hardware: Any) -> HardwareProfile:
    """The one hardware profile the agent drives: a composed hardware group node, or a name or YAML path."""
    if isinstance(hardware, (str, HardwareProfile)):
        return load_profile(hardware)
    if isinstance(hardware, (dict, DictConfig)) and len(hardware) == 1:
        ((name, node),) = hardware.items()
        return profile_from_config(node, where=f"hardware.{name}")
    chosen = list(hardware) if isinstance(hardware, (dict, DictConfig)) else hardware
    raise ProfileError(f"hardware: the agent drives exactly one hardware type (hardware=<type>); got {chosen}")


def eval_key(cfg: object, dotted: str) -> object:
    """The value at a dotted key of a nested dataclass."""
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def register_configs() -> None:
    """Register the agent schema (and the task schemas its task group uses) with Hydra's ConfigStore."""
    ConfigStore.instance().store(name="agent_schema", node=AgentConfig)
    register_task_schemas()
