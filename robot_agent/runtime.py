"""The policy as the control loop runs it, and the background loader of new trunk versions."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hardware.observation import ObservationLayout
from hardware.profile import HardwareProfile, profile_hash, profile_json
from hardware.randomization import PhysicsParams
from robot_agent.trunk_download import installed_name, wanted_version
from shared_policy.actor import NumpyActor, actor_layers
from shared_policy.adapter import Adapter
from shared_policy.checkpoint import CheckpointError, load_checkpoint, profile_differences
from shared_policy.policy import FleetPolicy, HardwareSpec

log = logging.getLogger(__name__)


def robot_spec(profile: HardwareProfile, privileged_terms: list[str]) -> HardwareSpec:
    """The layout and profile a policy must have to drive ``profile``: what a checkpoint is checked against."""
    obs = ObservationLayout(profile, profile.observation)
    extra = ObservationLayout(profile, privileged_terms)
    return HardwareSpec(profile.name, obs.size, profile.num_actions,
                        obs.size + extra.size + PhysicsParams.NUM_PRIVILEGED, tuple(obs.signature()),
                        tuple(j.name for j in profile.actuated_joints), profile_hash(profile), profile_json(profile))


def spec_differences(claimed: HardwareSpec, expected: HardwareSpec) -> list[str]:
    """Why hardware ``claimed`` (a driver's) cannot stand in for ``expected``: its layout, then every profile
    field that differs (gains, limits, action scale, rates...); empty when they match."""
    out = [f"{key} {getattr(claimed, key)} vs {getattr(expected, key)}"
           for key in ("num_obs", "num_actions", "obs_layout", "action_names")
           if getattr(claimed, key) != getattr(expected, key)]
    if claimed.profile_hash != expected.profile_hash:
        out += profile_differences(json.loads(claimed.profile), json.loads(expected.profile), "driver", "agent")
    return out


def load_verified(path: str | Path, spec: HardwareSpec) -> tuple[FleetPolicy, dict[str, Any]]:
    """Load a checkpoint, refusing it unless every checksum, this hardware's layout and its profile match."""
    policy, manifest = load_checkpoint(path, expected={spec.name: spec})
    policy.eval()
    for p in policy.parameters():
        p.requires_grad_(False)
    return policy, manifest


class PolicyRuntime:
    """Trunk + this hardware's stem and head + this unit's adapter: one observation in, one action out."""

    def __init__(self, policy: FleetPolicy, hardware: str, trunk_version: int, adapter: Adapter | None = None,
                 adapter_version: int = 0):
        self.hardware = hardware
        self.policy, self.trunk_version = policy, trunk_version
        self.adapter, self.adapter_version = adapter, adapter_version
        self.actor = self._build(policy, adapter)

    def _build(self, policy: FleetPolicy, adapter: Adapter | None) -> NumpyActor:
        with torch.no_grad():
            return NumpyActor(actor_layers(policy, self.hardware, adapter))

    def act(self, obs: np.ndarray, explore: bool, rng: np.random.Generator | None = None) -> tuple[np.ndarray, float]:
        """(action (A,), log-probability of it under the current policy) for one observation (O,)."""
        # one read of self.actor: a swap during the call cannot mix two actors
        action, log_prob = self.actor.act(obs, explore, rng)
        return action.astype(np.float64), log_prob

    def swap_adapter(self, adapter: Adapter, version: int) -> None:
        """Use a newer adapter from the next step on (its weights are folded into a fresh actor first)."""
        actor = self._build(self.policy, adapter)
        self.adapter, self.adapter_version, self.actor = adapter, version, actor

    def swap_trunk(self, policy: FleetPolicy, trunk_version: int, adapter: Adapter | None = None,
                   adapter_version: int = 0) -> None:
        """Use another verified policy together with the adapter made for it (rebased onto it, this unit's own
        for that trunk, or fresh: robot_agent/trunk_adapter.py); both take over at the same step."""
        actor = self._build(policy, adapter)
        self.policy, self.trunk_version, self.adapter, self.adapter_version, self.actor = (
            policy, trunk_version, adapter, adapter_version, actor)


class TrunkWatcher:
    """Polls a directory for trunk checkpoints, verifies them off the control thread, offers the one to run:
    the version ``<dir>/WANTED`` names when the hub's uplink wrote one (newer or older: a rollback), else the
    newest.

    A checkpoint directory whose name starts with ``.`` is still being written and is skipped. A
    corrupted or mismatched one is refused once, logged, and never retried.
    """

    def __init__(self, directory: str | Path, spec: HardwareSpec, current_version: int, poll_s: float = 1.0):
        self.dir = Path(directory)
        self.spec, self.poll_s = spec, poll_s
        self.current_version = current_version
        self.refused: dict[str, str] = {}  # path -> why
        self._seen: set[str] = set()
        self._ready: tuple[FleetPolicy, dict[str, Any], Path] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trunk-watcher", daemon=True)

    name = "trunk_watcher"

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def health(self) -> str:
        """``running`` or ``stopped``."""
        return "running" if self._thread.is_alive() else "stopped"

    def stop(self, deadline: float | None = None) -> None:
        """Stop polling (a checkpoint being verified finishes first, if ``deadline`` allows)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0 if deadline is None else max(0.0, deadline - time.monotonic()))

    def take(self) -> tuple[FleetPolicy, dict[str, Any], Path] | None:
        """The newest verified trunk not yet taken, if any (call between episodes)."""
        with self._lock:
            ready, self._ready = self._ready, None
        if ready is not None:
            self.current_version = int(ready[1]["trunk_version"])
        return ready

    def poll_once(self) -> None:
        """Look at the directory once (the thread calls this every ``poll_s``)."""
        if not self.dir.is_dir():
            return
        wanted = wanted_version(self.dir)
        if wanted is not None:
            self._offer_wanted(wanted)
            return
        for path in sorted(p for p in self.dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            key = str(path.resolve())
            if key in self._seen or not (path / "manifest.json").exists():
                continue
            self._seen.add(key)
            try:
                policy, manifest = load_verified(path, self.spec)
            except (CheckpointError, OSError, ValueError, KeyError) as exc:
                self.refused[key] = str(exc)
                log.error("trunk %s refused, keeping trunk v%d: %s", path.name, self.current_version, exc)
                continue
            version = int(manifest["trunk_version"])
            with self._lock:
                best = self._ready[1]["trunk_version"] if self._ready else self.current_version
                if version > best:
                    self._ready = (policy, manifest, path)
                    log.info("trunk v%d verified (%s); it takes over at the next episode", version, path.name)

    def _offer_wanted(self, wanted: int) -> None:
        """Offer installed version ``wanted`` unless it runs or is already offered (a rollback offers an older
        one; the hub changing its mind before the swap withdraws the offer)."""
        with self._lock:
            offered = int(self._ready[1]["trunk_version"]) if self._ready else None
            if wanted == self.current_version:
                self._ready = None
                return
        path = self.dir / installed_name(wanted)
        key = str(path.resolve())
        if offered == wanted or key in self.refused or not (path / "manifest.json").exists():
            return
        try:
            policy, manifest = load_verified(path, self.spec)
            if int(manifest["trunk_version"]) != wanted:
                raise ValueError(f"its manifest says trunk_version {manifest['trunk_version']}")
        except (CheckpointError, OSError, ValueError, KeyError) as exc:
            self.refused[key] = str(exc)
            log.error("trunk %s refused, keeping trunk v%d: %s", path.name, self.current_version, exc)
            return
        with self._lock:
            self._ready = (policy, manifest, path)
        log.info("trunk v%d verified (%s), as the hub wants; it takes over at the next episode", wanted, path.name)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # a watcher that dies would silently stop updates: log and go on
                log.exception("trunk watcher: poll failed")
            self._stop.wait(self.poll_s)
