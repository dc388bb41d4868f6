"""After a promotion: every robot is watched on the new trunk, and one it hurts goes back to what it ran.

Canaries protect the canaries. A candidate that passed them can still hurt another unit: in fleet_round (seed 1
at 99a0953) a non-canary unit lost 30% of its return to a promoted trunk. So when the roll-out (fleet/rollout.py)
promotes a version, the hub watches every other robot: those the registry knows, those held back, and any that
connects while the watch runs.

1. A robot's **baseline** is the version it ran before the promotion: the previous current version, or the
   version it was held on (or, for a canary the last watch had not judged yet, that watch's baseline).
2. Its **verdict** is the canaries' rule (``rollout.judge``): the mean return of its first ``rollout.min_episodes``
   episodes on the promoted version against its last ``rollout.history_episodes`` on its baseline, within
   ``rollout.tolerance``.
3. A robot that fails is **held back**: the hub tells it to run its baseline again, and the agent swaps back to
   its own adapter for that trunk (robot_agent/trunk_adapter.py). A robot with no episode on its baseline cannot
   be judged; it stays on the new version (nothing says the trunk hurts it).
4. The watch **ends** when every watched robot has a verdict, or after ``rollout.max_wait_s``: robots still short
   of episodes then stay on the new version, and the log names them.

The hub follows the roll-out log (``rollout_log.CurrentSteps``): the hub's ``promoted`` step starts a watch; any
other step that sets the current version (``fleet-hub rollback``, a plain publish, also while the hub was down,
also to the version already current) is the operator's choice for the fleet, and ends the watch and every hold.
A hold otherwise lasts until the next promotion, which moves the robot forward and watches it against its held
version. Holds, the watch and the last step acted on are written atomically to ``trunks/unit_holds.json``, so a
restarted hub keeps every held robot where it is and acts on each step once. (A hub killed between writing
CURRENT and logging ``promoted``, a window of one file append, comes back without that watch.)
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fleet.rollout import RolloutConfig, verdict_on
from fleet.rollout_log import PROMOTED, append_step
from shared_policy.durable import write_atomic

log = logging.getLogger(__name__)

HOLDS_FILE = "unit_holds.json"  # inside <storage_dir>/trunks
_STATE = ("seen", "holds", "version", "previous", "canaries", "baselines", "verdicts", "started", "_pending")


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
        self.seen: list | None = None  # time, event, version, by of the last roll-out log step acted on
        self.holds: dict[str, int] = {}  # robot -> the version it is held on
        self.version = 0  # the promoted version under watch (0: none)
        self.previous = 0  # the current version before it (the baseline of a robot that connects later)
        self.canaries: list[str] = []  # judged by the trial: not watched
        self.baselines: dict[str, int] = {}  # robot -> the version it ran before the promotion
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.started = 0.0  # Unix seconds (a restarted hub goes on with the same deadline)
        self.fresh = not holds_path(self.storage).exists()  # no file yet: see start_at
        self._pending: list[tuple[str, int, dict[str, Any]]] = []  # roll-out log steps of a saved change
        self._load()

    def _load(self) -> None:
        path = holds_path(self.storage)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            self.seen = list(state["seen"]) if state.get("seen") is not None else None
            self.fresh = self.seen is None  # a file from before the hub followed the log: its past is done too
            self.holds = {str(r): int(v) for r, v in state.get("holds", {}).items()}
            watch = state.get("watch") or {}
            self.version, self.previous = int(watch.get("version", 0)), int(watch.get("previous", 0))
            self.canaries = [str(r) for r in watch.get("canaries", [])]
            self.baselines = {str(r): int(v) for r, v in watch.get("baselines", {}).items()}
            self.verdicts, self.started = dict(watch.get("verdicts", {})), float(watch.get("started", 0.0))
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:  # never guess who runs what
            raise ValueError(f"{path}: unreadable ({exc!r}); fix or remove it (removing it releases every held "
                             "robot onto the current trunk)") from None
        if self.holds or self.version:
            log.warning("unit watch: %d robots held back %s; %s", len(self.holds), self.holds,
                        f"watching v{self.version}" if self.version else "no watch running")

    def _save(self) -> None:
        watch = {"version": self.version, "previous": self.previous, "canaries": self.canaries,
                 "baselines": self.baselines, "verdicts": self.verdicts, "started": self.started} \
            if self.version else None
        path = holds_path(self.storage)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"seen": self.seen, "holds": self.holds, "watch": watch},
                                      sort_keys=True).encode())

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """A change of state that is saved, or undone (a failed write, e.g. a full disk, leaves nothing only in
        memory); then its roll-out log steps are written (one that fails waits for the next ``step``)."""
        before = {k: copy.deepcopy(getattr(self, k)) for k in _STATE}
        try:
            yield
            self._save()
        except BaseException:
            for k, v in before.items():
                setattr(self, k, v)
            raise
        try:
            self._flush()
        except OSError as exc:  # the change stands (saved): its steps wait for the next step(), and the caller
            log.error("roll-out log: %d steps not written yet (retried): %s", len(self._pending), exc)  # acts on it

    def _note(self, event: str, version: int, **fields: Any) -> None:
        self._pending.append((event, version, fields))

    def _flush(self) -> None:
        while self._pending:
            event, version, fields = self._pending[0]
            append_step(self.storage, event, "hub", version, **fields)
            self._pending.pop(0)

    # -- what robots run ---------------------------------------------------------------------------------------
    def wants(self, robot_id: str, current: int) -> int:
        """The version ``robot_id`` should run when it is not a canary: its hold, else ``current``."""
        return self.holds.get(robot_id, current)

    def baseline(self, robot_id: str, current: int) -> int:
        """The version ``robot_id``'s returns on a new trunk are compared with: its baseline in the running watch
        while it is not judged yet, else the version it runs."""
        if self.version and robot_id in self.baselines and robot_id not in self.verdicts:
            return self.baselines[robot_id]
        return self.wants(robot_id, current)

    def served(self) -> set[int]:
        """The versions held robots run (the trunk service must keep serving them)."""
        return set(self.holds.values())

    # -- following the roll-out log ----------------------------------------------------------------------------
    def start_at(self, last: dict[str, Any] | None) -> None:
        """At the hub's start: on the first start of a storage dir (no state file yet), what the log says
        happened before is done (``last``: the log's newest step that set the current version, or None); every
        step appended after it is followed. Later starts go on from the state file."""
        if not self.fresh:
            return
        with self._changing():
            self.seen = [last.get(k) for k in ("time", "event", "version", "by")] if last is not None else []
        self.fresh = False

    def follow(self, step: dict[str, Any], known: Iterable[str], now: float | None = None) -> bool:
        """Act once on ``step``, the newest logged step that set the current version, once the hub serves its
        version: the hub's promotion starts a watch, any other clears every hold. True
        when a held robot's version moved."""
        key = [step.get("time"), step.get("event"), step.get("version"), step.get("by")]  # not the offset: a
        # copied or restored log moves offsets, never a step's own fields
        if key == self.seen:
            return False
        if step.get("event") == PROMOTED and step.get("by") == "hub":
            return self._promoted(int(step["version"]), int(step.get("previous", 0)), known,
                                  [str(r) for r in step.get("canaries", [])], key, now)
        return self._cleared(int(step["version"]), f"{step.get('event')} by {step.get('by')}", key)

    def _promoted(self, version: int, previous: int, known: Iterable[str], judged: list[str], key: list,
                  now: float | None) -> bool:
        now = time.time() if now is None else now
        released = sorted(self.holds)
        with self._changing():
            robots = sorted((set(known) | set(self.holds) | set(self.baselines)) - set(judged))
            # a robot the last watch had not judged yet keeps that watch's baseline: the last version it was seen on
            baselines = {r: self.baseline(r, previous) for r in robots}
            self._end("superseded by a newer promotion")
            self.seen, self.baselines, self.holds, self.verdicts = key, baselines, {}, {}
            self.version, self.previous, self.canaries, self.started = version, previous, list(judged), now
            self._note("watch_started", version, robots=robots, baselines=self.baselines, released=released)
        log.info("trunk v%d promoted: watching %d robots on their own returns", version, len(robots))
        return bool(released)

    def _cleared(self, current: int, why: str, key: list) -> bool:
        released = sorted(self.holds)
        with self._changing():
            self._end(why)
            self.seen, self.holds = key, {}
            if released:
                self._note("holds_cleared", current, robots=released, why=why)
        if released:
            log.warning("current trunk is v%d (%s): robots %s are no longer held back", current, why, released)
        return bool(released)

    # -- judging -----------------------------------------------------------------------------------------------
    def step(self, returns: Callable[[str], list[tuple[int, float]]], known: Iterable[str] = (),
             now: float | None = None) -> bool:
        """Watch robots that connected since the promotion, judge those with enough episodes; True when a robot
        was held back (send notices)."""
        try:
            self._flush()  # steps of a change saved earlier whose log write failed
        except OSError as exc:  # a log that stays unwritable must not stop the robots being judged
            log.error("roll-out log: %d steps not written yet (retried): %s", len(self._pending), exc)
        if not self.version:
            return False
        now = time.time() if now is None else now
        late = {r: self.holds.get(r, self.previous)
                for r in sorted(set(known) - set(self.baselines) - set(self.canaries))}
        found = {}
        for robot, baseline in {**self.baselines, **late}.items():
            if robot not in self.verdicts and (verdict := self._verdict(robot, baseline, returns(robot))) is not None:
                found[robot] = (baseline, verdict)
        done = len(self.verdicts) + len(found) == len(self.baselines) + len(late)
        timeout = now - self.started > self.cfg.max_wait_s
        if not (late or found or done or timeout):
            return False
        held = False
        with self._changing():
            self.baselines.update(late)
            for robot, (baseline, verdict) in found.items():
                self.verdicts[robot] = verdict
                back = not verdict["passed"] and bool(verdict.get("history"))
                if back:
                    self.holds[robot] = baseline
                    held = True
                event = "unit_held_back" if back else "unit_kept"
                self._note(event, self.version, robot=robot, baseline=baseline, tolerance=self.cfg.tolerance,
                           **verdict)
                log.log(logging.WARNING if back else logging.INFO, "trunk v%d on %s: %s (%s)", self.version, robot,
                        event, verdict)
            if done:
                self._end("every robot judged")
            elif timeout:
                self._end(f"timeout after {self.cfg.max_wait_s:.0f} s")
        return held

    def _verdict(self, robot: str, baseline: int, episodes: list[tuple[int, float]]) -> dict[str, Any] | None:
        verdict = verdict_on(episodes, self.version, baseline, self.cfg)
        if verdict is not None and "history" not in verdict:  # judge found nothing on the baseline
            verdict["why"] = "no episode on its baseline: kept on the new version"
        return verdict

    def _end(self, why: str) -> None:
        """End the running watch (call inside ``_changing``)."""
        if not self.version:
            return
        unjudged, held = sorted(set(self.baselines) - set(self.verdicts)), sorted(self.holds)
        self._note("watch_ended", self.version, why=why, unjudged=unjudged, held=held)
        log.info("trunk v%d: watch ended (%s); held back: %s", self.version, why, held)
        self.version, self.previous, self.canaries, self.baselines, self.verdicts = 0, 0, [], {}, {}

    def status(self) -> dict[str, Any]:
        """What the registry (and ``fleet-hub status``) shows of the watch and the holds."""
        return {"watching": self.version, "watched": len(self.baselines), "judged": len(self.verdicts),
                "holds": dict(self.holds), "verdicts": dict(self.verdicts)}
