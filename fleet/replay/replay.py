"""The learner's replay: one table per hardware type (their observation and action sizes differ)."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from fleet.replay.batch import SequenceBatch
from fleet.replay.config import ReplayConfig
from fleet.replay.sequences import Sequence
from fleet.replay.table import ReplayTable


class FleetReplay:
    """Tables of :class:`Sequence` items by hardware type, each with the config's settings (its own rate
    limiter, sizes and seed), created on first use."""

    def __init__(self, cfg: ReplayConfig, clock: Callable[[], float] = time.time):
        cfg.validate()
        self.cfg, self.clock = cfg, clock
        self._tables: dict[str, ReplayTable] = {}
        self._lock = threading.Lock()

    def table(self, hardware: str) -> ReplayTable:
        """``hardware``'s table (created empty if there is none yet)."""
        with self._lock:
            t = self._tables.get(hardware)
            if t is None:  # a seed of its own per type, the same on every run
                cfg = replace(self.cfg, seed=self.cfg.seed + zlib.crc32(hardware.encode()))
                t = self._tables[hardware] = ReplayTable(cfg, self.clock)
            return t

    @property
    def hardware(self) -> list[str]:
        """The hardware types with a table."""
        with self._lock:
            return sorted(self._tables)

    def insert(self, item: Sequence, priority: float | None = None, timeout: float | None = None) -> int:
        """Insert into the item's hardware table (``ReplayTable.insert``, its data time the hub's receive time)."""
        return self.table(item.hardware).insert(item, priority, item.received, timeout)

    def sample(self, hardware: str, batch_size: int, timeout: float | None = None,
               beta: float | None = None) -> SequenceBatch:
        """A [T, B] batch of ``hardware``'s sequences (``ReplayTable.sample``)."""
        return SequenceBatch.from_sample(self.table(hardware).sample(batch_size, timeout, beta))

    def update_priorities(self, hardware: str, keys: np.ndarray, priorities: np.ndarray) -> int:
        """New priorities for sampled ``keys`` of ``hardware``'s table; returns how many are still in."""
        return self.table(hardware).update_priorities(keys, priorities)

    def close(self) -> None:
        """Close every table: waiting inserts and samples raise ReplayClosed."""
        with self._lock:
            tables = list(self._tables.values())
        for t in tables:
            t.close()
