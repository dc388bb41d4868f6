"""One replay table: items in insertion order, uniform or prioritised sampling, a rate limiter, eviction.

Items live in a ring of ``max_items`` slots; keys count up from 0 and an item's slot is ``key % max_items``,
so the oldest item is always the one evicted (by size when the ring is full, by age when its data is older
than ``max_age_s``), and a key names its item until then. Priorities go through a sum tree as
``(p + eps)^alpha``. Thread-safe: one lock, and inserts and samples that the rate limiter holds back wait on
its condition (with a timeout) until the other side moves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fleet.replay.config import ReplayConfig
from fleet.replay.rate_limiter import RateLimiter, RateLimitTimeout
from fleet.replay.sum_tree import SumTree


class ReplayClosed(RuntimeError):
    """The table was closed while an insert or sample waited (or after)."""


@dataclass(frozen=True)
class Sample:
    """A batch drawn from a table: the items' keys (for priority updates), the items, the probability each was
    drawn with and its importance weight (1 for uniform sampling)."""

    keys: np.ndarray  # (B,) int64
    items: list[Any]
    probabilities: np.ndarray  # (B,) float64
    weights: np.ndarray  # (B,) float32, max over the table's items = 1


class ReplayTable:
    """Items with priorities (module docstring). ``clock`` is wall time: item times are hub receive times."""

    def __init__(self, cfg: ReplayConfig, clock: Callable[[], float] = time.time):
        cfg.validate()
        self.cfg, self.clock = cfg, clock
        self.limiter = RateLimiter(cfg.samples_per_insert, cfg.min_size, cfg.error_buffer)
        self._tree = SumTree(cfg.max_items)
        self._items: list[Any] = [None] * cfg.max_items
        self._times = np.zeros(cfg.max_items)
        self._first = self._next = 0  # keys in [first, next) are in the table
        self._max_priority = 1.0  # what an item without a priority gets: the largest seen (Ape-X, PER)
        self._rng = np.random.default_rng(cfg.seed)
        self._cond = threading.Condition()
        self._closed = False
        self.evicted_by_size = self.evicted_by_age = 0
        self.waiting = {"insert": 0, "sample": 0}

    def __len__(self) -> int:
        return self._next - self._first

    def _leaf(self, priorities: np.ndarray) -> np.ndarray:
        return (priorities + self.cfg.priority_eps) ** self.cfg.alpha

    def _wait(self, allowed: Callable[[], bool], timeout: float | None, what: str) -> None:
        def ready() -> bool:
            return self._closed or allowed()
        self.waiting[what] += 1  # calls the rate limiter holds back now (a learner's status shows them)
        try:
            released = self._cond.wait_for(ready, timeout)
        finally:
            self.waiting[what] -= 1
        if not released:
            raise RateLimitTimeout(f"replay {what} not allowed within {timeout} s (rate limiter: "
                                   f"{self.limiter.inserts} inserts, {self.limiter.samples} samples, {len(self)} items)")
        if self._closed:
            raise ReplayClosed(f"replay table closed during {what}")

    # -- eviction --------------------------------------------------------------------------------------
    def _evict_oldest(self) -> None:
        slot = self._first % self.cfg.max_items
        self._tree.set(np.array([slot]), np.array([0.0]))
        self._items[slot] = None
        self._first += 1
        self.limiter.deletes += 1

    def _evict_expired(self) -> int:
        if self.cfg.max_age_s <= 0:
            return 0
        cutoff, n = self.clock() - self.cfg.max_age_s, 0
        while len(self) and self._times[self._first % self.cfg.max_items] < cutoff:
            self._evict_oldest()
            n += 1
        self.evicted_by_age += n
        return n

    def evict_expired(self) -> int:
        """Evict the items whose data is older than ``max_age_s``; returns how many (inserts and samples do
        this too). Items are checked oldest-inserted first: one inserted late with older data waits its turn."""
        with self._cond:
            n = self._evict_expired()
            if n:
                self._cond.notify_all()
            return n

    # -- insert / sample / update -----------------------------------------------------------------------
    def insert(self, item: Any, priority: float | None = None, item_time: float | None = None,
               timeout: float | None = None) -> int:
        """Add ``item`` (its data received at ``item_time``, default now) with ``priority`` (default: the
        largest priority seen), waiting up to ``timeout`` s for the rate limiter; returns its key.
        RateLimitTimeout if not allowed in time (nothing is inserted), ValueError for a bad priority."""
        if priority is not None and not (np.isfinite(priority) and priority >= 0):
            raise ValueError(f"priority {priority!r} must be finite and >= 0")
        with self._cond:
            self._evict_expired()
            self._wait(self.limiter.can_insert, timeout, "insert")
            if len(self) == self.cfg.max_items:
                self._evict_oldest()
                self.evicted_by_size += 1
            key, slot = self._next, self._next % self.cfg.max_items
            p = self._max_priority if priority is None else float(priority)
            self._max_priority = max(self._max_priority, p)
            self._tree.set(np.array([slot]), self._leaf(np.array([p])))
            self._items[slot] = item
            self._times[slot] = self.clock() if item_time is None else item_time
            self._next += 1
            self.limiter.inserts += 1
            self._cond.notify_all()
            return key

    def sample(self, batch_size: int, timeout: float | None = None, beta: float | None = None) -> Sample:
        """Draw ``batch_size`` items (with replacement), waiting up to ``timeout`` s for the rate limiter.
        Prioritised: stratified over the priority mass (PER), weights (N P(i))^-beta / max (beta default
        from the config)."""
        if batch_size < 1:
            raise ValueError(f"batch_size: {batch_size!r} must be >= 1")
        self.limiter.check_batch(batch_size)
        beta = self.cfg.beta if beta is None else beta
        with self._cond:
            self._evict_expired()
            self._wait(lambda: len(self) > 0 and self.limiter.can_sample(batch_size), timeout, "sample")
            n = len(self)
            # every priority 0 (priority_eps 0 and all |TD| 0): no mass to draw by, so uniformly
            if self.cfg.prioritised and self._tree.total > 0:
                total = self._tree.total
                points = (np.arange(batch_size) + self._rng.random(batch_size)) * (total / batch_size)
                slots = self._tree.find(points)
                probs = self._tree.get(slots) / total
                keys = self._first + (slots - self._first) % self.cfg.max_items
                weights = (n * probs) ** -beta / (n * self._tree.min / total) ** -beta
            else:
                keys = self._rng.integers(self._first, self._next, batch_size)
                slots = keys % self.cfg.max_items
                probs, weights = np.full(batch_size, 1.0 / n), np.ones(batch_size)
            items = [self._items[s] for s in slots]
            self.limiter.samples += batch_size
            self._cond.notify_all()
        return Sample(keys.astype(np.int64), items, probs, weights.astype(np.float32))

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> int:
        """Set the priorities of the items ``keys`` (those evicted since are skipped); returns how many were
        set. ValueError, and nothing changed, if a priority is not finite and >= 0."""
        keys = np.asarray(keys, np.int64).ravel()
        priorities = np.asarray(priorities, np.float64).ravel()
        if keys.shape != priorities.shape:
            raise ValueError(f"{keys.size} keys but {priorities.size} priorities")
        if not np.isfinite(priorities).all() or (priorities < 0).any():
            raise ValueError("priorities must be finite and >= 0")
        with self._cond:
            present = (keys >= self._first) & (keys < self._next)
            self._tree.set(keys[present] % self.cfg.max_items, self._leaf(priorities[present]))
            if present.any():
                self._max_priority = max(self._max_priority, float(priorities[present].max()))
            return int(present.sum())

    def priorities(self, keys: np.ndarray) -> np.ndarray:
        """The sampling weights (p + eps)^alpha the tree holds for ``keys`` (0 for keys no longer in)."""
        keys = np.asarray(keys, np.int64)
        with self._cond:
            present = (keys >= self._first) & (keys < self._next)
            return np.where(present, self._tree.get(keys % self.cfg.max_items), 0.0)

    def keys(self) -> np.ndarray:
        """The keys in the table, oldest first."""
        with self._cond:
            return np.arange(self._first, self._next, dtype=np.int64)

    def items(self) -> list[Any]:
        """The items in the table, oldest first."""
        with self._cond:
            return [self._items[k % self.cfg.max_items] for k in range(self._first, self._next)]

    def close(self) -> None:
        """Wake every waiting insert and sample with ReplayClosed; later calls raise it too."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
