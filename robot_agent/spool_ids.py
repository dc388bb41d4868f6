"""The spool's identity: a random epoch made once, and sequence and episode numbers that are never handed out twice.

Both counters are reserved in blocks: before a number of a new block is handed out, the block's end is written to
``ids.json`` (temp file, fsync, rename, fsync of the directory). A restart, even after ``kill -9``, continues from
the persisted ends, so a number is never reused; at most a block's unused rest is skipped.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from pathlib import Path
from typing import Any

from shared_policy.durable import write_atomic

log = logging.getLogger(__name__)

IDS_FILE = "ids.json"
SEQ, EPISODE = "seq", "episode"


class SpoolIds:
    """Epoch plus durable ``seq`` and ``episode`` counters of one spool directory (thread-safe)."""

    def __init__(self, directory: Path, seq_floor: int = 1, fsync: bool = True,
                 blocks: dict[str, int] | None = None):
        self.path, self.fsync = Path(directory) / IDS_FILE, fsync
        self.blocks = {SEQ: 1024, EPISODE: 64, **(blocks or {})}
        saved = self._load()
        self.epoch = saved["epoch"] if saved else secrets.token_hex(8)
        start = {SEQ: 1, EPISODE: 0} if saved is None else {SEQ: saved[SEQ], EPISODE: saved[EPISODE]}
        start[SEQ] = max(start[SEQ], seq_floor)  # records on disk from before this file existed
        self._next = dict(start)
        self._end = dict(start)  # this process has reserved nothing yet
        self._lock = threading.Lock()  # its own: an episode number never waits for a chunk's fsync
        if saved is None:
            self._save(self._end)  # the epoch is durable before any id carries it

    def take(self, name: str) -> int:
        """The next number of counter ``name``; reserves (durably) a new block when the current one is used up."""
        with self._lock:
            if self._next[name] >= self._end[name]:
                end = {**self._end, name: self._next[name] + self.blocks[name]}
                self._save(end)  # raises on a write error, before the number is handed out
                self._end = end
            number = self._next[name]
            self._next[name] += 1
            return number

    def _save(self, ends: dict[str, int]) -> None:
        write_atomic(self.path, json.dumps({"epoch": self.epoch, **ends}).encode(), fsync=self.fsync)

    def _load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            saved = json.loads(self.path.read_text())
            return {"epoch": str(saved["epoch"]), SEQ: int(saved[SEQ]), EPISODE: int(saved[EPISODE])}
        except (ValueError, KeyError, TypeError) as exc:
            # a new epoch keeps every id unique even if the numbers restart: nothing is lost by starting one
            log.warning("spool: %s unreadable (%s): starting a new spool epoch", self.path, exc)
            return None
