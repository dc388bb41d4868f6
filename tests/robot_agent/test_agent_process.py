"""The robot-agent daemon as an operator runs it: a real process, real signals, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import robot_agent
from robot_agent.config import AgentConfig
from robot_agent.spool import Spool, encode_record

BIN = Path(sys.executable).parent
UNIT_FILE = Path(robot_agent.__file__).parent / "deploy" / "robot-agent.service"


def _unit_stop_timeout_s() -> float:
    """The systemd unit's TimeoutStopSec: how long the agent has from SIGTERM until SIGKILL."""
    return next(float(line.split("=", 1)[1]) for line in UNIT_FILE.read_text().splitlines()
                if line.startswith("TimeoutStopSec="))


def _start(tmp_path: Path, checkpoint: Path, *overrides: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY")}
    env["WANDB_MODE"] = "disabled"
    args = [str(BIN / "robot-agent"), f"checkpoint={checkpoint}", f"state_dir={tmp_path / 'state'}",
            "logger.backend=none", "status_every_s=0.2", "task.episode_length_s=1.0", "spool.chunk_steps=20",
            f"hydra.run.dir={tmp_path / 'hydra'}", *overrides]
    return subprocess.Popen(args, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for(pred, timeout: float, proc: subprocess.Popen) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        if proc.poll() is not None:
            raise AssertionError(f"agent exited early ({proc.returncode}):\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the agent")


def _chunk_ids(spool_dir: Path) -> set[str]:
    # read the segments without opening a Spool (which would cut a torn tail the test wants to see cut later)
    from robot_agent.spool_segment import scan_segment

    return {r.chunk_id for seg in sorted(spool_dir.glob("seg-*.spool")) for r in scan_segment(seg).refs}


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


@pytest.mark.timeout(240)
def test_spool_after_kill_9_keeps_every_complete_chunk_and_drops_the_torn_tail(tmp_path, cartpole_checkpoint):
    proc = _start(tmp_path, cartpole_checkpoint, "driver.options.realtime=false", "adapter.steps_per_update=100")
    spool_dir = tmp_path / "state" / "spool"
    try:
        # a status file written too: without a clock to wait on, 8 chunks can come before the first status
        _wait_for(lambda: len(_chunk_ids(spool_dir)) >= 8 and (tmp_path / "state" / "status.json").exists(), 120, proc)
        trainer = _children(proc.pid)
        before = _chunk_ids(spool_dir)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    after_kill = _chunk_ids(spool_dir)
    res = subprocess.run([str(BIN / "robot-agent"), "status", str(tmp_path / "state")], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1 and "is gone without a final status" in res.stderr, res.stderr
    assert before <= after_kill  # nothing complete was lost (chunks written after `before` may add)
    seg = sorted(spool_dir.glob("seg-*.spool"))[-1]
    record = encode_record({"robot_id": "unit-0", "chunk_id": "torn", "seq": 10**6}, {})
    with open(seg, "ab") as f:  # a write cut short, as a kill in the middle of one leaves it
        f.write(record[:-7])
    spool = Spool(spool_dir)
    assert {r.chunk_id for r in spool.pending()} == after_kill and spool.torn_bytes == len(record) - 7
    spool.close()  # the restarted agent below opens it
    deadline = time.monotonic() + 15
    while trainer and any(Path(f"/proc/{p}").exists() for p in trainer) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{p}").exists() for p in trainer), "the adapter trainer outlived its agent"
    # a restarted agent appends after the surviving chunks
    res = _start(tmp_path, cartpole_checkpoint, "driver.options.realtime=false", "adapter.enabled=false",
                 "max_episodes=1")
    assert res.wait(120) == 0, res.stdout.read()[-3000:]
    seqs = sorted(int(r.header["seq"]) for r in Spool(spool_dir).pending())
    assert len(seqs) == len(after_kill) + 3 and seqs == sorted(set(seqs))


@pytest.mark.timeout(240)
def test_sigterm_finishes_the_episode_flushes_the_spool_and_exits_0(tmp_path, cartpole_checkpoint):
    proc = _start(tmp_path, cartpole_checkpoint, "shutdown_timeout_s=5")
    status = tmp_path / "state" / "status.json"
    try:
        _wait_for(lambda: status.exists() and json.loads(status.read_text())["steps"] > 10, 120, proc)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = proc.stdout.read()
    assert rc == 0, out[-3000:]
    assert took < 20  # bounded: at most the rest of a 1 s episode plus shutdown
    final = json.loads(status.read_text())
    assert final["final"] and final["episodes"] >= 1 and final["steps"] % 50 == 0  # whole 1 s episodes
    assert final["rate_hz"] > 0 and "inference_p99_ms" in final
    spool = Spool(tmp_path / "state" / "spool")
    assert sum(spool.read(r).header["steps"] for r in spool.pending()) == final["steps"]
    assert "stop requested" in out


@pytest.mark.timeout(120)
def test_status_and_estop_commands(tmp_path):
    state = tmp_path / "state"
    res = subprocess.run([str(BIN / "robot-agent"), "status", str(state)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "no status" in res.stderr
    res = subprocess.run([str(BIN / "robot-agent"), "estop", str(state)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and (state / "ESTOP").exists()
    res = subprocess.run([str(BIN / "robot-agent"), "clear-estop", str(state)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and not (state / "ESTOP").exists() and (state / "ESTOP.clear").exists()


def test_the_default_shutdown_budget_fits_the_units_stop_timeout():
    cfg = AgentConfig()
    # the episode's end, then the flush and every part's stop; the rest: the driver's stop and the exit
    assert cfg.shutdown_timeout_s + cfg.stop_timeout_s + 2.0 <= _unit_stop_timeout_s()


@pytest.mark.timeout(300)
def test_sigterm_exits_0_within_the_units_stop_timeout_with_a_killed_and_then_a_wedged_trainer(
        tmp_path, cartpole_checkpoint):
    proc = _start(tmp_path, cartpole_checkpoint)  # real time, learning, the default shutdown budget
    status = tmp_path / "state" / "status.json"

    def current() -> dict:
        try:
            return json.loads(status.read_text())
        except (OSError, ValueError):
            return {}

    wedged = 0
    try:
        _wait_for(lambda: current().get("steps", 0) > 10 and current()["services"]["adapter_trainer"] == "running",
                  120, proc)
        first = current()["trainer_pid"]
        os.kill(first, signal.SIGKILL)
        _wait_for(lambda: current()["services"]["adapter_trainer"] == "running (restarted after: killed by signal 9)",
                  120, proc)
        res = subprocess.run([str(BIN / "robot-agent"), "status", str(tmp_path / "state")], capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0 and "restarted after: killed by signal 9" in res.stdout
        wedged = current()["trainer_pid"]
        os.kill(wedged, signal.SIGSTOP)  # alive, but it will never read a queue or answer SIGTERM again
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(_unit_stop_timeout_s())  # systemd would SIGKILL it after this
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if wedged and Path(f"/proc/{wedged}").exists():
            os.kill(wedged, signal.SIGKILL)
    out = proc.stdout.read()
    assert rc == 0, out[-3000:]
    final = current()
    assert final["final"] and final["steps"] % 50 == 0  # whole 1 s episodes
    assert final["services"]["adapter_trainer"] == "stopped (restarted after: killed by signal 9)"
    assert not Path(f"/proc/{wedged}").exists(), "the wedged trainer outlived the agent"
    spool = Spool(tmp_path / "state" / "spool")
    assert sum(spool.read(r).header["steps"] for r in spool.pending()) == final["steps"]
