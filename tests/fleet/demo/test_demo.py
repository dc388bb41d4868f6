"""The issue's "done when": a shortened ``fleet-demo`` end to end, real processes (hub, agents on real-time
MuJoCo stand-ins, fleet-train, fleet-eval, fleet-learn, the report), real CURVE sockets, real files. Across a
SIGKILLed and restarted hub and a SIGKILLed and restarted agent, every chunk the units wrote is acked and stored
once, a candidate trunk is published, canaried, promoted and adopted by every unit, the report is written, and
no process is left. The whole loop runs once (``short_demo``, the suite's longest fixture); each test below
pins one part of what that run must show. A stopped demo and a demo that fails in its own code still stop every
part and write their record."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
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
         "agents.episode_length_s=2.0", "agents.adapt_s=20", "agents.steps_per_update=200", "agents.guard_episodes=2",
         "hub.min_episodes=2", "hub.history_episodes=2", "hub.tolerance=5.0", "learn.updates=4", "learn.batch_size=8",
         "learn.gate_episodes=4", "learn.sim_fraction=0", "learn.gate_tolerance=0.9", "learn.learning_rate=1e-6",
         "learn.episodes_after=1", "learn.rebase_steps=20", "wandb=false", "progress_every_s=10"]
LAST_LINE = re.compile(r"demo robots=4 chunks_acked=(\d+) chunks_stored=(\d+) lost=0 trunk=v2 report=(.+)")


@dataclass
class FinishedDemo:
    """A demo run as the tests see it: its exit code, its output, and what it left running."""

    run: Path
    returncode: int | None
    stdout: str
    output: str  # stdout and stderr
    left: list[int]  # processes carrying the demo's mark alive once it exited, before the test ended any

    @property
    def last_line(self) -> str:
        lines = self.stdout.strip().splitlines()
        return lines[-1] if lines else ""


def end_parts(mark: str) -> list[int]:
    """What still carries a demo's mark (``MARK=<its logs dir>:<its pid>``), taken before anything is killed;
    then each of them is SIGKILLed (a demo killed by the test's timeout leaves its parts, each in its own
    session)."""
    left = marked_processes(mark)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def start_demo(run: Path, overrides: list[str]) -> subprocess.Popen:
    """fleet-demo as a user starts it (its own process: its pid is in its parts' mark)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", "fleet.demo.app", *overrides, f"run_dir={run}",
                             f"hydra.run.dir={run}"], cwd=run.parent, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish_demo(demo: subprocess.Popen, run: Path, timeout_s: float) -> FinishedDemo:
    """Wait for the demo to exit (kill it past ``timeout_s``), then note and end whatever it left."""
    try:
        out, err = demo.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        demo.kill()
        out, err = demo.communicate()
    finally:
        left = end_parts(f"{MARK}={(run / 'logs').resolve()}:{demo.pid}")
    return FinishedDemo(run, demo.returncode, out, out + err, left)


