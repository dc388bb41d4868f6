"""A trunk and this robot's rebased adapter travel and swap together, and an adapter never runs on a trunk it was
not made for: a real ``fleet-hub`` process, a real agent on a MuJoCo stand-in cart-pole, the real
``fleet-hub publish --adapters`` and ``fleet-hub rollback``."""

from __future__ import annotations

import sqlite3
import subprocess
import threading

import pytest
import torch

from fleet.trunk_archive import REBASED_ADAPTER
from hardware.tasks.config import task_config
from robot_agent.agent import ADAPTER_FILE, RobotAgent
from robot_agent.trunk_adapter import adapter_for_trunk, save_own_adapter
from shared_policy.adapter import Adapter, adapter_file_metadata, save_adapter
from shared_policy.checkpoint import load_checkpoint, save_checkpoint
from shared_policy.config import AdapterConfig
from tests.fleet.hub_client import BIN, free_port, kill_group, start_hub_process, wait_until
from tests.robot_agent.test_uplink import uplink_cfg


def _cli(*args: str) -> str:
    out = subprocess.run([str(BIN / "fleet-hub"), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _same(a: Adapter, b: Adapter) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _pairs(storage, robot: str) -> set[tuple[int, int]]:
    con = sqlite3.connect(f"file:{storage / 'experience.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return set(con.execute("SELECT DISTINCT trunk_version, adapter_version FROM chunks WHERE robot_id = ?",
                               (robot,)))
    finally:
        con.close()


@pytest.mark.timeout(400)
def test_an_agent_swaps_trunk_and_its_rebased_adapter_together_and_its_own_adapter_back_after_a_rollback(
        agent_cfg, tmp_path):
    storage, port = tmp_path / "hub", free_port()
    base = int(_cli("publish", agent_cfg.checkpoint, str(storage)).split()[2].lstrip("v").rstrip(":"))
    newer, _ = load_checkpoint(agent_cfg.checkpoint)
    with torch.no_grad():
        for p in newer.trunk.parameters():
            p.add_(0.01)
    rebased = Adapter(newer, "cartpole", AdapterConfig(rank=4, alpha=1.0))
    with torch.no_grad():
        for p in rebased.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    save_adapter(tmp_path / "rebased" / "unit-0.safetensors", rebased, version=7, trunk_version=base + 1)
    save_checkpoint(tmp_path / "newer", newer, trunk_version=0)

    # the unit already ran its own v7 on the base trunk: the rebased v7 must not take that number again
    own = Adapter(newer, "cartpole", AdapterConfig(rank=4, alpha=1.0))
    with torch.no_grad():
        for p in own.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    save_adapter(tmp_path / "state" / ADAPTER_FILE, own, version=7, trunk_version=base)
    hub = start_hub_process(tmp_path, port, "heartbeat_ms=200", "parquet_export=false")
    agent_cfg.robot_id, agent_cfg.max_episodes, agent_cfg.trunk_dir = "unit-0", 0, str(tmp_path / "trunks")
    agent_cfg.adapter.enabled, agent_cfg.adapter.learn = True, False  # runs its adapter; learning is not the point
    agent_cfg.uplink = uplink_cfg(f"tcp://127.0.0.1:{port}")
    agent = RobotAgent(agent_cfg, task_config("cartpole_swingup", {"episode_length_s": 1.0}))
    first = agent.runtime.adapter
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    try:
        assert wait_until(lambda: agent.episodes >= 2, 120)
        out = _cli("publish", str(tmp_path / "newer"), str(storage), "--adapters", str(tmp_path / "rebased"))
        assert "rebased adapters for unit-0" in out
        new = base + 1
        assert wait_until(lambda: agent.runtime.trunk_version == new, 120), agent.status()["uplink"]
        assert agent.trunk_adapter_source == "rebased" and agent.runtime.adapter_version == 8  # renumbered
        assert _same(agent.runtime.adapter, rebased)
        assert (tmp_path / "trunks" / f"trunk-v{new:06d}" / REBASED_ADAPTER).is_file()
        assert adapter_file_metadata(agent.state_dir / ADAPTER_FILE)["trunk_version"] == str(new)  # a restart
        at = agent.episodes
        assert wait_until(lambda: agent.episodes >= at + 2, 120)

        _cli("rollback", str(base), str(storage))
        assert wait_until(lambda: agent.runtime.trunk_version == base, 120), agent.status()["uplink"]
        assert agent.trunk_adapter_source == "own" and agent.runtime.adapter_version == 7
        assert _same(agent.runtime.adapter, first)  # what it ran on that trunk before, not the rebased one
        at = agent.episodes
        assert wait_until(lambda: agent.episodes >= at + 2, 120)
    finally:
        agent.request_stop()
        runner.join(60)
        kill_group(hub)
    assert not runner.is_alive()
    # every stored step ran a trunk with the adapter made for it: never the new trunk with the old adapter
    assert wait_until(lambda: _pairs(storage, "unit-0") == {(base, 7), (new, 8)}, 30), _pairs(storage, "unit-0")


def test_a_trunk_without_a_rebased_adapter_gets_a_fresh_one_never_the_adapter_of_another_trunk(
        tmp_path, cartpole_checkpoint):
    policy, manifest = load_checkpoint(cartpole_checkpoint)
    v = int(manifest["trunk_version"])
    cfg = AdapterConfig(rank=4, alpha=1.0)
    learned = Adapter(policy, "cartpole", cfg)
    with torch.no_grad():
        for p in learned.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    save_own_adapter(tmp_path / "state", learned, 5, v)  # what this unit ran on trunk v
    own, version, source = adapter_for_trunk(cartpole_checkpoint, policy, v, "cartpole", tmp_path / "state", cfg)
    assert (source, version) == ("own", 5) and _same(own, learned)
    fresh, version, source = adapter_for_trunk(cartpole_checkpoint, policy, v + 1, "cartpole", tmp_path / "state",
                                               cfg)
    assert (source, version) == ("fresh", 0) and not _same(fresh, learned)
