"""The hub over real sockets on 127.0.0.1: the protocol round trip, acks only after the commit, dedupe, credit,
heartbeats and dead robots, refusals, CURVE identity end to end, and a fuzz run against a real fleet-hub process."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading

import msgpack
import numpy as np
import pytest

import fleet.hub
import fleet.keys
from fleet.heap import GC_THRESHOLDS
from fleet.hub import HubServer
from fleet.keys import enrol, init_hub, revoke
from fleet.protocol import Chunk, ErrorCode, Heartbeat, Welcome
from fleet.registry import format_table, load_registry
from tests.fleet.chunks import agent_record, as_schema_1
from tests.fleet.hub_client import (
    BIN,
    ThreadHub,
    free_port,
    hub_config,
    kill_group,
    rss_kb,
    start_hub_process,
    stored_ids,
    wait_until,
)
from tests.fleet.test_protocol import _mutant

EPOCH = "0123456789abcdef"


def cid(robot: str, seq: int) -> str:
    return f"{robot}-{EPOCH}-{seq:010d}"


def record(robot: str, seq: int, steps: int = 20) -> bytes:
    return agent_record(np.random.default_rng(seq), robot, seq, EPOCH, episode=seq // 10, steps=steps)


@pytest.fixture
def plain_hub(tmp_path):
    hubs = []

    def make(**kw):
        hubs.append(ThreadHub(hub_config(tmp_path / "hub", **kw)))
        return hubs[-1]

    yield make
    for h in hubs:
        h.stop()


@pytest.fixture
def keys(tmp_path):
    keys = tmp_path / "keys"
    init_hub(keys)
    for robot in ("unit-0", "unit-1", "unit"):
        enrol(keys, robot)
    return keys


# --- the round trip ---------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_chunk_is_acked_stored_once_and_its_resend_is_acked_as_duplicate(plain_hub, robots, tmp_path):
    hub = plain_hub()
    robot = robots(hub.endpoint, "unit-0")
    welcome = robot.welcome()
    assert welcome.credit == hub.cfg.credit_bytes and welcome.heartbeat_ms == hub.cfg.heartbeat_ms
    assert welcome.trunk_version == 0
    rec = record("unit-0", 1)
    assert robot.send(robot.chunk(cid("unit-0", 1), rec))
    assert robot.recv_type("ack").stored == [cid("unit-0", 1)]
    assert robot.send(robot.chunk(cid("unit-0", 1), rec))
    ack = robot.recv_type("ack")
    assert ack.stored == [] and ack.duplicate == [cid("unit-0", 1)]
    assert stored_ids(tmp_path / "hub") == [cid("unit-0", 1)]
    assert hub.server.store.get(cid("unit-0", 1)) == rec  # the very bytes the robot sent
    counts = hub.server.registry.robots["unit-0"]  # counted before each ack left
    assert (counts.chunks_in, counts.bytes_in, counts.duplicates) == (1, len(rec), 1)


@pytest.mark.timeout(60)
def test_a_chunk_a_spool_wrote_before_the_upgrade_is_stored_beside_new_ones_and_read_back(plain_hub, robots,
                                                                                           tmp_path):
    from fleet.record import decode_record

    hub = plain_hub()
    robot = robots(hub.endpoint, "unit-0")
    robot.welcome()
    old, new = as_schema_1(record("unit-0", 1)), record("unit-0", 2)  # sha256 (schema 1) and BLAKE3 (schema 2)
    for seq, rec in ((1, old), (2, new)):
        assert robot.send(robot.chunk(cid("unit-0", seq), rec))
        assert robot.recv_type("ack").stored == [cid("unit-0", seq)]
    assert hub.server.store.get(cid("unit-0", 1)) == old and hub.server.store.get(cid("unit-0", 2)) == new
    assert decode_record(hub.server.store.get(cid("unit-0", 1))).arrays["rewards"].shape == (20,)


@pytest.mark.timeout(60)
def test_no_ack_ever_precedes_its_chunk_being_in_the_sqlite_file(plain_hub, robots, tmp_path):
    # a commit group stays open 300 ms for more chunks: an ack sent before its commit would find nothing on disk
    hub = plain_hub(store_group_chunks=1000, store_group_wait_ms=300.0)
    robot = robots(hub.endpoint, "unit-0")
    robot.welcome()
    sent = [cid("unit-0", s) for s in range(1, 81)]
    for s in range(1, 81):
        assert robot.send(robot.chunk(cid("unit-0", s), record("unit-0", s)))
    acked: list[str] = []
    while len(acked) < len(sent):
        ack = robot.recv_type("ack")
        assert ack is not None, f"only {len(acked)} of {len(sent)} acked"
        on_disk = set(stored_ids(tmp_path / "hub"))  # another connection, right after the ack arrived
        assert set(ack.stored) <= on_disk
        acked += ack.stored
    assert sorted(acked) == sent
    assert hub.server.writer.groups < len(sent)  # group commit: fewer fsyncs than chunks


@pytest.mark.timeout(60)
def test_a_bad_record_is_nacked_and_costs_only_itself(plain_hub, robots, tmp_path):
    hub = plain_hub()
    robot = robots(hub.endpoint, "unit-0")
    robot.welcome()
    good, bad = record("unit-0", 1), bytearray(record("unit-0", 2))
    bad[len(bad) // 2] ^= 0x40  # the record's own digest (the chunk message's digest) fails at decode
    assert robot.send(robot.chunk(cid("unit-0", 2), bytes(bad)))
    assert robot.send(robot.chunk(cid("unit-0", 1), good))
    nack = robot.recv_type("nack")
    assert nack.chunk_id == cid("unit-0", 2) and nack.reason == ErrorCode.BAD_DIGEST
    assert robot.recv_type("ack").stored == [cid("unit-0", 1)]
    # a valid record of another chunk under this chunk's id is not this chunk
    assert robot.send(robot.chunk(cid("unit-0", 3), record("unit-0", 4)))
    assert robot.recv_type("nack").reason == ErrorCode.BAD_RECORD
    assert stored_ids(tmp_path / "hub") == [cid("unit-0", 1)]
    assert hub.server.registry.record("unit-0").nacks == 2


# --- refusals ---------------------------------------------------------------------------------------------


def raw(header: dict, *data: bytes) -> list[bytes]:
    return [msgpack.packb(header), *data]


@pytest.mark.timeout(60)
def test_refusals_say_why_hello_required_version_unknown_and_unexpected_type(plain_hub, robots):
    hub = plain_hub()
    robot = robots(hub.endpoint, "unit-0")
    assert robot.send(robot.chunk(cid("unit-0", 1), record("unit-0", 1)))
    err = robot.recv_type("error")
    assert err.code == ErrorCode.HELLO_REQUIRED
    hello = {"v": 3, "type": "hello", "robot_id": "unit-0", "seq": 1, "future_field": 1}
    assert robot.send(raw(hello))
    err = robot.recv_type("error")
    assert err.code == ErrorCode.VERSION_UNSUPPORTED and "v3" in err.text and "v2" in err.text
    assert robot.send(raw({**hello, "v": 1}))  # a robot of before version 2 (its chunk digests are other hashes)
    err = robot.recv_type("error")
    assert err.code == ErrorCode.VERSION_UNSUPPORTED and "v1" in err.text and "v2" in err.text
    robot.welcome()
    assert robot.send(raw({"v": 2, "type": "teleport", "robot_id": "unit-0", "seq": 3}))
    assert robot.recv_type("error").code == ErrorCode.UNKNOWN_TYPE
    welcome_up = Welcome(robot_id="unit-0", seq=4, credit=1, trunk_version=0, heartbeat_ms=100, max_message_bytes=1)
    assert robot.send(welcome_up.encode())
    assert robot.recv_type("error").code == ErrorCode.UNEXPECTED_TYPE
    assert robot.send(raw({"v": 2, "type": "trunk_fetch", "robot_id": "unit-0", "seq": 5, "trunk_version": 1,
                           "offset": 0, "length": 10}))
    assert robot.recv_type("error").code == ErrorCode.UNKNOWN_TRUNK
    assert robot.send(robot.chunk(cid("unit-0", 1), record("unit-0", 1)))
    assert robot.recv_type("ack").stored == [cid("unit-0", 1)]  # refusals cost the connection nothing


@pytest.mark.timeout(60)
def test_plaintext_binds_a_connection_to_the_robot_its_hello_named(plain_hub, robots, tmp_path):
    hub = plain_hub()
    robot = robots(hub.endpoint, "unit-0")
    robot.welcome()
    as_other = robot.chunk(cid("unit-1", 1), record("unit-1", 1), robot_id="unit-1")
    assert robot.send(as_other)
    err = robot.recv_type("error")
    assert err.code == ErrorCode.IDENTITY_MISMATCH and "unit-0" in err.text
    assert stored_ids(tmp_path / "hub") == []


# --- credit -----------------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_robot_ignoring_credit_gets_no_credit_and_the_hub_never_queues_more_than_the_credit(plain_hub, robots,
                                                                                            tmp_path):
    recs = {s: record("unit-0", s) for s in range(1, 31)}
    credit = 3 * max(len(r) for r in recs.values())
    # a slow store: each commit group waits 200 ms for more chunks, so the robot's flood finds chunks in flight
    hub = plain_hub(credit_bytes=credit, store_group_chunks=1000, store_group_wait_ms=200.0)
    robot = robots(hub.endpoint, "unit-0")
    assert robot.welcome().credit == credit
    for s, rec in recs.items():
        assert robot.send(robot.chunk(cid("unit-0", s), rec))
    acked, no_credit = set(), set()
    while len(acked) + len(no_credit) < len(recs):
        msg = robot.recv()
        assert msg is not None
        if msg.TYPE == "ack":
            acked |= set(msg.stored)
        elif msg.TYPE == "nack":
            assert msg.reason == ErrorCode.NO_CREDIT
            no_credit.add(msg.chunk_id)
    assert no_credit and acked
    session = hub.server.sessions["unit-0"]
    assert session.peak_in_flight_bytes <= credit
    # the robot resends what was refused, now within its credit (one at a time): all of it is stored
    for c in sorted(no_credit):
        assert robot.send(robot.chunk(c, recs[int(c.rsplit("-", 1)[1])]))
        assert c in robot.recv_type("ack").stored
    assert sorted(stored_ids(tmp_path / "hub")) == sorted(cid("unit-0", s) for s in recs)
    assert session.in_flight_bytes == 0 and session.peak_in_flight_bytes <= credit


@pytest.mark.timeout(90)
def test_robots_share_the_total_credit_and_the_hub_never_queues_more_than_it(plain_hub, robots, tmp_path):
    recs = {r: {s: record(r, s) for s in range(1, 31)} for r in ("unit-0", "unit-1")}
    biggest = max(len(x) for rs in recs.values() for x in rs.values())
    total = 4 * biggest
    # per-robot credit far above the total: only the hub-wide budget can hold the queue; a slow store keeps it full
    hub = plain_hub(credit_bytes=100 * biggest, credit_total_bytes=total, credit_queue_s=0, store_group_chunks=1000,
                    store_group_wait_ms=200.0)
    first, second = robots(hub.endpoint, "unit-0"), robots(hub.endpoint, "unit-1")
    assert first.welcome().credit == total  # alone: the whole budget
    assert second.welcome().credit == total // 2  # two robots: half each ...
    assert first.recv_type("credit", skip=("heartbeat",)).credit == total // 2  # ... and the first is told so
    def credits():  # what status shows: each robot's share now, and what it was granted at most
        try:
            now = load_registry(tmp_path / "hub" / "registry.json")["robots"]
            return [(now[r]["credit"], now[r]["credit_enforced"]) for r in ("unit-0", "unit-1")]
        except (ValueError, KeyError):
            return None
    assert wait_until(lambda: credits() == [(total // 2, total), (total // 2, total // 2)], 10), credits()
    for s in range(1, 31):  # both ignore their credit and flood the hub
        for robot in (first, second):
            assert robot.send(robot.chunk(cid(robot.robot_id, s), recs[robot.robot_id][s]))
    answered = {r: set() for r in recs}
    no_credit = {r: set() for r in recs}
    while sum(map(len, answered.values())) < 60:
        for robot in (first, second):
            msg = robot.recv(timeout_ms=100)
            if msg is None or msg.TYPE not in ("ack", "nack"):
                continue
            ids = msg.stored if msg.TYPE == "ack" else [msg.chunk_id]
            answered[robot.robot_id] |= set(ids)
            if msg.TYPE == "nack":
                assert msg.reason == ErrorCode.NO_CREDIT
                no_credit[robot.robot_id].add(msg.chunk_id)
    assert all(no_credit.values())
    # the per-robot credits granted sum to 1.5 x the budget; the queue stayed within it, plus the one chunk a
    # robot with nothing queued may always send
    assert hub.server.credit.peak_queued_bytes <= total + biggest
    assert hub.server.credit.queued_bytes == 0


# --- heartbeats and dead robots ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_heartbeats_give_rtt_and_spool_depth_and_a_silent_robot_is_declared_dead(plain_hub, robots, tmp_path):
    # 1 s of silence makes a robot dead: long enough that a loaded 2-core machine never starves the echo into it
    hub = plain_hub(heartbeat_ms=100, dead_after_heartbeats=10, registry_every_s=0.05)
    robot = robots(hub.endpoint, "unit-0")
    robot.welcome()
    beat = robot.recv_type("heartbeat", skip=())
    assert isinstance(beat, Heartbeat) and beat.t_us > 0
    assert robot.send(robot.heartbeat(echo_us=beat.t_us, echo_delay_us=0, spool_depth=7))
    beat2 = robot.recv_type("heartbeat", skip=())
    assert beat2.echo_us > 0  # the hub echoes the robot's clock back
    registry = tmp_path / "hub" / "registry.json"

    def robot_entry():
        return load_registry(registry)["robots"].get("unit-0") if registry.exists() else None

    assert wait_until(lambda: (robot_entry() or {}).get("rtt_ms") is not None)
    entry = robot_entry()
    assert entry["spool_depth"] == 7 and entry["rtt_ms"] >= 0 and entry["state"] == "alive"
    # silence: no heartbeat, no message at all
    assert wait_until(lambda: robot_entry()["state"] == "dead", 20)
    assert robot.send(robot.chunk(cid("unit-0", 1), record("unit-0", 1)))
    assert robot.recv_type("error").code == ErrorCode.HELLO_REQUIRED
    robot.welcome()  # and a fresh HELLO brings it back
    assert wait_until(lambda: robot_entry()["state"] == "alive")


# --- CURVE identity end to end ----------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_curve_an_enrolled_robot_streams_an_unknown_key_gets_nothing_and_a_revoked_key_is_cut(tmp_path, keys,
                                                                                          robots, caplog):
    from fleet.keys import HUB_PUBLIC, ROBOT_PUBLIC, ROBOT_SECRET, write_key_pair

    hub = ThreadHub(hub_config(tmp_path / "hub", keys))
    try:
        robot = robots(hub.endpoint, "unit-0", keys / "robots" / "unit-0")
        robot.welcome()
        assert robot.send(robot.chunk(cid("unit-0", 1), record("unit-0", 1)))
        assert robot.recv_type("ack").stored == [cid("unit-0", 1)]
        stranger = tmp_path / "stranger"
        write_key_pair(stranger, ROBOT_PUBLIC, ROBOT_SECRET)
        (stranger / HUB_PUBLIC).write_bytes((keys / HUB_PUBLIC).read_bytes())
        intruder = robots(hub.endpoint, "unit-1", stranger)
        intruder.send(intruder.hello(), 500)
        assert intruder.recv(1000) is None  # no handshake, no WELCOME, no error: nothing
        assert revoke(keys, "unit-0")
        assert robot.send(robot.chunk(cid("unit-0", 2), record("unit-0", 2)))
        assert robot.send(robot.hello())
        assert wait_until(lambda: hub.server.registry.record("unit-0").state == "cut")
        while robot.recv(200) is not None:  # what the hub sent before the cut (a heartbeat)
            pass
        assert robot.send(robot.hello())
        assert robot.recv(2500) is None  # its open connection gets nothing back any more, not even heartbeats
        assert stored_ids(tmp_path / "hub") == [cid("unit-0", 1)]
        again = robots(hub.endpoint, "unit-0", keys / "robots" / "unit-0")  # and a new connection is refused
        again.send(again.hello(), 500)
        assert again.recv(1000) is None
        other = robots(hub.endpoint, "unit-1", keys / "robots" / "unit-1")
        other.welcome()  # the hub serves everyone else throughout
    finally:
        hub.stop()


@pytest.mark.timeout(60)
def test_curve_a_robot_sending_as_another_is_refused_and_nothing_is_stored(tmp_path, keys, robots):
    hub = ThreadHub(hub_config(tmp_path / "hub", keys))
    try:
        robot = robots(hub.endpoint, "unit-1", keys / "robots" / "unit-1")
        assert robot.send(robot.hello("unit-0"))  # HELLO naming another robot
        err = robot.recv_type("error")
        assert err.code == ErrorCode.IDENTITY_MISMATCH and "unit-1" in err.text
        robot.welcome()
        victim = record("unit-0", 1)
        assert robot.send(robot.chunk(cid("unit-0", 1), victim, robot_id="unit-0"))  # header names the victim
        assert robot.recv_type("error").code == ErrorCode.IDENTITY_MISMATCH
        assert robot.send(robot.chunk(cid("unit-0", 1), victim))  # the victim's chunk id under its own name
        nack = robot.recv_type("nack")
        assert nack.reason == ErrorCode.IDENTITY_MISMATCH
        # robot "unit" shares the prefix of "unit-0": a record made up as unit-0's under an id starting "unit-"
        liar = robots(hub.endpoint, "unit", keys / "robots" / "unit")
        liar.welcome()
        assert liar.send(liar.chunk(cid("unit-0", 5), record("unit-0", 5)))
        nack = liar.recv_type("nack")
        assert nack.reason == ErrorCode.IDENTITY_MISMATCH and "unit-0" in nack.text
        assert stored_ids(tmp_path / "hub") == []
    finally:
        hub.stop()


# --- a real fleet-hub process -----------------------------------------------------------------------------


def _fuzz_messages(rng: random.Random, n: int) -> list[list[bytes]]:
    """Random and mutated messages, plus the nasty kinds by name."""
    good = Chunk.of("unit-0", 1, cid("unit-0", 99), record("unit-0", 99))
    other = Chunk.of("unit-1", 1, cid("unit-1", 7), record("unit-1", 7))
    header = msgpack.unpackb(good.encode()[0])
    named = [
        [good.encode()[0]],  # truncated multipart: the data frame missing
        [msgpack.packb({**header, "chunk_id": "bad id!"})],  # truncated, and its id malformed (once crashed the hub)
        [msgpack.packb({**header, "sha256": "0" * 64}), good.payload],  # bad digest
        [msgpack.packb({**header, "size": header["size"] + 1}), good.payload],  # size mismatch
        [msgpack.packb({**header, "v": 9}), good.payload],  # newer protocol
        [msgpack.packb({**header, "seq": float("nan")}), good.payload],  # NaN where an integer goes
        [msgpack.packb({**header, "schema": 7}), good.payload],  # unknown record format
        [msgpack.packb({**header, "size": [1, 2]}), good.payload],  # wrong shape
        [msgpack.packb({**header, "chunk_id": b"\xff\x00"}), good.payload],  # wrong dtype
        other.encode(),  # a valid chunk of another robot, replayed
        [msgpack.packb({**header, "robot_id": "unit-1"}), good.payload],  # header renamed to another robot
        [b"\x00" * 70_000],  # header over its size limit
        [],
    ]
    out = []
    for i in range(n):
        out.append(named[i % len(named)] if i % 5 == 0 else _mutant(rng))
    return [m for m in out if m]


@pytest.mark.timeout(240)
def test_fuzz_thousands_of_malformed_messages_then_the_hub_still_serves_a_good_robot(tmp_path, keys, robots):
    port = free_port()
    proc = start_hub_process(tmp_path, port, "max_frame_bytes=1048576", keys=keys)
    endpoint = f"tcp://127.0.0.1:{port}"
    try:
        fuzzer = robots(endpoint, "unit-0", keys / "robots" / "unit-0")
        fuzzer.welcome()  # a welcomed robot, so chunk-shaped garbage reaches the chunk path too
        baseline = rss_kb(proc.pid)
        rng = random.Random(20261202)
        messages = _fuzz_messages(rng, 4000)
        for frames in messages:
            assert fuzzer.send(frames)
        oversize = robots(endpoint, "unit-0", keys / "robots" / "unit-0")
        oversize.send(Chunk.of("unit-0", 1, cid("unit-0", 1), b"x" * (2 << 20)).encode())  # over MAXMSGSIZE
        good = robots(endpoint, "unit-1", keys / "robots" / "unit-1")
        good.welcome()
        for s in range(1, 21):
            assert good.send(good.chunk(cid("unit-1", s), record("unit-1", s)))
        acked = set()
        while len(acked) < 20:
            ack = good.recv_type("ack", timeout_ms=20_000, skip=("heartbeat", "credit"))
            assert ack is not None, f"{len(acked)} of 20 acked after the fuzz"
            acked |= set(ack.stored)
        assert proc.poll() is None
        grown_mb = (rss_kb(proc.pid) - baseline) / 1024
        assert grown_mb < 64, f"hub memory grew {grown_mb:.0f} MB over the fuzz"
        stored = set(stored_ids(tmp_path / "hub"))
        assert {cid("unit-1", s) for s in range(1, 21)} <= stored
        assert not any(c.startswith("unit-1-") and c not in acked for c in stored)  # nothing of unit-1's forged
        assert cid("unit-1", 7) in stored  # ... only its own chunk 7, sent by itself
        refused = wait_until(lambda: load_registry(tmp_path / "hub" / "registry.json")["hub"]["refused"], 10)
        assert sum(refused.values()) > 1000
        assert {"MALFORMED", "BAD_DIGEST", "VERSION_UNSUPPORTED", "IDENTITY_MISMATCH", "FRAME_COUNT"} <= set(refused)
        assert "INTERNAL" not in refused  # every message refused by the protocol, none by a fault in the hub
    finally:
        kill_group(proc)


@pytest.mark.timeout(120)
def test_sigterm_stops_the_hub_process_gracefully_and_status_prints_the_registry(tmp_path, robots):
    port = free_port()
    proc = start_hub_process(tmp_path, port, "registry_every_s=0.1")
    try:
        robot = robots(f"tcp://127.0.0.1:{port}", "unit-0")
        robot.welcome()
        for s in range(1, 11):
            assert robot.send(robot.chunk(cid("unit-0", s), record("unit-0", s)))
        acked = set()
        while len(acked) < 10:
            acked |= set(robot.recv_type("ack").stored)

        def status():
            return subprocess.run([str(BIN / "fleet-hub"), "status", str(tmp_path / "hub")], capture_output=True,
                                  text=True, timeout=60)

        res = wait_until(lambda: (r := status()).returncode == 0 and "unit-0" in r.stdout and r, 30)
        assert res, status().stderr
        head, row = res.stdout.splitlines()[1:3]
        assert head.split()[:3] == ["ROBOT", "STATE", "HARDWARE"] and row.split()[:3] == ["unit-0", "alive", "cartpole"]
        assert row.split()[head.split().index("CHUNKS_IN")] == "10"
        heap = load_registry(tmp_path / "hub" / "registry.json")["hub"]["gc"]  # start-up's heap frozen (fleet/heap.py)
        assert heap["frozen"] > 10_000 and heap["thresholds"] == list(GC_THRESHOLDS)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "stopped" in "".join(proc.output)
        res = status()
        assert res.returncode == 1 and "stopped" in res.stderr and "unit-0" in res.stdout
        assert sorted(stored_ids(tmp_path / "hub")) == sorted(acked)
    finally:
        kill_group(proc)


def test_status_table_lists_each_robot_with_its_numbers():
    snap = {"time": 0, "hub": {"pid": 1, "bind": "tcp://x:1", "security": "curve", "storage": "/d"},
            "robots": {"unit-0": {"robot_id": "unit-0", "state": "dead", "hardware": "go1_like", "trunk_version": 3,
                                  "adapter_version": 2, "rtt_ms": 1.25, "silent_s": 12.0, "spool_depth": 40,
                                  "chunks_in": 5, "bytes_in": 3 * 2**20, "duplicates": 1, "nacks": 0, "errors": 0,
                                  "in_flight_bytes": 0, "lag_s": None, "heartbeat_age_s": 11.5,
                                  "spool_bytes": 2 * 2**20, "adapter_stored": 2, "adapter_stored_trunk": 3}}}
    lines = format_table(snap).splitlines()
    assert lines[1].split()[0] == "ROBOT"
    assert lines[2].split() == ["unit-0", "dead", "go1_like", "v3", "v2", "1.2", "12.0", "40", "5", "3.0", "1", "0",
                                "0", "0", "-", "11.5", "2.0", "v2", "v3"]


def test_registry_file_is_replaced_atomically_and_is_json(tmp_path):
    from fleet.registry import FleetRegistry

    reg = FleetRegistry({"pid": 1})
    reg.record("unit-0").chunks_in = 3
    path = tmp_path / "registry.json"
    stop = threading.Event()
    seen, errors = [], []

    def reader():
        while not stop.is_set():
            try:
                if path.exists():
                    seen.append(json.loads(path.read_text())["robots"]["unit-0"]["chunks_in"])
            except Exception as exc:  # a torn or half-written file: the test must see it, not a dead thread
                errors.append(repr(exc))
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        for _ in range(300):
            reg.write(path)
    finally:
        stop.set()
        t.join(10.0)
    assert not errors and seen and set(seen) == {3}, errors


@pytest.mark.timeout(120)
def test_a_fault_while_closing_the_hub_still_stops_its_export_process(tmp_path):
    import fcntl
    from pathlib import Path

    from fleet.export_process import LOCK_FILE
    from fleet.hub import HubServer

    server = HubServer(hub_config(tmp_path / "hub", run_for_s=1.0, parquet_every_s=0.1))

    def broken_stop(timeout: float) -> None:
        raise OSError("the returns reader failed to stop")
    server.returns.stop = broken_stop  # a fault in a step of closing that runs before the export's stop
    try:
        with pytest.raises(OSError, match="returns reader"):
            server.run()
        # stopped, not left for multiprocessing's exit handler (which would join it with no timeout)
        assert server.export.pid is not None and not Path(f"/proc/{server.export.pid}").exists()
        with open(tmp_path / "hub" / LOCK_FILE, "a") as f:  # and its lock is free for the next hub
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:  # what the failed close left open
        server.export.stop(5.0)
        server.metrics.close()
        server.sock.close(0)
        server.store.close()


def _hub_with_a_commit_held(plain_hub, robots) -> tuple:
    """A hub (close timeout 0.5 s) whose first commit group is stored and counted down but whose results reach the
    hub only once the returned event is set: a writer outlasting the hub's close."""
    hub = plain_hub(stop_timeout_s=0.5)
    release, entered = threading.Event(), threading.Event()
    committed = hub.server.writer.on_results

    def slow_answer(results):  # the group is committed and counted down; its wake-up comes late
        entered.set()
        release.wait(30)
        committed(results)

    hub.server.writer.on_results = slow_answer
    robot = robots(hub.endpoint, "unit-0")
    robot.welcome()
    assert robot.send(robot.chunk(cid("unit-0", 1), record("unit-0", 1)))
    assert entered.wait(20) and hub.server.writer.pending == 0
    return hub, release


