"""The issue's "done when": a shortened ``fleet-demo`` end to end, real processes (hub, agents on real-time
MuJoCo stand-ins, fleet-train, fleet-eval, fleet-learn), real CURVE sockets, real files. Across a SIGKILLed and
restarted hub and a SIGKILLed and restarted agent, every chunk the units wrote is acked and stored once, a
candidate trunk is published, canaried, promoted and adopted by every unit, and no process is left."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.demo.processes import MARK, group_members, marked_processes
from fleet.demo.record import DemoRecord
from fleet.episode_log import stored_episodes
from fleet.report.tables import unit_returns
from fleet.rollout_log import read_steps
from tests.fleet.hub_client import stored_ids

ROOT = Path(__file__).resolve().parents[3]
# a budget that learns nothing worth reporting and still runs every phase: the gate and the canaries are set to
# pass a candidate that barely moved (what the test pins is the plumbing, not the learning)
SHORT = ["pretrain.iterations=2", "pretrain.num_envs=16", "oracle.episodes=8", "oracle.num_envs=8",
         "agents.episode_length_s=2.0", "agents.adapt_s=40", "agents.steps_per_update=200", "agents.guard_episodes=2",
         "hub.min_episodes=2", "hub.history_episodes=2", "hub.tolerance=5.0", "learn.updates=4", "learn.batch_size=8",
         "learn.gate_episodes=4", "learn.sim_fraction=0", "learn.gate_tolerance=0.9", "learn.learning_rate=1e-6",
         "learn.episodes_after=1", "learn.rebase_steps=20", "wandb=false", "progress_every_s=10"]


def kill_parts(run: Path) -> None:
    """SIGKILL whatever a demo in ``run`` started that is still alive (they carry its mark)."""
    for pid in marked_processes(f"{MARK}={(run / 'logs').resolve()}"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def finite_numbers(value) -> bool:
    if isinstance(value, dict):
        return all(finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_numbers(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


@pytest.mark.timeout(600)
def test_the_shortened_demo_loses_nothing_across_kills_and_every_unit_adopts_the_promoted_trunk(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    try:
        res = subprocess.run([sys.executable, "-m", "fleet.demo.app", *SHORT, f"run_dir={run}",
                              f"hydra.run.dir={run}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=590)
    finally:  # a demo killed by the timeout leaves its parts (each in its own session): end them here
        kill_parts(run)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    last = res.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"demo robots=4 chunks_acked=(\d+) chunks_stored=(\d+) lost=0 trunk=v2 report=(.+)", last)
    assert m and int(m[1]) == int(m[2]) > 0, last
    report = Path(m[3])
    assert report.name == "index.html" and report.is_file() and (report.parent / "report.md").is_file()
    assert len(list(report.parent.glob("*.png"))) >= 3
    assert last in (report.parent / "report.md").read_text()  # the report quotes the line as printed
    assert "\x1b[" not in res.stdout  # not a terminal: progress lines, no redrawing

    record = DemoRecord.load(run)
    units = {u.robot_id: u for u in record.units}
    assert [u.hardware for u in record.units] == ["cartpole", "cartpole_pivot"] * 2
    # every robot connected: each one's chunks are in the hub's store, by its own SQLite connection
    ids = stored_ids(run / "hub")
    assert len(ids) == len(set(ids)) == int(m[2])
    for robot, u in units.items():
        assert sum(i.startswith(robot + "-") for i in ids) == u.chunks_stored > 0
        assert u.chunks_acked == u.chunks_stored == u.chunks_sent and u.chunks_lost == 0
    # both faults happened, and the restarted unit's two processes are both counted
    assert [f["what"] for f in record.faults] == ["hub SIGKILL + restart", "agent unit-3 SIGKILL + restart"]
    assert units["unit-3"].restarted and not units["unit-0"].restarted
    episodes = stored_episodes(run / "hub")
    assert len({e.spool_epoch for e in episodes["unit-3"]}) == 1  # one spool, numbers continued after the kill
    # v2 published by fleet-learn, tried on the canaries (one per type), promoted, adopted by every unit
    steps = [(s["event"], s["version"]) for s in read_steps(run / "hub")]
    for step in [("published", 1), ("published_candidate", 2), ("sent_to_canaries", 2), ("promoted", 2)]:
        assert step in steps, steps
    verdicts = [s for s in read_steps(run / "hub") if s["event"] == "canary_verdict" and s["version"] == 2]
    assert sorted(v["robot"] for v in verdicts) == ["unit-0", "unit-1"] and all(v["passed"] for v in verdicts)
    assert record.trunk_versions == {"pretrained": 1, "final": 2}
    for robot, u in units.items():
        assert u.final_trunk_version == 2, robot
        assert any(e.trunk_version == 2 for e in u.episodes), robot  # a fleet-updated return for every unit
        assert any(e.trunk_version == 1 for e in u.episodes), robot  # and one from before
    # the record's numbers are real numbers
    assert set(record.sim_oracle) == {"cartpole", "cartpole_pivot"}
    assert all(r.episodes == 8 and math.isfinite(r.mean) and math.isfinite(r.ci95) for r in record.sim_oracle.values())
    assert all(len(c) == 2 for c in record.pretrain_curve.values())  # one row per iteration
    assert len(record.learner_curve) == 4
    assert finite_numbers([u.__dict__ for u in record.units]) and finite_numbers(record.learner_curve)
    assert finite_numbers(record.pretrain_curve) and not record.problems
    # and so are the report's: every unit's zero-shot and fleet-updated return, from its own episodes
    for u in record.units:
        derived = unit_returns(record, u)
        for cell in (derived.zero_shot, derived.fleet_updated):
            assert cell.value is not None and math.isfinite(cell.value), (u.robot_id, cell)
    # no process left: not one the demo started, nor anything in their process groups
    assert {p["name"] for p in record.processes} >= {"pretrain", "eval", "hub", "learn", *units}
    for p in record.processes:  # each leads its own process group: the group's id is its pid
        assert group_members(p["pid"]) == [], p


@pytest.mark.timeout(300)
def test_a_demo_stopped_with_sigterm_stops_the_part_it_was_running_and_still_writes_its_record(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    demo = subprocess.Popen([sys.executable, "-m", "fleet.demo.app", *SHORT, "pretrain.iterations=500", "report=false",
                             f"run_dir={run}", f"hydra.run.dir={run}"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 200
        while "[train] it " not in _read(run / "logs" / "pretrain.log") and time.monotonic() < end:
            time.sleep(0.5)  # fleet-train is well under way
        demo.send_signal(signal.SIGTERM)
        out, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
        kill_parts(run)
    assert demo.returncode == 1, out[-3000:]
    record = DemoRecord.load(run)
    assert record.problems == ["interrupted (SIGINT / SIGTERM): every part stopped"]
    assert [p["name"] for p in record.processes] == ["pretrain"] and record.processes[0]["exit"] is not None
    assert group_members(record.processes[0]["pid"]) == []
    assert out.strip().splitlines()[-1].startswith("demo robots=4 chunks_acked=0 chunks_stored=0 lost=0 trunk=v0")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
