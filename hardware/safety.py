"""The safety layer between every policy and every driver, for one robot.

:class:`SafetyLayer` runs the safety filter of :mod:`hardware.safety_filter` (the same compiled code the
simulator runs over its N worlds) on the robot's batch of one: position, velocity and torque limits, a
rate limit and soft position limits from the profile, NaN/inf commands and readings replaced by a hold,
and a last check that every command is finite. Every intervention is counted and logged: the first of
each kind at once, then at most one summary per kind every ``report_every_s``. Logging never runs
between a tick and its command: the layer queues its notices and :meth:`SafetyLayer.report` writes them
once the command is out. The robot's own runtime around it (watchdog, stale readings, e-stop) is the
robot agent's :class:`robot_agent.safe_driver.SafeDriver`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import numpy as np

from hardware.profile import HardwareProfile
from hardware.safety_filter import (
    KINDS,
    NONFINITE,
    NONFINITE_READING,
    POSITION_LIMIT,
    RATE_LIMIT,
    TORQUE_LIMIT,
    VELOCITY_LIMIT,
    SafetyFilter,
)
from hardware.state import RobotState

log = logging.getLogger(__name__)

__all__ = ["KINDS", "NONFINITE", "NONFINITE_READING", "POSITION_LIMIT", "RATE_LIMIT", "TORQUE_LIMIT",
           "VELOCITY_LIMIT", "SafetyLayer"]

_MESSAGES = {
    POSITION_LIMIT: "command held inside the joint range (PD target clamped, or torque toward a limit faded out)",
    VELOCITY_LIMIT: "joint over its velocity limit: no command along its motion",
    TORQUE_LIMIT: "command limited to the motor's torque",
    RATE_LIMIT: "command rate limited",
    NONFINITE: "command is not finite: holding",
    NONFINITE_READING: "joint reading is not finite: holding (damping behind the agent's SafeDriver)",
}


class SafetyLayer:
    """The safety filter for one robot, its counts by kind, and the log of what it changed."""

    def __init__(self, profile: HardwareProfile):
        self.profile = profile
        self.filter_state = SafetyFilter(profile, 1)
        self.num_actions = profile.num_actions
        self.max_step = self.filter_state.max_step
        self.counts: Counter[str] = Counter()
        # kind -> (message, count when last reported, time last reported); notices wait for report()
        self._reported: dict[str, tuple[str, int, float]] = {}
        self._pending: dict[str, str] = {}
        self.report_every_s = 10.0

    def reset(self) -> None:
        """A new episode: the next command is rate limited from the hold at the next reading."""
        self.filter_state.reset()

    @property
    def reading_ok(self) -> bool:
        """Whether the last reading :meth:`filter` saw was finite."""
        return bool(self.filter_state.reading_ok[0])

    def hold(self, state: RobotState) -> np.ndarray:
        """The command that holds the robot: PD, its position (its last command when the reading is not
        finite); torque, zero."""
        f = self.filter_state
        if not f.pd:
            return np.zeros(self.num_actions)
        q = state.joint_pos[0, f.joints]
        if np.isfinite(q).all():
            return np.minimum(np.maximum(q, f.limits[0]), f.limits[1])
        return f.last[0].copy()

    def filter(self, command: np.ndarray, state: RobotState) -> np.ndarray:
        """The command the driver may receive for ``command`` at ``state``: always finite."""
        cmd = np.asarray(command, dtype=np.float64)
        shape = cmd.shape
        if shape != (self.num_actions,):
            cmd = np.full(self.num_actions, np.nan)  # the filter holds and counts it
        out = self.filter_state.apply(cmd.reshape(1, -1), state)
        step = self.filter_state.step_counts
        if step.any():
            for k in np.flatnonzero(step):
                self.count(KINDS[k], _MESSAGES[KINDS[k]])
            if shape != cmd.shape:
                self._pending[NONFINITE] = f"command of shape {shape} is not {self.num_actions} numbers: holding"
        return out[0]

    def count(self, kind: str, message: str) -> None:
        """Count one intervention of ``kind``; ``message`` is logged at the next :meth:`report`."""
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
