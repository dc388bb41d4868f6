"""Typed config (a Hydra structured config) of the learner's replay."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ReplayConfig:
    """One table per hardware type, each with these settings.

    Sampling is uniform or prioritised (Ape-X: P(i) = p_i^alpha / sum p^alpha, importance weights
    (N P(i))^-beta normalised by their largest possible value). The rate limiter is Reverb's
    SampleToInsertRatio: once ``min_size`` items are in, a sample waits while the samples taken run more than
    ``error_buffer`` ahead of ``samples_per_insert`` per insert, and an insert waits while they lag more than
    ``error_buffer`` behind. Items leave oldest first when the table holds ``max_items`` or an item's data
    was received more than ``max_age_s`` ago.
    """

    sequence_length: int = 32  # T steps per item, within one episode (the tail is padded and masked)
    max_items: int = 100_000  # items per hardware table; the oldest leave first when it is full
    max_age_s: float = 0.0  # 0: no age limit
    prioritised: bool = True  # sample by priority^alpha (Ape-X); false: uniformly
    alpha: float = 0.6  # priority exponent (0: uniform)
    beta: float = 0.4  # importance-weight exponent (the learner may anneal it towards 1)
    priority_eps: float = 1e-6  # added to every priority: an item with |TD| 0 is still drawn, rarely
    priority_eta: float = 0.9  # a sequence's priority: eta * max + (1 - eta) * mean of its steps' (R2D2)
    samples_per_insert: float = 0.0  # 0: no ratio, only the minimum size
    min_size: int = 1  # no sample before this many items are in
    error_buffer: float = 100.0  # how far samples may run ahead of / behind the ratio
    seed: int = 0  # the sampler's random stream

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, prefix: str = "replay") -> None:
        """Raise ValueError naming the key of a wrong value (call again after a Hydra merge)."""
        checks = {"sequence_length": self.sequence_length >= 1, "max_items": self.max_items >= 1,
                  "max_age_s": self.max_age_s >= 0, "alpha": self.alpha >= 0, "beta": 0 <= self.beta <= 1,
                  "priority_eps": self.priority_eps >= 0, "priority_eta": 0 <= self.priority_eta <= 1,
                  "samples_per_insert": self.samples_per_insert >= 0,
                  "min_size": 1 <= self.min_size <= self.max_items, "error_buffer": self.error_buffer >= 0}
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"{prefix}.{key}: invalid value {getattr(self, key)!r}")
        # Reverb's rule: a window narrower than this can block sample and insert both, forever
        if self.samples_per_insert > 0 and self.error_buffer < max(1.0, self.samples_per_insert):
            raise ValueError(f"{prefix}.error_buffer: {self.error_buffer!r} must be >= max(1, samples_per_insert "
                             f"= {self.samples_per_insert}), or sampling and inserting can both block for good")
