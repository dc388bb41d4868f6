"""Building a robot unit's parts from its config, with every start-up check; nothing is started here.

:class:`AgentBuilder` refuses a driver that claims other hardware, a checkpoint that does not verify
for this hardware, and a saved adapter that does not fit; it returns :class:`AgentParts`, which the
agent then runs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from fleet.keys import KeyFileError
from hardware.action import ActionMap
from hardware.driver import DriverError, RobotDriver
from hardware.observation import ObservationLayout
from hardware.profile import HardwareProfile, load_profile, profile_hash
from hardware.tasks import TaskConfig, task_class
from hardware.tasks.base import Task
from robot_agent.config import AgentConfig
from robot_agent.drivers import make_driver
from robot_agent.recorder import chunk_record_bytes, transitions_fitting
from robot_agent.robot_seeds import LEARNER, UPLINK, RobotSeeds
from robot_agent.runtime import PolicyRuntime, TrunkWatcher, load_verified, robot_spec, spec_differences
from robot_agent.safe_driver import SafeDriver, SafetyConfig
from robot_agent.spool import Spool, SpoolLockedError, take_directory_lock
from robot_agent.trainer_link import TrainerLink
from robot_agent.trunk_adapter import adapter_for_trunk
from robot_agent.uplink import HubUplink
from shared_policy.adapter import Adapter, AdapterFileError, adapter_file_metadata, load_adapter, save_adapter
from shared_policy.checkpoint import CheckpointError
from shared_policy.config import AdapterConfig
from shared_policy.policy import HardwareSpec

log = logging.getLogger(__name__)

ADAPTER_FILE, STATUS_FILE, ESTOP_FILE, TRUNK_FILE = "adapter.safetensors", "status.json", "ESTOP", "trunk.json"
GUARD_FILE = "adapter_guard.json"  # the adapter guard's memory across restarts (robot_agent/adapter_guard.py)


class AgentStartupError(RuntimeError):
    """The agent refuses to start: a mismatched driver or policy, an unreadable checkpoint, a bad config."""


@dataclass
class AgentParts:
    """One robot unit's parts, built and checked."""

    cfg: AgentConfig
    state_dir: Path
    profile: HardwareProfile
    task: Task
    spec: HardwareSpec
    driver: RobotDriver
    safe: SafeDriver  # the only way anything commands the driver
    checkpoint: Path  # the trunk the unit runs
    runtime: PolicyRuntime
    obs_layout: ObservationLayout
    priv_layout: ObservationLayout
    action_map: ActionMap
    spool: Spool
    trainer: TrainerLink | None  # None: no on-robot learning
    watcher: TrunkWatcher | None  # None: no trunk_dir to watch
    state_lock: IO[str] | None = None  # held (flock) while the agent owns its state directory
    uplink: HubUplink | None = None  # None: uplink.enabled is false (the spool keeps everything)
    record_header: dict[str, Any] = field(default_factory=dict)  # what every chunk's header starts from


