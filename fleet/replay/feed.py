"""Moves chunks from a reader (store or Parquet) through the sequence builder into the replay.

Each data-parallel rank keeps its own shard: the robots whose id hashes to its rank (whole episodes stay
together, and every rank sees every hardware type once the fleet is large enough).
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections import deque
from typing import Protocol

from fleet.record import RecordError
from fleet.replay.rate_limiter import RateLimitTimeout
from fleet.replay.replay import FleetReplay
from fleet.replay.sequences import ChunkSteps, Sequence, SequenceBuilder
from fleet.replay.table import ReplayClosed

log = logging.getLogger(__name__)


class ChunkReader(Protocol):
    """What the feeder reads from: ``StoreReader`` or ``ParquetReader``."""

    def read(self) -> list[ChunkSteps]:
        """The chunks not read before."""
        ...


def robot_shard(robot_id: str, world_size: int) -> int:
    """The rank whose replay holds ``robot_id``'s experience (a stable hash: the same on every rank)."""
    return zlib.crc32(robot_id.encode()) % world_size


class ReplayFeeder:
    """Reads chunks, cuts them into sequences and inserts them; an insert the rate limiter holds back past
    ``insert_timeout_s`` keeps its sequence (and those after it) for the next ``step``, so nothing is lost."""

    def __init__(self, reader: ChunkReader, replay: FleetReplay, rank: int = 0, world_size: int = 1,
                 insert_timeout_s: float = 1.0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size {world_size})")
        self.reader, self.replay, self.rank, self.world_size = reader, replay, rank, world_size
        self.insert_timeout_s = insert_timeout_s
        self.builder = SequenceBuilder(replay.cfg.sequence_length, replay.cfg.priority_eta)
        self._waiting: deque[tuple[Sequence, float | None]] = deque()
        self.skipped: list[tuple[str, str]] = []  # (robot/seq, why) of chunks the builder refused
        self.inserted = 0

    def step(self) -> int:
        """Insert what waits, then read once and insert what that completes; returns sequences inserted.
        While the rate limiter holds inserts back, nothing new is read."""
        before = self.inserted
        if not self._insert_waiting():
            return self.inserted - before
        for chunk in self.reader.read():
            if robot_shard(chunk.robot_id, self.world_size) != self.rank:
                continue
            try:
                self._waiting.extend(self.builder.add(chunk))
            except RecordError as exc:
                self.skipped.append((f"{chunk.robot_id}/{chunk.seq}", str(exc)))
        self._insert_waiting()
        return self.inserted - before

    def _insert_waiting(self) -> bool:
        while self._waiting:
            seq, priority = self._waiting[0]
            try:
                self.replay.insert(seq, priority, timeout=self.insert_timeout_s)
            except RateLimitTimeout:
                return False
            self._waiting.popleft()
            self.inserted += 1
        return True

    def run(self, stop: threading.Event, idle_s: float = 1.0) -> None:
        """Feed until ``stop`` is set (a learner thread), waiting ``idle_s`` when there is nothing new."""
        while not stop.is_set():
            try:
                n = self.step()
            except ReplayClosed:
                return
            except Exception:  # a reader or store error: say so, and try again after a pause, not die silently
                log.exception("replay feeder: reading new experience failed; retrying in %.1f s", idle_s)
                n = 0
            if n == 0:
                stop.wait(idle_s)
