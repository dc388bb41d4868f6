"""The staged roll-out: a candidate trunk goes to canary robots first, then to the fleet or back.

``fleet-hub publish CHECKPOINT --canary`` writes ``trunks/CANDIDATE`` (fleet/trunk_store.py). The hub loop
calls :meth:`Rollout.step` about once a second:

1. **Canaries.** ``rollout.canary_robots`` if set (they get the candidate when they connect), else the first
   ``rollout.canary_count`` robots of each hardware type among those connected, in the order they connected.
   Every other robot is told the current version. The trial starts only when the canaries cover every
   hardware type the registry knows (connected or not): a shared trunk is never promoted onto a type no
   canary tried. It waits for them up to ``max_wait_s``, then rolls back naming the uncovered types. The set
   is fixed, and logged, when the trial starts.
2. **Verdicts.** For each canary: the mean return of its first ``min_episodes`` completed episodes on the
   candidate against the mean of its last ``history_episodes`` on the version it ran when the trial began (the
   current one, or the older one the unit watch holds it on), both from the hub's own store
   (fleet/returns_by_version.py). It passes iff
   ``mean_candidate >= mean_previous - tolerance * |mean_previous|``. A canary with no episode on the previous
   version cannot be judged and fails (a trunk is never promoted on no evidence).
3. **Outcome.** When every canary has a verdict: all pass -> promote (CURRENT := candidate, every robot is told);
   any fails -> roll back (the candidate is dropped; canaries are told the current version and swap back). After
   ``max_wait_s`` with some canary still short of ``min_episodes`` -> roll back: an unproven trunk does not stay
   on robots (publish it again to retry).
4. **After a promotion** the hub watches every other robot on the new version against its own history and holds
   back one it hurts (fleet/unit_watch.py): canaries protect the canaries, the watch the rest.

Every step goes to the roll-out log (fleet/rollout_log.py). An operator's ``fleet-hub rollback N`` or a plain
publish while a trial runs removes CANDIDATE; the trial then ends without a verdict of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fleet.rollout_log import append_step
from fleet.trunk_store import TrunkStore

log = logging.getLogger(__name__)


@dataclass
class RolloutConfig:
    """How a candidate trunk is tried on canaries before the fleet gets it (fleet/rollout.py)."""

    canary_robots: list[str] = field(default_factory=list)  # these robot ids are the canaries (else canary_count)
    canary_count: int = 1  # else: the first N connected robots of each hardware type
    min_episodes: int = 5  # completed episodes on the candidate per canary before its verdict
    history_episodes: int = 10  # its last K episodes on the previous version are its baseline
    tolerance: float = 0.1  # pass iff mean_candidate >= mean_previous - tolerance * |mean_previous|
    max_wait_s: float = 1800.0  # a canary still short of min_episodes by then -> roll back
    history_chunks: int = 100_000  # how many stored chunks back the hub reads returns from when its first trial starts

    def validate(self, prefix: str = "rollout") -> None:
        """Raise ValueError naming the key of a wrong value."""
        checks = {"canary_count": self.canary_count >= 1, "min_episodes": self.min_episodes >= 1,
                  "history_episodes": self.history_episodes >= 1, "tolerance": 0 <= self.tolerance < 10,
                  "max_wait_s": self.max_wait_s > 0, "history_chunks": self.history_chunks >= 0}
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"{prefix}.{key}: invalid value {getattr(self, key)!r}")
        if len(set(self.canary_robots)) != len(self.canary_robots) or not all(self.canary_robots):
            raise ValueError(f"{prefix}.canary_robots: {self.canary_robots!r} has an empty or repeated id")


def judge(candidate: list[float], previous: list[float], tolerance: float) -> dict[str, Any]:
    """One canary's verdict with its numbers (module docstring, step 2)."""
    if not previous:
        return {"passed": False, "why": "no episode on the previous version to compare with",
                "mean_candidate": round(float(np.mean(candidate)), 4), "episodes": len(candidate)}
    mc, mp = float(np.mean(candidate)), float(np.mean(previous))
    floor = mp - tolerance * abs(mp)
    return {"passed": mc >= floor, "mean_candidate": round(mc, 4), "mean_previous": round(mp, 4),
            "floor": round(floor, 4), "episodes": len(candidate), "history": len(previous)}


def verdict_on(episodes: list[tuple[int, float]], new: int, baseline: int,
               cfg: RolloutConfig) -> dict[str, Any] | None:
    """``judge`` of a robot's first ``min_episodes`` episodes on version ``new`` against its last
    ``history_episodes`` on ``baseline`` (``episodes``: its (trunk_version, return) pairs); None until it has
    enough on ``new``. The canaries' rule, and the unit watch's (fleet/unit_watch.py)."""
    on_new = [r for v, r in episodes if v == new][:cfg.min_episodes]
    if len(on_new) < cfg.min_episodes:
        return None
    return judge(on_new, [r for v, r in episodes if v == baseline][-cfg.history_episodes:], cfg.tolerance)


