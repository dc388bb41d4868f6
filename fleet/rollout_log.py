"""The roll-out log: every step of getting a trunk onto the fleet, one JSON object per line, appended and fsynced.

    <storage_dir>/trunks/rollout.jsonl

Written by ``fleet-hub publish`` / ``fleet-hub rollback`` (steps taken by hand) and by the hub's roll-out
(fleet/rollout.py: sent to canaries, each canary's verdict with its numbers, promoted, rolled back). Each line
has ``time`` (Unix seconds), ``event``, ``by`` (``hand`` or ``hub``) and ``version``; ``fleet-hub status``
prints the last few. A torn last line (a crash mid-append) is skipped by readers.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, BinaryIO

from shared_policy.durable import fsync_dir

ROLLOUT_LOG = "rollout.jsonl"  # inside <storage_dir>/trunks
PROMOTED = "promoted"  # the hub's roll-out made its candidate current
TAIL_CHECK = 256  # bytes of the log's last read stretch compared at each look (a rewrite there is seen)
CURRENT_CHANGES = ("published", "rollback", PROMOTED)  # the steps that set CURRENT (a candidate's publication does not)


def log_path(storage_dir: str | Path) -> Path:
    """Where the roll-out log of a hub's storage dir is."""
    return Path(storage_dir) / "trunks" / ROLLOUT_LOG


def append_step(storage_dir: str | Path, event: str, by: str, version: int, **fields: Any) -> dict[str, Any]:
    """Append one step durably (write, fsync; the directory too when the file is new); returns the entry."""
    entry = {"time": round(time.time(), 3), "event": event, "by": by, "version": int(version), **fields}
    path = log_path(storage_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a+b") as f:
        torn = False
        if f.seek(0, os.SEEK_END) > 0:  # a writer that died mid-line: end its line, or this step joins it
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        f.write((("\n" if torn else "") + json.dumps(entry, sort_keys=True) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())
    if new:
        fsync_dir(path.parent)
    return entry


def read_steps(storage_dir: str | Path, last: int | None = None) -> list[dict[str, Any]]:
    """The logged steps, oldest first (only the ``last`` few if given); [] when there is no log."""
    try:
        lines = log_path(storage_dir).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn last line
    return out[-last:] if last else out


class CurrentSteps:
    """The last logged step that set the current version, and where it lies in the log: the hub follows the log
    (fleet/unit_watch.py), so a change made while it was down, or a rollback to the version already current, is
    seen too. Reads only what was appended since its last look."""

    def __init__(self, storage_dir: str | Path):
        self.path = log_path(storage_dir)
        self._ino, self._offset, self._tail = -1, 0, b""  # _tail: the last bytes read, to see a rewritten log
        self._last: dict[str, Any] | None = None

    def last(self) -> dict[str, Any] | None:
        """The newest step in ``CURRENT_CHANGES`` (lines that are not whole JSON objects with int versions are
        skipped); None if none. A log replaced, or truncated since the last look (seen by its size, or by other bytes
        where the last look ended), is read again whole."""
        try:
            with open(self.path, "rb") as f:
                data = self._unread(f)
        except FileNotFoundError:
            return self._last
        end = data.rfind(b"\n") + 1  # a torn last line waits for its end
        for line in data[:end].splitlines(keepends=True):
            try:
                step = json.loads(line)
            except ValueError:
                step = None
            if isinstance(step, dict) and step.get("event") in CURRENT_CHANGES and _versions_hold(step):
                self._last = step
        self._offset += end
        self._tail = (self._tail + data[:end])[-TAIL_CHECK:]
        return self._last

    def _unread(self, f: BinaryIO) -> bytes:
        """What was appended since the last look, or the whole log if it is not the one read before (another
        inode, shorter, or other bytes where the last look ended: truncated and grown again between looks)."""
        ino = os.fstat(f.fileno()).st_ino
        f.seek(self._offset - len(self._tail))
        if ino != self._ino or f.read(len(self._tail)) != self._tail:
            self._ino, self._offset, self._tail, self._last = ino, 0, b"", None
            f.seek(0)
        return f.read()


def _versions_hold(step: dict[str, Any]) -> bool:
    """Whether a step's ``version`` is a positive int, its ``previous`` (if any) an int >= 0 and its ``canaries``
    (if any) a list of robot ids: a hand-edited or foreign line that is not is skipped, never allowed to crash
    the hub's loop."""
    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)
    previous, canaries = step.get("previous", 0), step.get("canaries", [])
    return (whole(step.get("version")) and step["version"] > 0 and whole(previous) and previous >= 0
            and isinstance(canaries, list) and all(isinstance(c, str) for c in canaries))


def describe(step: dict[str, Any]) -> str:
    """One line for ``fleet-hub status``."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(step.get("time", 0)))
    rest = {k: v for k, v in step.items() if k not in ("time", "event", "by", "version")}
    extra = " ".join(f"{k}={v}" for k, v in sorted(rest.items()))
    return f"{stamp}Z  {step.get('event')} v{step.get('version')} (by {step.get('by')}) {extra}".rstrip()
