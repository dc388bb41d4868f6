"""Adapters to the hub, over real sockets: the uplink uploads only the newest kept adapter once the hub is up,
and the agent hands it each adapter it keeps, with the trunk it was trained on, and at a restart the one it kept."""

from __future__ import annotations

import time

import pytest
import torch

from fleet.adapter_store import AdapterStore
from hardware.tasks.config import task_config
from robot_agent.agent import ADAPTER_FILE, RobotAgent
from robot_agent.config import AgentConfig
from shared_policy.adapter import Adapter, adapter_bytes, adapter_file_metadata
from shared_policy.checkpoint import load_checkpoint, read_manifest
from tests.fleet.hub_client import ThreadHub, free_port, hub_config, wait_until
from tests.fleet.trunks import small_checkpoint
from tests.robot_agent.test_uplink import uplink_cfg


def _stored(storage) -> dict:
    store = AdapterStore(storage / "experience.sqlite")
    try:
        return store.latest()
    finally:
        store.close()


@pytest.mark.timeout(90)
def test_only_the_newest_kept_adapter_is_uploaded_once_the_hub_is_up_and_it_stays_stored(tmp_path, spool, uplinks):
    policy, _ = load_checkpoint(small_checkpoint(tmp_path / "ckpt", trunk_version=3))
    port = free_port()
    up = uplinks(uplink_cfg(f"tcp://127.0.0.1:{port}"), spool, "unit-0", "cartpole", "ab" * 8)
    for version in (1, 2):  # kept while the hub is down: only the newest matters
        adapter = Adapter(policy, "cartpole")
        with torch.no_grad():
            adapter.head_bias.fill_(float(version))
        up.offer_adapter(adapter_bytes(adapter, version, 3), version, 3)
    time.sleep(0.3)
    assert not up.connected and up.status()["adapter_pending"] == 2
    hub = ThreadHub(hub_config(tmp_path / "hub", port=port))
    try:
        assert wait_until(lambda: up.status()["adapters_uploaded"] == 1, 30), up.status()
        assert up.status()["adapter_uploaded_version"] == 2 and up.status()["adapter_pending"] is None
        assert hub.server.registry.record("unit-0").adapter_stored == 2
    finally:
        hub.stop()
    store = AdapterStore(tmp_path / "hub" / "experience.sqlite")
    stored = store.latest()["unit-0"]
    assert (stored.adapter_version, stored.trunk_version, stored.hardware) == (2, 3, "cartpole")
    with pytest.raises(KeyError):
        store.get("unit-0", 1)  # superseded before it could be sent: never uploaded
    store.close()


@pytest.mark.timeout(300)
def test_the_agent_uploads_the_adapter_it_keeps_with_its_trunk_and_at_restart_the_one_it_kept(
        cartpole_checkpoint, tmp_path):
    hub = ThreadHub(hub_config(tmp_path / "hub"))
    trunk = read_manifest(cartpole_checkpoint)["trunk_version"]
    try:
        cfg = AgentConfig(checkpoint=str(cartpole_checkpoint), state_dir=str(tmp_path / "unit"), max_steps=1000,
                          status_every_s=1e9, shutdown_timeout_s=0.1, robot_id="unit-0")
        cfg.driver.options = {"realtime": False, "seed": 1}
        cfg.adapter.wait_for_learner = True
        cfg.adapter.guard = False  # every update is kept as it arrives
        cfg.adapter.steps_per_update = 500
        cfg.adapter.epochs = 2
        cfg.logger.backend = "none"
        cfg.uplink = uplink_cfg(hub.endpoint)
        agent = RobotAgent(cfg, task_config("cartpole_swingup", {"episode_length_s": 5.0}))
        agent.run()
        # v1 was kept half way and went up at once; v2 came from the learner as the agent stopped
        assert agent.adapter_updates == 2 and agent.runtime.adapter_version == 2
        first = _stored(tmp_path / "hub")["unit-0"]
        assert (first.adapter_version, first.trunk_version) == (1, trunk)
        cfg.adapter.learn, cfg.max_steps = False, 10
        RobotAgent(cfg, task_config("cartpole_swingup", {"episode_length_s": 5.0})).run()
        kept = _stored(tmp_path / "hub")["unit-0"]  # the restart sent the adapter file it loaded
        assert (kept.adapter_version, kept.trunk_version) == (2, trunk)
        assert adapter_file_metadata(tmp_path / "unit" / ADAPTER_FILE)["sha256"] == kept.weights_sha256
    finally:
        hub.stop()
