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


# Run in a child process: it spends every file descriptor it may open but one (RLIMIT_NOFILE), so the archive opens
# and its first member cannot be written (EMFILE, a local error that clears), then unpacks again with them back.
_OUT_OF_FILES = """
import json, os, resource, shutil, sys
from fleet.trunk_archive import TrunkArchiveError, unpack_trunk
import shared_policy.checkpoint  # imported before the descriptors run out

archive, dest = sys.argv[1], sys.argv[2]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
spent = []
try:
    while True:
        spent.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    os.close(spent.pop())  # one left: the archive's
try:
    unpack_trunk(archive, dest)
    first = {"raised": None}
except TrunkArchiveError as exc:
    first = {"raised": "TrunkArchiveError", "text": str(exc)}
except OSError as exc:
    first = {"raised": "OSError", "errno": exc.errno}
for fd in spent:
    os.close(fd)
shutil.rmtree(dest, ignore_errors=True)  # as the downloader clears its staging directory before a retry
print(json.dumps({"first": first, "retried": unpack_trunk(archive, dest)["trunk_version"]}))
"""


@pytest.mark.timeout(120)
def test_a_local_error_while_unpacking_is_raised_for_a_retry_not_blamed_on_the_archive(tmp_path):
    import errno
    import os
    import sys

    from fleet.trunk_archive import pack_checkpoint

    archive = tmp_path / "v7.tar"
    pack_checkpoint(small_checkpoint(tmp_path / "ckpt", trunk_version=7), archive)
    run = subprocess.run([sys.executable, "-c", _OUT_OF_FILES, str(archive), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=100, env={**os.environ})
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["first"] == {"raised": "OSError", "errno": errno.EMFILE}, result
    assert result["retried"] == 7  # the same archive unpacks whole once the descriptors are back


def _rewritten(good, out, change) -> None:
    """Copy the archive ``good`` to ``out`` member by member, ``change(name, data)`` giving each member's bytes."""
    with tarfile.open(good) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            data = change(m.name, src.extractfile(m).read())
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))


def test_a_damaged_or_malformed_archive_is_refused_as_the_archive_s_fault(tmp_path):
    from fleet.trunk_archive import MANIFEST, pack_checkpoint

    good = tmp_path / "good.tar"
    pack_checkpoint(small_checkpoint(tmp_path / "ckpt", trunk_version=1), good)
    bad = tmp_path / "bad.tar"
    bad.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])  # cut short
    with pytest.raises(TrunkArchiveError, match="not a readable trunk archive"):
        unpack_trunk(bad, tmp_path / "out")
    _rewritten(good, bad, lambda name, data: data if name == MANIFEST else data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(TrunkArchiveError, match="corrupted"):  # a file that fails its sha256
        unpack_trunk(bad, tmp_path / "out")
    with tarfile.open(bad, "w") as tar:  # a member under a file: no disk could hold it
        for name in (MANIFEST, f"{MANIFEST}/inside"):
            tar.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    with pytest.raises(TrunkArchiveError, match="lies under a file"):
        unpack_trunk(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _archive(path, members) -> None:
    """An archive of empty members, each (name, is_directory)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, is_dir in members:
            info = tarfile.TarInfo(name)
            if is_dir:
                info.type = tarfile.DIRTYPE
            tar.addfile(info, None if is_dir else io.BytesIO(b""))


@pytest.mark.parametrize("dir_first", [True, False])
def test_a_name_that_is_both_a_file_and_a_directory_is_the_archive_s_fault_not_retried(tmp_path, dir_first):
    from fleet.trunk_archive import MANIFEST

    bad = tmp_path / "bad.tar"
    pair = [("weights", True), ("weights", False)]
    _archive(bad, [(MANIFEST, False), *(pair if dir_first else pair[::-1])])
    with pytest.raises(TrunkArchiveError, match="both a file and a directory"):  # not IsADirectoryError: an OSError
        unpack_trunk(bad, tmp_path / "out")  # is retried as the computer's fault, forever
    assert not (tmp_path / "out").exists()


def test_a_member_path_longer_than_path_max_is_the_archive_s_fault_not_retried(tmp_path):
    from fleet.trunk_archive import MANIFEST

    bad = tmp_path / "bad.tar"
    deep = "/".join(["d" * 200] * 21) + "/weights"  # every part under 255 bytes, the whole over 4096
    _archive(bad, [(MANIFEST, False), (deep, False)])
    with pytest.raises(TrunkArchiveError, match="longer than"):  # not ENAMETOOLONG, retried forever
        unpack_trunk(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_packed_adapter_is_read_only_when_the_archive_and_the_adapter_pass_their_digests(tmp_path):
    from fleet.trunk_archive import REBASED_ADAPTER, pack_checkpoint, read_packed_adapter

    ckpt = small_checkpoint(tmp_path / "ckpt", 1)
    (tmp_path / "a.safetensors").write_bytes(b"adapter bytes" * 100)
    good = tmp_path / "good.tar"
    pack_checkpoint(ckpt, good, adapter=("unit-0", tmp_path / "a.safetensors"))
    assert read_packed_adapter(good, file_sha256(good)) == b"adapter bytes" * 100
    with pytest.raises(TrunkArchiveError, match="does not match the sha256 its record names"):
        read_packed_adapter(good, "0" * 64)
    bare = tmp_path / "bare.tar"
    pack_checkpoint(ckpt, bare)
    with pytest.raises(TrunkArchiveError, match="packs no rebased adapter"):
        read_packed_adapter(bare, file_sha256(bare))
    swapped = tmp_path / "swapped.tar"  # the same manifest, another adapter: the archive's record would match it
    with tarfile.open(good) as src, tarfile.open(swapped, "w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name == REBASED_ADAPTER:
                data = b"other bytes!!" * 100
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    with pytest.raises(TrunkArchiveError, match="fails its sha256"):
        read_packed_adapter(swapped, file_sha256(swapped))
