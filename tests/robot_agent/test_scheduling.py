"""Real-time priority of the control thread: granted, or refused with a warning, never half-applied."""

from __future__ import annotations

import os
import threading

import pytest

from robot_agent.scheduling import NORMAL, enter_realtime, leave_realtime


def _in_thread(fn):
    out = {}
    t = threading.Thread(target=lambda: out.update(fn()))
    t.start()
    t.join(timeout=10)
    return out


def test_priority_zero_leaves_scheduling_alone():
    assert _in_thread(lambda: {"got": enter_realtime(0), "policy": os.sched_getscheduler(0)}) == {
        "got": NORMAL, "policy": os.SCHED_OTHER}


@pytest.mark.timeout(30)
def test_fifo_applies_to_the_control_thread_only_or_falls_back_with_a_warning(caplog):
    def body():
        got = enter_realtime(10)
        policy = os.sched_getscheduler(0)
        child = _in_thread(lambda: {"policy": os.sched_getscheduler(0)})  # started by the control thread
        leave_realtime()
        return {"got": got, "policy": policy, "child": child["policy"], "after": os.sched_getscheduler(0)}

    with caplog.at_level("WARNING", logger="robot_agent.scheduling"):
        r = _in_thread(body)
    if r["got"] == NORMAL:  # no permission here: one warning that says what to grant
        assert r["policy"] == os.SCHED_OTHER
        assert any("CAP_SYS_NICE" in rec.getMessage() for rec in caplog.records)
    else:
        assert r["got"] == "SCHED_FIFO 10" and r["policy"] & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO
        assert r["child"] == os.SCHED_OTHER  # a thread it starts does not inherit the priority
    assert r["after"] == os.SCHED_OTHER and os.sched_getscheduler(0) == os.SCHED_OTHER