@pytest.mark.timeout(60)
def test_a_commit_outlasting_the_hubs_close_never_wakes_a_reused_file_descriptor(plain_hub, robots, tmp_path):
    import os

    hub, release = _hub_with_a_commit_held(plain_hub, robots)
    try:
        hub.stop()  # the writer's close times out with its thread still in the wake-up path
        wake_r, wake_w = hub.server._wake_r, hub.server._wake_w
        os.fstat(wake_w)  # still the hub's pipe: closed, its number would go to the next file opened
        os.set_blocking(wake_r, False)
    finally:  # never leave the writer to wake up into another test's files
        release.set()
        hub.server.writer._thread.join(10)
    assert not hub.server.writer._thread.is_alive()
    assert os.read(wake_r, 64) == b"\0"  # the late wake-up landed in the hub's own pipe
    os.close(wake_r)
    os.close(wake_w)


@pytest.mark.timeout(60)
def test_a_writer_outlasting_the_hubs_close_is_logged_as_committed_groups_left_unacked(plain_hub, robots, caplog):
    import os

    hub, release = _hub_with_a_commit_held(plain_hub, robots)
    try:
        with caplog.at_level("WARNING", logger="fleet.hub"):
            hub.stop()
    finally:  # never leave the writer to wake up into another test's files
        release.set()
        hub.server.writer._thread.join(10)
    os.close(hub.server._wake_r)  # left open by the close while the writer could still wake the loop
    os.close(hub.server._wake_w)
    assert "group writer did not finish" in caplog.text and "never acked" in caplog.text


