"""Reverb's SampleToInsertRatio rate limiter: how many samples per insert the learner may take.

Counts inserts, samples and deletes (evictions). With ``spi`` samples per insert, ``offset = spi * min_size``
and ``diff = inserts * spi - samples``:

- an insert may go while the table holds fewer than ``min_size`` items, or while ``diff`` after it stays
  <= ``offset + error_buffer`` (the learner has not fallen too far behind);
- a sample of n may go once ``min_size`` items are in and ``diff - n >= offset - error_buffer`` (the
  learner has not run too far ahead).

``spi`` 0 is Reverb's MinSize limiter: only the minimum size holds samples back, inserts never wait.
Callers hold their own lock and wait on their own condition; this class only counts and decides.
"""

from __future__ import annotations


class RateLimitTimeout(TimeoutError):
    """A blocked insert or sample was not allowed before its timeout."""


class RateLimiter:
    """SampleToInsertRatio (module docstring)."""

    def __init__(self, samples_per_insert: float, min_size: int, error_buffer: float):
        self.samples_per_insert, self.min_size = samples_per_insert, min_size
        offset = samples_per_insert * min_size
        self.min_diff, self.max_diff = offset - error_buffer, offset + error_buffer
        self.inserts = self.samples = self.deletes = 0

    @property
    def size(self) -> int:
        """Items in the table by these counts."""
        return self.inserts - self.deletes

    def can_insert(self, n: int = 1) -> bool:
        """Whether ``n`` inserts may go now."""
        if self.size + n <= self.min_size or self.samples_per_insert == 0:
            return True
        return (self.inserts + n) * self.samples_per_insert - self.samples <= self.max_diff

    def can_sample(self, n: int = 1) -> bool:
        """Whether ``n`` samples may go now."""
        if self.size < self.min_size:
            return False
        if self.samples_per_insert == 0:
            return True
        return self.inserts * self.samples_per_insert - self.samples - n >= self.min_diff

    def check_batch(self, n: int) -> None:
        """ValueError if a sample of ``n`` could never be allowed: after inserts stop, ``diff`` may sit just
        above ``max_diff - spi``, so the window must hold the batch and one insert's worth of samples."""
        if self.samples_per_insert > 0 and self.max_diff - self.min_diff < n + self.samples_per_insert:
            raise ValueError(f"a batch of {n} needs replay.error_buffer >= {(n + self.samples_per_insert) / 2} "
                             f"with samples_per_insert {self.samples_per_insert}, or it can block for good")
