"""The hub's trunk store: numbered trunk versions, kept forever, and which one is current.

    <storage_dir>/trunks/v000003.tar     the trunk (fleet/trunk_archive.py: a packed checkpoint), never rewritten
    <storage_dir>/trunks/v000003.json    its size, sha256, source and publication time
    <storage_dir>/trunks/CURRENT         {"version": 3, "size": ..., "sha256": ...}: what the hub announces

``publish`` (run by ``fleet-hub publish``, a process of its own, while the hub runs) verifies the checkpoint,
packs it as the next version, writes each file to a hidden temp name, fsyncs it, renames it into place and
fsyncs the directory, and only then replaces CURRENT the same way: a crash leaves the old current version or the
new one, never a torn file. Publishers take a lock, so two never pick the same number. A version's number is
one more than the newest stored, or the checkpoint's own ``trunk_version`` when that is larger (a learner's
numbering is kept); the packed manifest carries the number, so robots, their experience and their adapters
name the same version the hub does.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from fleet.trunk_archive import pack_checkpoint
from shared_policy.durable import fsync_dir, write_atomic

TRUNKS_DIR, CURRENT_FILE, LOCK_FILE = "trunks", "CURRENT", ".publish.lock"
_VERSION_FILE = re.compile(r"v(\d{6,})\.(tar|json)")


class TrunkStoreError(RuntimeError):
    """A trunk cannot be published or read (bad checkpoint, damaged store file)."""


@dataclass(frozen=True)
class TrunkVersion:
    """One stored trunk version."""

    version: int
    size: int
    sha256: str
    path: str  # the archive (where the store is now)
    published: float = 0.0  # Unix seconds
    source: str = ""  # the checkpoint directory it was packed from
    source_trunk_version: int = 0  # that checkpoint's own trunk_version


def file_sha256(path: str | Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            h.update(data)
    return h.hexdigest()


class TrunkStore:
    """Numbered, checksummed, never-overwritten trunk versions under ``<storage_dir>/trunks`` (module docstring)."""

    def __init__(self, storage_dir: str | Path):
        self.dir = Path(storage_dir) / TRUNKS_DIR

    def _name(self, version: int, ext: str) -> Path:
        return self.dir / f"v{version:06d}.{ext}"

    def versions(self) -> list[int]:
        """Every version number in use (a version whose publication crashed half way still holds its number)."""
        if not self.dir.is_dir():
            return []
        return sorted({int(m[1]) for p in self.dir.iterdir() if (m := _VERSION_FILE.fullmatch(p.name))})

    def get(self, version: int) -> TrunkVersion:
        """A stored version's record; TrunkStoreError if it is not (completely) stored."""
        meta, archive = self._name(version, "json"), self._name(version, "tar")
        try:
            rec = TrunkVersion(**{**json.loads(meta.read_text()), "path": str(archive)})  # the store may have moved
        except FileNotFoundError:
            raise TrunkStoreError(f"trunk v{version} is not in {self.dir}") from None
        except (OSError, ValueError, TypeError) as exc:
            raise TrunkStoreError(f"{meta}: unreadable trunk record ({exc})") from None
        try:
            size = archive.stat().st_size
        except FileNotFoundError:
            raise TrunkStoreError(f"trunk v{version}: {archive} is missing") from None
        if size != rec.size or rec.version != version:
            raise TrunkStoreError(f"trunk v{version}: {archive} has {size} bytes, its record says {rec.size}")
        return rec

    def current(self) -> TrunkVersion | None:
        """The version CURRENT names (None before the first publication); TrunkStoreError if it is damaged."""
        try:
            data = json.loads((self.dir / CURRENT_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise TrunkStoreError(f"{self.dir / CURRENT_FILE}: unreadable ({exc})") from None
        if not isinstance(data, dict) or type(data.get("version")) is not int:
            raise TrunkStoreError(f"{self.dir / CURRENT_FILE}: no version in it")
        rec = self.get(data["version"])
        if data.get("sha256") != rec.sha256:
            raise TrunkStoreError(f"{self.dir / CURRENT_FILE}: names v{rec.version} with another sha256")
        return rec

    def current_stamp(self) -> tuple[int, int, int] | None:
        """(inode, mtime_ns, size) of CURRENT, or None: a cheap way to see it changed (the hub polls this)."""
        try:
            st = (self.dir / CURRENT_FILE).stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def publish(self, checkpoint: str | Path) -> TrunkVersion:
        """Verify the checkpoint directory ``checkpoint``, store it as the next version and make that current.
        TrunkStoreError saying what is wrong with a missing or damaged checkpoint (nothing is stored then)."""
        src = Path(checkpoint)
        if not src.is_dir():
            raise TrunkStoreError(f"{src}: no such checkpoint directory")
        # imported here, not at the top: the hub imports this module and never loads torch
        from shared_policy.checkpoint import CheckpointError, load_checkpoint

        try:
            _, manifest = load_checkpoint(src)  # every digest, and the weights fit the manifest's policy
            source_version = int(manifest["trunk_version"])
        except (CheckpointError, OSError, ValueError, KeyError, TypeError) as exc:
            raise TrunkStoreError(f"{src}: not a valid checkpoint: {exc}") from exc
        with self._locked():
            used = self.versions()
            version = max(used[-1] + 1 if used else 1, source_version)
            tmp = self.dir / f".v{version:06d}.tar.tmp"
            try:
                pack_checkpoint(src, tmp, version)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                rec = TrunkVersion(version, tmp.stat().st_size, file_sha256(tmp), str(self._name(version, "tar")),
                                   time.time(), str(src.resolve()), source_version)
                os.rename(tmp, rec.path)
            except (CheckpointError, OSError, KeyError) as exc:
                tmp.unlink(missing_ok=True)
                raise TrunkStoreError(f"{src}: could not store it as trunk v{version}: {exc}") from exc
            fsync_dir(self.dir)
            write_atomic(self._name(version, "json"), json.dumps(asdict(rec), indent=1).encode())
            write_atomic(self.dir / CURRENT_FILE, json.dumps({"version": version, "size": rec.size,
                                                              "sha256": rec.sha256}).encode())
        return rec
