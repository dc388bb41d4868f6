"""`fleet-hub rollback N` and the roll-out log, with a real hub process and a robot speaking the protocol: the
running hub tells robots the older version without a restart, a candidate on trial is dropped, a version that
is not stored or fails its digest is refused with nothing changed, every step is logged durably and shown by
`fleet-hub status`."""

from __future__ import annotations

import subprocess

import pytest

from fleet.rollout import Rollout, RolloutConfig, judge
from fleet.rollout_log import read_steps
from fleet.trunk_store import TrunkStore
from tests.fleet.hub_client import BIN, BareRobot, free_port, kill_group, start_hub_process, wait_until
from tests.fleet.trunks import small_checkpoint


def _hub_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "fleet-hub"), *args], capture_output=True, text=True, timeout=120)


def _notice_of(robot: BareRobot, version: int) -> bool:
    for _ in range(50):  # the hub repeats notices with its heartbeats while the robot runs another version
        robot.send(robot.heartbeat())  # alive (and running no trunk, so it differs from what the hub wants)
        msg = robot.recv_type("trunk_notice", timeout_ms=300)
        if msg is not None and msg.trunk_version == version:
            return True
    return False


@pytest.mark.timeout(300)
def test_fleet_hub_rollback_by_hand_sets_an_older_version_for_every_robot_and_drops_the_candidate(tmp_path):
    storage, port = tmp_path / "hub", free_port()
    for v in (1, 2):
        ok = _hub_cli("publish", str(small_checkpoint(tmp_path / f"c{v}", trunk_version=v, seed=v)), str(storage))
        assert ok.returncode == 0, ok.stderr
    hub = start_hub_process(tmp_path, port, "heartbeat_ms=200", "dead_after_heartbeats=50", "parquet_export=false",
                            "rollout.canary_robots=[unit-0]")
    robot = BareRobot(f"tcp://127.0.0.1:{port}", "unit-0")
    try:
        robot.welcome()
        assert _notice_of(robot, 2)
        cand = _hub_cli("publish", str(small_checkpoint(tmp_path / "c3", trunk_version=3, seed=3)), str(storage),
                        "--canary")
        assert cand.returncode == 0 and "as the candidate" in cand.stdout, cand.stderr
        assert _notice_of(robot, 3)  # the canary is told the candidate
        assert wait_until(lambda: any(s["event"] == "sent_to_canaries" for s in read_steps(storage)), 30)

        missing = _hub_cli("rollback", "7", str(storage))
        assert missing.returncode == 1 and "v7" in missing.stderr
        v1 = TrunkStore(storage).get(1)
        original = open(v1.path, "rb").read()
        with open(v1.path, "r+b") as f:  # one flipped byte: the archive no longer matches its record
            f.seek(len(original) // 2)
            f.write(bytes([original[len(original) // 2] ^ 1]))
        damaged = _hub_cli("rollback", "1", str(storage))
        assert damaged.returncode == 1 and "sha256" in damaged.stderr
        assert TrunkStore(storage).current().version == 2 and TrunkStore(storage).candidate().version == 3
        with open(v1.path, "wb") as f:
            f.write(original)

        done = _hub_cli("rollback", "1", str(storage))
        assert done.returncode == 0, done.stderr
        assert "v1 is current (was v2); candidate v3 dropped" in done.stdout
        assert TrunkStore(storage).current().version == 1 and TrunkStore(storage).candidate() is None
        assert _notice_of(robot, 1)  # the running hub tells it, no restart
        status = _hub_cli("status", str(storage))
        assert "current v1, no candidate" in status.stdout
        assert "rollback v1 (by hand)" in status.stdout and "published_candidate v3 (by hand)" in status.stdout
    finally:
        robot.close()
        kill_group(hub)
    steps = [(s["event"], s["version"], s["by"]) for s in read_steps(storage)]
    assert steps == [("published", 1, "hand"), ("published", 2, "hand"), ("published_candidate", 3, "hand"),
                     ("sent_to_canaries", 3, "hub"), ("rollback", 1, "hand")]
    assert read_steps(storage)[-1]["candidate_dropped"] == 3


def test_a_canary_passes_within_tolerance_of_its_own_history_and_fails_beyond_it_or_without_one():
    assert judge([9.0, 9.2], [10.0, 10.0], 0.1)["passed"]  # 9.1 >= 10 - 1
    bad = judge([8.0, 8.8], [10.0, 10.0], 0.1)
    assert not bad["passed"] and (bad["mean_candidate"], bad["floor"], bad["mean_previous"]) == (8.4, 9.0, 10.0)
    assert judge([-10.5], [-10.0], 0.1)["passed"] and not judge([-11.5], [-10.0], 0.1)["passed"]  # |mean| scale
    assert not judge([10.0], [], 0.1)["passed"]  # no history on the previous version: never promoted blind


def test_canaries_are_the_first_of_each_hardware_type_and_a_trial_short_of_episodes_rolls_back_at_its_timeout(
        tmp_path):
    store = TrunkStore(tmp_path / "hub")
    store.publish(small_checkpoint(tmp_path / "c1", trunk_version=1))
    cand = store.publish(small_checkpoint(tmp_path / "c2", trunk_version=2, seed=2), candidate=True)
    rollout = Rollout(RolloutConfig(canary_count=1, min_episodes=2, max_wait_s=60), store, tmp_path / "hub")
    connected = {"a-0": "cartpole", "b-0": "go1_like", "a-1": "cartpole", "b-1": "go1_like"}
    episodes = {"a-0": [(1, 5.0), (2, 5.0), (2, 5.0)], "b-0": [(1, 5.0), (2, 5.0)]}  # b-0: one short
    assert not rollout.step(cand.version, 1, connected, episodes.get, now=0.0)  # the trial is seen
    assert rollout.step(cand.version, 1, connected, episodes.get, now=0.0)  # canaries chosen: notices go out
    assert rollout.canaries == ["a-0", "b-0"]
    assert [rollout.wants(r, 1) for r in connected] == [2, 2, 1, 1]
    rollout.step(cand.version, 1, connected, episodes.get, now=30.0)
    assert rollout.verdicts["a-0"]["passed"] and "b-0" not in rollout.verdicts
    assert store.candidate().version == 2  # still waiting for b-0
    rollout.step(cand.version, 1, connected, episodes.get, now=61.0)
    assert store.candidate() is None and store.current().version == 1
    last = read_steps(tmp_path / "hub")[-1]
    assert (last["event"], last["version"], last["by"]) == ("rolled_back", 2, "hub") and "timeout" in last["why"]


def test_a_trial_waits_for_a_canary_of_every_known_hardware_type_and_rolls_back_without_one(tmp_path):
    store = TrunkStore(tmp_path / "hub")
    store.publish(small_checkpoint(tmp_path / "c1", trunk_version=1))
    cand = store.publish(small_checkpoint(tmp_path / "c2", trunk_version=2, seed=2), candidate=True)
    rollout = Rollout(RolloutConfig(canary_count=1, min_episodes=1, max_wait_s=60), store, tmp_path / "hub")
    connected = {"a-0": "cartpole", "a-1": "cartpole"}
    known = {**connected, "b-0": "go1_like"}  # b-0 is in the fleet but not connected now
    rollout.step(cand.version, 1, connected, {}.get, now=0.0, known=known)
    assert not rollout.step(cand.version, 1, connected, {}.get, now=10.0, known=known)
    assert rollout.canaries == [] and rollout.wants("a-0", 1) == 1  # nobody runs it yet
    connected["b-0"] = "go1_like"
    assert rollout.step(cand.version, 1, connected, {}.get, now=20.0, known=known)
    assert rollout.canaries == ["a-0", "b-0"]

    other = store.publish(small_checkpoint(tmp_path / "c3", trunk_version=3, seed=3), candidate=True)
    rollout = Rollout(RolloutConfig(canary_count=1, min_episodes=1, max_wait_s=60), store, tmp_path / "hub")
    del connected["b-0"]
    for now in (0.0, 1.0, 30.0, 62.0):  # the first step sees the trial, the second starts waiting
        rollout.step(other.version, 1, connected, {}.get, now=now, known=known)
    assert store.candidate() is None and store.current().version == 1  # never promoted onto go1_like untried
    last = read_steps(tmp_path / "hub")[-1]
    assert (last["event"], last["version"]) == ("rolled_back", 3) and "go1_like" in last["why"]