class Rollout:
    """The hub's side of a canary trial (module docstring). The loop owns it; nothing here touches a socket."""

    def __init__(self, cfg: RolloutConfig, store: TrunkStore, storage_dir: str | Path):
        self.cfg, self.store, self.storage = cfg, store, Path(storage_dir)
        self.candidate = 0  # the version on trial (0: none)
        self.previous = 0  # the current version when the trial began (the canaries' baseline)
        self.canaries: list[str] = []
        self.started = 0.0  # monotonic: when the canaries were chosen
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.state = "idle"  # idle | waiting_for_canaries | on_trial
        self.waiting_since: float | None = None
        self.baselines: dict[str, int] = {}  # canary -> the version its candidate returns are compared with

    def wants(self, robot_id: str, current: int) -> int:
        """The trunk version ``robot_id`` should run now."""
        return self.candidate if self.candidate and robot_id in self.canaries else current

    def step(self, candidate: int, current: int, connected: dict[str, str],
             returns: Any, now: float | None = None, known: dict[str, str] | None = None,
             baseline: Callable[[str], int] | None = None) -> bool:
        """Advance the trial; ``candidate``/``current``: the verified versions the trunk service holds,
        ``connected``: robot -> hardware in connection order, ``returns(robot)``: its (trunk_version, return)
        episodes, ``known``: robot -> hardware of every robot the registry knows, connected or not (default:
        ``connected``), ``baseline(robot)``: the version a canary's returns on the candidate are compared with
        (default ``current``; the unit watch says otherwise for a robot it holds back or has not judged yet).
        True when which robot should run what changed (the hub then sends notices)."""
        now = time.monotonic() if now is None else now
        if candidate != self.candidate:  # a new candidate, or it was promoted / dropped (by hand or by us)
            changed = bool(self.canaries)
            self._reset(candidate, current)
            return changed
        if not candidate:
            return False
        if not self.canaries:
            known = known if known is not None else connected
            chosen = self._choose(connected)
            types = {**known, **connected}
            uncovered = sorted(set(types.values()) - {types[r] for r in chosen if r in types})
            if uncovered or not chosen:
                # every hardware type of the fleet needs a canary: the trunk is shared, a type never tried is
                # a type never judged; wait for one to connect, up to max_wait_s
                self.waiting_since = now if self.waiting_since is None else self.waiting_since
                if now - self.waiting_since > self.cfg.max_wait_s:
                    return self._finish(False, f"no canary for hardware types {uncovered} within "
                                               f"{self.cfg.max_wait_s:.0f} s")
                return False
            self.canaries = chosen
            self.baselines = {r: baseline(r) if baseline is not None else current for r in chosen}
            self.started, self.state = now, "on_trial"
            append_step(self.storage, "sent_to_canaries", "hub", candidate, canaries=self.canaries,
                        previous=self.previous)
            log.info("trunk v%d: on trial with canaries %s", candidate, self.canaries)
            return True
        for robot in self.canaries:
            if robot not in self.verdicts:
                self._try_verdict(robot, returns(robot))
        if len(self.verdicts) == len(self.canaries):
            return self._finish(all(v["passed"] for v in self.verdicts.values()), "verdicts")
        if now - self.started > self.cfg.max_wait_s:
            short = [r for r in self.canaries if r not in self.verdicts]
            return self._finish(False, f"timeout after {self.cfg.max_wait_s:.0f} s: too few episodes from {short}")
        return False

    def _reset(self, candidate: int, current: int) -> None:
        self.candidate, self.previous, self.canaries, self.verdicts = candidate, current, [], {}
        self.baselines = {}
        self.waiting_since: float | None = None  # monotonic: when the trial first waited for canaries
        self.state = "waiting_for_canaries" if candidate else "idle"

    def _choose(self, connected: dict[str, str]) -> list[str]:
        if self.cfg.canary_robots:
            return list(self.cfg.canary_robots)
        per_type: dict[str, list[str]] = {}
        for robot, hardware in connected.items():
            chosen = per_type.setdefault(hardware, [])
            if len(chosen) < self.cfg.canary_count:
                chosen.append(robot)
        return [r for chosen in per_type.values() for r in chosen]

    def _try_verdict(self, robot: str, episodes: list[tuple[int, float]]) -> None:
        baseline = self.baselines.get(robot, self.previous)
        verdict = verdict_on(episodes, self.candidate, baseline, self.cfg)
        if verdict is None:
            return
        self.verdicts[robot] = verdict
        append_step(self.storage, "canary_verdict", "hub", self.candidate, robot=robot, baseline=baseline,
                    tolerance=self.cfg.tolerance,
                    **verdict)
        log.info("trunk v%d on canary %s: %s", self.candidate, robot, verdict)

    def _finish(self, promote: bool, why: str) -> bool:
        version = self.candidate
        if not self.store.end_trial(version, promote):
            return False  # CANDIDATE changed under us (an operator): the next step sees it
        event = "promoted" if promote else "rolled_back"
        append_step(self.storage, event, "hub", version, previous=self.previous, why=why, canaries=self.canaries,
                    failed=[r for r, v in self.verdicts.items() if not v["passed"]])
        log.warning("trunk v%d %s (%s)", version, event, why)
        self.state = event
        return False  # the trunk service sees CURRENT / CANDIDATE change and the next step announces it

    def status(self) -> dict[str, Any]:
        """What the registry (and ``fleet-hub status``) shows of the trial."""
        return {"state": self.state, "candidate": self.candidate, "previous": self.previous,
                "canaries": self.canaries, "verdicts": self.verdicts}
