"""After a promotion: every robot is watched on the new trunk, and one it hurts goes back to what it ran.

Canaries protect the canaries. A candidate that passed them can still hurt another unit: in fleet_round (seed 1
at 99a0953) a non-canary unit lost 30% of its return to a promoted trunk. So when the roll-out (fleet/rollout.py)
promotes a version, the hub watches every other robot the registry knows:

1. A robot's **baseline** is the version it ran before the promotion: the previous current version, or the
   version it was held on.
2. Its **verdict** is the canaries' rule (``rollout.judge``): the mean return of its first ``rollout.min_episodes``
   episodes on the promoted version against its last ``rollout.history_episodes`` on its baseline, within
   ``rollout.tolerance``.
3. A robot that fails is **held back**: the hub tells it to run its baseline again, and the agent swaps back to
   its own adapter for that trunk (robot_agent/trunk_adapter.py). A robot with no episode on its baseline cannot
   be judged; it stays on the new version (nothing says the trunk hurts it).
4. The watch **ends** when every watched robot has a verdict, or after ``rollout.max_wait_s``: robots still short
   of episodes then stay on the new version, and the log names them.

A hold lasts until the next promotion (which moves the robot forward and watches it against its held version)
or until the current version changes by hand (``fleet-hub rollback`` or a plain publish: the operator's choice is
the fleet's, and every hold is cleared). Holds and the watch are written atomically to ``trunks/unit_holds.json``,
so a restarted hub keeps every held robot where it is. Each step goes to the roll-out log.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet.rollout import RolloutConfig, judge
from fleet.rollout_log import append_step
from shared_policy.durable import write_atomic

log = logging.getLogger(__name__)

HOLDS_FILE = "unit_holds.json"  # inside <storage_dir>/trunks


def holds_path(storage_dir: str | Path) -> Path:
    """Where a hub's storage dir keeps its holds and watch."""
    return Path(storage_dir) / "trunks" / HOLDS_FILE


def read_holds(storage_dir: str | Path) -> dict[str, int]:
    """Robot -> the version it is held back on, as the hub last wrote it ({} when none)."""
    try:
        return {str(r): int(v) for r, v in json.loads(holds_path(storage_dir).read_text("utf-8"))["holds"].items()}
    except FileNotFoundError:
        return {}


