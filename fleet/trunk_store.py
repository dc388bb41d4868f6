"""The hub's trunk store: numbered trunk versions, kept forever, and which one is current.

    <storage_dir>/trunks/v000003.tar     the trunk (fleet/trunk_archive.py: a packed checkpoint), never rewritten
    <storage_dir>/trunks/v000003.json    its size, sha256, source and publication time
    <storage_dir>/trunks/CURRENT         {"version": 3, "size": ..., "sha256": ...}: what the hub announces
    <storage_dir>/trunks/CANDIDATE       the same for a version on trial with the canaries (fleet/rollout.py)
    <storage_dir>/trunks/v000003.robots/<robot_id>.tar|.json   the trunk packed with that robot's rebased adapter
    <storage_dir>/trunks/rollout.jsonl   every roll-out step, appended and fsynced (fleet/rollout_log.py)

``publish`` (run by ``fleet-hub publish``, a process of its own, while the hub runs) verifies the checkpoint,
packs it as the next version, writes each file to a hidden temp name, fsyncs it, renames it into place and
fsyncs the directory, and only then replaces CURRENT the same way: a crash leaves the old current version or the
new one, never a torn file. Publishers take a lock, so two never pick the same number. A version's number is
one more than the newest stored, or the checkpoint's own ``trunk_version`` when that is larger (a learner's
numbering is kept); the packed manifest carries the number, so robots, their experience and their adapters
name the same version the hub does.

``publish(..., candidate=True)`` writes CANDIDATE instead of CURRENT: the running hub gives it to its canaries
first and promotes it (CURRENT := CANDIDATE) or drops it. ``rollback(N)`` makes a stored, verified version
current and drops any candidate. ``publish(..., adapters=DIR)`` packs, per ``DIR/<robot_id>.safetensors``, an
archive of the trunk plus that robot's rebased adapter (fleet.trunk_archive.REBASED_ADAPTER), which the hub serves to that robot
instead of the plain archive, so trunk and adapter travel and install as one.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from fleet.trunk_archive import file_sha256, pack_checkpoint
from shared_policy.durable import fsync_dir, write_atomic

TRUNKS_DIR, CURRENT_FILE, CANDIDATE_FILE, LOCK_FILE = "trunks", "CURRENT", "CANDIDATE", ".publish.lock"
_VERSION_FILE = re.compile(r"v(\d{6,})\.(tar|json)")
_ROBOT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # fleet.store.NAME (not imported: that pulls sqlite)


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

    def _pointer(self, name: str) -> TrunkVersion | None:
        try:
            data = json.loads((self.dir / name).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise TrunkStoreError(f"{self.dir / name}: unreadable ({exc})") from None
        if not isinstance(data, dict) or type(data.get("version")) is not int:
            raise TrunkStoreError(f"{self.dir / name}: no version in it")
        rec = self.get(data["version"])
        if data.get("sha256") != rec.sha256:
            raise TrunkStoreError(f"{self.dir / name}: names v{rec.version} with another sha256")
        return rec

    def current(self) -> TrunkVersion | None:
        """The version CURRENT names (None before the first publication); TrunkStoreError if it is damaged."""
        return self._pointer(CURRENT_FILE)

    def candidate(self) -> TrunkVersion | None:
        """The version CANDIDATE names (on trial with the canaries), or None."""
        return self._pointer(CANDIDATE_FILE)

    def robot_archive(self, version: int, robot_id: str) -> TrunkVersion | None:
        """Version ``version`` packed with ``robot_id``'s rebased adapter, or None if it was published without."""
        meta = self.dir / f"v{version:06d}.robots" / f"{robot_id}.json"
        try:
            rec = TrunkVersion(**{**json.loads(meta.read_text()), "path": str(meta.with_suffix(".tar"))})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise TrunkStoreError(f"{meta}: unreadable trunk record ({exc})") from None
        return rec

    def stamp(self) -> tuple:
        """(inode, mtime_ns, size) of CURRENT and of CANDIDATE (None where absent): a cheap way to see either
        changed (the hub polls this)."""
        out = []
        for name in (CURRENT_FILE, CANDIDATE_FILE):
            try:
                st = (self.dir / name).stat()
                out.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _point(self, name: str, rec: TrunkVersion | None) -> None:
        if rec is None:
            (self.dir / name).unlink(missing_ok=True)
            fsync_dir(self.dir)
            return
        write_atomic(self.dir / name, json.dumps({"version": rec.version, "size": rec.size,
                                                  "sha256": rec.sha256}).encode())

    def publish(self, checkpoint: str | Path, candidate: bool = False, adapters: str | Path | None = None,
                expected_version: int | None = None) -> TrunkVersion:
        """Verify the checkpoint directory ``checkpoint``, store it as the next version and make that current
        (``candidate``: the candidate, while CURRENT stays). ``adapters``: a directory of rebased adapters,
        ``<robot_id>.safetensors``, each packed with the trunk for its robot (module docstring).
        TrunkStoreError saying what is wrong (nothing is made current or candidate then)."""
        src = Path(checkpoint)
        if not src.is_dir():
            raise TrunkStoreError(f"{src}: no such checkpoint directory")
        # imported here, not at the top: the hub imports this module and never loads torch
        from shared_policy.checkpoint import CheckpointError, load_checkpoint

        try:
            policy, manifest = load_checkpoint(src)  # every digest, and the weights fit the manifest's policy
            source_version = int(manifest["trunk_version"])
        except (CheckpointError, OSError, ValueError, KeyError, TypeError) as exc:
            raise TrunkStoreError(f"{src}: not a valid checkpoint: {exc}") from exc
        rebased = _rebased_adapters(Path(adapters), policy) if adapters is not None else {}
        with self._locked():
            if candidate and self.current() is None:
                raise TrunkStoreError("a candidate needs a current version to be compared with: publish the first "
                                      "trunk without --canary")
            used = self.versions()
            version = max(used[-1] + 1 if used else 1, source_version)
            if expected_version is not None and version != expected_version:
                raise TrunkStoreError(f"{src}: would be stored as v{version}, not the expected v{expected_version} "
                                      "(another publisher ran meanwhile); nothing published")
            rec = self._store_archive(src, version, self._name(version, "tar"), source_version)
            for robot, adapter_file in rebased.items():
                robots = self.dir / f"v{version:06d}.robots"
                robots.mkdir(exist_ok=True)
                r = self._store_archive(src, version, robots / f"{robot}.tar", source_version, (robot, adapter_file))
                write_atomic(robots / f"{robot}.json", json.dumps(asdict(r), indent=1).encode())
            write_atomic(self._name(version, "json"), json.dumps(asdict(rec), indent=1).encode())
            self._point(CANDIDATE_FILE if candidate else CURRENT_FILE, rec)
            if not candidate:
                self._point(CANDIDATE_FILE, None)  # a plain publication ends any trial
        return rec

    def _store_archive(self, src: Path, version: int, path: Path, source_version: int,
                       adapter: tuple[str, Path] | None = None) -> TrunkVersion:
        from shared_policy.checkpoint import CheckpointError

        tmp = path.with_name(f".{path.name}.tmp")
        try:
            pack_checkpoint(src, tmp, version, adapter)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            rec = TrunkVersion(version, tmp.stat().st_size, file_sha256(tmp), str(path), time.time(),
                               str(src.resolve()), source_version)
            os.rename(tmp, path)
        except (CheckpointError, OSError, KeyError) as exc:
            tmp.unlink(missing_ok=True)
            raise TrunkStoreError(f"{src}: could not store it as trunk v{version}: {exc}") from exc
        fsync_dir(path.parent)
        return rec

    def verified(self, version: int) -> TrunkVersion:
        """A stored version whose archive still matches its recorded sha256; TrunkStoreError otherwise."""
        rec = self.get(version)
        actual = file_sha256(rec.path)
        if actual != rec.sha256:
            raise TrunkStoreError(f"trunk v{version}: {rec.path} has sha256 {actual[:12]}..., its record says "
                                  f"{rec.sha256[:12]}...")
        return rec

    def rollback(self, version: int) -> tuple[TrunkVersion, TrunkVersion | None]:
        """Make stored version ``version`` current (verified first) and drop any candidate; returns it and the
        candidate that was dropped."""
        rec = self.verified(version)
        with self._locked():
            dropped = self.candidate()
            self._point(CURRENT_FILE, rec)
            self._point(CANDIDATE_FILE, None)
        return rec, dropped

    def end_trial(self, version: int, promote: bool) -> bool:
        """The hub's verdict on candidate ``version``: promote it (CURRENT := it) or drop it. False, and nothing
        changed, if CANDIDATE no longer names it (an operator got there first)."""
        with self._locked():
            cand = self.candidate()
            if cand is None or cand.version != version:
                return False
            if promote:
                self._point(CURRENT_FILE, cand)
            self._point(CANDIDATE_FILE, None)
        return True


def _rebased_adapters(directory: Path, policy: object) -> dict[str, Path]:
    """robot_id -> adapter file of every ``<robot_id>.safetensors`` in ``directory``, each checked to load onto
    ``policy`` (its hardware's layers, its shapes, its digest); TrunkStoreError naming a bad one."""
    from shared_policy.adapter import AdapterFileError, adapter_file_metadata, load_adapter

    if not directory.is_dir():
        raise TrunkStoreError(f"--adapters {directory}: no such directory")
    out = {}
    for path in sorted(directory.glob("*.safetensors")):
        if not _ROBOT_ID.fullmatch(path.stem):
            raise TrunkStoreError(f"{path}: {path.stem!r} is not a robot id")
        try:
            load_adapter(path, policy, adapter_file_metadata(path).get("hardware", "?"))
        except AdapterFileError as exc:
            raise TrunkStoreError(f"{path}: rebased adapter refused: {exc}") from exc
        out[path.stem] = path
    if not out:
        raise TrunkStoreError(f"--adapters {directory}: no <robot_id>.safetensors files in it")
    return out
