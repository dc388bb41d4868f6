"""The hub's trunk store and `fleet-hub publish`: numbered versions kept forever, the current one durable, a bad
checkpoint refused with nothing stored, and the archive a robot unpacks is a checkpoint robots load."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile

import pytest

from fleet.trunk_archive import TrunkArchiveError, unpack_trunk
from fleet.trunk_store import CURRENT_FILE, TrunkStore, TrunkStoreError, file_sha256
from robot_agent.runtime import load_verified
from tests.fleet.hub_client import BIN
from tests.fleet.trunks import cartpole_spec, small_checkpoint


def test_publish_numbers_versions_keeps_each_one_and_makes_the_newest_current(tmp_path):
    store = TrunkStore(tmp_path / "hub")
    assert store.current() is None
    first = store.publish(small_checkpoint(tmp_path / "a", trunk_version=2, seed=0))
    kept = (tmp_path / "hub" / "trunks" / "v000002.tar").read_bytes()
    second = store.publish(small_checkpoint(tmp_path / "b", trunk_version=1, seed=1))
    assert (first.version, second.version) == (2, 3)  # the learner's number, then one past the newest
    assert second.source_trunk_version == 1
    assert store.current() == store.get(3)
    assert (tmp_path / "hub" / "trunks" / "v000002.tar").read_bytes() == kept  # never rewritten
    for rec in (first, second):
        assert file_sha256(rec.path) == rec.sha256 and len(open(rec.path, "rb").read()) == rec.size
    # a robot unpacks the archive into a checkpoint that names the hub's version and loads for its hardware
    unpack_trunk(second.path, tmp_path / "unpacked")
    _, manifest = load_verified(tmp_path / "unpacked", cartpole_spec())
    assert manifest["trunk_version"] == 3 and manifest["renumbered_from"] == 1
    # the same checkpoint packs to the same bytes (no times or owners in the archive)
    again = store.publish(tmp_path / "a")
    assert again.version == 4 and again.size == first.size
    assert json.loads((tmp_path / "hub" / "trunks" / CURRENT_FILE).read_text())["version"] == 4


def test_a_missing_or_corrupted_checkpoint_is_refused_and_nothing_is_published(tmp_path):
    store = TrunkStore(tmp_path / "hub")
    good = store.publish(small_checkpoint(tmp_path / "good", trunk_version=1))
    with pytest.raises(TrunkStoreError, match="no such checkpoint"):
        store.publish(tmp_path / "nowhere")
    bad = small_checkpoint(tmp_path / "bad", trunk_version=5)
    (bad / "trunk.safetensors").write_bytes(b"not weights")
    with pytest.raises(TrunkStoreError, match="corrupted"):
        store.publish(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrunkStoreError, match="no manifest.json"):
        store.publish(tmp_path / "empty")
    assert store.versions() == [1] and store.current() == good


def test_unpacking_refuses_members_outside_the_directory_and_links(tmp_path):
    for name, kind in (("../escaped", tarfile.REGTYPE), ("/abs", tarfile.REGTYPE), ("link", tarfile.SYMTYPE)):
        archive = tmp_path / "evil.tar"
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "/etc/passwd"
            tar.addfile(info, io.BytesIO(b""))
        with pytest.raises(TrunkArchiveError, match="not a plain relative file"):
            unpack_trunk(archive, tmp_path / "out")
        assert not (tmp_path / "out").exists() and not (tmp_path / "escaped").exists()


@pytest.mark.timeout(120)
def test_fleet_hub_publish_prints_the_version_and_refuses_a_bad_checkpoint_with_exit_1(tmp_path):
    ckpt = small_checkpoint(tmp_path / "ckpt", trunk_version=1)
    run = [str(BIN / "fleet-hub"), "publish"]
    ok = subprocess.run([*run, str(ckpt), str(tmp_path / "hub")], capture_output=True, text=True, timeout=100)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("published trunk v1: ")
    (ckpt / "hardware" / "cartpole.safetensors").write_bytes(b"broken")
    bad = subprocess.run([*run, str(ckpt), str(tmp_path / "hub")], capture_output=True, text=True, timeout=100)
    assert bad.returncode == 1 and "refused" in bad.stderr and "corrupted" in bad.stderr
    usage = subprocess.run(run, capture_output=True, text=True, timeout=100)
    assert usage.returncode == 2 and "usage: fleet-hub publish CHECKPOINT [STORAGE_DIR]" in usage.stderr
    assert TrunkStore(tmp_path / "hub").versions() == [1]
