"""The agent's uplink downloading trunks, over real sockets: a published trunk is downloaded, installed and
hot-swapped by the watcher; a download survives the real hub process killed with SIGKILL half way and resumes
where it stopped; a trunk that fails its digest is never installed; a running agent swaps to a published trunk
and its experience on the hub names it."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import threading
import time

import pytest

from fleet.keys import enrol, init_hub
from fleet.registry import load_registry
from fleet.trunk_store import TrunkStore
from hardware.tasks.config import task_config
from robot_agent.agent import RobotAgent
from robot_agent.runtime import TrunkWatcher
from robot_agent.trunk_download import WANTED_FILE, installed_name
from robot_agent.uplink import HubUplink
from shared_policy.checkpoint import load_checkpoint, read_manifest, save_checkpoint
from tests.fleet.hub_client import (
    BIN,
    ThreadHub,
    free_port,
    hub_config,
    kill_group,
    start_hub_process,
    wait_until,
)
from tests.fleet.trunks import cartpole_spec, small_checkpoint
from tests.robot_agent.test_uplink import uplink_cfg


def _trunk_uplink(uplinks, endpoint, spool, trunk_dir, running=1, **kw) -> HubUplink:
    return uplinks(uplink_cfg(endpoint, **kw), spool, "unit-0", "cartpole", "ab" * 8,
                   versions=lambda: (running, 0), trunk_dir=trunk_dir)


@pytest.mark.timeout(90)
def test_a_published_trunk_is_downloaded_installed_and_taken_by_the_watcher(tmp_path, spool, uplinks):
    hub = ThreadHub(hub_config(tmp_path / "hub", heartbeat_ms=100))
    try:
        up = _trunk_uplink(uplinks, hub.endpoint, spool, tmp_path / "trunks", trunk_piece_bytes=64 * 1024)
        assert wait_until(lambda: up.connected)
        watcher = TrunkWatcher(tmp_path / "trunks", cartpole_spec(), current_version=1)
        watcher.poll_once()
        assert watcher.take() is None  # nothing yet
        rec = TrunkStore(tmp_path / "hub").publish(small_checkpoint(tmp_path / "ckpt", trunk_version=2))
        assert wait_until(lambda: up.status()["trunk"]["installed"] == 2, 30), up.status()
        installed = tmp_path / "trunks" / installed_name(2)
        assert read_manifest(installed)["trunk_version"] == 2  # every file's digest holds
        # no partial or staging left; WANTED names the version the hub wants this robot on
        assert sorted(p.name for p in (tmp_path / "trunks").iterdir()) == [WANTED_FILE, installed.name]
        watcher.poll_once()  # what the agent's watcher thread does every second
        policy, manifest, path = watcher.take()
        assert manifest["trunk_version"] == 2 and path == installed
        assert up.status()["trunk"]["fetched_bytes"] == rec.size
    finally:
        hub.stop()


@pytest.mark.timeout(180)
def test_a_trunk_download_resumes_where_it_stopped_after_the_hub_is_killed_half_way(tmp_path, spool, uplinks):
    port = free_port()
    ckpt = small_checkpoint(tmp_path / "ckpt", trunk_version=5)
    published = subprocess.run([str(BIN / "fleet-hub"), "publish", str(ckpt), str(tmp_path / "hub")],
                               capture_output=True, text=True, timeout=100)
    assert published.returncode == 0, published.stderr
    rec = TrunkStore(tmp_path / "hub").current()
    piece, window = 16 * 1024, 2
    hub = start_hub_process(tmp_path, port, "heartbeat_ms=200")
    try:
        # a rate cap makes the download take ~4 s, so the kill lands in its middle
        up = _trunk_uplink(uplinks, f"tcp://127.0.0.1:{port}", spool, tmp_path / "trunks", trunk_piece_bytes=piece,
                           trunk_window=window, trunk_max_bytes_per_s=rec.size / 4, missed_heartbeats=3)
        assert wait_until(lambda: up.trunk.written >= rec.size // 4, 60), up.status()
        kill_group(hub)
        assert up.trunk.written < rec.size, "the download finished before the kill"
        time.sleep(1.0)  # what was on its way has arrived; nothing more can
        at_kill = up.trunk.written
        partial = up.trunk.partial_path(up.trunk.target)
        assert partial.stat().st_size == at_kill > 0
        hub = start_hub_process(tmp_path, port, "heartbeat_ms=200")
        assert wait_until(lambda: up.status()["trunk"]["installed"] == 5, 90), up.status()
        s = up.status()["trunk"]
        assert s["resumed_from"] == at_kill  # resumed from the partial file's length ...
        assert s["fetched_bytes"] == rec.size  # ... so every byte was written once: it did not start over
        assert s["received_bytes"] <= rec.size + window * piece  # at most the pieces in flight came twice
        assert s["failures"] == 0 and not partial.exists()
        # the restarted hub served only the rest
        served = wait_until(lambda: load_registry(tmp_path / "hub" / "registry.json")["hub"]["trunk_bytes_served"]
                            >= rec.size - at_kill, 10)
        assert served and load_registry(tmp_path / "hub" / "registry.json")["hub"]["trunk_bytes_served"] <= \
            rec.size - at_kill + window * piece
        _, manifest = load_checkpoint(tmp_path / "trunks" / installed_name(5), {"cartpole": cartpole_spec()})
        assert manifest["files"] == read_manifest(ckpt)["files"]  # the very weights that were published
    finally:
        kill_group(hub)


@pytest.mark.timeout(90)
def test_a_trunk_that_fails_its_digest_is_discarded_retried_and_never_installed(tmp_path, spool, uplinks, caplog):
    rec = TrunkStore(tmp_path / "hub").publish(small_checkpoint(tmp_path / "ckpt", trunk_version=2))
    hub = ThreadHub(hub_config(tmp_path / "hub", heartbeat_ms=100))
    try:
        assert wait_until(lambda: hub.server.trunks.version == 2, 10)  # verified and served from now on
        with open(rec.path, "r+b") as f:  # the disk flips a byte after the hub checked the file
            f.seek(rec.size // 3)
            byte = f.read(1)
            f.seek(rec.size // 3)
            f.write(bytes([byte[0] ^ 0x01]))
        with caplog.at_level(logging.ERROR, logger="robot_agent.trunk_download"):
            up = _trunk_uplink(uplinks, hub.endpoint, spool, tmp_path / "trunks", trunk_piece_bytes=128 * 1024)
            assert wait_until(lambda: up.status()["trunk"]["given_up"] == [2], 60), up.status()
        s = up.status()["trunk"]
        assert s["failures"] == 3 and s["installed"] == 0 and "sha256" in s["last_error"]
        assert s["fetched_bytes"] == 3 * rec.size  # each try fetched it all: none kept a byte of a bad file
        assert sum("starting over" in r.getMessage() for r in caplog.records) == 2
        assert list((tmp_path / "trunks").iterdir()) == []  # no partial file, nothing for the watcher
        time.sleep(0.5)  # the hub repeats its notice: a given-up version is not fetched again
        assert up.status()["trunk"]["fetched_bytes"] == 3 * rec.size
    finally:
        hub.stop()


@pytest.mark.timeout(300)
def test_a_running_agent_fetches_a_published_trunk_swaps_to_it_and_its_experience_names_it(agent_cfg, tmp_path):
    keys = tmp_path / "keys"
    init_hub(keys)
    enrol(keys, "unit-0")
    policy, manifest = load_checkpoint(agent_cfg.checkpoint)
    newer = int(manifest["trunk_version"]) + 1
    hub = ThreadHub(hub_config(tmp_path / "hub", keys=keys))  # CURVE, as robots run
    try:
        agent_cfg.robot_id, agent_cfg.max_episodes, agent_cfg.trunk_dir = "unit-0", 0, str(tmp_path / "trunks")
        agent_cfg.uplink = uplink_cfg(hub.endpoint, keys / "robots" / "unit-0")
        agent = RobotAgent(agent_cfg, task_config("cartpole_swingup", {"episode_length_s": 1.0}))
        runner = threading.Thread(target=agent.run, daemon=True)
        runner.start()
        try:
            assert wait_until(lambda: agent.episodes >= 1, 60)
            TrunkStore(tmp_path / "hub").publish(save_checkpoint(tmp_path / "newer", policy, trunk_version=newer))
            assert wait_until(lambda: agent.trunk_swaps == 1, 60), agent.status()["uplink"]
            at_swap = agent.episodes
            assert wait_until(lambda: agent.episodes >= at_swap + 2, 60)
        finally:
            agent.request_stop()
            runner.join(60)
        assert not runner.is_alive()
        assert agent.status()["trunk_version"] == newer
        assert wait_until(lambda: newer in _stored_trunk_versions(tmp_path / "hub"), 30)  # the hub has its experience
    finally:
        hub.stop()


def _stored_trunk_versions(storage) -> set[int]:
    con = sqlite3.connect(f"file:{storage / 'experience.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return {r[0] for r in con.execute("SELECT DISTINCT trunk_version FROM chunks")}
    finally:
        con.close()


def _disk_full_on_first_unpack(monkeypatch, before_failing=lambda: None) -> list:
    """The robot's disk fills while the first unpack runs (``before_failing`` runs first), then space is freed;
    install retries come after 0.2 s. Returns the list of unpack calls."""
    import errno
    import tarfile

    from robot_agent import trunk_download

    real, calls = tarfile.TarFile.extractall, []

    def disk_full_once(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            before_failing()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extractall", disk_full_once)
    monkeypatch.setattr(trunk_download, "INSTALL_RETRY_S", 0.2)
    return calls


@pytest.mark.timeout(90)
def test_a_disk_error_while_installing_keeps_the_verified_file_and_retries_the_install(tmp_path, spool, uplinks,
                                                                                        monkeypatch):
    calls = _disk_full_on_first_unpack(monkeypatch)
    rec = TrunkStore(tmp_path / "hub").publish(small_checkpoint(tmp_path / "ckpt", trunk_version=2))
    hub = ThreadHub(hub_config(tmp_path / "hub", heartbeat_ms=100))
    try:
        up = _trunk_uplink(uplinks, hub.endpoint, spool, tmp_path / "trunks", trunk_piece_bytes=128 * 1024)
        assert wait_until(lambda: up.status()["trunk"]["installed"] == 2, 60), up.status()
        s = up.status()["trunk"]
        assert s["given_up"] == [] and s["install_errors"] == 1 and "No space left" in s["last_error"]
        assert s["fetched_bytes"] == rec.size and len(calls) == 2  # installed from the kept file, not fetched again
        assert read_manifest(tmp_path / "trunks" / installed_name(2))["trunk_version"] == 2
    finally:
        hub.stop()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("change", ["deleted", "damaged"])
def test_a_kept_trunk_file_deleted_or_damaged_before_the_install_retry_is_fetched_again_not_retried_forever(
        tmp_path, spool, uplinks, monkeypatch, change):
    trunks = tmp_path / "trunks"

    def operator_frees_space():  # deletes the hidden file, or the failing disk flips a byte of it
        for partial in trunks.glob(".trunk-v*.partial"):
            if change == "deleted":
                partial.unlink()
            else:
                data = bytearray(partial.read_bytes())
                data[len(data) // 2] ^= 0xFF
                partial.write_bytes(bytes(data))

    calls = _disk_full_on_first_unpack(monkeypatch, operator_frees_space)
    rec = TrunkStore(tmp_path / "hub").publish(small_checkpoint(tmp_path / "ckpt", trunk_version=2))
    hub = ThreadHub(hub_config(tmp_path / "hub", heartbeat_ms=100))
    try:
        up = _trunk_uplink(uplinks, hub.endpoint, spool, trunks, trunk_piece_bytes=128 * 1024)
        assert wait_until(lambda: up.status()["trunk"]["installed"] == 2, 60), up.status()
        s = up.status()["trunk"]
        assert s["given_up"] == [] and s["install_errors"] == 1 and s["failures"] == 0  # local, not the hub's file
        assert s["fetched_bytes"] == 2 * rec.size and len(calls) == 2  # fetched once more, then installed
        assert read_manifest(trunks / installed_name(2))["trunk_version"] == 2
        assert not list(trunks.glob(".trunk-v*.partial"))
    finally:
        hub.stop()


@pytest.mark.timeout(90)
def test_a_disk_that_damages_every_kept_trunk_file_gives_the_version_up_after_a_few_refetches(tmp_path, spool,
                                                                                              uplinks, monkeypatch):
    import errno
    import tarfile

    from robot_agent import trunk_download

    trunks, calls = tmp_path / "trunks", []

    def disk_full_and_damaging(self, *args, **kwargs):  # every unpack fails, and the kept file is damaged
        calls.append(args)
        for partial in trunks.glob(".trunk-v*.partial"):
            data = bytearray(partial.read_bytes())
            data[len(data) // 2] ^= 0xFF
            partial.write_bytes(bytes(data))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "extractall", disk_full_and_damaging)
    monkeypatch.setattr(trunk_download, "INSTALL_RETRY_S", 0.05)
    rec = TrunkStore(tmp_path / "hub").publish(small_checkpoint(tmp_path / "ckpt", trunk_version=2))
    hub = ThreadHub(hub_config(tmp_path / "hub", heartbeat_ms=100))
    try:
        up = _trunk_uplink(uplinks, hub.endpoint, spool, trunks, trunk_piece_bytes=128 * 1024)
        assert wait_until(lambda: up.status()["trunk"]["given_up"] == [2], 30), up.status()
        s = up.status()["trunk"]
        limit = trunk_download.MAX_KEPT_REFETCHES
        assert s["downloading"] is None and s["installed"] == 0 and s["failures"] == 0  # the hub's file was good
        assert s["kept_refetches"] == limit and "does not keep it" in s["last_error"]
        assert s["fetched_bytes"] == (1 + limit) * rec.size and len(calls) == 1 + limit
        assert not list(trunks.glob(".trunk-v*.partial"))
        time.sleep(0.5)  # many backoff cycles of 0.05 s: given up, it is neither fetched nor unpacked again
        assert up.status()["trunk"]["fetched_bytes"] == s["fetched_bytes"] and len(calls) == 1 + limit
    finally:
        hub.stop()