class UnitWatch:
    """The hub's per-robot watch after a promotion, and the robots it holds back (module docstring). The hub's
    loop owns it; nothing here touches a socket."""

    def __init__(self, cfg: RolloutConfig, storage_dir: str | Path):
        self.cfg, self.storage = cfg, Path(storage_dir)
        self.current = 0  # the current version the holds were made under (a change we did not make clears them)
        self.version = 0  # the promoted version under watch (0: none)
        self.baselines: dict[str, int] = {}  # robot -> the version it ran before the promotion
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.started = 0.0  # Unix seconds (a restarted hub goes on with the same deadline)
        self.holds: dict[str, int] = {}  # robot -> the version it is held on
        self._load()

    def _load(self) -> None:
        path = holds_path(self.storage)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            self.holds = {str(r): int(v) for r, v in state.get("holds", {}).items()}
            self.current = int(state.get("current", 0))
            watch = state.get("watch") or {}
            self.version, self.started = int(watch.get("version", 0)), float(watch.get("started", 0.0))
            self.baselines = {str(r): int(v) for r, v in watch.get("baselines", {}).items()}
            self.verdicts = dict(watch.get("verdicts", {}))
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # never guess which robot runs what
            raise ValueError(f"{path}: unreadable ({exc}); fix or remove it (removing it releases every held "
                             "robot onto the current trunk)") from None
        if self.holds or self.version:
            log.warning("unit watch: %d robots held back %s; %s", len(self.holds), self.holds,
                        f"watching v{self.version}" if self.version else "no watch running")

    def _save(self) -> None:
        watch = {"version": self.version, "started": self.started, "baselines": self.baselines,
                 "verdicts": self.verdicts} if self.version else None
        path = holds_path(self.storage)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"current": self.current, "holds": self.holds, "watch": watch},
                                      sort_keys=True).encode())

    def wants(self, robot_id: str, current: int) -> int:
        """The version ``robot_id`` should run when it is not a canary: its hold, else ``current``."""
        return self.holds.get(robot_id, current)

    def served(self) -> set[int]:
        """The versions held robots run (the trunk service must keep serving them)."""
        return set(self.holds.values())

    def promoted(self, version: int, previous: int, known: list[str], judged: list[str],
                 now: float | None = None) -> None:
        """``version`` was promoted over ``previous``: watch each ``known`` robot not in ``judged`` (the canaries
        that passed it) against the version it ran until now; every hold moves forward."""
        now = time.time() if now is None else now
        self._end("superseded by a newer promotion")
        robots = sorted(set(known) - set(judged))
        self.current, self.version, self.started, self.verdicts = version, version, now, {}
        self.baselines = {r: self.holds.get(r, previous) for r in robots}
        released = sorted(self.holds)
        self.holds = {}
        self._save()
        append_step(self.storage, "watch_started", "hub", version, robots=robots, baselines=self.baselines,
                    released=released)
        log.info("trunk v%d promoted: watching %d robots on their own returns", version, len(robots))

    def cleared(self, current: int, why: str) -> bool:
        """The current version is ``current`` and we did not make it so (a rollback or publish by hand, also while
        the hub was down): every hold and the watch end. True if a held robot's version moved."""
        released = sorted(self.holds)
        self._end(why)
        self.current, self.holds = current, {}
        self._save()
        if released:
            append_step(self.storage, "holds_cleared", "hub", current, robots=released, why=why)
            log.warning("current trunk is v%d (%s): robots %s are no longer held back", current, why, released)
        return bool(released)

    def step(self, returns: Callable[[str], list[tuple[int, float]]], now: float | None = None) -> bool:
        """Judge the robots that have enough episodes; True when a robot was held back (send notices)."""
        if not self.version:
            return False
        now = time.time() if now is None else now
        held = judged = False
        for robot, baseline in self.baselines.items():
            if robot in self.verdicts:
                continue
            verdict = self._verdict(robot, baseline, returns(robot))
            if verdict is None:
                continue
            self.verdicts[robot], judged = verdict, True
            back = not verdict["passed"] and bool(verdict.get("history"))
            if back:
                self.holds[robot] = baseline
                held = True
            event = "unit_held_back" if back else "unit_kept"
            append_step(self.storage, event, "hub", self.version, robot=robot, baseline=baseline,
                        tolerance=self.cfg.tolerance, **verdict)
            log.log(logging.WARNING if back else logging.INFO, "trunk v%d on %s: %s (%s)", self.version, robot,
                    event, verdict)
        if len(self.verdicts) == len(self.baselines):
            self._end("every robot judged")
        elif now - self.started > self.cfg.max_wait_s:
            self._end(f"timeout after {self.cfg.max_wait_s:.0f} s")
        if judged or not self.version:
            self._save()
        return held

    def _verdict(self, robot: str, baseline: int, episodes: list[tuple[int, float]]) -> dict[str, Any] | None:
        on_new = [r for v, r in episodes if v == self.version][:self.cfg.min_episodes]
        if len(on_new) < self.cfg.min_episodes:
            return None
        before = [r for v, r in episodes if v == baseline][-self.cfg.history_episodes:]
        verdict = judge(on_new, before, self.cfg.tolerance)
        if not before:
            verdict["why"] = "no episode on its baseline: kept on the new version"
        return verdict

    def _end(self, why: str) -> None:
        if not self.version:
            return
        unjudged = sorted(set(self.baselines) - set(self.verdicts))
        append_step(self.storage, "watch_ended", "hub", self.version, why=why, unjudged=unjudged,
                    held=sorted(r for r in self.holds))
        log.info("trunk v%d: watch ended (%s); held back: %s", self.version, why, sorted(self.holds))
        self.version, self.baselines, self.verdicts = 0, {}, {}

    def status(self) -> dict[str, Any]:
        """What the registry (and ``fleet-hub status``) shows of the watch and the holds."""
        return {"watching": self.version, "watched": len(self.baselines), "judged": len(self.verdicts),
                "holds": dict(self.holds), "verdicts": dict(self.verdicts)}
