"""The agent's uplink over real sockets: it drains a real spool to a real hub, acks in the spool only what the
hub acked, respects credit, resends, reconnects with backoff, survives a hub killed with SIGKILL, and a real
robot-agent process streams to a real fleet-hub process over CURVE until its spool is empty."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from fleet.config import HubConfig, SecurityConfig, SocketConfig
from fleet.keys import HubSecurity, enrol, init_hub
from fleet.protocol import UPLINK, Error, ErrorCode, Welcome, decode
from fleet.sockets import hub_socket, recv_frames, route_frames
from robot_agent.config import AgentUplinkConfig
from robot_agent.spool import Spool
from robot_agent.uplink import HubUplink, backoff_s
from tests.fleet.chunks import agent_arrays
from tests.fleet.hub_client import (
    BIN,
    ThreadHub,
    free_port,
    hub_config,
    kill_group,
    start_hub_process,
    stored_ids,
    wait_until,
)

HEADER = {"robot_id": "unit-0", "hardware": "cartpole", "task": "cartpole_swingup", "trunk_version": 0,
          "adapter_version": 0}


def fill(spool: Spool, n: int, steps: int = 20, seed: int = 0) -> list[str]:
    """Append ``n`` agent-shaped chunks; their ids."""
    rng = np.random.default_rng(seed)
    return [spool.append({**HEADER, "episode": i // 5, "steps": steps}, agent_arrays(rng, steps)) for i in range(n)]


def uplink_cfg(endpoint: str, keys_dir: Path | None = None, **kw) -> AgentUplinkConfig:
    security = SecurityConfig(keys_dir=str(keys_dir)) if keys_dir else SecurityConfig(mode="plaintext")
    kw = {"backoff_min_s": 0.05, "backoff_max_s": 0.5, "hello_timeout_s": 2.0, **kw}
    return AgentUplinkConfig(enabled=True, endpoint=endpoint, security=security, max_frame_bytes=1 << 20,
                             socket=SocketConfig(reconnect_ivl_ms=20, reconnect_ivl_max_ms=200), **kw)


@pytest.mark.timeout(60)
def test_a_chunk_over_the_hubs_frame_limit_is_kept_unsent_and_the_chunks_behind_it_still_flow(tmp_path, spool, uplinks):
    small = fill(spool, 2)
    (big,) = fill(spool, 1, steps=20_000, seed=1)  # a record over the hub's 1 MiB frames (hub_config)
    small += fill(spool, 3, seed=2)
    assert spool.pending()[2].size > 1 << 20
    hub = ThreadHub(hub_config(tmp_path / "hub", heartbeat_ms=50))
    try:
        up = uplinks(uplink_cfg(hub.endpoint), spool, "unit-0", "cartpole", "ab" * 8)
        # once the hub's socket cut the robot for it, and it led every reconnect: nothing behind it moved again
        assert wait_until(lambda: spool.depth == 1, 30), up.status()
        assert [r.chunk_id for r in spool.pending()] == [big]  # kept: the spool never loses a chunk
        assert sorted(stored_ids(tmp_path / "hub")) == sorted(small)
        assert up.status()["too_large"] == 1 and up.status()["refused_chunks"] == 1
    finally:
        hub.stop()


@pytest.mark.timeout(60)
def test_the_uplink_drains_the_spool_and_acks_there_exactly_what_the_hub_stored(tmp_path, spool, uplinks):
    ids = fill(spool, 60)
    hub = ThreadHub(hub_config(tmp_path / "hub", heartbeat_ms=50))
    try:
        up = uplinks(uplink_cfg(hub.endpoint), spool, "unit-0", "cartpole", "ab" * 8)
        assert wait_until(lambda: spool.depth == 0)
        assert sorted(stored_ids(tmp_path / "hub")) == sorted(ids)
        assert wait_until(lambda: up.status()["rtt_ms"] is not None)
        s = up.status()
        assert s["connected"] and s["acked"] == 60 and s["in_flight"] == 0 and s["nacked"] == 0
        more = fill(spool, 5, seed=1)  # what the spool writer adds later goes too
        assert wait_until(lambda: spool.depth == 0)
        assert set(more) <= set(stored_ids(tmp_path / "hub"))
        assert wait_until(lambda: hub.server.registry.record("unit-0").spool_depth == 0)  # its heartbeats say so
    finally:
        hub.stop()


@pytest.mark.timeout(90)
def test_the_uplink_keeps_within_the_hubs_credit(tmp_path, spool, uplinks):
    ids = fill(spool, 40)
    size = max(r.size for r in spool.pending())
    credit = 3 * size
    hub = ThreadHub(hub_config(tmp_path / "hub", credit_bytes=credit, store_group_chunks=1000,
                               store_group_wait_ms=50.0))
    try:
        up = uplinks(uplink_cfg(hub.endpoint), spool, "unit-0", "cartpole", "ab" * 8)
        peak = [0]
        done = threading.Event()

        def watch():
            while spool.depth and not done.is_set():
                peak[0] = max(peak[0], up.window.in_flight_bytes)
                time.sleep(0.001)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            assert wait_until(lambda: spool.depth == 0, 60)
        finally:
            done.set()  # a failed drain must not leave the watcher spinning
            watcher.join(5.0)
        assert sorted(stored_ids(tmp_path / "hub")) == sorted(ids)
        assert up.status()["nacked"] == 0  # it never sent beyond its credit, so the hub never refused one
        assert 0 < peak[0] <= credit
        assert hub.server.sessions["unit-0"].peak_in_flight_bytes <= credit
    finally:
        hub.stop()


@pytest.mark.timeout(60)
def test_a_chunk_the_hub_will_never_take_stays_in_the_spool_counted_and_is_not_resent(tmp_path, spool, uplinks):
    ids = fill(spool, 3)
    rng = np.random.default_rng(5)
    odd = spool.append({"robot_id": "unit-0", "steps": 4}, agent_arrays(rng, 4))  # no hardware / task: unstorable
    ids += fill(spool, 3, seed=2)
    hub = ThreadHub(hub_config(tmp_path / "hub"))
    try:
        up = uplinks(uplink_cfg(hub.endpoint, resend_s=0.2), spool, "unit-0", "cartpole", "ab" * 8)
        assert wait_until(lambda: up.status()["acked"] == 6)
        time.sleep(1.0)  # five resend intervals: a refused chunk must not come back
        assert [r.chunk_id for r in spool.pending()] == [odd]
        s = up.status()
        assert s["nacked"] == 1 and s["refused_chunks"] == 1 and s["in_flight"] == 0
        assert hub.server.registry.record("unit-0").nacks == 1
        assert sorted(stored_ids(tmp_path / "hub")) == sorted(ids)
    finally:
        hub.stop()


class SilentHub:
    """A ROUTER that welcomes every HELLO and then says nothing: no acks, no heartbeats (or, with
    ``cut_after_welcome``, an ERROR SHUTTING_DOWN right after the WELCOME)."""

    def __init__(self, cut_after_welcome: bool = False, heartbeat_ms: int = 100):
        self.ctx = zmq.Context()
        cfg = HubConfig(bind="tcp://127.0.0.1:*", security=SecurityConfig(mode="plaintext", keys_dir=""))
        self.security = HubSecurity(self.ctx, cfg.security)
        self.sock = hub_socket(self.ctx, cfg, self.security)
        self.endpoint = self.sock.last_endpoint.decode()
        self.cut_after_welcome, self.heartbeat_ms = cut_after_welcome, heartbeat_ms
        self.hellos: list[bytes] = []  # routing ids that said HELLO
        self.chunks: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            frames = recv_frames(self.sock, 50)
            if frames is None:
                continue
            msg = decode(frames[1:], accept=UPLINK)
            if msg.TYPE == "hello":
                self.hellos.append(frames[0].bytes)
                route_frames(self.sock, frames[0].bytes, Welcome(robot_id=msg.robot_id, seq=1, credit=1 << 20,
                                                                 trunk_version=0, heartbeat_ms=self.heartbeat_ms,
                                                                 max_message_bytes=1 << 20).encode())
                if self.cut_after_welcome:  # and at once tells it the hub is going away
                    route_frames(self.sock, frames[0].bytes, Error(robot_id=msg.robot_id, seq=2,
                                                                   code=ErrorCode.SHUTTING_DOWN, text="bye").encode())
            elif msg.TYPE == "chunk":
                self.chunks.append(msg.chunk_id)

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close(0)
        self.security.close()
        self.ctx.term()


@pytest.mark.timeout(60)
def test_a_hub_that_welcomes_and_cuts_at_once_gets_reconnects_at_a_growing_interval(spool, uplinks):
    hub = SilentHub(cut_after_welcome=True, heartbeat_ms=1000)
    try:
        up = uplinks(uplink_cfg(hub.endpoint, backoff_min_s=0.05, backoff_max_s=1.0), spool, "unit-0", "cartpole",
                     "ab" * 8)
        time.sleep(3.0)
        # cut well within its 1 s heartbeat interval, so no session resets the backoff: doubling from 50 ms
        # to 1 s, about 8 connections in 3 s (each wait at least half its ceiling, so at most 11); the backoff
        # starting over at every WELCOME made ~60
        assert 3 <= len(hub.hellos) <= 15, (len(hub.hellos), up.status())
        assert up.attempts >= 3
    finally:
        hub.close()


@pytest.mark.timeout(60)
def test_unanswered_chunks_are_resent_and_a_silent_hub_gets_a_new_connection_with_a_fresh_hello(spool, uplinks):
    ids = fill(spool, 2)
    hub = SilentHub()
    try:
        up = uplinks(uplink_cfg(hub.endpoint, resend_s=0.15, missed_heartbeats=10), spool, "unit-0", "cartpole",
                     "ab" * 8)
        # resent after the timeout within one connection (10 x 100 ms of silence before it gives up on the hub)
        assert wait_until(lambda: hub.chunks.count(ids[0]) >= 3, 20)
        assert len(set(hub.hellos)) >= 1
        # the hub never heartbeats: after 10 intervals a new DEALER (a new routing id) says HELLO again
        assert wait_until(lambda: len(set(hub.hellos)) >= 2, 20)
        assert spool.depth == 2  # nothing was acked, so nothing left the spool
        assert up.status()["resent"] >= 2 and "silent" in up.status()["last_error"]
    finally:
        hub.close()


@pytest.mark.timeout(90)
def test_with_no_hub_the_uplink_backs_off_and_drains_once_the_hub_comes_up(tmp_path, spool, uplinks):
    ids = fill(spool, 20)
    port = free_port()
    up = uplinks(uplink_cfg(f"tcp://127.0.0.1:{port}", hello_timeout_s=0.3), spool, "unit-0", "cartpole", "ab" * 8)
    assert wait_until(lambda: up.attempts >= 3, 30)
    s = up.status()
    assert not s["connected"] and "no connection" in s["last_error"] and spool.depth == 20
    hub = ThreadHub(hub_config(tmp_path / "hub", port=port))
    try:
        assert wait_until(lambda: spool.depth == 0, 30)
        assert sorted(stored_ids(tmp_path / "hub")) == sorted(ids)
    finally:
        hub.stop()


def test_backoff_doubles_up_to_its_ceiling_with_jitter():
    rng = random.Random(1)
    waits = [[backoff_s(a, 0.1, 2.0, rng) for _ in range(200)] for a in range(1, 8)]
    for a, w in enumerate(waits, start=1):
        ceiling = min(2.0, 0.1 * 2 ** (a - 1))
        assert all(ceiling / 2 <= x <= ceiling for x in w)
        assert max(w) - min(w) > ceiling / 4  # spread, so robots that lost the hub together come back apart


def test_wrong_uplink_values_are_refused_naming_their_key():
    for key, value in (("resend_s", 0), ("max_in_flight", 0), ("backoff_min_s", 60.0), ("endpoint", "localhost:1")):
        with pytest.raises(ValueError, match=f"^uplink.{key}"):
            AgentUplinkConfig(enabled=True, **{key: value}).validate()
    with pytest.raises(ValueError, match="uplink.security.mode"):
        AgentUplinkConfig(enabled=True, security=SecurityConfig(mode="none")).validate()


# --- real processes ---------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_a_hub_killed_with_sigkill_mid_stream_and_restarted_loses_no_acked_chunk_and_stores_none_twice(tmp_path):
    spool = Spool(tmp_path / "spool", fsync=False)
    ids = fill(spool, 1500, steps=100)
    port = free_port()
    hub = start_hub_process(tmp_path, port, "heartbeat_ms=100", "store_group_chunks=4")
    up = HubUplink(uplink_cfg(f"tcp://127.0.0.1:{port}", hello_timeout_s=0.5, missed_heartbeats=5), spool, "unit-0",
                   "cartpole", "ab" * 8)
    up.start()
    try:
        assert wait_until(lambda: len(ids) - spool.depth >= 150, 60), "the stream did not start"
        os.killpg(hub.pid, signal.SIGKILL)  # mid-stream: chunks in flight, groups committing
        hub.wait(10)
        time.sleep(0.3)  # acks that left the hub before it died are taken
        acked_before = set(ids) - {r.chunk_id for r in spool.pending()}
        assert 150 <= len(acked_before) < len(ids)
        hub = start_hub_process(tmp_path, port, "heartbeat_ms=100", "store_group_chunks=4")
        assert acked_before <= set(stored_ids(tmp_path / "hub"))  # acked => durable, across kill -9
        assert wait_until(lambda: spool.depth == 0, 120), up.status()
        stored = stored_ids(tmp_path / "hub")
        assert len(stored) == len(set(stored)) == len(ids) and set(stored) == set(ids)
        assert up.status()["connects"] >= 2
    finally:
        up.stop(time.monotonic() + 5)
        spool.close()
        kill_group(hub)


def _agent(tmp_path: Path, checkpoint: Path, *overrides: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY")}
    env["WANDB_MODE"] = "disabled"
    args = [str(BIN / "robot-agent"), f"checkpoint={checkpoint}", f"state_dir={tmp_path / 'state'}",
            "logger.backend=none", "status_every_s=0.2", "task.episode_length_s=1.0", "spool.chunk_steps=20",
            "driver.options.realtime=false", "adapter.enabled=false", f"hydra.run.dir={tmp_path / 'hydra-agent'}",
            *overrides]
    return subprocess.Popen(args, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.timeout(300)
def test_a_robot_agent_process_streams_to_a_fleet_hub_process_over_curve_until_its_spool_is_empty(
        tmp_path, cartpole_checkpoint):
    keys = tmp_path / "keys"
    init_hub(keys)
    robot_keys = enrol(keys, "unit-0", out=tmp_path / "robot_keys")
    port = free_port()
    hub = start_hub_process(tmp_path, port, "heartbeat_ms=200", keys=keys)
    agent = None
    try:
        agent = _agent(tmp_path, cartpole_checkpoint, "max_episodes=8", "uplink.enabled=true",
                       f"uplink.endpoint=tcp://127.0.0.1:{port}", f"uplink.security.keys_dir={robot_keys}",
                       "uplink.drain_on_stop_s=5")
        out, _ = agent.communicate(timeout=240)
        assert agent.returncode == 0, out[-4000:]
        final = json.loads((tmp_path / "state" / "status.json").read_text())
        assert final["final"] and final["episodes"] == 8
        with Spool(tmp_path / "state" / "spool") as spool:
            assert spool.pending() == []  # every chunk the agent spooled was acked by the hub
        rows = _stored_rows(tmp_path / "hub")
        seqs = sorted(seq for _, seq, _ in rows)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap: nothing the agent spooled is missing
        assert sum(steps for _, _, steps in rows) == final["steps"]
        assert len({c for c, _, _ in rows}) == len(rows) == final["uplink"]["acked"]
        assert final["uplink"]["nacked"] == 0 and final["uplink"]["connects"] >= 1
        # the status line shows the uplink; whether it reads up or DOWN at a given print depends on when the
        # CURVE handshake lands against this short run (test_status pins both renderings)
        assert re.search(r"\| hub (up|DOWN) \(\d+ in flight, \d+ acked\)", out), out[-4000:]
        def status() -> subprocess.CompletedProcess:
            return subprocess.run([str(BIN / "fleet-hub"), "status", str(tmp_path / "hub")], capture_output=True,
                                  text=True, timeout=60)

        # the hub writes its registry file every registry_every_s: the robot is in it by the next write
        assert wait_until(lambda: "unit-0" in status().stdout, 15), status().stdout
        res = status()
        assert res.returncode == 0 and "unit-0" in res.stdout and "cartpole" in res.stdout
    finally:
        if agent is not None:
            kill_group(agent)
        kill_group(hub)


def _stored_rows(storage: Path) -> list[tuple[str, int, int]]:
    import sqlite3

    con = sqlite3.connect(f"file:{storage / 'experience.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return list(con.execute("SELECT chunk_id, seq, steps FROM chunks"))
    finally:
        con.close()


# --- inside the agent -------------------------------------------------------------------------------------


def _robot_agent(cfg):
    from hardware.tasks.config import task_config
    from robot_agent.agent import RobotAgent

    return RobotAgent(cfg, task_config("cartpole_swingup", {"episode_length_s": 1.0}))


@pytest.mark.timeout(180)
def test_with_the_hub_down_the_agent_keeps_controlling_and_spooling(agent_cfg):
    agent_cfg.spool.chunk_steps = 20
    agent_cfg.max_episodes = 4
    agent_cfg.uplink = uplink_cfg(f"tcp://127.0.0.1:{free_port()}", hello_timeout_s=0.2)
    agent = _robot_agent(agent_cfg)
    status = agent.run()
    assert status["episodes"] == 4 and not status["fault"]
    up = status["uplink"]
    assert up["enabled"] and not up["connected"] and up["connects"] == 0 and up["acked"] == 0
    assert status["services"]["uplink"] in ("running", "stopped")
    with Spool(agent_cfg.state_dir + "/spool") as spool:
        assert sum(spool.read(r).header["steps"] for r in spool.pending()) == status["steps"]


def test_an_uplink_without_its_key_files_refuses_the_agents_start_naming_the_key(agent_cfg, tmp_path):
    from robot_agent.agent import AgentStartupError

    agent_cfg.uplink = uplink_cfg("tcp://127.0.0.1:5555", keys_dir=tmp_path / "no_keys")
    with pytest.raises(AgentStartupError, match="uplink.security.keys_dir"):
        _robot_agent(agent_cfg)
    with Spool(agent_cfg.state_dir + "/spool"):  # the refused start left the spool unlocked
        pass


def test_the_window_is_not_empty_while_the_spool_holds_a_chunk_it_has_not_listed_yet(spool):
    from robot_agent.uplink_window import SendWindow

    window = SendWindow(spool, max_in_flight=8, resend_s=10.0, retry_s=0.5)
    window.credit = 1 << 20
    assert window.next_chunk(100.0) is None and window.empty(100.0)  # it just asked the spool: nothing
    fill(spool, 1)  # the spool writer's last chunk, flushed at shutdown right after that
    assert not window.empty(100.0)  # so the drain at stop does not end before it is sent
    out = window.next_chunk(100.0)
    assert out is not None and window.in_flight_bytes == out.ref.size
    spool.ack(window.acked([out.ref.chunk_id]))
    assert window.empty(100.0) and spool.depth == 0


def test_a_chunk_a_hub_older_than_its_record_format_refuses_is_sent_again_later_not_given_up(spool):
    from fleet.protocol import ErrorCode
    from robot_agent.uplink_window import SendWindow

    window = SendWindow(spool, max_in_flight=8, resend_s=10.0, retry_s=0.5)
    window.credit = 1 << 20
    fill(spool, 1)
    out = window.next_chunk(100.0)
    assert window.nacked(out.ref.chunk_id, ErrorCode.SCHEMA_UNSUPPORTED, 100.0)  # to be sent again
    assert window.refused == {} and window.next_chunk(100.1) is None  # after retry_s, not at once
    again = window.next_chunk(100.6)
    assert again is not None and again.ref.chunk_id == out.ref.chunk_id and spool.depth == 1


def test_a_refused_chunk_the_spool_later_drops_is_forgotten_by_the_window(tmp_path):
    from robot_agent.spool import DROP_OLDEST
    from robot_agent.uplink_window import SendWindow

    probe = Spool(tmp_path / "probe", fsync=False)
    fill(probe, 1)
    size = probe.bytes
    probe.close()
    with Spool(tmp_path / "spool", fsync=False, quota_bytes=4 * size, when_full=DROP_OLDEST,
               segment_bytes=2 * size) as spool:
        window = SendWindow(spool, max_in_flight=8, resend_s=10.0, retry_s=1.0)
        window.credit = 1 << 20
        first = fill(spool, 2)
        out = window.next_chunk(0.0)
        assert out.ref.chunk_id == first[0] and not window.nacked(first[0], ErrorCode.BAD_RECORD, 0.0)
        assert first[0] in window.refused
        fill(spool, 4, seed=1)  # its segment is dropped to make room
        assert first[0] not in {r.chunk_id for r in spool.pending()}
        assert window.next_chunk(1.0) is None  # the queued first[1] was dropped too: gone
        window.empty(1.0)  # reads the spool again
        assert window.refused == {}  # once kept forever: a slow leak under drop_oldest


def test_a_chunk_refused_as_too_large_is_sent_once_a_hub_with_larger_frames_welcomes_the_robot(tmp_path):
    from robot_agent.uplink_window import SendWindow

    with Spool(tmp_path / "spool", fsync=False) as spool:
        (big,) = fill(spool, 1, steps=20_000)
        size = spool.pending()[0].size
        window = SendWindow(spool, max_in_flight=8, resend_s=10.0, retry_s=1.0)
        window.credit = 64 << 20
        window.hub_limit(size - 1)  # a hub whose frames are too small for it
        assert window.next_chunk(0.0) is None and big in window.refused and window.counts.too_large == 1
        window.hub_limit(size)  # the next hub takes it
        out = window.next_chunk(1.0)
        assert out is not None and out.ref.chunk_id == big and window.refused == {}


def _agent_of_long_episodes(cfg):
    from hardware.tasks.config import task_config
    from robot_agent.agent import RobotAgent

    return RobotAgent(cfg, task_config("cartpole_swingup", {"episode_length_s": 10.0}))


def test_chunks_larger_than_the_uplinks_frames_refuse_the_agents_start_naming_both_keys_and_a_fitting_size(
        agent_cfg, monkeypatch):
    import robot_agent.parts
    from robot_agent.agent import AgentStartupError
    from robot_agent.recorder import chunk_record_bytes

    agent_cfg.spool.chunk_steps = 250
    agent_cfg.uplink = uplink_cfg("tcp://127.0.0.1:5555", trunk_piece_bytes=4096)
    agent_cfg.uplink.max_frame_bytes = 8192  # a cartpole chunk of 250 transitions is larger
    with monkeypatch.context() as no_driver:  # refused before the robot is touched
        no_driver.setattr(robot_agent.parts, "make_driver", lambda *a, **kw: pytest.fail("the driver was made"))
        with pytest.raises(AgentStartupError, match=r"spool.chunk_steps: chunks of 250 .* over "
                           r"uplink.max_frame_bytes \(8192\)") as refused:
            _agent_of_long_episodes(agent_cfg)
    fitting = int(refused.value.args[0].split("at most ")[1].split(",")[0])
    assert 0 < fitting < 250
    agent_cfg.spool.chunk_steps = fitting  # the size it names fits, and the refused start left the state dir free
    agent = _agent_of_long_episodes(agent_cfg)
    try:
        p = agent.parts
        assert chunk_record_bytes(p.obs_layout, p.priv_layout, p.record_header, fitting + 1,
                                  agent_cfg.spool.priorities) > 8192  # the largest that fits
    finally:
        agent.spool.close()
        agent.parts.state_lock.close()


def test_the_frame_check_counts_a_chunk_as_at_most_one_episode_and_skips_an_agent_without_uplink(agent_cfg):
    from robot_agent.agent import AgentStartupError

    agent_cfg.spool.chunk_steps = 250
    agent_cfg.uplink = uplink_cfg("tcp://127.0.0.1:5555", trunk_piece_bytes=4096)
    agent_cfg.uplink.max_frame_bytes = 16384  # 50 cartpole transitions (~10 KB) fit, 250 (~45 KB) do not
    with pytest.raises(AgentStartupError, match="chunks of 250 "):
        _agent_of_long_episodes(agent_cfg)  # 10 s episodes: full chunks of 250
    for enabled in (True, False):  # 1 s episodes: no chunk holds more than 50; and with the uplink off, no check
        agent_cfg.uplink.enabled = enabled
        agent_cfg.uplink.max_frame_bytes = 16384 if enabled else 1024
        agent = _robot_agent(agent_cfg)
        agent.spool.close()
        agent.parts.state_lock.close()


@pytest.mark.timeout(120)
def test_two_robots_sharing_a_configs_seed_get_their_own_learner_seed_and_reconnect_jitter(agent_cfg, tmp_path):
    agent_cfg.uplink = uplink_cfg("tcp://127.0.0.1:5555")  # never started: only the jitter's stream is read
    agent_cfg.adapter.enabled = agent_cfg.adapter.learn = agent_cfg.adapter.explore = True
    draws = {}
    for robot in ("unit-0", "unit-1"):
        agent_cfg.robot_id, agent_cfg.state_dir = robot, str(tmp_path / robot)
        agent = _robot_agent(agent_cfg)
        draws[robot] = (agent.trainer.seed, [agent.uplink.rng.random() for _ in range(4)])
        agent.spool.close()
        agent.parts.state_lock.close()
    assert draws["unit-0"][0] != draws["unit-1"][0]  # the learner's minibatch draws
    assert draws["unit-0"][1] != draws["unit-1"][1]  # after a hub restart the two do not come back in lockstep
