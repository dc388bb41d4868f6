"""Each robot's completed episode returns, with the trunk version that ran them, read from the hub's own store.

A thread tails the experience store (``read_since``, from ``history_chunks`` rows back at the start) and
decodes only the ``rewards``, ``dones`` and ``trunk_version`` arrays of each chunk. An episode's return is the
sum of its rewards up to its ``done``; it is credited to the trunk version of its last step (the agent swaps
trunks only between episodes). An episode the agent aborts (a stop, an unusable reading) also ends with
``done`` and counts with its shorter return: that errs against a candidate, the safe side. An episode whose
first chunks lie before the history the reader starts from (or were unreadable) is never credited: a partial
sum is not a return. Chunks may be stored out of order (a chunk the hub nacked for want of credit comes back
later, after the next episode's first chunk): an episode is credited once its ``done`` chunk is read and every
chunk of it the store holds before that one has been read. An episode up to ``LATE_EPISODES`` behind its spool's
newest can still be completed by a late chunk; one further behind is given up, counted partial once, and
forgotten, so that episodes whose last chunk was unreadable (or never stored) do not pile up in memory.
The roll-out (fleet/rollout.py) reads :meth:`EpisodeReturns.returns`.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np

from fleet.record import PREFIX, record_header, verify_record
from fleet.store import ExperienceStore, StoreCorruptError, StoredChunk, StoreError

log = logging.getLogger(__name__)

KEPT_EPISODES = 1000  # per robot: far more than a roll-out compares
LATE_EPISODES = 4  # per robot spool: how far behind its newest episode a late chunk still completes one
READ_BYTES = 8 << 20  # records read at a time: 256 chunks of 1 MiB would be 256 MiB in the hub


@dataclass
class _Episode:
    """One episode being summed."""

    total: float = 0.0  # rewards read, up to its done
    steps: int = 0  # steps of its chunks read before its done chunk
    partial: bool = False  # a chunk of it was unreadable or stored before the history read: never credited
    end: tuple[int, int] | None = None  # (seq, trunk version of the done step) once its done chunk is read
    end_first_step: int | None = None  # the done chunk's first_step: the steps every earlier chunk of it adds to


@dataclass
class _SpoolEpisodes:
    """One robot spool's episodes within ``LATE_EPISODES`` of its newest."""

    newest: int = -1
    open: dict[int, _Episode] = field(default_factory=dict)
    settled: set[int] = field(default_factory=set)  # credited or counted partial: a late chunk of one is ignored


