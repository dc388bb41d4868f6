"""Real-time scheduling for the control thread, where the operating system grants it.

A robot's computer runs its control loop at a real-time priority (SCHED_FIFO) so that no ordinary
process, the agent's own adapter learner included, can delay a tick. That needs root, CAP_SYS_NICE
or an ``RLIMIT_RTPRIO`` (systemd: ``LimitRTPRIO=``); without it the agent says so once and runs at
normal priority.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

NORMAL = "normal"


def enter_realtime(priority: int) -> str:
    """Put the calling thread under SCHED_FIFO at ``priority`` (1-99; 0 leaves it alone).

    Threads and processes it starts afterwards go back to normal scheduling (SCHED_RESET_ON_FORK), so
    a learner spawned later never inherits the control loop's priority. Returns the policy in effect.
    """
    if priority <= 0:
        return NORMAL
    if not hasattr(os, "SCHED_FIFO"):
        log.warning("control_priority=%d: this platform has no SCHED_FIFO; running at normal priority", priority)
        return NORMAL
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except PermissionError:
        log.warning("control_priority=%d needs root, CAP_SYS_NICE or LimitRTPRIO>=%d; running the control loop at "
                    "normal priority", priority, priority)
        return NORMAL
    return f"SCHED_FIFO {priority}"


def leave_realtime() -> None:
    """Back to normal scheduling (shutdown work must not run above everything else)."""
    if hasattr(os, "SCHED_OTHER") and os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
