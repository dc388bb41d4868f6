"""The agent when one of its parts fails: a dying spool writer, a killed trainer; and where its I/O happens."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from hardware.tasks.config import task_config
from robot_agent.agent import STATUS_FILE, RobotAgent
from robot_agent.spool import Spool

TASK = "cartpole_swingup"


def _agent(cfg, episode_length_s: float = 2.0) -> RobotAgent:
    return RobotAgent(cfg, task_config(TASK, {"episode_length_s": episode_length_s}))


def _fail_appends(agent: RobotAgent, which: set[int]) -> None:
    """Make the spool's append raise an error it has no handling for on the ``which``-th calls (1-based)."""
    append, calls = agent.spool.append, [0]

    def append_or_fail(header, arrays):
        calls[0] += 1
        if calls[0] in which:
            raise RuntimeError(f"injected fault on append {calls[0]}")
        return append(header, arrays)

    agent.spool.append = append_or_fail


@pytest.mark.timeout(120)
def test_a_spool_writer_that_dies_is_restarted_once_and_loses_only_the_chunk_it_held(agent_cfg):
    agent_cfg.max_episodes = 4
    agent_cfg.spool.chunk_steps = 50  # two chunks an episode
    agent = _agent(agent_cfg)
    _fail_appends(agent, {2})
    status = agent.run()
    assert status["episodes"] == 4 and not status["fault"]
    assert status["services"]["spool_writer"] == "stopped (restarted after: RuntimeError: injected fault on append 2)"
    assert status["lost_chunks"] == 1
    spool = Spool(Path(agent_cfg.state_dir) / "spool")
    assert sum(spool.read(r).header["steps"] for r in spool.pending()) == status["steps"] - 50


@pytest.mark.timeout(120)
def test_a_spool_writer_that_dies_twice_stops_the_agent_with_a_fault_shown_in_its_status(agent_cfg):
    agent_cfg.max_episodes = 0  # only the fault ends this run
    agent = _agent(agent_cfg)
    _fail_appends(agent, set(range(2, 10**6)))
    status = agent.run()
    assert "spool writer died again" in status["fault"] and "injected fault" in status["fault"]
    assert status["services"]["spool_writer"].startswith("dead: RuntimeError: injected fault")
    assert status["episodes"] >= 1 and status["lost_chunks"] >= 2
    saved = json.loads((Path(agent_cfg.state_dir) / STATUS_FILE).read_text())
    assert saved["final"] and saved["fault"] == status["fault"]
    from robot_agent.cli import control_command

    assert control_command("status", [agent_cfg.state_dir]) == 1


@pytest.mark.timeout(240)
def test_a_killed_trainer_is_restarted_once_and_then_the_unit_runs_on_without_learning(agent_cfg):
    agent_cfg.adapter.enabled = True
    agent_cfg.max_episodes = 0
    agent = _agent(agent_cfg, episode_length_s=0.5)
    kills: list[int] = []
    episodes_at_kill: list[int] = []

    def kill_trainer_twice():
        while len(kills) < 2 and not agent.stopping:
            process = agent.trainer.process.process
            if process.pid is not None and process.is_alive() and process.pid not in kills:
                os.kill(process.pid, signal.SIGKILL)
                kills.append(process.pid)
                episodes_at_kill.append(agent.episodes)
            time.sleep(0.05)
        while agent.episodes < episodes_at_kill[-1] + 5:  # the unit goes on controlling
            time.sleep(0.05)
        agent.request_stop()

    killer = threading.Thread(target=kill_trainer_twice, daemon=True)
    killer.start()
    status = agent.run()
    killer.join(5)
    assert len(kills) == 2 and agent.trainer.restarts_left == 0
    assert status["services"]["adapter_trainer"] == "dead: killed by signal 9 (not restarted: learning stopped)"
    assert status["episodes"] >= episodes_at_kill[-1] + 5 and status["lost_chunks"] == 0


@pytest.mark.timeout(120)
def test_the_control_thread_opens_no_file_and_writes_no_line_inside_an_episode(agent_cfg, capsys):
    agent_cfg.driver.options = {"realtime": True, "seed": 1}  # the production set-up: the watchdog reads the e-stop
    agent_cfg.status_every_s = 0.05  # status reports fall inside every episode
    agent_cfg.spool.chunk_steps = 10
    agent = _agent(agent_cfg, episode_length_s=1.0)
    control = threading.get_ident()
    in_episode = threading.Event()
    seen: list[str] = []

    def audit(event: str, args: tuple) -> None:
        if in_episode.is_set() and threading.get_ident() == control and event in ("open", "os.rename", "os.replace"):
            seen.append(f"{event} {args[0]}")

    class Lines:
        def __init__(self, stream):
            self.stream = stream

        def write(self, text):
            if in_episode.is_set() and threading.get_ident() == control:
                seen.append(f"printed {text!r}")
            return self.stream.write(text)

        def __getattr__(self, name):
            return getattr(self.stream, name)

    class Records(logging.Handler):
        def emit(self, record):
            if in_episode.is_set() and record.thread == control:
                seen.append(f"logged {record.getMessage()!r}")

    run_episode = agent.loop.run_episode  # the episode itself: from homing to the robot damped after it

    def marked_episode(number):
        in_episode.set()
        try:
            return run_episode(number)
        finally:
            in_episode.clear()

    agent.loop.run_episode = marked_episode
    handler = Records()
    logging.getLogger().addHandler(handler)
    sys.addaudithook(audit)  # stays for the process: it does nothing once the flag is down
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Lines(out), Lines(err)
    try:
        status = agent.run()
    finally:
        sys.stdout, sys.stderr = out, err
        logging.getLogger().removeHandler(handler)
    assert status["episodes"] == 2 and status["steps"] == 100
    assert json.loads((Path(agent_cfg.state_dir) / STATUS_FILE).read_text())["final"]
    assert seen == []
