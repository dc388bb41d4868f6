"""Staged roll-out end to end: a real ``fleet-hub`` process, real robot agents on MuJoCo stand-in cart-poles,
candidates published with the real ``fleet-hub publish --canary``. The fleet's trunk is a briefly pretrained
policy (~0.08 per 1 s episode, +-25% from episode to episode, hence a tolerance of 0.5). A good candidate (the
same weights) is promoted after the canary's episodes; a bad one (its action head zeroed: it never pushes, the
pole just hangs, the task failed) is rolled back automatically, and the canary swaps back to the older version
it already has. The non-canary never runs a candidate; every robot ends on the version the hub says."""

from __future__ import annotations

import copy
import json
import sqlite3
import subprocess
import threading

import pytest
import torch

from fleet.rollout_log import read_steps
from hardware.tasks.config import task_config
from robot_agent.agent import RobotAgent
from shared_policy.checkpoint import load_checkpoint, save_checkpoint
from tests.fleet.hub_client import BIN, free_port, kill_group, start_hub_process, wait_until
from tests.robot_agent.test_uplink import uplink_cfg

ROLLOUT = ("rollout.canary_robots=[unit-0]", "rollout.min_episodes=4", "rollout.history_episodes=4",
           "rollout.tolerance=0.5", "heartbeat_ms=200", "parquet_export=false")


def _publish(storage, ckpt, *flags: str) -> int:
    out = subprocess.run([str(BIN / "fleet-hub"), "publish", str(ckpt), str(storage), *flags], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[2].lstrip("v").rstrip(":"))


def _versions_run(storage, robot: str) -> set[int]:
    con = sqlite3.connect(f"file:{storage / 'experience.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return {r[0] for r in con.execute("SELECT DISTINCT trunk_version FROM chunks WHERE robot_id = ?", (robot,))}
    finally:
        con.close()


def _event(storage, event: str, version: int) -> dict | None:
    return next((s for s in read_steps(storage) if s["event"] == event and s["version"] == version), None)


@pytest.mark.timeout(600)
def test_a_canary_rollout_promotes_a_good_trunk_and_rolls_back_a_bad_one_with_every_robot_on_the_right_version(
        agent_cfg, tmp_path):
    storage, port = tmp_path / "hub", free_port()
    policy, _ = load_checkpoint(agent_cfg.checkpoint)
    v1 = _publish(storage, agent_cfg.checkpoint)
    hub = start_hub_process(tmp_path, port, *ROLLOUT)
    agents, runners = {}, []
    try:
        for i in range(2):
            cfg = copy.deepcopy(agent_cfg)
            cfg.robot_id, cfg.max_episodes = f"unit-{i}", 0
            cfg.state_dir, cfg.trunk_dir = str(tmp_path / f"state-{i}"), str(tmp_path / f"trunks-{i}")
            cfg.driver.options = {"realtime": False, "seed": 1 + i}
            cfg.uplink = uplink_cfg(f"tcp://127.0.0.1:{port}")
            agents[cfg.robot_id] = RobotAgent(cfg, task_config("cartpole_swingup", {"episode_length_s": 1.0}))
        for agent in agents.values():
            runners.append(threading.Thread(target=agent.run, daemon=True))
            runners[-1].start()
        canary, other = agents["unit-0"], agents["unit-1"]
        assert wait_until(lambda: all(a.runtime.trunk_version == v1 for a in agents.values()), 120)
        at = canary.episodes
        assert wait_until(lambda: canary.episodes >= at + 5, 120)  # its history on v1

        good = _publish(storage, save_checkpoint(tmp_path / "good", policy, trunk_version=0), "--canary")
        assert wait_until(lambda: canary.runtime.trunk_version == good, 120), canary.status()["uplink"]
        assert other.runtime.trunk_version == v1 and _event(storage, "promoted", good) is None
        assert wait_until(lambda: _event(storage, "promoted", good) is not None, 180), json.dumps(read_steps(storage))
        assert wait_until(lambda: other.runtime.trunk_version == good, 120)

        bad_policy = load_checkpoint(tmp_path / "good")[0]
        with torch.no_grad():
            bad_policy.heads["cartpole"].mean.weight.zero_()  # no force ever: the pole just hangs
            bad_policy.heads["cartpole"].mean.bias.zero_()
        bad = _publish(storage, save_checkpoint(tmp_path / "bad", bad_policy, trunk_version=0), "--canary")
        assert wait_until(lambda: canary.runtime.trunk_version == bad, 120)
        assert wait_until(lambda: _event(storage, "rolled_back", bad) is not None, 180), read_steps(storage)
        verdict = _event(storage, "canary_verdict", bad)
        assert verdict["robot"] == "unit-0" and not verdict["passed"]
        assert verdict["mean_candidate"] < verdict["floor"] < verdict["mean_previous"]
        assert wait_until(lambda: canary.runtime.trunk_version == good, 120)  # back to the older version
        assert canary.trunk_swaps == 3 and other.runtime.trunk_version == good  # good, bad, good again
    finally:
        for agent in agents.values():
            agent.request_stop()
        for r in runners:
            r.join(60)
        kill_group(hub)
    assert not any(r.is_alive() for r in runners)
    assert bad in _versions_run(storage, "unit-0") and bad not in _versions_run(storage, "unit-1")
    events = [(s["event"], s["version"]) for s in read_steps(storage)]
    for step in [("published", v1), ("published_candidate", good), ("sent_to_canaries", good),
                 ("canary_verdict", good), ("promoted", good), ("published_candidate", bad),
                 ("sent_to_canaries", bad), ("canary_verdict", bad), ("rolled_back", bad)]:
        assert step in events, (step, events)
    assert events.index(("promoted", good)) < events.index(("published_candidate", bad))
    assert _event(storage, "canary_verdict", good)["passed"]
