"""The hub's side of trunk distribution: notice a newly published trunk, verify it, serve it in pieces.

The hub loop calls :meth:`TrunkService.poll` about once a second. When ``trunks/CURRENT`` changed (``fleet-hub
publish`` ran), a thread re-reads the whole archive and checks its sha256 against its record, off the loop, so
ingest never waits on a large file; once it matches, ``poll`` returns the version for the loop to announce. A
version whose archive fails its digest is refused, logged, and never served: the previous one stays current.

:meth:`fetch` answers a TRUNK_FETCH with one piece of at most ``piece_bytes``, read with ``pread`` from an open
file (never the whole trunk), its own sha256 and the whole trunk's. The current version and the one before it
are served (a robot part way through the older one finishes its piece in flight and then follows the notice).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading

from fleet.protocol import ErrorCode, ProtocolError, TrunkData, TrunkFetch, TrunkNotice
from fleet.trunk_store import TrunkStore, TrunkStoreError, TrunkVersion, file_sha256

log = logging.getLogger(__name__)

SERVED_VERSIONS = 2  # the current one and the one before it


class TrunkService:
    """Which trunk is current, verified, and the pieces of it robots fetch (module docstring)."""

    def __init__(self, store: TrunkStore, piece_bytes: int):
        self.store, self.piece_bytes = store, piece_bytes
        self.current: TrunkVersion | None = None
        self.refused: dict[int, str] = {}  # version -> why it is not served
        self.pieces_served = self.bytes_served = 0
        self._open: dict[int, tuple[TrunkVersion, int]] = {}  # version -> (record, fd), newest last
        self._stamp: tuple[int, int, int] | None = None
        self._checking: threading.Thread | None = None
        self._checked: TrunkVersion | None = None  # handed from the checking thread to poll()
        self._lock = threading.Lock()

    # -- which version is current ----------------------------------------------------------------------------
    def poll(self) -> TrunkVersion | None:
        """Call from the hub loop: the newly current version once it is verified (announce it), else None."""
        with self._lock:
            checked, self._checked = self._checked, None
        if checked is not None and (self.current is None or checked.version != self.current.version):
            return self._make_current(checked)
        stamp = self.store.current_stamp()
        if stamp != self._stamp and (self._checking is None or not self._checking.is_alive()):
            self._stamp = stamp
            if stamp is not None:
                self._checking = threading.Thread(target=self._check, name="trunk-check", daemon=True)
                self._checking.start()
        return None

    def _check(self) -> None:
        try:
            rec = self.store.current()
        except TrunkStoreError as exc:
            log.error("trunk store: %s", exc)
            return
        if rec is None or rec.version == self.version or rec.version in self.refused:
            return
        try:
            actual = file_sha256(rec.path)
        except OSError as exc:
            actual = f"unreadable ({exc})"
        if actual != rec.sha256:
            self.refused[rec.version] = (f"{rec.path} has sha256 {actual[:12]}..., its record says "
                                         f"{rec.sha256[:12]}...")
            log.error("trunk v%d refused, not served: %s", rec.version, self.refused[rec.version])
            return
        with self._lock:
            self._checked = rec

    def _make_current(self, rec: TrunkVersion) -> TrunkVersion | None:
        try:
            fd = os.open(rec.path, os.O_RDONLY)
        except OSError as exc:
            self.refused[rec.version] = str(exc)
            log.error("trunk v%d cannot be opened: %s", rec.version, exc)
            return None
        self._open[rec.version] = (rec, fd)
        while len(self._open) > SERVED_VERSIONS:
            os.close(self._open.pop(next(iter(self._open)))[1])
        self.current = rec
        log.info("trunk v%d is current (%d bytes, sha256 %s...)", rec.version, rec.size, rec.sha256[:12])
        return rec

    def notice(self, robot_id: str, seq: int) -> TrunkNotice | None:
        """The notice of the current version for one robot, or None before there is one."""
        c = self.current
        return None if c is None else TrunkNotice(robot_id=robot_id, seq=seq, trunk_version=c.version, size=c.size,
                                                  sha256=c.sha256)

    @property
    def version(self) -> int:
        """The current version's number, 0 before there is one (what WELCOME and heartbeats carry)."""
        return self.current.version if self.current is not None else 0

    # -- serving ---------------------------------------------------------------------------------------------
    def fetch(self, msg: TrunkFetch, seq: int) -> TrunkData:
        """The piece ``msg`` asks for (at most ``piece_bytes``); ProtocolError UNKNOWN_TRUNK or BAD_RANGE."""
        held = self._open.get(msg.trunk_version)
        if held is None:
            have = f"v{self.current.version} is current" if self.current else "no trunk is published"
            raise ProtocolError(ErrorCode.UNKNOWN_TRUNK, f"trunk v{msg.trunk_version} is not served ({have})")
        rec, fd = held
        if msg.offset >= rec.size:
            raise ProtocolError(ErrorCode.BAD_RANGE, f"trunk v{rec.version}: offset {msg.offset} is not below its "
                                f"size of {rec.size} bytes")
        data = os.pread(fd, min(msg.length, self.piece_bytes, rec.size - msg.offset), msg.offset)
        self.pieces_served += 1
        self.bytes_served += len(data)
        return TrunkData(robot_id=msg.robot_id, seq=seq, trunk_version=rec.version, offset=msg.offset,
                         total_size=rec.size, sha256=rec.sha256, size=len(data),
                         piece_sha256=hashlib.sha256(data).hexdigest(), data=data)

    def close(self) -> None:
        """Close the open trunk files (the checking thread is a daemon and only reads)."""
        for _, fd in self._open.values():
            os.close(fd)
        self._open.clear()