@pytest.mark.timeout(60)
def test_a_fault_handling_one_message_is_counted_and_the_hub_serves_on(plain_hub, robots, monkeypatch):
    hub = plain_hub()
    robot = robots(hub.endpoint, "unit-0")
    robot.welcome()

    def broken(*args):
        raise RuntimeError("a bug in one handler")

    monkeypatch.setattr(hub.server.registry, "heartbeat", broken)  # the hub's own code fails on one message
    assert robot.send(robot.heartbeat())
    assert robot.send(robot.chunk(cid("unit-0", 1), record("unit-0", 1)))
    ack = robot.recv_type("ack", skip=("heartbeat", "credit"))
    assert ack is not None and ack.stored == [cid("unit-0", 1)]
    assert hub.thread.is_alive() and hub.server.refused[ErrorCode.INTERNAL] == 1


@pytest.mark.timeout(60)
def test_a_start_failing_after_the_bind_leaves_the_port_and_the_store_free_for_the_next_start(tmp_path, monkeypatch):
    cfg = hub_config(tmp_path / "hub", port=free_port())

    def damaged(*args, **kwargs):
        raise RuntimeError("a damaged trunk store")

    with monkeypatch.context() as failing:
        failing.setattr(fleet.hub, "TrunkService", damaged)
        with pytest.raises(RuntimeError, match="damaged trunk store"):
            HubServer(cfg)
    hub = ThreadHub(cfg)  # the same port and store: nothing of the failed start holds them
    hub.stop()


