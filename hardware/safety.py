"""The safety layer between every policy and every driver.

:class:`SafetyLayer` filters each command against the profile's limits (position, velocity, torque),
limits its rate of change, and replaces NaN/inf commands with a hold. :class:`SafeDriver` wraps a
driver with that filter, a watchdog thread that puts the robot in damping mode when no fresh command
arrives within ``watchdog_periods`` control periods, and an e-stop that latches until cleared. Every
intervention is counted and logged: the first of each kind at once, then at most one summary per kind
every ``report_every_s``. Logging never runs between a tick and its command: the layer queues its
notices and :meth:`SafeDriver.report` writes them once the command is out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hardware.driver import RobotDriver
from hardware.profile import ActuatorMode, HardwareProfile
from hardware.state import RobotState

log = logging.getLogger(__name__)

# intervention kinds (the keys of SafetyLayer.counts)
POSITION_LIMIT, VELOCITY_LIMIT, TORQUE_LIMIT = "position_limit", "velocity_limit", "torque_limit"
RATE_LIMIT, NONFINITE, WATCHDOG, ESTOP = "rate_limit", "nonfinite", "watchdog", "estop"


@dataclass
class SafetyConfig:
    """Limits beyond the profile's own, and the watchdog and e-stop settings."""

    # PD: a position target may move at most this many times (max_velocity x period) per period
    pd_target_rate: float = 5.0  # a guard against glitches, not a limit on normal motion
    # torque: the normalised command may change at most this much per period
    torque_rate: float = 1.0
    watchdog_periods: float = 2.0
    estop_file: str = ""  # e-stop while this file exists (and until cleared after it is gone)

    def validate(self) -> None:
        """Raise ValueError naming the first bad key."""
        for name in ("pd_target_rate", "torque_rate", "watchdog_periods"):
            if getattr(self, name) <= 0:
                raise ValueError(f"safety.{name}: must be > 0, got {getattr(self, name)}")