class AgentBuilder:
    """Builds :class:`AgentParts` from a validated config, refusing what does not fit together."""

    def __init__(self, cfg: AgentConfig, task_cfg: TaskConfig):
        cfg.validate()
        self.cfg = cfg
        self.state_dir = Path(cfg.state_dir)
        self.profile = load_profile(cfg.hardware)
        self.task = task_class(task_cfg.name)(task_cfg, self.profile)
        self.spec = robot_spec(self.profile, task_cfg.privileged_observation)
        self.driver: RobotDriver | None = None

    def build(self) -> AgentParts:
        """Every part, checked against the hardware; raises :class:`AgentStartupError` on a mismatch."""
        cfg = self.cfg
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # first: a second agent on this state directory (or spool) is refused before it touches the robot
        try:
            state_lock = take_directory_lock(self.state_dir)
        except SpoolLockedError as exc:
            raise AgentStartupError(f"state_dir {exc}") from exc
        try:
            spool = Spool(cfg.spool.dir or self.state_dir / "spool", int(cfg.spool.quota_mb * 2**20),
                          cfg.spool.when_full, int(cfg.spool.segment_mb * 2**20))
        except SpoolLockedError as exc:
            state_lock.close()
            raise AgentStartupError(str(exc)) from exc
        try:
            parts = self._build(spool)
        except BaseException:
            spool.close()  # a refused start leaves the directories to the next try
            state_lock.close()
            raise
        parts.state_lock = state_lock
        return parts

    def _build(self, spool: Spool) -> AgentParts:
        cfg, profile = self.cfg, self.profile
        obs_layout = ObservationLayout(profile, profile.observation)
        priv_layout = ObservationLayout(profile, self.task.cfg.privileged_observation)
        header = {"robot_id": cfg.robot_id, "hardware": profile.name, "task": self.task.name}
        if cfg.uplink.enabled:  # before the driver: a refused start touches no hardware
            self._check_chunks_fit(obs_layout, priv_layout, header)
        try:
            self.driver = make_driver(cfg.driver.name, profile, **dict(cfg.driver.options))
        except (DriverError, ValueError, TypeError) as exc:
            raise AgentStartupError(f"driver '{cfg.driver.name}': {exc}") from exc
        self._check_driver()
        checkpoint = self._trunk_to_start_from()
        try:
            policy, manifest = load_verified(checkpoint, self.spec)
        except CheckpointError as exc:
            raise AgentStartupError(f"policy {checkpoint} refused for hardware '{profile.name}': {exc}") from exc
        trunk_version = int(manifest["trunk_version"])
        adapter, adapter_version = self._adapter_to_start_from(policy, checkpoint, trunk_version)
        safety = SafetyConfig(**asdict(cfg.safety))
        safety.estop_file = safety.estop_file or str(self.state_dir / ESTOP_FILE)
        a = cfg.adapter
        trainer = (TrainerLink(checkpoint, profile.name, a, self.state_dir / ADAPTER_FILE, adapter_version,
                               trunk_version, seed=RobotSeeds(cfg.seed, cfg.robot_id).stream(LEARNER)) if a.enabled and a.learn else None)
        runtime = PolicyRuntime(policy, profile.name, trunk_version, adapter, adapter_version)
        return AgentParts(
            cfg=cfg, state_dir=self.state_dir, profile=profile, task=self.task, spec=self.spec, driver=self.driver,
            safe=SafeDriver(self.driver, safety), checkpoint=Path(checkpoint),
            runtime=runtime,
            obs_layout=obs_layout,
            priv_layout=priv_layout,
            action_map=ActionMap(profile),
            spool=spool,
            trainer=trainer,
            watcher=TrunkWatcher(cfg.trunk_dir, self.spec, trunk_version) if cfg.trunk_dir else None,
            uplink=self._uplink(spool, runtime) if cfg.uplink.enabled else None,
            record_header=header,
        )

    def _uplink(self, spool: Spool, runtime: PolicyRuntime) -> HubUplink:
        cfg = self.cfg
        try:
            return HubUplink(cfg.uplink, spool, cfg.robot_id, self.profile.name, profile_hash(self.profile),
                             versions=lambda: (runtime.trunk_version, runtime.adapter_version),
                             seed=RobotSeeds(cfg.seed, cfg.robot_id).stream(UPLINK),
                             trunk_dir=cfg.trunk_dir or None)
        except KeyFileError as exc:
            raise AgentStartupError(f"uplink.security.keys_dir: {exc}") from exc

    # -- start-up checks -----------------------------------------------------------------------------
    def _check_chunks_fit(self, obs_layout: ObservationLayout, priv_layout: ObservationLayout,
                          header: dict[str, Any]) -> None:
        """A full chunk larger than uplink.max_frame_bytes (set equal to the hub's frame limit) would be refused
        by the hub and stay in the spool unsent: refused here, naming the keys. A chunk ends at every episode end,
        so none holds more than an episode's transitions."""
        cfg = self.cfg
        most = max(1, min(cfg.spool.chunk_steps, self.task.max_episode_length))  # an episode has one step at least
        limit, priorities = cfg.uplink.max_frame_bytes, cfg.spool.priorities
        size = chunk_record_bytes(obs_layout, priv_layout, header, most, priorities)
        if size <= limit:
            return
        fitting = transitions_fitting(obs_layout, priv_layout, header, most, limit, priorities)
        advice = (f"set spool.chunk_steps to at most {fitting}, or raise" if fitting else "raise")
        raise AgentStartupError(
            f"spool.chunk_steps: chunks of {most} transitions of '{self.profile.name}' take up to {size} bytes, over "
            f"uplink.max_frame_bytes ({limit}): the hub would refuse every full chunk; {advice} uplink.max_frame_bytes "
            "together with the hub's max_frame_bytes")

    def _check_driver(self) -> None:
        claimed = robot_spec(self.driver.profile, self.task.cfg.privileged_observation)
        diff = spec_differences(claimed, self.spec)  # layout and the whole profile (by hash, fields named)
        if diff:
            raise AgentStartupError(
                f"driver '{self.cfg.driver.name}' claims hardware '{self.driver.profile.name}' that does not match "
                f"the agent's hardware '{self.profile.name}' ({'; '.join(diff)}): refusing to start")

    def _trunk_to_start_from(self) -> str:
        """The last trunk this unit swapped to (if it still verifies), else the configured checkpoint."""
        saved = self.state_dir / TRUNK_FILE
        if saved.is_file():
            try:
                path = json.loads(saved.read_text())["path"]
                load_verified(path, self.spec)
                return path
            except (CheckpointError, OSError, ValueError, KeyError) as exc:
                log.warning("last trunk in %s is unusable (%s); starting from %s", saved, exc, self.cfg.checkpoint)
        return self.cfg.checkpoint

    def _adapter_to_start_from(self, policy: torch.nn.Module, checkpoint: str, trunk_version: int
                               ) -> tuple[Adapter | None, int]:
        if not self.cfg.adapter.enabled:
            return None, 0
        path = self.state_dir / ADAPTER_FILE
        made_for = int(adapter_file_metadata(path).get("trunk_version", 0) or 0)
        if path.is_file() and made_for and trunk_version and made_for != trunk_version:
            # trained for another trunk (a swap the trainer had not yet written down): never run it on this one
            a = self.cfg.adapter
            adapter, version, source = adapter_for_trunk(checkpoint, policy, trunk_version, self.profile.name,
                                                         self.state_dir, AdapterConfig(a.rank, a.alpha))
            log.warning("%s was made for trunk v%d, not v%d: starting from the %s adapter", path, made_for,
                        trunk_version, source)
            save_adapter(path, adapter, version, trunk_version)  # the swap written down: the trainer learns from it
            return adapter, version
        if path.is_file():
            try:
                adapter, meta = load_adapter(path, policy, self.profile.name)
                log.info("continuing from adapter v%s (%s)", meta["version"], path)
                return adapter.eval(), int(meta["version"])
            except AdapterFileError as exc:
                raise AgentStartupError(f"saved adapter refused: {exc} (move it away to start a fresh one)") from exc
        a = self.cfg.adapter
        return Adapter(policy, self.profile.name, AdapterConfig(a.rank, a.alpha)).eval(), 0
