"""The robot's safety runtime: its driver behind the safety layer, a watchdog, stale-reading checks and
an e-stop.

:class:`SafeDriver` wraps a driver with :class:`hardware.safety.SafetyLayer` (the filter sim applies too),
damps the robot when a reading is non-finite or stale (its stamp has not advanced for ``stale_periods``
periods: a dead driver process), runs a watchdog thread that damps it when no fresh command arrives
within ``watchdog_periods`` control periods, and holds an :class:`EStop` that latches until cleared. Its
interventions are counted with the layer's, and logged by :meth:`SafeDriver.report` once the command is out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hardware.driver import RobotDriver, TimedState
from hardware.safety import SafetyLayer
from hardware.state import RobotState

log = logging.getLogger(__name__)

# the robot's own intervention kinds, counted beside the filter's (SafetyLayer.counts)
STALE_READING, WATCHDOG, ESTOP = "stale_reading", "watchdog", "estop"
__all__ = ["ESTOP", "STALE_READING", "WATCHDOG", "EStop", "SafeDriver", "SafetyConfig"]


@dataclass
class SafetyConfig:
    """The robot's own safety settings: watchdog, stale readings, e-stop. (The command limits are the
    profile's ``limits``, shared with sim.)"""

    watchdog_periods: float = 2.0  # no fresh command for this many control periods: damp the robot
    # a reading whose stamp has not advanced for this many periods in a row damps the robot
    stale_periods: int = 3
    estop_file: str = ""  # e-stop while this file exists (and until cleared after it is gone)
    # seconds the driver's stop() gets at shutdown, then the agent goes on without it and logs an error:
    # a driver whose stop() hangs (a wedged bus) must not hold the shutdown past its deadline
    release_timeout_s: float = 2.0

    def validate(self) -> None:
        """Raise ValueError naming the first bad key."""
        for name in ("watchdog_periods", "stale_periods", "release_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"safety.{name}: must be > 0, got {getattr(self, name)}")


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
        self.cfg = cfg or SafetyConfig()
        self.cfg.validate()
        self.driver = driver
        self.layer = SafetyLayer(driver.profile)
        self.estop = EStop(self.cfg.estop_file or None)
        self.period = 1.0 / driver.profile.control_hz
        self._last_command = time.monotonic()
        self._stamp = -np.inf  # the newest reading stamp seen, and for how many sends it has not advanced
        self._unchanged = 0
        self._tripped = False
        self._armed = False
        self._lock = threading.Lock()
        self._released = threading.Event()  # begin_stop's release of the driver (set: nothing to wait for)
        self._released.set()
        self._release_failure: list[BaseException] = []
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    @property
    def counts(self) -> Counter[str]:
        """Interventions so far, by kind."""
        return self.layer.counts

    def report(self) -> None:
        """Log the safety layer's queued notices (call it after the command is out, not before)."""
        self.layer.report()

    def send(self, command: np.ndarray, reading: TimedState | RobotState) -> np.ndarray | None:
        """Filter and send ``command`` for the driver's ``reading``; returns what was sent, or None when the
        robot was damped instead: e-stop engaged, a non-finite reading, or a stale one (its stamp has not
        advanced for ``stale_periods`` sends; pass the driver's :class:`TimedState` for that check)."""
        state = reading.state if isinstance(reading, TimedState) else reading
        with self._lock:
            self._last_command = time.monotonic()
            self._tripped = False
            # with the watchdog running, it polls the e-stop file every millisecond or so; a stat() per
            # command would cost the control loop tens of microseconds for nothing
            engaged = self.estop.engaged if self._watchdog is not None else self.estop.poll()
            if engaged:
                self.layer.counts[ESTOP] += 1
                self._damp()
                return None
            if isinstance(reading, TimedState) and self._stamp_stale(reading.stamp):
                self.layer.count(STALE_READING, f"driver reading not renewed for {self.cfg.stale_periods} periods "
                                                f"(stamp {reading.stamp:.3f}): damping")
                self._damp()
                return None
            safe = self.layer.filter(command, state)
            if not self.layer.reading_ok:  # counted by the layer; damping needs no reading, a hold would
                self._damp()
                return None
            self.driver.send_command(safe)
            return safe

    def _stamp_stale(self, stamp: float) -> bool:
        if stamp > self._stamp:
            self._stamp, self._unchanged = stamp, 0
        else:
            self._unchanged += 1
        return self._unchanged >= self.cfg.stale_periods

    def _damp(self) -> None:
        self.driver.damp()
        # the robot moves while damped: the next command is rate limited from where it is then
        self.layer.reset()

    def arm(self) -> None:
        """Expect a command every period from now on (an episode starts)."""
        with self._lock:
            self._last_command = time.monotonic()
            self._unchanged = 0  # homing may leave the stamp where it was; staleness counts from here
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

    def stop(self) -> bool:
        """Stop the watchdog, damp and release the driver. Returns False (and logs an error) when the
        driver's ``stop()`` did not return within ``release_timeout_s``: the shutdown goes on without it."""
        self.begin_stop()
        return self.finish_stop(self.cfg.release_timeout_s)

    def begin_stop(self) -> None:
        """Stop the watchdog and start damping and releasing the driver on a thread of its own, so that a
        shutdown flushes its data while a slow (or wedged) bus releases the robot; :meth:`finish_stop` waits."""
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=0.5)  # it wakes every half period; a watchdog stuck in a damp is left
            self._watchdog = None
        self._released = threading.Event()
        self._release_failure: list[BaseException] = []

        def release() -> None:
            try:
                with self._lock:
                    self.driver.stop()
            except BaseException as exc:  # handed to finish_stop's caller, as a direct call would
                self._release_failure.append(exc)
            self._released.set()

        threading.Thread(target=release, name="driver-release", daemon=True).start()

    def finish_stop(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for :meth:`begin_stop`'s release: True once released (its error raised),
        False (logged) if the driver's ``stop()`` has not returned."""
        if self._released.wait(max(0.0, timeout)):
            if self._release_failure:
                raise self._release_failure[0]
            return True
        log.error("the driver's stop() did not return within the shutdown's time (safety.release_timeout_s, "
                  "stop_timeout_s): the agent shuts down without it; check that the robot is powered down")
        return False

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
                    self._damp()

    def _stale(self, limit: float) -> bool:
        return self._armed and time.monotonic() - self._last_command > limit
