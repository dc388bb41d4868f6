"""The uplink's trunk download: fetch an announced trunk in pieces, resumably, check it, install it atomically.

A TRUNK_NOTICE names the version the hub wants this robot to run: newer (a publication or a canary trial) or
older (a candidate rolled back, ``fleet-hub rollback``). The download records it durably in
``<trunk_dir>/WANTED`` once that version is installed there, and the agent's TrunkWatcher swaps to what WANTED
names (without a WANTED file, to the newest trunk it finds). A version already installed is not fetched again;
one that is not is downloaded: pieces are asked for with TRUNK_FETCH, at most ``window`` unanswered at once (and within ``max_bytes_per_s`` if set), and
appended in order to a partial file inside ``trunk_dir``:

    <trunk_dir>/.trunk-v000007-<sha256 prefix>.partial     hidden: the TrunkWatcher skips names starting with '.'

Each piece was checked against its own sha256 when it was decoded. After a reconnect, a hub restart, or an agent
restart, the download resumes from the partial file's length (the whole-file hash is rebuilt from it). When the
file is complete its sha256 must be the notice's: then it is unpacked into a hidden directory (every file
fsynced, every digest of its manifest checked), renamed to ``<trunk_dir>/trunk-v000007`` and the directory
fsynced, and the agent's TrunkWatcher hot-swaps it between episodes. A digest mismatch discards the partial file
and starts over, logged as an error; after ``max_failures`` the version is given up until a newer one is
announced. A local error while unpacking a verified file (any OSError: disk full, I/O, too many open files, a
permission) keeps the file and retries the install with a backoff: the version is never given up for a condition
that clears; only a bad archive (fleet/trunk_archive.py) is, or a kept file found gone or changed at more than
``MAX_KEPT_REFETCHES`` retries in a row (each time fetched again: a disk that keeps damaging it). Only the
uplink's thread uses a download, so the control loop never waits on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from fleet.protocol import ErrorCode, TrunkData, TrunkNotice
from fleet.trunk_archive import TrunkArchiveError, file_sha256, unpack_trunk
from shared_policy.durable import fsync_dir, write_atomic

log = logging.getLogger(__name__)

MAX_FAILURES = 3  # digest mismatches of one version before it is given up
INSTALL_RETRY_S, INSTALL_RETRY_MAX_S = 2.0, 60.0  # backoff of a verified file's install after a local error
MAX_KEPT_REFETCHES = 3  # refetches in a row of a kept file found gone or changed at an install retry; then given up
WANTED_FILE = "WANTED"  # {"version": N}: the installed trunk the hub wants this robot to run


def wanted_version(trunk_dir: str | Path) -> int | None:
    """The version ``<trunk_dir>/WANTED`` names, or None when there is no (readable) WANTED file."""
    try:
        return int(json.loads((Path(trunk_dir) / WANTED_FILE).read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def installed_name(version: int) -> str:
    """The directory name an installed trunk version has in ``trunk_dir``."""
    return f"trunk-v{version:06d}"


@dataclass(frozen=True)
class Target:
    """The trunk being downloaded, as its notice described it."""

    version: int
    size: int
    sha256: str


class TrunkDownload:
    """Downloads announced trunks into ``trunk_dir`` for the TrunkWatcher (module docstring)."""

    def __init__(self, trunk_dir: str | Path, running: Callable[[], int], piece_bytes: int, window: int,
                 timeout_s: float, max_bytes_per_s: float = 0.0, max_failures: int = MAX_FAILURES):
        self.dir = Path(trunk_dir)
        self.running, self.piece_bytes, self.window = running, piece_bytes, window
        self.timeout_s, self.rate, self.max_failures = timeout_s, max_bytes_per_s, max_failures
        self.target: Target | None = None
        self.installed = 0  # the newest version installed in trunk_dir by this download
        self.given_up: dict[int, str] = {}  # version -> why
        self.install_errors = 0  # local errors (OSError) while unpacking a verified file (each retried)
        self._install_retry_at: float | None = None  # monotonic time of the next install try
        self.kept_refetches = 0  # install retries in a row that found the kept file gone or changed and refetched it
        self.failures = 0  # digest mismatches of the current target
        self.fetched_bytes = 0  # piece bytes received and written, over every download
        self.received_bytes = 0  # piece bytes received, duplicates included
        self.refetched = 0  # pieces asked for again after ``timeout_s``
        self.resumed_from = 0  # where the current target's download last (re)started
        self.last_error = ""
        self._file: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self.written = 0  # bytes of the target in its partial file
        self._outstanding: dict[int, tuple[int, float]] = {}  # offset -> (length, asked at)
        self._stash: dict[int, bytes] = {}  # pieces that arrived ahead of the file's end (at most a window)
        self._gaps: deque[tuple[int, int]] = deque()  # rests of pieces the hub answered short
        self._next = 0  # the next offset never asked for
        self._tokens, self._tokens_at = 0.0, 0.0

    def partial_path(self, t: Target) -> Path:
        """Where ``t``'s download accumulates (its digest in the name: another file of that number never mixes)."""
        return self.dir / f".{installed_name(t.version)}-{t.sha256[:16]}.partial"

    # -- what the hub says -----------------------------------------------------------------------------------
    def notice(self, msg: TrunkNotice) -> None:
        """The hub wants this robot on trunk ``msg.trunk_version`` (newer or older than what runs): want it now
        if it runs or is installed, else download it (a download of another version is abandoned)."""
        t = Target(msg.trunk_version, msg.size, msg.sha256)
        if t.version in self.given_up or t == self.target:
            return
        if t.version == self.running() or (self.dir / installed_name(t.version) / "manifest.json").is_file():
            if self.target is not None:  # the hub changed its mind (a trial ended): stop fetching the other one
                self._close_file()
                self.target = None
            self._want(t.version)
            return
        self._begin(t)

    def _want(self, version: int) -> None:
        if wanted_version(self.dir) != version:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.dir / WANTED_FILE, json.dumps({"version": version}).encode())
            log.info("trunk download: the hub wants trunk v%d", version)

    def data(self, msg: TrunkData, now: float) -> None:
        """A piece arrived (its own digest already checked by ``decode``)."""
        t = self.target
        if t is None or msg.trunk_version != t.version:
            return  # an answer to a download given up
        self.received_bytes += msg.size
        if msg.offset not in self._outstanding:
            return  # a second answer to a piece asked for again
        if msg.sha256 != t.sha256 or msg.total_size != t.size:
            self._fail(f"hub's piece of trunk v{t.version} belongs to another file (sha256 {msg.sha256[:12]}..., "
                       f"{msg.total_size} bytes; the notice said {t.sha256[:12]}..., {t.size} bytes)")
            return
        length, _ = self._outstanding.pop(msg.offset)
        if msg.size < length and msg.offset + msg.size < t.size:  # the hub sends smaller pieces: ask for the rest
            self._gaps.append((msg.offset + msg.size, length - msg.size))
        if msg.offset > self.written:
            self._stash[msg.offset] = msg.data
            return
        if msg.offset == self.written:
            self._append(msg.data)
            while self.written in self._stash:
                self._append(self._stash.pop(self.written))
        if self.written >= t.size:
            self._finish()

    def error(self, code: ErrorCode, text: str) -> None:
        """The hub refused a fetch: UNKNOWN_TRUNK (it does not serve the version: wait for its next notice) or
        BAD_RANGE (the partial file does not fit the hub's: start over)."""
        if self.target is None:
            return
        if code == ErrorCode.UNKNOWN_TRUNK:
            self.last_error = f"hub does not serve trunk v{self.target.version}: {text}"
            log.warning("trunk download: %s; waiting for its next notice", self.last_error)
            self._close_file()
            self.target = None
        elif code == ErrorCode.BAD_RANGE:
            self._fail(f"hub refused a range of trunk v{self.target.version}: {text}")

    def reconnected(self) -> None:
        """A new connection: nothing asked for on the old one will come; ask again from the file's end."""
        self._outstanding.clear()
        self._stash.clear()
        self._gaps.clear()
        self._next = self.written
        if self.target is not None and self.written:
            self.resumed_from = self.written
            log.info("trunk download: resuming trunk v%d at byte %d of %d", self.target.version, self.written,
                     self.target.size)

    def fetches(self, now: float) -> list[tuple[int, int, int]]:
        """(version, offset, length) to ask for now: pieces overdue, then new ones within window and rate."""
        t = self.target
        if t is None:
            return []
        if self._install_retry_at is not None:  # complete and verified, waiting to be unpacked again
            if time.monotonic() >= self._install_retry_at:
                try:
                    self._retry_install(t)
                except OSError as exc:  # the trunk dir itself (read-only, gone): later, as an install error
                    self._retry_later(t, exc)
            if self._install_retry_at is not None or self.target is None:  # still waiting, installed or given up
                return []
        out = []
        for offset, (length, asked) in list(self._outstanding.items()):
            if now - asked >= self.timeout_s:
                self._outstanding[offset] = (length, now)
                self.refetched += 1
                out.append((t.version, offset, length))
        if self.rate:
            burst = max(self.rate, self.piece_bytes)
            self._tokens = min(burst, self._tokens + (now - self._tokens_at) * self.rate)
            self._tokens_at = now
        while len(self._outstanding) < self.window and (self._gaps or self._next < t.size):
            if self.rate and self._tokens <= 0:
                break
            if self._gaps:
                offset, length = self._gaps.popleft()
            else:
                offset, length = self._next, min(self.piece_bytes, t.size - self._next)
                self._next += length
            self._outstanding[offset] = (length, now)
            self._tokens -= length
            out.append((t.version, offset, length))
        return out

    # -- the partial file ------------------------------------------------------------------------------------
    def _begin(self, t: Target) -> None:
        self._close_file()
        self._install_retry_at = None
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.partial_path(t)
        for old in self.dir.glob(".trunk-v*.partial"):  # an older download the new one replaces
            if old != path:
                old.unlink(missing_ok=True)
        if path.exists() and path.stat().st_size > t.size:
            path.unlink()
        self._hash = hashlib.sha256()
        if path.exists():  # resume: the hash of what is already there
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    self._hash.update(block)
        self._file = open(path, "ab")
        self.written = self._file.tell()
        if self.target is None or self.target.version != t.version:
            self.failures = self.kept_refetches = 0
        self.target, self.resumed_from = t, self.written
        self.reconnected()
        log.info("trunk download: trunk v%d (%d bytes) from byte %d", t.version, t.size, self.written)
        if self.written >= t.size:
            self._finish()

    def _append(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._file.flush()  # the file's length is where a resume starts
        self._hash.update(data)
        self.written += len(data)
        self.fetched_bytes += len(data)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _fail(self, why: str) -> None:
        """Discard the partial file and start over, or give the version up after ``max_failures``."""
        t = self.target
        assert t is not None
        self._close_file()
        self.partial_path(t).unlink(missing_ok=True)
        self.failures += 1
        self.last_error = why
        if self.failures >= self.max_failures:
            self.given_up[t.version] = why
            self.target = None
            log.error("trunk download: %s; giving up trunk v%d after %d tries", why, t.version, self.failures)
            return
        log.error("trunk download: %s; partial file discarded, starting over", why)
        self._begin(t)

    def _finish(self) -> None:
        t = self.target
        assert t is not None and self._file is not None
        os.fsync(self._file.fileno())
        self._close_file()
        digest = self._hash.hexdigest()
        if self.written != t.size or digest != t.sha256:
            self._fail(f"trunk v{t.version} downloaded with sha256 {digest[:12]}... ({self.written} bytes); the "
                       f"hub announced {t.sha256[:12]}... ({t.size} bytes)")
            return
        self._try_install(t)

    def _try_install(self, t: Target) -> None:
        """Unpack the complete, verified file. A bad archive is given up (fetching it again gives the same file); a
        local error (any OSError: disk full, I/O, open files, a permission) keeps the file and is retried from
        :meth:`fetches` after a backoff."""
        self._install_retry_at = None
        try:
            self._install(t)
        except TrunkArchiveError as exc:
            self.given_up[t.version] = str(exc)  # its digest was the hub's: fetching it again gives the same file
            self.last_error = str(exc)
            self.target = None
            self.partial_path(t).unlink(missing_ok=True)  # a whole trunk's bytes, never to be used
            log.error("trunk download: trunk v%d cannot be installed: %s", t.version, exc)
            return
        except OSError as exc:
            self._retry_later(t, exc)
            return
        self.partial_path(t).unlink(missing_ok=True)
        self._want(t.version)  # before ``installed`` says so: whoever sees it installed sees it wanted
        self.installed, self.target = t.version, None
        log.info("trunk download: trunk v%d installed in %s", t.version, self.dir)

    def _retry_install(self, t: Target) -> None:
        """Install from the kept file as it is now, checked again (the retry exists because the disk misbehaved);
        a file gone, short or changed meanwhile (an operator freeing space may delete it) is fetched again. A
        local condition, not the hub's file: not a digest failure, but after ``MAX_KEPT_REFETCHES`` refetches in
        a row the version is given up (a disk that damages every copy would be refetched forever)."""
        path = self.partial_path(t)
        if path.is_file() and path.stat().st_size == t.size and file_sha256(path) == t.sha256:
            self.kept_refetches = 0
            self._try_install(t)
            return
        path.unlink(missing_ok=True)
        if self.kept_refetches >= MAX_KEPT_REFETCHES:
            why = (f"the kept file of trunk v{t.version} was gone or changed at {self.kept_refetches + 1} install "
                   f"retries in a row (fetched again {self.kept_refetches} times): the disk does not keep it")
            self.given_up[t.version], self.last_error = why, why
            self.target, self._install_retry_at = None, None
            log.error("trunk download: %s; giving up trunk v%d", why, t.version)
            return
        self.kept_refetches += 1
        log.warning("trunk download: the kept file of trunk v%d is gone or changed; fetching it again (%d of at most "
                    "%d in a row)", t.version, self.kept_refetches, MAX_KEPT_REFETCHES)
        self._begin(t)

    def _retry_later(self, t: Target, exc: OSError) -> None:
        self._close_file()
        self.install_errors += 1
        self.last_error = f"installing trunk v{t.version}: {exc}"
        wait = min(INSTALL_RETRY_MAX_S, INSTALL_RETRY_S * 2 ** min(self.install_errors - 1, 6))
        self._install_retry_at = time.monotonic() + wait
        log.error("trunk download: %s; the downloaded file is kept, install retried in %.0f s", self.last_error, wait)

    def _install(self, t: Target) -> None:
        final = self.dir / installed_name(t.version)
        if final.exists():
            return
        staging = self.dir / f".{installed_name(t.version)}.unpacking"
        shutil.rmtree(staging, ignore_errors=True)  # left by a crash part way
        manifest = unpack_trunk(self.partial_path(t), staging)
        if int(manifest["trunk_version"]) != t.version:
            shutil.rmtree(staging, ignore_errors=True)
            raise TrunkArchiveError(f"its manifest says trunk_version {manifest['trunk_version']}, the hub "
                                    f"announced v{t.version}")
        os.rename(staging, final)
        fsync_dir(self.dir)

    def status(self) -> dict[str, Any]:
        """What ``robot-agent status`` shows of trunk downloads."""
        t = self.target
        return {"downloading": t.version if t else None, "bytes": self.written if t else 0,
                "size": t.size if t else 0, "installed": self.installed, "fetched_bytes": self.fetched_bytes,
                "received_bytes": self.received_bytes,
                "resumed_from": self.resumed_from, "refetched": self.refetched, "failures": self.failures,
                "given_up": sorted(self.given_up), "install_errors": self.install_errors,
                "kept_refetches": self.kept_refetches, "last_error": self.last_error}
