"""Trunk distribution and adapter uploads on the hub, over real sockets on 127.0.0.1 with a robot speaking the
protocol by hand: notices without a restart, bounded checksummed pieces, refusals that leave the hub serving, a
damaged archive never served, adapters durable before their ack and shown by `fleet-hub status`."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
import torch

from fleet.adapter_store import AdapterStore
from fleet.cli import status_command
from fleet.protocol import AdapterUpload, ErrorCode, TrunkFetch, adapter_ack_id
from fleet.trunk_store import TrunkStore
from shared_policy.adapter import Adapter, adapter_bytes
from shared_policy.checkpoint import load_checkpoint
from tests.fleet.hub_client import BareRobot, ThreadHub, free_port, hub_config, wait_until
from tests.fleet.trunks import small_checkpoint

SKIP = ("heartbeat", "trunk_notice")  # the hub repeats its notice while a robot runs an older trunk


def fetch(robot: BareRobot, version: int, offset: int, length: int) -> TrunkFetch:
    return TrunkFetch(robot_id=robot.robot_id, seq=robot._seq(), trunk_version=version, offset=offset, length=length)


@pytest.mark.timeout(60)
def test_a_published_trunk_is_announced_without_a_restart_and_a_robot_joining_later_learns_it(tmp_path, robots):
    hub = ThreadHub(hub_config(tmp_path / "hub"))  # a bare robot does not heartbeat: 5 s until it is dead
    try:
        early = robots(hub.endpoint, "unit-0")
        assert early.welcome().trunk_version == 0
        rec = TrunkStore(tmp_path / "hub").publish(small_checkpoint(tmp_path / "ckpt", trunk_version=1))
        notice = early.recv_type("trunk_notice")  # pushed by the running hub
        assert (notice.trunk_version, notice.size, notice.sha256) == (1, rec.size, rec.sha256)
        late = robots(hub.endpoint, "unit-1")
        assert late.welcome().trunk_version == 1
        assert late.recv_type("trunk_notice").sha256 == rec.sha256  # WELCOME names it; the notice says how to check
    finally:
        hub.stop()


@pytest.mark.timeout(60)
def test_fetches_get_bounded_checksummed_pieces_and_bad_ones_a_clear_error_while_the_hub_keeps_serving(
        tmp_path, robots):
    rec = TrunkStore(tmp_path / "hub").publish(small_checkpoint(tmp_path / "ckpt", trunk_version=1))
    piece = 64 * 1024
    hub = ThreadHub(hub_config(tmp_path / "hub", trunk_piece_bytes=piece))
    try:
        robot = robots(hub.endpoint, "unit-0")
        robot.welcome()
        assert robot.recv_type("trunk_notice").trunk_version == 1
        assembled = bytearray()
        while len(assembled) < rec.size:
            assert robot.send(fetch(robot, 1, len(assembled), 1 << 20))  # asks for more than a piece
            data = robot.recv_type("trunk_data", skip=SKIP)
            assert data.offset == len(assembled) and data.size == min(piece, rec.size - len(assembled))
            assert hashlib.sha256(data.data).hexdigest() == data.piece_sha256 and data.sha256 == rec.sha256
            assembled += data.data
        assert hashlib.sha256(assembled).hexdigest() == rec.sha256
        for bad, code in ((fetch(robot, 7, 0, 10), ErrorCode.UNKNOWN_TRUNK),
                          (fetch(robot, 1, rec.size, 10), ErrorCode.BAD_RANGE)):
            assert robot.send(bad)
            err = robot.recv_type("error", skip=SKIP)
            assert err.code == code, err
        assert robot.send(fetch(robot, 1, 100, 50))  # still served
        last = robot.recv_type("trunk_data", skip=SKIP)
        assert last.offset == 100 and bytes(last.data) == bytes(assembled[100:150])
        assert hub.server.trunks.bytes_served == rec.size + 50
    finally:
        hub.stop()


@pytest.mark.timeout(60)
def test_a_trunk_whose_archive_fails_its_digest_is_never_served(tmp_path, robots):
    rec = TrunkStore(tmp_path / "hub").publish(small_checkpoint(tmp_path / "ckpt", trunk_version=1))
    with open(rec.path, "r+b") as f:  # one flipped byte, same size: only the digest can tell
        f.seek(rec.size // 2)
        byte = f.read(1)
        f.seek(rec.size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    hub = ThreadHub(hub_config(tmp_path / "hub"))
    try:
        assert wait_until(lambda: 1 in hub.server.trunks.refused, 10)
        robot = robots(hub.endpoint, "unit-0")
        assert robot.welcome().trunk_version == 0
        assert robot.send(fetch(robot, 1, 0, 1000))
        assert robot.recv_type("error", skip=SKIP).code == ErrorCode.UNKNOWN_TRUNK
    finally:
        hub.stop()


def _adapter(policy: torch.nn.Module, bias: float) -> Adapter:
    adapter = Adapter(policy, "cartpole")
    with torch.no_grad():
        adapter.head_bias.fill_(bias)
    return adapter


@pytest.mark.timeout(90)
def test_an_adapter_upload_is_durable_before_its_ack_deduped_and_shown_with_its_trunk_in_status(
        tmp_path, robots, capsys):
    policy, _ = load_checkpoint(small_checkpoint(tmp_path / "ckpt", trunk_version=3))
    port = free_port()
    hub = ThreadHub(hub_config(tmp_path / "hub", port=port))
    try:
        robot = robots(hub.endpoint, "unit-0")
        robot.welcome()
        kept = _adapter(policy, 1.0)
        up = AdapterUpload.of("unit-0", robot._seq(), 4, 3, adapter_bytes(kept, 4, 3))
        assert robot.send(up)
        ack = robot.recv_type("ack", skip=SKIP)
        assert ack.stored == [adapter_ack_id("unit-0", 4)]
        con = sqlite3.connect(f"file:{tmp_path / 'hub' / 'experience.sqlite'}?mode=ro", uri=True)  # another reader
        assert con.execute("SELECT adapter_version, trunk_version, data FROM adapters").fetchall() == \
            [(4, 3, up.data)]
        con.close()
        # the same weights saved again (other bytes: safetensors does not order its metadata): a duplicate
        assert robot.send(AdapterUpload.of("unit-0", robot._seq(), 4, 3, adapter_bytes(kept, 4, 3)))
        assert robot.recv_type("ack", skip=SKIP).duplicate == [adapter_ack_id("unit-0", 4)]
        for wrong, why in ((adapter_bytes(_adapter(policy, 2.0), 4, 3), "other weights"),  # a stored version is never replaced
                           (adapter_bytes(kept, 5, 2), "trunk_version '2'")):  # the file contradicts the header
            assert robot.send(AdapterUpload.of("unit-0", robot._seq(), 5 if "trunk" in why else 4, 3, wrong))
            nack = robot.recv_type("nack", skip=SKIP)
            assert nack.reason == ErrorCode.BAD_RECORD and why in nack.text, nack
        hub.server.write_registry()
        assert status_command([str(tmp_path / "hub")]) == 0
        table = capsys.readouterr().out
        header, row = table.splitlines()[1:3]
        cells = dict(zip(header.split(), row.split(), strict=True))
        assert cells["STORED_ADAPTER"] == "v4" and cells["ITS_TRUNK"] == "v3"
    finally:
        hub.stop()
    # durable: a restarted hub knows it, and the learner's reader sees each robot's newest
    latest = AdapterStore(tmp_path / "hub" / "experience.sqlite").latest()
    assert list(latest) == ["unit-0"] and latest["unit-0"].adapter_version == 4
    assert latest["unit-0"].trunk_version == 3
    hub = ThreadHub(hub_config(tmp_path / "hub", port=port))
    try:
        robots(hub.endpoint, "unit-0").welcome()
        assert hub.server.registry.record("unit-0").adapter_stored == 4
    finally:
        hub.stop()


@pytest.mark.timeout(60)
def test_an_adapter_file_with_a_hostile_header_is_refused_and_the_hub_keeps_serving(tmp_path, robots):
    import json
    import struct

    header = json.dumps({"__metadata__": {"version": "1"}, "w": {"dtype": "F32", "shape": [1],
                                                                  "data_offsets": [0, "4"]}}).encode()
    hostile = struct.pack("<Q", len(header)) + header + b"\0" * 4
    hub = ThreadHub(hub_config(tmp_path / "hub", port=free_port()))
    try:
        robot = robots(hub.endpoint, "unit-0")
        robot.welcome()
        assert robot.send(AdapterUpload.of("unit-0", robot._seq(), 1, 1, hostile))
        nack = robot.recv_type("nack", skip=SKIP)
        assert nack.reason == ErrorCode.BAD_RECORD and "non-integer" in nack.text
        assert robot.send(fetch(robot, 1, 0, 10))
        robot.recv_type("error", skip=SKIP)  # no trunk published: a clear error, from a hub still serving
    finally:
        hub.stop()
