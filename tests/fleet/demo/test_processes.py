"""The demo's process groups with real processes and real signals: what ignores SIGTERM is killed and reported,
and a grandchild left in a part's group is found, killed and reported too."""

from __future__ import annotations

import os
import sys
import time

import pytest

from fleet.demo.processes import MARK, PartFailed, ProcessGroups, group_members, marked_processes

IGNORES_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('RE' + 'ADY', flush=True); time.sleep(600)"
# a part that exits at SIGTERM but leaves a child of its own behind in its process group
LEAVES_CHILD = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                "print('RE' + 'ADY', flush=True); time.sleep(600)")


def wait_output(child, text: str, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while text not in child.output() and time.monotonic() < end:
        time.sleep(0.05)
    assert text in child.output(), child.output()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(120)
def test_a_part_that_ignores_sigterm_is_killed_with_its_group_and_reported(tmp_path):
    procs = ProcessGroups(tmp_path / "logs", dict(os.environ), tmp_path)
    stubborn = procs.start("stubborn", [sys.executable, "-c", IGNORES_TERM])
    polite = procs.start("polite", [sys.executable, "-c", "import time; print('RE' + 'ADY', flush=True); time.sleep(600)"])
    wait_output(stubborn, "READY")
    wait_output(polite, "READY")
    problems = procs.stop_all(timeout_s=2)
    assert len(problems) == 1 and "stubborn" in problems[0] and "ignored SIGTERM" in problems[0], problems
    assert not stubborn.alive() and not polite.alive()
    assert not group_members(stubborn.pid) and procs.leftovers() == []
    assert stubborn.popen.returncode == -9 and polite.popen.returncode == -15


@pytest.mark.timeout(120)
def test_a_grandchild_left_in_a_parts_group_is_found_killed_and_reported(tmp_path):
    procs = ProcessGroups(tmp_path / "logs", dict(os.environ), tmp_path)
    part = procs.start("leaky", [sys.executable, "-c", LEAVES_CHILD])
    wait_output(part, "READY")
    members = group_members(part.pid)
    assert len(members) == 2 and part.pid in members
    grandchild = next(p for p in members if p != part.pid)
    assert procs.terminate(part, 10)  # the part itself exits at SIGTERM ...
    problems = procs.leftovers()  # ... its child does not
    assert problems == [f"leaky: process group {part.pid} still holds pids [{grandchild}]"]
    end = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < end:
        time.sleep(0.05)  # killed; reaped by init once it is re-parented
    assert not group_members(part.pid) and procs.leftovers() == []


@pytest.mark.timeout(60)
def test_a_failing_one_shot_part_raises_with_its_logs_tail(tmp_path):
    procs = ProcessGroups(tmp_path / "logs", dict(os.environ), tmp_path)
    with pytest.raises(PartFailed, match=r"(?s)broken exited 3.*the reason"):
        procs.run("broken", [sys.executable, "-c", "import sys; print('the reason'); sys.exit(3)"], 30)
    assert (tmp_path / "logs" / "broken.log").read_text().startswith("$ ")


# a part that starts a helper in a session of its own (as W&B starts wandb-core), then exits at SIGTERM
LEAVES_SESSION = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], "
                  "start_new_session=True); print('RE' + 'ADY', flush=True); time.sleep(600)")


@pytest.mark.timeout(120)
def test_a_helper_that_left_its_parts_process_group_is_found_by_its_mark_killed_and_reported(tmp_path):
    procs = ProcessGroups(tmp_path / "logs", dict(os.environ), tmp_path)
    part = procs.start("wandb-like", [sys.executable, "-c", LEAVES_SESSION])
    wait_output(part, "READY")
    assert procs.terminate(part, 10)
    assert group_members(part.pid) == []  # nothing left in the part's own group ...
    problems = procs.leftovers()  # ... the helper is in a session of its own
    assert len(problems) == 1 and "outside its process group" in problems[0], problems
    helper = int(problems[0].split()[1])
    end = time.monotonic() + 10
    while alive(helper) and time.monotonic() < end:
        time.sleep(0.05)
    assert procs.leftovers() == []


@pytest.mark.timeout(60)
def test_a_process_mark_matches_only_itself_not_a_longer_mark_it_is_a_prefix_of(tmp_path):
    # two demos' marks differ only in the demo's pid: 123 must not find the parts of 1234
    longer = ProcessGroups(tmp_path / "logs", dict(os.environ), tmp_path)
    longer.mark += "4"
    longer.env[MARK] = longer.mark.split("=", 1)[1]
    part = longer.start("other-demos-part", [sys.executable, "-c", "import time; print('RE' + 'ADY', flush=True); time.sleep(600)"])
    try:
        wait_output(part, "READY")
        ours = ProcessGroups(tmp_path / "logs", dict(os.environ), tmp_path)
        assert longer.mark.startswith(ours.mark) and longer.mark != ours.mark
        assert marked_processes(longer.mark) == [part.pid]
        assert marked_processes(ours.mark) == []
        assert ours.leftovers() == []  # not killed as ours, not reported as ours
        assert part.alive()
    finally:
        longer.kill(part)
