"""The hub's side of trunk distribution: notice a newly published (or candidate, or rolled-back-to) trunk,
verify it, serve it in pieces.

The hub loop calls :meth:`TrunkService.poll` about once a second. When ``trunks/CURRENT`` or
``trunks/CANDIDATE`` changed (``fleet-hub publish`` / ``rollback``, or the hub's own roll-out), a thread
re-reads each newly named archive (and the per-robot archives packed with rebased adapters) and checks its
sha256 against its record, off the loop, so ingest never waits on a large file; once they match, ``poll``
returns True for the loop to announce. A version whose archive fails its digest is refused, logged, and never
served: the previous current one stays current, and a refused candidate is no candidate.

:meth:`fetch` answers a TRUNK_FETCH with one piece of at most ``piece_bytes``, read with ``pread`` (never the
whole trunk), its own sha256 and the whole trunk's. Served: the current version, the candidate, and the version
current before (a robot part way through it finishes its piece in flight and then follows the notice). A robot
for which the version was packed with its rebased adapter gets that archive (its own size and sha256 in its
notice) instead of the plain one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading

from fleet.protocol import ErrorCode, ProtocolError, TrunkData, TrunkFetch, TrunkNotice
from fleet.trunk_store import TrunkStore, TrunkStoreError, TrunkVersion, file_sha256

log = logging.getLogger(__name__)


class TrunkService:
    """Which trunk is current and which is on trial, verified, and the pieces robots fetch (module docstring)."""

    def __init__(self, store: TrunkStore, piece_bytes: int):
        self.store, self.piece_bytes = store, piece_bytes
        self.current: TrunkVersion | None = None
        self.candidate: TrunkVersion | None = None
        self.before: int = 0  # the version current before this one (still served)
        self.held: set[int] = set()  # versions robots are held back on (fleet/unit_watch.py): served too
        self.refused: dict[int, str] = {}  # version -> why it is not served
        self.pieces_served = self.bytes_served = 0
        self._fds: dict[str, int] = {}  # archive path -> open fd
        self._robot_recs: dict[tuple[int, str], TrunkVersion | None] = {}
        self._plain: dict[int, TrunkVersion] = {}  # the version before and held ones, read once (not per piece)
        self._stamp: tuple | None = None
        self._checking: threading.Thread | None = None
        self._checked: tuple[TrunkVersion | None, TrunkVersion | None] | None = None  # from the checking thread
        self._verified: set[int] = set()
        self._lock = threading.Lock()

    # -- which versions are current and on trial -------------------------------------------------------------
    def poll(self) -> bool:
        """Call from the hub loop: True once a change of CURRENT or CANDIDATE is verified (announce it)."""
        with self._lock:
            checked, self._checked = self._checked, None
        if checked is not None:
            return self._adopt(*checked)
        stamp = self.store.stamp()
        if stamp != self._stamp and (self._checking is None or not self._checking.is_alive()):
            self._stamp = stamp
            self._checking = threading.Thread(target=self._check, name="trunk-check", daemon=True)
            self._checking.start()
        return False

    def _check(self) -> None:
        try:
            current, candidate = self.store.current(), self.store.candidate()
        except TrunkStoreError as exc:
            log.error("trunk store: %s", exc)
            return
        current = current if current is None or self._verify(current) else self.current
        candidate = candidate if candidate is None or self._verify(candidate) else None
        with self._lock:
            self._checked = (current, candidate)

    def _verify(self, rec: TrunkVersion) -> bool:
        if rec.version in self._verified:
            return True
        if rec.version in self.refused:
            return False
        try:
            robots = [r for p in sorted(self.store.dir.glob(f"v{rec.version:06d}.robots/*.json"))
                      if (r := self.store.robot_archive(rec.version, p.stem)) is not None]
        except TrunkStoreError as exc:  # an unreadable robot record: refuse the version (the check thread lives on)
            self.refused[rec.version] = str(exc)
            log.error("trunk v%d refused, not served: %s", rec.version, exc)
            return False
        for r in (rec, *robots):
            try:
                actual = file_sha256(r.path)
            except OSError as exc:
                actual = f"unreadable ({exc})"
            if actual != r.sha256:
                self.refused[rec.version] = f"{r.path} has sha256 {actual[:12]}..., its record says {r.sha256[:12]}..."
                log.error("trunk v%d refused, not served: %s", rec.version, self.refused[rec.version])
                return False
        self._verified.add(rec.version)
        return True

    def _adopt(self, current: TrunkVersion | None, candidate: TrunkVersion | None) -> bool:
        changed = (self.version, self.candidate_version) != (current.version if current else 0,
                                                            candidate.version if candidate else 0)
        if current is not None and self.current is not None and current.version != self.current.version:
            self.before = self.current.version
        self.current, self.candidate = current, candidate
        served = self.served()
        for path in [p for p in self._fds if _version_of(p) not in served]:
            os.close(self._fds.pop(path))
        self._robot_recs = {k: v for k, v in self._robot_recs.items() if k[0] in served}
        self._plain = {k: v for k, v in self._plain.items() if k in served}
        if changed:
            log.info("trunk v%d is current%s", self.version,
                     f", v{self.candidate_version} on trial" if candidate else "")
        return changed

    def served(self) -> set[int]:
        """The versions robots may be told to run and fetch."""
        return {self.version, self.candidate_version, self.before, *self.held} - {0}

    @property
    def version(self) -> int:
        """The current version's number, 0 before there is one."""
        return self.current.version if self.current is not None else 0

    @property
    def candidate_version(self) -> int:
        """The candidate's number, 0 when none is on trial."""
        return self.candidate.version if self.candidate is not None else 0

    def record_for(self, version: int, robot_id: str) -> TrunkVersion | None:
        """The archive ``robot_id`` gets for ``version`` (its own, with its rebased adapter, if one was packed);
        None if the version is not served."""
        if version not in self.served():
            return None
        key = (version, robot_id)
        if key not in self._robot_recs:
            try:
                self._robot_recs[key] = self.store.robot_archive(version, robot_id)
            except TrunkStoreError as exc:
                log.error("trunk v%d for %s: %s", version, robot_id, exc)
                self._robot_recs[key] = None
        own = self._robot_recs[key]
        if own is not None:
            return own
        for rec in (self.current, self.candidate):
            if rec is not None and rec.version == version:
                return rec
        if version not in self._plain:
            try:
                self._plain[version] = self.store.get(version)  # the one before, or one robots are held on
            except TrunkStoreError:
                return None
        return self._plain[version]

    def notice(self, robot_id: str, seq: int, version: int) -> TrunkNotice | None:
        """The notice telling ``robot_id`` to run ``version``, or None when it is not served."""
        rec = self.record_for(version, robot_id)
        return None if rec is None else TrunkNotice(robot_id=robot_id, seq=seq, trunk_version=rec.version,
                                                    size=rec.size, sha256=rec.sha256)

    # -- serving ---------------------------------------------------------------------------------------------
    def fetch(self, msg: TrunkFetch, seq: int) -> TrunkData:
        """The piece ``msg`` asks for (at most ``piece_bytes``); ProtocolError UNKNOWN_TRUNK or BAD_RANGE."""
        rec = self.record_for(msg.trunk_version, msg.robot_id)
        fd = self._fds.get(rec.path) if rec is not None else None
        if rec is not None and fd is None:
            try:
                fd = self._fds[rec.path] = os.open(rec.path, os.O_RDONLY)
            except OSError as exc:
                log.error("trunk v%d: %s", rec.version, exc)
                rec = None
        if rec is None or fd is None:
            have = f"v{self.version} is current" if self.current else "no trunk is published"
            raise ProtocolError(ErrorCode.UNKNOWN_TRUNK, f"trunk v{msg.trunk_version} is not served ({have})")
        if msg.offset >= rec.size:
            raise ProtocolError(ErrorCode.BAD_RANGE, f"trunk v{rec.version}: offset {msg.offset} is not below its "
                                f"size of {rec.size} bytes")
        try:
            data = os.pread(fd, min(msg.length, self.piece_bytes, rec.size - msg.offset), msg.offset)
        except OSError as exc:  # a failing disk answers this robot with an error; the loop goes on
            raise ProtocolError(ErrorCode.STORAGE_FAILED, f"trunk v{rec.version}: read failed: {exc}") from exc
        self.pieces_served += 1
        self.bytes_served += len(data)
        return TrunkData(robot_id=msg.robot_id, seq=seq, trunk_version=rec.version, offset=msg.offset,
                         total_size=rec.size, sha256=rec.sha256, size=len(data),
                         piece_sha256=hashlib.sha256(data).hexdigest(), data=data)

    def close(self) -> None:
        """Close the open trunk files (the checking thread is a daemon and only reads)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _version_of(path: str) -> int:
    """The version of an archive path (``.../v000003.tar`` or ``.../v000003.robots/<robot>.tar``)."""
    for part in reversed(path.split(os.sep)):
        if part.startswith("v") and part[1:7].isdigit():
            return int(part[1:].split(".")[0])
    return 0
