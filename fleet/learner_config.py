"""Structured config (Hydra schema) of ``fleet-learn``: where the fleet's experience and trunks are, what a
round does, and how the candidate is gated and the adapters rebased."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from fleet.replay.config import ReplayConfig
from shared_policy.config import PPOConfig
from shared_policy.rebase import RebaseConfig
from shared_policy.vtrace_learner import FleetLearnerConfig
from sim.app_config import LoggerConfig
from sim.gate import GateConfig

SOURCES = ("store", "parquet")


@dataclass
class LearnReplayConfig(ReplayConfig):
    """The replay's tables (``fleet.replay.config.ReplayConfig``) plus where they are filled from."""

    source: str = "store"  # store: <storage_dir>/experience.sqlite read directly | parquet: the Parquet tier
    parquet_dir: str = ""  # the tier's directory for source=parquet ("" = <storage_dir>/parquet)
    sample_timeout_s: float = 1.0  # how long a sample waits for the rate limiter before the type sits out


@dataclass
class SimMixConfig:
    """Sim PPO iterations kept in the round so the trunk does not forget what sim taught it."""

    num_envs: int = 64  # worlds per hardware type (and torchrun rank) per rollout
    seed: int = 0  # rank r's worlds use seed + 1000 r
    ppo: PPOConfig = field(default_factory=lambda: PPOConfig(learning_rate=3e-4))


@dataclass
class LearnConfig:
    """fleet-learn: fleet learning rounds over the hub's stored experience (see fleet/learner_app.py)."""

    storage_dir: str = "fleet_data"  # the hub's storage_dir: experience store, adapters, trunk store
    trunk: str = ""  # the current trunk's checkpoint directory ("" = the trunk store's CURRENT version)
    output_dir: str = "outputs/learn"  # round_<n>/candidate, round_<n>/adapters, current/ are written under it
    rounds: int = 1  # rounds to run; each starts from the trunk the one before published
    updates: int = 200  # update slots per round (each V-trace slot: one batch per hardware type with data)
    sim_fraction: float = 0.25  # share of the slots that are sim PPO iterations instead (0: fleet data only)
    batch_size: int = 32  # sequences per V-trace batch (per hardware type and rank)
    log_every: int = 10  # update slots between [learn] progress lines
    max_rebase_observations: int = 4096  # newest stored observations per robot its adapter is rebased on
    publish: bool = True  # false: gate and rebase, but publish nothing (a dry run)
    # true: publish as the hub's candidate, which reaches the fleet only after its canaries' returns hold up
    # (fleet-hub publish --canary); false: make it current at once (a fleet without canaries, or several rounds)
    publish_candidate: bool = True
    replay: LearnReplayConfig = field(default_factory=LearnReplayConfig)
    learner: FleetLearnerConfig = field(default_factory=FleetLearnerConfig)
    sim: SimMixConfig = field(default_factory=SimMixConfig)
    gate: GateConfig = field(default_factory=GateConfig)  # gate.tasks: hardware type -> task (the trunk's types used)
    # residual, as configs/learn.yaml says: a LearnConfig built without Hydra must rebase the same way
    rebase: RebaseConfig = field(default_factory=lambda: RebaseConfig(target="residual"))
    logger: LoggerConfig = field(default_factory=LoggerConfig)

    def validate(self) -> None:
        """Raise ValueError naming the key of a wrong value (after Hydra's merge)."""
        if not self.storage_dir:
            raise ValueError("storage_dir: name the hub's storage directory")
        for key in ("rounds", "updates", "batch_size", "log_every", "max_rebase_observations"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.publish and self.publish_candidate and self.rounds > 1:
            raise ValueError("publish_candidate: a candidate must pass its canaries before another round builds on it; "
                             "run one round at a time, or set publish_candidate=false")
        if not 0.0 <= self.sim_fraction <= 1.0:
            raise ValueError(f"sim_fraction: must be in [0, 1], got {self.sim_fraction}")
        if self.replay.source not in SOURCES:
            raise ValueError(f"replay.source: must be one of {SOURCES}, got {self.replay.source!r}")
        if not self.replay.sample_timeout_s > 0:
            raise ValueError(f"replay.sample_timeout_s: must be > 0, got {self.replay.sample_timeout_s}")
        if self.sim_fraction > 0 and self.sim.num_envs < 1:
            raise ValueError(f"sim.num_envs: must be >= 1, got {self.sim.num_envs}")
        self.replay.validate("replay")
        self.learner.validate("learner")
        self.gate.validate("gate")  # the types used are checked against the trunk's at start
        self.rebase.validate()


def register_configs() -> None:
    """Register the learn schema with Hydra's ConfigStore (idempotent)."""
    ConfigStore.instance().store(name="learn_schema", node=LearnConfig)