@pytest.mark.timeout(60)
def test_a_release_failing_during_a_failed_start_still_frees_the_rest_and_the_starts_own_error_is_raised(
        tmp_path, monkeypatch, caplog):
    cfg = hub_config(tmp_path / "hub", port=free_port())

    def damaged(*args, **kwargs):
        raise RuntimeError("a damaged trunk store")

    def stuck(self, timeout):
        raise OSError("the export's pipe would not close")

    with monkeypatch.context() as failing:
        failing.setattr(fleet.hub, "TrunkService", damaged)
        failing.setattr(fleet.hub.ParquetExportProcess, "stop", stuck)
        with pytest.raises(RuntimeError, match="damaged trunk store"):
            HubServer(cfg)
    assert any(r.exc_info and "would not close" in str(r.exc_info[1]) for r in caplog.records)  # logged, traced
    hub = ThreadHub(cfg)  # the store, its lock and the port were released after the export's release failed
    hub.stop()


@pytest.mark.timeout(60)
def test_a_failed_start_whose_key_handler_will_not_close_raises_its_own_error_instead_of_hanging(tmp_path, keys,
                                                                                                  monkeypatch):
    cfg = hub_config(tmp_path / "hub", keys, port=free_port())

    def damaged(*args, **kwargs):
        raise RuntimeError("a damaged trunk store")

    def stuck(self):
        raise RuntimeError("the key handler would not stop")

    made, real_init, real_close = [], fleet.keys.HubSecurity.__init__, fleet.keys.HubSecurity.close

    def recorded(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(self)

    try:
        with monkeypatch.context() as failing:
            failing.setattr(fleet.hub, "TrunkService", damaged)
            failing.setattr(fleet.keys.HubSecurity, "__init__", recorded)
            failing.setattr(fleet.keys.HubSecurity, "close", stuck)
            with pytest.raises(RuntimeError, match="damaged trunk store"):  # not a hang in the context's term
                HubServer(cfg)
    finally:  # what the failed start had to leave open
        for security in made:
            real_close(security)
            security.ctx.term()


@pytest.mark.timeout(60)
def test_one_pass_over_committed_groups_acks_nacks_and_counts_each_robot_apart(tmp_path, robots):
    """The commit answers, driven by hand on a hub that is not running: two robots, every kind of result."""
    from fleet.store import DUPLICATE, REJECTED, STORED, StoreError, StoreResult

    server = HubServer(hub_config(tmp_path / "hub", parquet_export=False))
    try:
        bots = {name: robots(server.endpoint, name) for name in ("unit-0", "unit-1")}
        for bot in bots.values():
            assert bot.send(bot.hello())
        assert wait_until(lambda: (server.sock.poll(10) and server._receive_batch(), len(server.sessions) == 2)[1], 10)
        for bot in bots.values():
            assert bot.recv_type("welcome", skip=("heartbeat", "trunk_notice")) is not None
        sizes = {}
        outcomes = {  # unit-0: 3 stored, 1 duplicate, 1 failed commit; unit-1: 1 stored, 1 rejected
            "unit-0": [STORED, STORED, DUPLICATE, "error", STORED], "unit-1": [REJECTED, STORED]}
        for robot, kinds in outcomes.items():
            for seq, kind in enumerate(kinds, 1):
                cid_, size = cid(robot, seq), 1000 * seq + (7 if robot == "unit-1" else 0)
                sizes[cid_] = size
                server.sessions[robot].take(cid_, size)
                server.credit.take(size)
                result = StoreError("disk gone") if kind == "error" else \
                    StoreResult(cid_, kind, "bad bytes" if kind == REJECTED else "", rowid=seq)
                server._written.append(((robot, cid_), result))
        server._answer_commits()
        rec0, rec1 = server.registry.robots["unit-0"], server.registry.robots["unit-1"]
        assert (rec0.chunks_in, rec0.bytes_in, rec0.duplicates, rec0.nacks) == (3, 1000 + 2000 + 5000, 1, 1)
        assert (rec1.chunks_in, rec1.bytes_in, rec1.duplicates, rec1.nacks) == (1, 2007, 0, 1)
        assert server.credit.queued_bytes == 0 and all(not s.in_flight and s.in_flight_bytes == 0
                                                       for s in server.sessions.values())
        skip = ("heartbeat", "trunk_notice", "credit")
        nack = bots["unit-0"].recv_type("nack", skip=skip)
        assert nack.chunk_id == cid("unit-0", 4) and nack.reason == ErrorCode.STORAGE_FAILED
        ack = bots["unit-0"].recv_type("ack", skip=skip)
        assert ack.stored == [cid("unit-0", k) for k in (1, 2, 5)] and ack.duplicate == [cid("unit-0", 3)]
        nack = bots["unit-1"].recv_type("nack", skip=skip)
        assert nack.chunk_id == cid("unit-1", 1) and nack.reason == ErrorCode.BAD_RECORD
        ack = bots["unit-1"].recv_type("ack", skip=skip)
        assert ack.stored == [cid("unit-1", 2)] and ack.duplicate == []
    finally:
        server.request_stop()
        server._close(10)
