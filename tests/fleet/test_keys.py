"""Robot identity: fleet-keys files, the allow-list that follows its file, and CURVE over real sockets on
127.0.0.1: an enrolled key gets through and is known by its User-Id, an unknown or revoked key gets nothing, and a
robot that names another robot is refused."""

import json
import logging
import os
import random
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
import zmq.auth

import fleet.keys
from fleet.config import HubConfig, SecurityConfig, SocketConfig, UplinkConfig
from fleet.keys import (
    ALLOWLIST,
    HUB_PUBLIC,
    HUB_SECRET,
    ROBOT_PUBLIC,
    ROBOT_SECRET,
    HubSecurity,
    KeyFileError,
    RobotAllowList,
    enrol,
    init_hub,
    load_public,
    load_secret,
    revoke,
    write_key_pair,
)
from fleet.protocol import Chunk, ErrorCode, Hello, ProtocolError, Welcome, decode
from fleet.sockets import Delivery, hub_socket, recv_frames, robot_socket, route_frames, send_frames
from tests.fleet.chunks import agent_record
from tests.fleet.test_protocol import _mutant

ROOT = Path(__file__).resolve().parents[2]
WAIT_MS = 5000  # generous deadlines: a loaded machine must not turn a pass into a failure


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def hello(robot_id, seq=0):
    return Hello(robot_id=robot_id, seq=seq, hardware="cartpole", profile_hash="ab" * 8, agent_version="0.1.0",
                 spool_depth=0, spool_bytes=0, trunk_version=0, adapter_version=0)


def wait_until(cond, seconds=20.0):
    """Poll ``cond`` in a bounded loop; the result, whatever it is, at the end."""
    end = time.monotonic() + seconds
    while not cond() and time.monotonic() < end:
        time.sleep(0.02)
    return cond()


# --- key files and the allow-list ---------------------------------------------------------------------------


def test_init_writes_a_hub_key_pair_with_a_private_secret_and_refuses_to_replace_it(tmp_path):
    keys = tmp_path / "keys"
    init_hub(keys)
    public, secret = zmq.auth.load_certificate(keys / HUB_SECRET)
    assert len(public) == 40 and len(secret) == 40
    assert zmq.auth.load_certificate(keys / HUB_PUBLIC) == (public, None)
    assert mode(keys / HUB_SECRET) == 0o600
    assert json.loads((keys / ALLOWLIST).read_text())["robots"] == {}
    with pytest.raises(KeyFileError, match="cut off every enrolled robot"):
        init_hub(keys)
    assert zmq.auth.load_certificate(keys / HUB_SECRET) == (public, secret)


def test_enrol_writes_the_robots_files_and_allows_exactly_its_key(tmp_path):
    keys = tmp_path / "keys"
    init_hub(keys)
    out = enrol(keys, "unit-0")
    assert out == keys / "robots" / "unit-0"
    assert mode(out / ROBOT_SECRET) == 0o600
    robot_public, _ = load_secret(out / ROBOT_SECRET)
    assert load_public(out / ROBOT_PUBLIC) == robot_public
    assert load_public(out / HUB_PUBLIC) == load_public(keys / HUB_PUBLIC)
    allow = RobotAllowList(keys / ALLOWLIST)
    assert allow.robot_for_key(robot_public) == "unit-0"
    assert allow.robot_for_key(load_public(keys / HUB_PUBLIC)) is None
    with pytest.raises(KeyFileError, match="already enrolled"):
        enrol(keys, "unit-0")
    for bad in ("../escape", "unit 0", "", "a/b"):
        with pytest.raises(ValueError, match="robot id"):
            enrol(keys, bad)


def test_rekey_replaces_the_key_and_cuts_the_old_one(tmp_path):
    keys = tmp_path / "keys"
    init_hub(keys)
    old, _ = load_secret(enrol(keys, "unit-0") / ROBOT_SECRET)
    new, _ = load_secret(enrol(keys, "unit-0", rekey=True) / ROBOT_SECRET)
    allow = RobotAllowList(keys / ALLOWLIST)
    assert new != old and allow.robot_for_key(new) == "unit-0" and allow.robot_for_key(old) is None