def finite_numbers(value) -> bool:
    if isinstance(value, dict):
        return all(finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_numbers(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory) -> FinishedDemo:
    """The shortened demo, run once for every test of the whole loop."""
    run = tmp_path_factory.mktemp("demo") / "run"
    return finish_demo(start_demo(run, SHORT), run, timeout_s=560)


@pytest.fixture(scope="module")
def short_record(short_demo) -> DemoRecord:
    assert short_demo.returncode == 0, short_demo.output[-6000:]
    return DemoRecord.load(short_demo.run)


@pytest.mark.timeout(600)  # whichever test runs first pays for the whole run (short_demo)
def test_the_shortened_demo_exits_0_and_its_last_line_names_the_report_it_wrote(short_demo):
    assert short_demo.returncode == 0, short_demo.output[-6000:]
    m = LAST_LINE.fullmatch(short_demo.last_line)
    assert m and int(m[1]) == int(m[2]) > 0, short_demo.last_line
    report = Path(m[3])
    assert report.is_absolute() and report.name == "index.html" and report.is_file()
    assert (report.parent / "report.md").is_file() and len(list(report.parent.glob("*.png"))) >= 3
    assert short_demo.last_line in (report.parent / "report.md").read_text()  # the report quotes it as printed
    assert "\x1b[" not in short_demo.stdout  # not a terminal: progress lines, no redrawing


@pytest.mark.timeout(600)
def test_no_process_is_left_by_the_demo_itself(short_demo, short_record):
    # taken when the demo exited, before this test ended anything: not one process that carries its mark
    assert short_demo.left == []
    assert {p["name"] for p in short_record.processes} >= {"pretrain", "eval", "hub", "learn", "report",
                                                           *(u.robot_id for u in short_record.units)}
    for p in short_record.processes:  # each leads its own process group: the group's id is its pid
        assert p["exit"] is not None and group_members(p["pid"]) == [], p
    assert not short_record.problems


@pytest.mark.timeout(600)
def test_every_chunk_is_acked_and_stored_once_across_the_hub_and_agent_kills(short_demo, short_record):
    units = {u.robot_id: u for u in short_record.units}
    assert [u.hardware for u in short_record.units] == ["cartpole", "cartpole_pivot"] * 2
    # every robot connected: each one's chunks are in the hub's store, by its own SQLite connection
    ids = stored_ids(short_demo.run / "hub")
    assert len(ids) == len(set(ids)) == int(LAST_LINE.fullmatch(short_demo.last_line)[2])
    for robot, u in units.items():
        assert sum(i.startswith(robot + "-") for i in ids) == u.chunks_stored > 0
        assert u.chunks_acked == u.chunks_stored == u.chunks_sent and u.chunks_lost == u.chunks_unsent == 0
    # both faults happened, and the restarted unit's two processes are both counted
    assert [f["what"] for f in short_record.faults] == ["hub SIGKILL + restart", "agent unit-3 SIGKILL + restart"]
    assert units["unit-3"].restarted and not units["unit-0"].restarted
    episodes = stored_episodes(short_demo.run / "hub")
    assert len({e.spool_epoch for e in episodes["unit-3"]}) == 1  # one spool, numbers continued after the kill
    # ...and there were numbers to continue: episodes stored before the kill, and episodes the restarted process
    # ran (on trunk v2, published only after the adaptation phase in which the kill falls)
    kill = next(f for f in short_record.faults if f["what"].startswith("agent unit-3"))
    killed_at = short_record.started + kill["at_s"]  # ``started`` is taken within a millisecond of the demo's clock
    assert any(e.last_received < killed_at for e in episodes["unit-3"])
    assert any(e.trunk_version == 2 for e in episodes["unit-3"])


@pytest.mark.timeout(600)
def test_the_candidate_is_canaried_promoted_and_adopted_by_every_unit(short_demo, short_record):
    # v2 published by fleet-learn, tried on the canaries (one per type), promoted, adopted by every unit
    steps = read_steps(short_demo.run / "hub")
    for step in [("published", 1), ("published_candidate", 2), ("sent_to_canaries", 2), ("promoted", 2)]:
        assert step in [(s["event"], s["version"]) for s in steps], steps
    verdicts = [s for s in steps if s["event"] == "canary_verdict" and s["version"] == 2]
    assert sorted(v["robot"] for v in verdicts) == ["unit-0", "unit-1"] and all(v["passed"] for v in verdicts)
    assert short_record.trunk_versions == {"pretrained": 1, "final": 2}
    for u in short_record.units:
        assert u.final_trunk_version == 2, u.robot_id
        assert any(e.trunk_version == 2 for e in u.episodes), u.robot_id  # a fleet-updated return for every unit
        assert any(e.trunk_version == 1 for e in u.episodes), u.robot_id  # and one from before


@pytest.mark.timeout(600)
def test_the_records_and_the_reports_numbers_are_real_numbers(short_record):
    assert set(short_record.sim_oracle) == {"cartpole", "cartpole_pivot"}
    assert all(r.episodes == 8 and math.isfinite(r.mean) and math.isfinite(r.ci95)
               for r in short_record.sim_oracle.values())
    assert all(len(c) == 2 for c in short_record.pretrain_curve.values())  # one row per iteration
    assert len(short_record.learner_curve) == 4
    assert finite_numbers([u.__dict__ for u in short_record.units]) and finite_numbers(short_record.learner_curve)
    assert finite_numbers(short_record.pretrain_curve)
    # every unit's zero-shot and fleet-updated return, from its own episodes
    for u in short_record.units:
        derived = unit_returns(short_record, u)
        for cell in (derived.zero_shot, derived.fleet_updated):
            assert cell.value is not None and math.isfinite(cell.value), (u.robot_id, cell)


@pytest.mark.timeout(300)
def test_a_demo_stopped_with_sigterm_stops_the_part_it_was_running_and_still_writes_its_record(tmp_path):
    run = tmp_path / "run"
    demo = start_demo(run, [*SHORT, "pretrain.iterations=500", "report=false"])
    try:
        end = time.monotonic() + 200
        while "[train] it " not in _read(run / "logs" / "pretrain.log") and time.monotonic() < end:
            time.sleep(0.5)  # fleet-train is well under way
        demo.send_signal(signal.SIGTERM)
    finally:
        finished = finish_demo(demo, run, timeout_s=120)
    assert finished.returncode == 1, finished.output[-3000:]
    assert finished.left == []
    record = DemoRecord.load(run)
    assert record.problems == ["interrupted (SIGINT / SIGTERM): every part stopped"]
    assert [p["name"] for p in record.processes] == ["pretrain"] and record.processes[0]["exit"] is not None
    assert group_members(record.processes[0]["pid"]) == []
    assert finished.last_line == "demo robots=4 chunks_acked=0 chunks_stored=0 lost=0 trunk=v0 report=(not built)"


@pytest.mark.timeout(120)
def test_a_demo_that_fails_in_its_own_code_records_it_says_its_last_line_and_exits_1(tmp_path):
    run = tmp_path / "run"
    (run / "logs" / "pretrain.log").mkdir(parents=True)  # the demo cannot write the first part's log
    finished = finish_demo(start_demo(run, [*SHORT, "report=false"]), run, timeout_s=100)
    assert finished.returncode == 1, finished.output[-3000:]
    assert finished.left == []
    record = DemoRecord.load(run)
    assert len(record.problems) == 1 and "'pretrain in sim'" in record.problems[0], record.problems
    assert "IsADirectoryError" in record.problems[0] and "Traceback" in finished.output
    assert finished.last_line == "demo robots=4 chunks_acked=0 chunks_stored=0 lost=0 trunk=v0 report=(not built)"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