def chunk_steps(record: bytes, stored_as: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rewards, dones, trunk_version) of one stored record, read without decoding its other arrays. With
    ``stored_as`` (the chunk id the hub's store verified the record under at ingest) only its framing is checked,
    not its sha256 again (the npz members read carry CRCs of their own)."""
    return chunk_steps_from(record, stored_as)[1:]


def chunk_steps_from(record: bytes, stored_as: str | None = None
                     ) -> tuple[int | None, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`chunk_steps` with the episode step of the chunk's first row first (its header's ``first_step``;
    None for a chunk from an agent that did not write it)."""
    header = verify_record(record) if stored_as is None else record_header(record, stored_as)
    first = header.get("first_step")
    if not isinstance(first, int) or isinstance(first, bool) or first < 0:
        first = None
    _, hlen, plen = PREFIX.unpack_from(record, 0)
    start = PREFIX.size + hlen
    with np.load(io.BytesIO(bytes(record[start:start + plen])), allow_pickle=False) as npz:
        return first, npz["rewards"].astype(np.float64), npz["dones"] > 0.5, npz["trunk_version"].astype(np.int64)


class EpisodeReturns:
    """Completed episodes per robot as (trunk_version, return), oldest first (module docstring)."""

    def __init__(self, store: ExperienceStore, history_chunks: int, every_s: float = 0.5):
        self.store, self.every_s, self.history_chunks = store, every_s, history_chunks
        self._rowid = max(0, store.last_rowid() - history_chunks)
        self._history_start = self._rowid  # chunks stored as this row or before it are never read
        self._spools: dict[tuple[str, str], _SpoolEpisodes] = defaultdict(_SpoolEpisodes)  # (robot, epoch) ->
        self._done: dict[str, deque[tuple[int, float]]] = defaultdict(lambda: deque(maxlen=KEPT_EPISODES))
        self.partial_episodes = 0
        self.unreadable_chunks = 0
        self._warned: set[str] = set()  # robots whose unreadable chunk was logged as a warning
        self._corrupt_error = ""  # the store damage last logged (once each)
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
        self._history_start = self._rowid
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
            rows = self.store.read_since(self._rowid, 256, max_bytes=READ_BYTES)  # in the hub's own memory
            if not rows:
                return n
            for row in rows:
                self._add(row)
            self._rowid = rows[-1].rowid
            n += len(rows)
        return n

    @property
    def pending_episodes(self) -> int:
        """Episodes read but neither credited nor counted partial yet (each waits for a chunk of its own)."""
        return sum(len(spool.open) for spool in self._spools.values())

    def _add(self, row: StoredChunk) -> None:
        spool = self._spools[(row.robot_id, row.spool_epoch)]
        self._advance(spool, row.episode)
        if row.episode < spool.newest - LATE_EPISODES or row.episode in spool.settled:
            return  # a late chunk of an episode already credited, counted partial or given up
        ep = spool.open.get(row.episode)
        if ep is None:
            # its first chunks were stored before the history this reader started from: the sum would be a fraction
            # of the episode, and a canary's baseline must not count it
            before = self.store.steps_before(row.robot_id, row.spool_epoch, row.episode, row.seq,
                                             up_to_rowid=self._history_start)
            ep = spool.open[row.episode] = _Episode(partial=before > 0)
        if ep.end is not None and row.seq > ep.end[0]:
            return  # after its done: no step of it
        try:  # on the hub's interpreter: its store checked the digest at ingest, so do not hash it again
            first_step, rewards, dones, versions = chunk_steps_from(row.record, stored_as=row.chunk_id)
        except Exception as exc:  # noqa: BLE001 - a bad chunk costs only its own episode
            self.unreadable_chunks += 1  # the first per robot is a warning; a flood of them must not be one
            level = logging.DEBUG if row.robot_id in self._warned or len(self._warned) > KEPT_EPISODES else logging.WARNING
            self._warned.add(row.robot_id)
            log.log(level, "returns: chunk %s unreadable (%s)", row.chunk_id, exc)
            ep.partial = True  # its sum would miss this chunk
        else:
            ends = np.flatnonzero(dones)
            if len(ends):  # the agent starts a new episode after a done: nothing after it is of this one
                ep.total += float(rewards[:ends[0] + 1].sum())
                ep.end = (row.seq, int(versions[ends[0]]))
                ep.end_first_step = first_step
            else:
                ep.total += float(rewards.sum())
                ep.steps += len(rewards)
        self._settle_if_complete(row, spool, ep)

    def _settle_if_complete(self, row: StoredChunk, spool: _SpoolEpisodes, ep: _Episode) -> None:
        """Credit ``row``'s episode once its done is read and so is every chunk of it stored before the done;
        count it partial once its done is read and it is partial."""
        if ep.end is None:
            return
        if not ep.partial and ep.end_first_step is not None:
            # the agent said how many steps came before its last chunk: wait for every one of them, including a
            # chunk still on its way (refused NO_CREDIT and resent after a later one was taken); more is corrupt
            if ep.steps < ep.end_first_step:
                return
            ep.partial = ep.steps > ep.end_first_step
        if not ep.partial:
            if ep.end_first_step is None:  # an older agent's chunks: what the store holds is all it can tell
                stored = self.store.steps_before(row.robot_id, row.spool_epoch, row.episode, ep.end[0])
                if ep.steps < stored:
                    return  # a chunk of it stored late is still to be read
            with self._lock:
                self._done[row.robot_id].append((ep.end[1], ep.total))
        else:
            self.partial_episodes += 1
        del spool.open[row.episode]
        spool.settled.add(row.episode)

    def _advance(self, spool: _SpoolEpisodes, episode: int) -> None:
        """A chunk of a newer episode: give up the episodes now more than ``LATE_EPISODES`` behind it (each lost
        a chunk that never came) and forget them."""
        if episode <= spool.newest:
            return
        spool.newest = episode
        floor = episode - LATE_EPISODES
        for old in [e for e in spool.open if e < floor]:
            del spool.open[old]
            self.partial_episodes += 1
        spool.settled = {e for e in spool.settled if e >= floor}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.catch_up()
            except StoreCorruptError as exc:  # damage does not heal by retrying: say so once, loudly
                if str(exc) != self._corrupt_error:
                    log.error("returns: canary returns stop at a damaged stored chunk: %s", exc)
                    self._corrupt_error = str(exc)
            except StoreError as exc:  # closed at shutdown, or a read failed: try again later
                log.debug("returns: %s", exc)
            self._stop.wait(self.every_s)
