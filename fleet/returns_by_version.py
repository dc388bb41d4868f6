"""Each robot's completed episode returns, with the trunk version that ran them, read from the hub's own store.

A thread tails the experience store (``read_since``, from ``history_chunks`` rows back at the start) and
decodes only the ``rewards``, ``dones`` and ``trunk_version`` arrays of each chunk. An episode's return is the
sum of its rewards up to its ``done``; it is credited to the trunk version of its last step (the agent swaps
trunks only between episodes). An episode the agent aborts (a stop, an unusable reading) also ends with
``done`` and counts with its shorter return: that errs against a candidate, the safe side. An episode whose
first chunks lie before the history the reader starts from (or were unreadable) is never credited: a partial
sum is not a return. An agent runs one episode at a time, so the first chunk of a robot's newer episode ends every
older one of the same spool still being summed: one whose last chunk was unreadable (or never stored) is then
dropped, never credited, so that such episodes do not pile up in memory.
The roll-out (fleet/rollout.py) reads :meth:`EpisodeReturns.returns`.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import defaultdict, deque

import numpy as np

from fleet.record import PREFIX, record_header, verify_record
from fleet.store import ExperienceStore, StoredChunk, StoreError

log = logging.getLogger(__name__)

KEPT_EPISODES = 1000  # per robot: far more than a roll-out compares


def chunk_steps(record: bytes, stored_as: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rewards, dones, trunk_version) of one stored record, read without decoding its other arrays. With
    ``stored_as`` (the chunk id the hub's store verified the record under at ingest) only its framing is checked,
    not its sha256 again (the npz members read carry CRCs of their own)."""
    if stored_as is None:
        verify_record(record)
    else:
        record_header(record, stored_as)
    _, hlen, plen = PREFIX.unpack_from(record, 0)
    start = PREFIX.size + hlen
    with np.load(io.BytesIO(bytes(record[start:start + plen])), allow_pickle=False) as npz:
        return npz["rewards"].astype(np.float64), npz["dones"] > 0.5, npz["trunk_version"].astype(np.int64)


class EpisodeReturns:
    """Completed episodes per robot as (trunk_version, return), oldest first (module docstring)."""

    def __init__(self, store: ExperienceStore, history_chunks: int, every_s: float = 0.5):
        self.store, self.every_s, self.history_chunks = store, every_s, history_chunks
        self._rowid = max(0, store.last_rowid() - history_chunks)
        self._open: dict[tuple[str, str, int], float] = defaultdict(float)  # (robot, epoch, episode) -> so far
        self._done: dict[str, deque[tuple[int, float]]] = defaultdict(lambda: deque(maxlen=KEPT_EPISODES))
        self._partial: set[tuple[str, str, int]] = set()  # episodes begun before the first chunk read: never credited
        self._newest: dict[tuple[str, str], int] = {}  # (robot, epoch) -> its newest episode read
        self.partial_episodes = 0
        self.unreadable_chunks = 0
        self._warned: set[str] = set()  # robots whose unreadable chunk was logged as a warning
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="episode-returns", daemon=True)

    @property
    def started(self) -> bool:
        """Whether ``start`` was called."""
        return self._thread.ident is not None

    def start(self) -> None:
        """Start tailing the store, from ``history_chunks`` back from its newest row now (the hub starts it only
        when a trial needs returns: reading every chunk costs the hub's interpreter ~1 ms each)."""
        self._rowid = max(self._rowid, self.store.last_rowid() - self.history_chunks)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop tailing (before the store closes)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def returns(self, robot_id: str) -> list[tuple[int, float]]:
        """A copy of ``robot_id``'s completed episodes, (trunk_version, return), oldest first."""
        with self._lock:
            return list(self._done.get(robot_id, ()))

    def catch_up(self) -> int:
        """Read every chunk stored since the last call; returns how many."""
        n = 0
        while not self._stop.is_set():
            rows = self.store.read_since(self._rowid, 256)
            if not rows:
                return n
            for row in rows:
                self._add(row)
            self._rowid = rows[-1].rowid
            n += len(rows)
        return n

    def _add(self, row: StoredChunk) -> None:
        self._end_older_episodes(row)
        try:  # on the hub's interpreter: its store checked the digest at ingest, so do not hash it again
            rewards, dones, versions = chunk_steps(row.record, stored_as=row.chunk_id)
        except Exception as exc:  # noqa: BLE001 - a bad chunk costs only its own episode
            self.unreadable_chunks += 1  # the first per robot is a warning; a flood of them must not be one
            level = logging.DEBUG if row.robot_id in self._warned or len(self._warned) > KEPT_EPISODES else logging.WARNING
            self._warned.add(row.robot_id)
            log.log(level, "returns: chunk %s unreadable (%s)", row.chunk_id, exc)
            self._partial.add((row.robot_id, row.spool_epoch, row.episode))  # its sum would miss this chunk
            return
        key = (row.robot_id, row.spool_epoch, row.episode)
        if key not in self._open and self.store.steps_before(*key, row.seq) > 0:
            # its first chunks were stored before the history this reader started from (or were unreadable):
            # the sum would be a fraction of the episode, and a canary's baseline must not count it
            self._partial.add(key)
        start = 0
        for end in np.flatnonzero(dones):
            total = self._open.pop(key, 0.0) + float(rewards[start:end + 1].sum())
            if key in self._partial:
                self._partial.discard(key)
                self.partial_episodes += 1
            else:
                with self._lock:
                    self._done[row.robot_id].append((int(versions[end]), total))
            start = end + 1
        if start < len(rewards):
            self._open[key] += float(rewards[start:].sum())

    def _end_older_episodes(self, row: StoredChunk) -> None:
        """A chunk of a robot's newer episode ends its older ones: those still open lost their last chunk."""
        spool, episode = (row.robot_id, row.spool_epoch), row.episode
        if episode <= self._newest.get(spool, -1):
            return
        self._newest[spool] = episode
        for key in [k for k in self._open.keys() | self._partial if k[:2] == spool and k[2] < episode]:
            self._open.pop(key, None)
            self._partial.discard(key)
            self.partial_episodes += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.catch_up()
            except StoreError as exc:  # closed at shutdown, or a read failed: try again later
                log.debug("returns: %s", exc)
            self._stop.wait(self.every_s)
