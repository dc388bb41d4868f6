"""The unit watch in a real ``fleet-hub`` process, robots speaking the protocol: a trunk that passed its canary
but hurts another robot is taken back from that robot alone, the hold survives ``kill -9`` of the hub, and a
trunk published by hand releases it."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from fleet.record import encode_record
from fleet.registry import REGISTRY_FILE, load_registry
from fleet.rollout_log import read_steps
from tests.fleet.chunks import agent_arrays, agent_header
from tests.fleet.hub_client import BIN, BareRobot, free_port, kill_group, start_hub_process, wait_until
from tests.fleet.test_rollout_cli import _notice_of
from tests.fleet.trunks import small_checkpoint

EPOCH = "00000000000000aa"
HUB = ("rollout.canary_robots=[unit-0]", "rollout.min_episodes=2", "rollout.history_episodes=2",
       "rollout.tolerance=0.2", "heartbeat_ms=200", "dead_after_heartbeats=50", "parquet_export=false")


def _publish(storage, path, *flags: str) -> None:
    out = subprocess.run([str(BIN / "fleet-hub"), "publish", str(path), str(storage), *flags], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr


class Episodes:
    """One-chunk episodes of a robot, each with the return and trunk version asked for, sent and acked."""

    def __init__(self, robot: BareRobot):
        self.robot, self.seq, self.rng = robot, 0, np.random.default_rng(len(robot.robot_id))

    def send(self, version: int, episode_return: float, n: int = 2) -> None:
        for _ in range(n):
            arrays = agent_arrays(self.rng, 10, versions=(version, 0), episode_end=True)
            arrays["rewards"][:] = episode_return / 10
            header = agent_header(self.robot.robot_id, EPOCH, self.seq, self.seq, arrays, episode_end=True)
            assert self.robot.send(self.robot.chunk(header["chunk_id"], encode_record(header, arrays)))
            ack = self.robot.recv_type("ack", timeout_ms=10_000, skip=("heartbeat", "trunk_notice", "credit"))
            assert ack is not None and ack.stored == [header["chunk_id"]], ack
            self.seq += 1


def _hub_current(storage) -> int:
    """The current version the running hub serves, from its registry file."""
    try:
        return int(load_registry(storage / REGISTRY_FILE)["hub"].get("trunk_version", 0))
    except (ValueError, KeyError):
        return 0


def _step(storage, event: str, robot: str | None = None) -> dict | None:
    return next((s for s in read_steps(storage) if s["event"] == event and s.get("robot", robot) == robot), None)


@pytest.mark.timeout(300)
def test_a_promoted_trunk_that_hurts_one_robot_is_taken_back_from_it_alone_and_the_hold_survives_a_hub_kill(
        tmp_path):
    storage, port = tmp_path / "hub", free_port()
    _publish(storage, small_checkpoint(tmp_path / "c1", trunk_version=1))
    hub = start_hub_process(tmp_path, port, *HUB)
    endpoint = f"tcp://127.0.0.1:{port}"
    robots = {r: BareRobot(endpoint, r) for r in ("unit-0", "unit-1", "unit-2")}
    try:
        sent = {}
        for r, robot in robots.items():
            robot.welcome()
            sent[r] = Episodes(robot)
            sent[r].send(1, 10.0)  # the history each is judged against
        _publish(storage, small_checkpoint(tmp_path / "c2", trunk_version=2, seed=2), "--canary")
        assert _notice_of(robots["unit-0"], 2)
        sent["unit-0"].send(2, 10.0)  # the canary does as well on v2: promoted
        assert wait_until(lambda: _step(storage, "promoted") is not None, 30), read_steps(storage)
        assert _notice_of(robots["unit-1"], 2) and _notice_of(robots["unit-2"], 2)
        assert _step(storage, "watch_started")["robots"] == ["unit-1", "unit-2"]  # the canary was judged already

        sent["unit-1"].send(2, 9.0)  # within 20% of its 10: kept
        sent["unit-2"].send(2, 5.0)  # v2 halves its return: back to v1, for it alone
        assert wait_until(lambda: _step(storage, "unit_held_back", "unit-2") is not None, 30), read_steps(storage)
        assert _notice_of(robots["unit-2"], 1) and _notice_of(robots["unit-1"], 2)
        assert _step(storage, "unit_kept", "unit-1")["mean_candidate"] == 9.0
        assert _step(storage, "watch_ended")["held"] == ["unit-2"]
        status = subprocess.run([str(BIN / "fleet-hub"), "status", str(storage)], capture_output=True, text=True,
                                timeout=60)
        assert "held back: unit-2 runs v1" in status.stdout, status.stdout

        kill_group(hub)  # kill -9: the hold is on disk
        for robot in robots.values():
            robot.close()
        hub = start_hub_process(tmp_path, port, *HUB)
        robots = {r: BareRobot(endpoint, r) for r in ("unit-1", "unit-2")}
        for robot in robots.values():
            robot.welcome()
        assert _notice_of(robots["unit-2"], 1) and _notice_of(robots["unit-1"], 2)

        _publish(storage, small_checkpoint(tmp_path / "c3", trunk_version=3, seed=3))  # by hand: the fleet's
        assert _notice_of(robots["unit-2"], 3) and _notice_of(robots["unit-1"], 3)
        assert _step(storage, "holds_cleared")["robots"] == ["unit-2"]
    finally:
        for robot in robots.values():
            robot.close()
        kill_group(hub)


@pytest.mark.timeout(300)
def test_a_promoted_version_made_current_again_by_hand_is_not_watched_as_a_new_promotion(tmp_path):
    storage, port = tmp_path / "hub", free_port()
    _publish(storage, small_checkpoint(tmp_path / "c1", trunk_version=1))
    hub = start_hub_process(tmp_path, port, *HUB)
    robots = {r: BareRobot(f"tcp://127.0.0.1:{port}", r) for r in ("unit-0", "unit-1")}
    try:
        sent = {}
        for r, robot in robots.items():
            robot.welcome()
            sent[r] = Episodes(robot)
            sent[r].send(1, 10.0)
        _publish(storage, small_checkpoint(tmp_path / "c2", trunk_version=2, seed=2), "--canary")
        assert _notice_of(robots["unit-0"], 2)
        sent["unit-0"].send(2, 10.0)
        assert wait_until(lambda: _step(storage, "watch_started") is not None, 30), read_steps(storage)
        for version in (1, 2):  # v2 back by hand: the operator's choice, not a promotion to watch again
            out = subprocess.run([str(BIN / "fleet-hub"), "rollback", str(version), str(storage)],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            # the hub has taken it up (the robots heartbeat meanwhile: a silent robot is declared dead)
            assert wait_until(lambda v=version: [r.send(r.heartbeat()) for r in robots.values()] and
                              _hub_current(storage) == v, 30, every=0.2)
        assert "by hand" in _step(storage, "watch_ended")["why"]
        sent["unit-1"].send(2, 1.0)  # v2 hurts unit-1 now, but no watch runs: it stays
        assert not wait_until(lambda: _step(storage, "unit_held_back", "unit-1") is not None, 3)
        assert [s["event"] for s in read_steps(storage)].count("watch_started") == 1
        assert _notice_of(robots["unit-1"], 2)
    finally:
        for robot in robots.values():
            robot.close()
        kill_group(hub)