def test_a_secret_key_readable_by_others_is_refused(tmp_path):
    keys = tmp_path / "keys"
    init_hub(keys)
    os.chmod(keys / HUB_SECRET, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_secret(keys / HUB_SECRET)


def test_the_allow_list_follows_its_file_within_its_reload_interval(tmp_path):
    keys = tmp_path / "keys"
    init_hub(keys)
    key0, _ = load_secret(enrol(keys, "unit-0") / ROBOT_SECRET)
    live, cached = RobotAllowList(keys / ALLOWLIST, reload_ms=0), RobotAllowList(keys / ALLOWLIST, 3_600_000)
    key1, _ = load_secret(enrol(keys, "unit-1") / ROBOT_SECRET)
    assert live.robot_for_key(key1) == "unit-1"
    assert cached.robot_for_key(key1) is None  # at most one look at the file per interval
    assert revoke(keys, "unit-0") and not revoke(keys, "unit-0")
    assert live.robot_for_key(key0) is None and live.robot_for_key(key1) == "unit-1"
    assert json.loads((keys / ALLOWLIST).read_text())["revoked"]["unit-0"]["public_key"] == key0.decode()


def test_a_lookup_during_a_reload_waits_for_the_new_list_and_never_admits_a_revoked_key(tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    init_hub(keys)
    key0, _ = load_secret(enrol(keys, "unit-0") / ROBOT_SECRET)
    allow = RobotAllowList(keys / ALLOWLIST, reload_ms=50)
    assert allow.robot_for_key(key0) == "unit-0"
    assert revoke(keys, "unit-0")
    time.sleep(0.1)  # the next lookup is due to look at the file
    reading, go_on = threading.Event(), threading.Event()
    real_read = fleet.keys.read_allowlist

    def slow_read(path):  # a slow disk: the reloading thread sits in the read
        reading.set()
        assert go_on.wait(10)
        return real_read(path)

    monkeypatch.setattr(fleet.keys, "read_allowlist", slow_read)
    answers: dict[str, str | None] = {}
    reloader = threading.Thread(target=lambda: answers.update(first=allow.robot_for_key(key0)))
    reloader.start()
    assert reading.wait(10)
    other = threading.Thread(target=lambda: answers.update(second=allow.robot_for_key(key0)))
    other.start()
    other.join(0.3)  # the lookup that came during the read must not answer from the old list
    go_on.set()
    reloader.join(10)
    other.join(10)
    assert answers == {"first": None, "second": None}


def test_a_broken_allow_list_admits_nobody_until_fixed(tmp_path):
    keys = tmp_path / "keys"
    init_hub(keys)
    key0, _ = load_secret(enrol(keys, "unit-0") / ROBOT_SECRET)
    allow = RobotAllowList(keys / ALLOWLIST, reload_ms=0)
    good = (keys / ALLOWLIST).read_bytes()
    (keys / ALLOWLIST).write_bytes(good[:-20])
    assert allow.robot_for_key(key0) is None
    (keys / ALLOWLIST).unlink()
    assert allow.robot_for_key(key0) is None
    (keys / ALLOWLIST).write_bytes(good)
    assert allow.robot_for_key(key0) == "unit-0"
    # nesting too deep for the parser (RecursionError, neither OSError nor ValueError): closed too, not the old list
    (keys / ALLOWLIST).write_bytes(b"[" * 100_000 + b"]" * 100_000)
    assert allow.robot_for_key(key0) is None
    assert allow.robot_for_key(key0) is None  # and still closed at the next look (the file did not change)
    (keys / ALLOWLIST).write_bytes(good)
    assert allow.robot_for_key(key0) == "unit-0"


@pytest.mark.timeout(120)
def test_fleet_keys_cli_enrols_lists_and_revokes_and_concurrent_enrolments_all_land(tmp_path):
    keys = tmp_path / "keys"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "fleet.keys_cli", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert cli("init", str(keys)).returncode == 0
    code = ("import sys; from pathlib import Path; from fleet.keys import enrol\n"
            "for i in range(4): enrol(Path(sys.argv[1]), f'unit-{sys.argv[2]}-{i}')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(keys), str(w)],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for w in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    res = cli("enrol", str(keys), "arm-7", "--out", str(tmp_path / "arm7"))
    assert res.returncode == 0 and str(tmp_path / "arm7") in res.stdout
    assert (tmp_path / "arm7" / ROBOT_SECRET).exists()
    assert cli("revoke", str(keys), "unit-0-0").returncode == 0
    missing = cli("revoke", str(keys), "nobody")
    assert missing.returncode == 1 and "not enrolled" in missing.stderr
    lines = cli("list", str(keys)).stdout.splitlines()
    enrolled = {ln.split("\t")[0] for ln in lines if "\tenrolled\t" in ln}
    assert enrolled == {f"unit-{w}-{i}" for w in range(3) for i in range(4)} - {"unit-0-0"} | {"arm-7"}
    assert any(ln.startswith("unit-0-0\trevoked") for ln in lines)
    bad = cli("init", str(keys))
    assert bad.returncode == 1 and "exists" in bad.stderr


def test_user_id_is_absent_on_copied_frames(tmp_path):
    keys = tmp_path / "keys"
    init_hub(keys)
    with pytest.raises(ProtocolError) as info:
        RobotAllowList(keys / ALLOWLIST).check_sender("unit-0", b"bytes carry no User-Id")
    assert info.value.code == ErrorCode.UNKNOWN_KEY


@pytest.mark.timeout(60)
def test_wrong_security_config_values_name_their_key_and_start_nothing(tmp_path):
    ctx = zmq.Context()
    try:
        with pytest.raises(ValueError, match="security.mode"):
            HubSecurity(ctx, SecurityConfig(mode="tls"))
        with pytest.raises(ValueError, match="socket.io_timeout_ms"):
            SocketConfig(io_timeout_ms=0).validate()
        with pytest.raises(KeyFileError, match="hub.key_secret"):
            HubSecurity(ctx, SecurityConfig(keys_dir=str(tmp_path / "never-initialised")))
        init_hub(tmp_path / "k")
        (tmp_path / "k" / ALLOWLIST).unlink()
        with pytest.raises(KeyFileError, match="fleet-keys init"):
            HubSecurity(ctx, SecurityConfig(keys_dir=str(tmp_path / "k")))
    finally:
        ctx.term()  # returns: no authenticator was left running


# --- CURVE over real sockets --------------------------------------------------------------------------------


class Hub:
    """A CURVE hub socket on 127.0.0.1 with its ZAP handler, and robots connecting to it; closes everything."""

    def __init__(self, keys: Path, max_frame_bytes: int = 1 << 20):
        self.keys, self.ctx = keys, zmq.Context()
        cfg = HubConfig(bind="tcp://127.0.0.1:*", max_frame_bytes=max_frame_bytes,
                        security=SecurityConfig(keys_dir=str(keys), allowlist_reload_ms=0))
        self.security = HubSecurity(self.ctx, cfg.security)
        self.sock = hub_socket(self.ctx, cfg, self.security)
        self.endpoint = self.sock.last_endpoint.decode()
        self.robots = []

    def robot(self, keys_dir: Path, mode="curve"):
        sock = robot_socket(self.ctx, UplinkConfig(endpoint=self.endpoint, security=SecurityConfig(
            mode=mode, keys_dir=str(keys_dir)), socket=SocketConfig(reconnect_ivl_ms=20, reconnect_ivl_max_ms=200)))
        self.robots.append(sock)
        return sock

    def recv(self, timeout_ms=WAIT_MS):
        return recv_frames(self.sock, timeout_ms)

    def close(self):
        for s in [*self.robots, self.sock]:
            s.close(0)
        self.security.close()
        self.ctx.term()


@pytest.fixture
def hub(tmp_path):
    keys = tmp_path / "keys"
    init_hub(keys)
    enrol(keys, "unit-0")
    enrol(keys, "unit-1")
    h = Hub(keys)
    yield h
    h.close()


@pytest.mark.timeout(60)
def test_an_enrolled_robot_gets_through_and_is_known_by_its_key(hub):
    robot = hub.robot(hub.keys / "robots" / "unit-0")
    assert send_frames(robot, hello("unit-0").encode(), WAIT_MS)
    frames = hub.recv()
    assert frames is not None
    robot_key, _ = load_secret(hub.keys / "robots" / "unit-0" / ROBOT_SECRET)
    assert frames[1].get("User-Id") == robot_key.decode()
    msg = decode(frames[1:])
    assert hub.security.check_sender(msg.robot_id, frames[1]) == "unit-0"
    welcome = Welcome(robot_id="unit-0", seq=0, credit=1 << 20, trunk_version=0, heartbeat_ms=1000,
                      max_message_bytes=1 << 20)
    assert route_frames(hub.sock, frames[0].bytes, welcome.encode()) == Delivery.SENT
    assert decode(recv_frames(robot, WAIT_MS)) == welcome
    assert route_frames(hub.sock, b"no-such-peer", welcome.encode()) == Delivery.GONE


def refusals(caplog):
    return [r for r in caplog.records if "refused a CURVE handshake" in r.getMessage()]


@pytest.mark.timeout(60)
def test_an_unknown_key_gets_nothing(hub, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="fleet.keys")
    stranger = tmp_path / "stranger"
    write_key_pair(stranger, ROBOT_PUBLIC, ROBOT_SECRET)
    (stranger / HUB_PUBLIC).write_bytes((hub.keys / HUB_PUBLIC).read_bytes())  # it even knows the hub's key
    intruder = hub.robot(stranger)
    send_frames(intruder, hello("unit-0").encode(), 500)  # queued at most: no handshake ever completes
    assert wait_until(lambda: refusals(caplog))  # ZAP was asked, and said no
    assert recv_frames(intruder, 500) is None
    honest = hub.robot(hub.keys / "robots" / "unit-1")
    assert send_frames(honest, hello("unit-1").encode(), WAIT_MS)
    frames = hub.recv()
    assert hub.security.check_sender(decode(frames[1:]).robot_id, frames[1]) == "unit-1"
    assert hub.recv(500) is None  # the intruder's hello never arrives


@pytest.mark.timeout(60)
def test_a_key_revoked_while_the_hub_runs_is_refused_on_its_open_connection_and_at_reconnect(hub, caplog):
    caplog.set_level(logging.WARNING, logger="fleet.keys")
    robot = hub.robot(hub.keys / "robots" / "unit-0")
    assert send_frames(robot, hello("unit-0").encode(), WAIT_MS)
    frames = hub.recv()
    assert hub.security.check_sender("unit-0", frames[1]) == "unit-0"
    assert revoke(hub.keys, "unit-0")
    # its connection stays up (ZAP ran at the handshake), but each message is checked against the allow-list
    assert send_frames(robot, hello("unit-0", seq=1).encode(), WAIT_MS)
    frames = hub.recv()
    with pytest.raises(ProtocolError) as info:
        hub.security.check_sender(decode(frames[1:]).robot_id, frames[1])
    assert info.value.code == ErrorCode.UNKNOWN_KEY
    # a new connection with the revoked key is refused at the handshake
    again = hub.robot(hub.keys / "robots" / "unit-0")
    send_frames(again, hello("unit-0", seq=2).encode(), 500)
    assert wait_until(lambda: refusals(caplog))
    other = hub.robot(hub.keys / "robots" / "unit-1")
    assert send_frames(other, hello("unit-1").encode(), WAIT_MS)
    frames = hub.recv()
    assert hub.security.check_sender(decode(frames[1:]).robot_id, frames[1]) == "unit-1"
    assert hub.recv(500) is None


@pytest.mark.timeout(60)
def test_a_robot_naming_another_robot_is_refused(hub):
    robot = hub.robot(hub.keys / "robots" / "unit-1")
    record = agent_record(np.random.default_rng(1), "unit-0", 1, "3f9c2a7d1b0e4c55")
    as_other = Chunk.of("unit-0", 1, "unit-0-3f9c2a7d1b0e4c55-0000000001", record)
    assert send_frames(robot, hello("unit-0").encode(), WAIT_MS)
    assert send_frames(robot, as_other.encode(), WAIT_MS)
    for _ in range(2):
        frames = hub.recv()
        with pytest.raises(ProtocolError) as info:
            hub.security.check_sender(decode(frames[1:]).robot_id, frames[1])
        assert info.value.code == ErrorCode.IDENTITY_MISMATCH and "unit-1" in info.value.text
    # the same chunk under its own robot id is not its chunk either
    replay = Chunk.of("unit-1", 2, as_other.chunk_id, as_other.payload)
    assert send_frames(robot, replay.encode(), WAIT_MS)
    with pytest.raises(ProtocolError) as info:
        decode(hub.recv()[1:])
    assert info.value.code == ErrorCode.IDENTITY_MISMATCH


@pytest.mark.timeout(120)
def test_malformed_messages_over_curve_only_raise_protocol_error_and_a_good_robot_still_gets_through(hub):
    rng = random.Random(7)
    robot = hub.robot(hub.keys / "robots" / "unit-0")
    refused = 0
    for _ in range(2000):
        frames = _mutant(rng)
        if not frames:
            continue
        assert send_frames(robot, frames, WAIT_MS)
        got = hub.recv()
        try:
            msg = decode(got[1:])
            hub.security.check_sender(msg.robot_id, got[1])
        except ProtocolError:
            refused += 1
    assert refused > 1500
    good = hub.robot(hub.keys / "robots" / "unit-1")
    assert send_frames(good, hello("unit-1").encode(), WAIT_MS)
    got = hub.recv()
    assert hub.security.check_sender(decode(got[1:]).robot_id, got[1]) == "unit-1"


@pytest.mark.timeout(60)
def test_a_frame_over_the_size_limit_is_dropped_by_the_socket_and_the_robot_reconnects(tmp_path):
    keys = tmp_path / "keys"
    init_hub(keys)
    enrol(keys, "unit-0")
    hub = Hub(keys, max_frame_bytes=4096)
    try:
        robot = hub.robot(keys / "robots" / "unit-0")
        assert send_frames(robot, Chunk.of("unit-0", 1, "unit-0-e-1", b"x" * 8192).encode(), WAIT_MS)
        got = None
        for seq in range(2, 200):  # bounded: resend a small message until the reconnected link carries it
            if send_frames(robot, hello("unit-0", seq).encode(), 100):
                got = hub.recv(100)
                if got is not None:
                    break
        assert got is not None and decode(got[1:]).TYPE == "hello"  # the oversize chunk never arrived
    finally:
        hub.close()


@pytest.mark.timeout(60)
def test_plaintext_mode_warns_loudly_and_takes_identity_from_the_header(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="fleet.keys")
    ctx = zmq.Context()
    cfg = HubConfig(bind="tcp://127.0.0.1:*", security=SecurityConfig(mode="plaintext", keys_dir=""))
    security = HubSecurity(ctx, cfg.security)
    sock = hub_socket(ctx, cfg, security)
    robot = robot_socket(ctx, UplinkConfig(endpoint=sock.last_endpoint.decode(),
                                           security=SecurityConfig(mode="plaintext")))
    try:
        assert sum("PLAIN-TEXT" in r.getMessage() for r in caplog.records) == 2  # hub and robot both say so
        assert send_frames(robot, hello("unit-9").encode(), WAIT_MS)
        frames = recv_frames(sock, WAIT_MS)
        assert security.check_sender(decode(frames[1:]).robot_id, frames[1]) == "unit-9"
    finally:
        robot.close(0)
        sock.close(0)
        security.close()
        ctx.term()


@pytest.mark.timeout(60)
def test_a_curve_socket_outside_the_zap_handlers_context_is_refused(hub):
    other = zmq.Context()
    try:
        with pytest.raises(ValueError, match="admit any key"):
            hub_socket(other, HubConfig(bind="tcp://127.0.0.1:*",
                                        security=SecurityConfig(keys_dir=str(hub.keys))), hub.security)
    finally:
        other.term()