class SafetyLayer:
    """Stateless limits plus the last command (for the rate limit); counts what it changed."""

    def __init__(self, profile: HardwareProfile, cfg: SafetyConfig | None = None):
        self.cfg = cfg or SafetyConfig()
        self.cfg.validate()
        self.profile = profile
        self.mode = profile.actuator.mode
        joints = profile.actuated_joints
        self._actuated = np.array([i for i, j in enumerate(profile.joints) if j.actuated])
        self.low = np.array([-np.inf if j.continuous else j.range[0] for j in joints])
        self.high = np.array([np.inf if j.continuous else j.range[1] for j in joints])
        self.max_vel = np.array([j.max_velocity for j in joints])
        self.max_torque = np.array([j.max_torque for j in joints])
        self.kp = np.array([j.kp for j in joints])
        self.kd = np.array([j.kd for j in joints])
        period = 1.0 / profile.control_hz
        self.max_step = (self.cfg.pd_target_rate * self.max_vel * period if self.mode == ActuatorMode.pd
                         else np.full(len(joints), self.cfg.torque_rate))
        self.has_gain = self.kp > 0
        self._any_gain = bool(self.has_gain.any())
        self._safe_kp = np.where(self.has_gain, self.kp, 1.0)
        # every joint actuated (the usual case): a basic slice instead of a fancy-index copy per tick
        self._joints = slice(None) if len(self._actuated) == len(profile.joints) else self._actuated
        self.counts: Counter[str] = Counter()
        self._last: np.ndarray | None = None
        # kind -> (message, count when last reported, time last reported); notices wait for report()
        self._reported: dict[str, tuple[str, int, float]] = {}
        self._pending: dict[str, str] = {}
        self.report_every_s = 10.0

    def reset(self) -> None:
        """Forget the last command (a new episode starts from the home pose)."""
        self._last = None

    def hold(self, state: RobotState) -> np.ndarray:
        """The command that holds the robot where it is: its position (PD) or zero torque."""
        if self.mode == ActuatorMode.pd:
            return np.clip(state.joint_pos[0, self._actuated], self.low, self.high)
        return np.zeros(len(self.max_vel))

    def filter(self, command: np.ndarray, state: RobotState) -> np.ndarray:
        """The command the driver may receive for ``command`` at ``state``."""
        cmd = np.asarray(command, dtype=np.float64).copy()
        if cmd.shape != self.max_vel.shape or not np.isfinite(cmd).all():
            self._count(NONFINITE, f"command {cmd.tolist()} is not {len(self.max_vel)} finite numbers: holding")
            cmd = self.hold(state)
            self._last = cmd
            return cmd
        q, qd = state.joint_pos[0, self._joints], state.joint_vel[0, self._joints]
        # per tick on the control thread: bare ufuncs (np.clip and np.array_equal cost several times more)
        if self._last is not None:
            delta = cmd - self._last
            step = np.minimum(np.maximum(delta, -self.max_step), self.max_step)
            if (step != delta).any():
                self._count(RATE_LIMIT, "command rate limited")
                cmd = self._last + step
        if self.mode == ActuatorMode.pd:
            cmd = self._limit_pd(cmd, q, qd)
        else:
            cmd = self._limit_torque(cmd, qd)
        self._last = cmd
        return cmd

    def _limit_pd(self, cmd: np.ndarray, q: np.ndarray, qd: np.ndarray) -> np.ndarray:
        clipped = np.minimum(np.maximum(cmd, self.low), self.high)
        if (clipped != cmd).any():
            self._count(POSITION_LIMIT, "position target clamped to the joint range")
        cmd = clipped
        over = np.abs(qd) > self.max_vel
        pushing = over & (np.sign(cmd - q) == np.sign(qd))
        if pushing.any():  # over speed: no target further along the direction of motion
            self._count(VELOCITY_LIMIT, "joint over its velocity limit: target held at the joint")
            cmd = np.where(pushing, q, cmd)
        if self._any_gain:  # the torque the PD loop would apply, kept within the motor's limit
            tau = self.kp * (cmd - q) - self.kd * qd
            tau_ok = np.minimum(np.maximum(tau, -self.max_torque), self.max_torque)
            fix = self.has_gain & (tau_ok != tau)
            if fix.any():
                self._count(TORQUE_LIMIT, "position target pulled in to stay within the torque limit")
                cmd = np.where(fix, q + (tau_ok + self.kd * qd) / self._safe_kp, cmd)
        return cmd

    def _limit_torque(self, cmd: np.ndarray, qd: np.ndarray) -> np.ndarray:
        clipped = np.clip(cmd, -1.0, 1.0)  # 1.0 = the profile's max_torque
        if not np.array_equal(clipped, cmd):
            self._count(TORQUE_LIMIT, "torque command clamped to the motor limit")
        cmd = clipped
        pushing = (np.abs(qd) > self.max_vel) & (np.sign(cmd) == np.sign(qd))
        if pushing.any():
            self._count(VELOCITY_LIMIT, "joint over its velocity limit: no torque along the motion")
            cmd = np.where(pushing, 0.0, cmd)
        return cmd

    def _count(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        self._pending[kind] = message

    def report(self, now: float | None = None) -> None:
        """Log queued interventions: a kind's first at once, then one summary per ``report_every_s``."""
        if not self._pending:
            return
        now = time.monotonic() if now is None else now
        for kind, message in list(self._pending.items()):
            n = self.counts[kind]
            last = self._reported.get(kind)
            if last is None:
                log.warning("safety: %s (%s #%d)", message, kind, n)
            elif now - last[2] >= self.report_every_s:
                log.warning("safety: %s (%s: %d more in the last %.0f s, %d in all)", message, kind, n - last[1],
                            now - last[2], n)
            else:
                continue
            self._reported[kind] = (message, n, now)
            del self._pending[kind]


class EStop:
    """A latching emergency stop: set by a signal, a file, or a call; cleared only by :meth:`clear`."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.reason = ""
        self._engaged = threading.Event()

    @property
    def engaged(self) -> bool:
        """Whether the robot must stay in damping mode."""
        return self._engaged.is_set()

    def trigger(self, reason: str) -> None:
        """Engage (idempotent; the first reason is kept)."""
        if not self._engaged.is_set():
            self.reason = reason
            self._engaged.set()
            log.error("E-STOP engaged: %s", reason)

    def poll(self) -> bool:
        """Engage if the e-stop file exists; clear if a clear was requested and the file is gone."""
        if self.path is None:
            return self.engaged
        if self.path.exists():
            self.trigger(f"file {self.path}")
        clear = self.path.with_name(self.path.name + ".clear")
        if clear.exists():
            clear.unlink(missing_ok=True)
            self.clear()
        return self.engaged

    def clear(self) -> bool:
        """Release the latch, unless the e-stop file still exists; returns whether it is released."""
        if self.path is not None and self.path.exists():
            log.error("E-STOP stays engaged: remove %s first", self.path)
            return False
        if self._engaged.is_set():
            log.warning("E-STOP cleared (was: %s)", self.reason)
        self._engaged.clear()
        self.reason = ""
        return True


class SafeDriver:
    """A driver behind the safety layer, a watchdog and an e-stop: the only way the agent commands it."""

    def __init__(self, driver: RobotDriver, cfg: SafetyConfig | None = None):
        self.driver = driver
        self.layer = SafetyLayer(driver.profile, cfg)
        self.cfg = self.layer.cfg
        self.estop = EStop(self.cfg.estop_file or None)
        self.period = 1.0 / driver.profile.control_hz
        self._last_command = time.monotonic()
        self._tripped = False
        self._armed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    @property
    def counts(self) -> Counter[str]:
        """Interventions so far, by kind."""
        return self.layer.counts

    def report(self) -> None:
        """Log the safety layer's queued notices (call it after the command is out, not before)."""
        self.layer.report()

    def send(self, command: np.ndarray, state: RobotState) -> np.ndarray | None:
        """Filter and send ``command``; damping instead while the e-stop is engaged. Returns what was sent."""
        with self._lock:
            self._last_command = time.monotonic()
            self._tripped = False
            # with the watchdog running, it polls the e-stop file every millisecond or so; a stat() per
            # command would cost the control loop tens of microseconds for nothing
            engaged = self.estop.engaged if self._watchdog is not None else self.estop.poll()
            if engaged:
                self.layer.counts[ESTOP] += 1
                self.driver.damp()
                return None
            safe = self.layer.filter(command, state)
            self.driver.send_command(safe)
            return safe

    def arm(self) -> None:
        """Expect a command every period from now on (an episode starts)."""
        with self._lock:
            self._last_command = time.monotonic()
            self._armed = True

    def disarm(self) -> None:
        """Commands pause on purpose (between episodes, while homing): damp without counting a fault."""
        with self._lock:
            self._armed = False
            self.driver.damp()

    def start_watchdog(self) -> None:
        """Start the thread that damps the robot when commands stop arriving."""
        if self._watchdog is None:
            self._last_command = time.monotonic()
            self._stop.clear()
            self._watchdog = threading.Thread(target=self._watch, name="safety-watchdog", daemon=True)
            self._watchdog.start()

    def stop(self) -> None:
        """Stop the watchdog, damp and release the driver."""
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=2.0)
            self._watchdog = None
        with self._lock:
            self.driver.stop()

    def _watch(self) -> None:
        limit = self.cfg.watchdog_periods * self.period
        # twice per period (at most every ms): a stale command is caught within 2.5 periods
        while not self._stop.wait(max(self.period / 2, 1e-3)):
            # the file check and the staleness test run outside the lock: a watchdog descheduled while
            # holding it would stall the control thread's next send for a whole scheduler slice
            engaged_now = not self.estop.engaged and self.estop.poll()
            if not engaged_now and not (self._stale(limit) and not self._tripped):
                continue
            with self._lock:
                stale = self._stale(limit)  # again under the lock: a command may have just arrived
                if stale and not self._tripped:
                    self.layer.counts[WATCHDOG] += 1
                    log.warning("safety: no command for %.1f ms: damping (watchdog #%d)",
                                1e3 * (time.monotonic() - self._last_command), self.layer.counts[WATCHDOG])
                    self._tripped = True
                if stale or engaged_now:
                    self.driver.damp()

    def _stale(self, limit: float) -> bool:
        return self._armed and time.monotonic() - self._last_command > limit
