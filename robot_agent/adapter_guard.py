"""On-robot learning that cannot make a robot worse: an adapter update is kept only when it does not
measure worse than the version before it on the unit's own episodes.

The test. Version ``k`` is the last kept adapter; the learner's newest update is the candidate. The
candidate runs ``episodes`` (M) complete episodes and is compared with the last M complete episodes of
version k on the same trunk (aborted episodes do not count: their returns are truncated). With means
``m_k``, ``m_c`` and sample variances ``s_k^2``, ``s_c^2``, the standard error of the difference is
Welch's ``se = sqrt(s_k^2 / M + s_c^2 / M)`` (no equal-variance assumption: a bad update often changes
the spread as well as the mean). The candidate is rolled back when

    m_c < m_k - tolerance * se

(one-sided: only "worse" matters), else it is kept. Under equal return distributions the statistic is
about t-distributed with ~2(M - 1) degrees of freedom: tolerance 2.5 with M = 8 rolls back about 1.5% of
equal updates by noise alone (1% on the two-peaked returns of a swing-up that sometimes fails), while a
drop of 1.6 episode standard deviations is caught about three times in four and one of 2.5 almost
always (``tests/robot_agent/test_adapter_guard.py`` measures both). M trades detection for
learning speed: while a candidate is on trial, newer updates wait (only the newest is tried next; an
update that never ran is skipped), so the unit tries at most one update per M episodes.

:class:`AdapterGuard` is the decision alone (versions and returns, no torch, no files).
:class:`GuardedAdapters` connects it to the agent: updates offered by the trainer, the adapter each episode
runs, and the verdicts sent back to the trainer, which then learns on from the kept version and writes
only kept versions to the file a restart loads.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from shared_policy.adapter import Adapter

if TYPE_CHECKING:
    from robot_agent.config import AdapterTrainingConfig


@dataclass(frozen=True)
class Verdict:
    """The outcome of one candidate's trial."""

    version: int  # the candidate
    kept: bool
    baseline_version: int  # the last kept version it was compared with
    candidate_mean: float
    baseline_mean: float
    standard_error: float  # Welch's, of the difference of the means
    episodes: int  # the candidate's (the baseline has M)

    @property
    def change(self) -> float:
        """Candidate mean minus baseline mean."""
        return self.candidate_mean - self.baseline_mean


def welch_standard_error(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of mean(a) - mean(b) without assuming equal variances."""
    return math.sqrt(float(np.var(a, ddof=1)) / len(a) + float(np.var(b, ddof=1)) / len(b))


def measures_worse(candidate: np.ndarray, baseline: np.ndarray, tolerance: float) -> tuple[bool, float]:
    """Whether ``candidate``'s mean return lies more than ``tolerance`` standard errors below ``baseline``'s;
    also returns the standard error."""
    se = welch_standard_error(candidate, baseline)
    return bool(candidate.mean() < baseline.mean() - tolerance * se), se


class AdapterGuard:
    """Decides, from complete episodes' returns, whether each adapter update is kept or rolled back."""

    def __init__(self, kept_version: int, episodes: int = 8, tolerance: float = 2.5):
        if episodes < 2:
            raise ValueError(f"adapter.guard_episodes: need at least 2 episodes per side, got {episodes}")
        if not tolerance >= 0:
            raise ValueError(f"adapter.guard_tolerance: must be >= 0 standard errors, got {tolerance}")
        self.episodes, self.tolerance = episodes, tolerance
        self.kept_version = kept_version
        self.candidate: int | None = None  # on trial, or waiting for the baseline's episodes
        self.waiting: int | None = None  # the newest update offered while a trial runs
        self.newest = kept_version  # versions only grow: anything not newer is a stale report
        self._baseline: deque[float] = deque(maxlen=episodes)
        self._trial: list[float] = []
        self._trunk: int | None = None
        self.kept = 0
        self.rolled_back = 0
        self.skipped = 0  # updates replaced by a newer one before they ran an episode
        self.last: Verdict | None = None

    def offer(self, version: int) -> None:
        """The learner made a new version (built on the candidate if one is on trial, else on the kept one)."""
        if version <= self.newest:
            return
        self.newest = version
        if self.candidate is None or not self._trial:
            self.skipped += self.candidate is not None
            self.candidate = version
        else:
            self.skipped += self.waiting is not None
            self.waiting = version

    def version_to_run(self) -> int:
        """The version the next episode runs: the kept one until it has M episodes to compare with, then the
        candidate until its trial is complete."""
        return self.candidate if self._on_trial() else self.kept_version

    def record(self, version: int, episode_return: float, trunk_version: int = 0) -> Verdict | None:
        """A complete episode's return under ``version``; returns the verdict when it completes a trial. A
        non-finite return rolls the version on trial back at once (under the kept version it is not counted)."""
        if not math.isfinite(episode_return):  # NaN actions or rewards: the version on trial is broken
            return self._decide(broken=True) if version == self.candidate and self._on_trial() else None
        if trunk_version != self._trunk:  # another trunk is another policy: its returns start afresh
            self._trunk = trunk_version
            self._baseline.clear()
            self._trial.clear()
        if version == self.kept_version:
            self._baseline.append(episode_return)
        elif version == self.candidate and self._on_trial():
            self._trial.append(episode_return)
        if self.candidate is None or len(self._trial) < self.episodes:
            return None
        return self._decide()

    def _on_trial(self) -> bool:
        return self.candidate is not None and len(self._baseline) >= self.episodes

    def _decide(self, broken: bool = False) -> Verdict:
        assert self.candidate is not None
        cand, base = np.array(self._trial), np.array(self._baseline)
        if broken:
            worse, se, cand_mean = True, float("nan"), float("-inf")
        else:
            (worse, se), cand_mean = measures_worse(cand, base, self.tolerance), float(cand.mean())
        v = Verdict(self.candidate, not worse, self.kept_version, cand_mean, float(base.mean()), se,
                    len(self._trial) + broken)
        if worse:
            self.rolled_back += 1
            self.candidate = self.waiting = None  # a waiting update was built on the rejected one
        else:
            self.kept += 1
            self.kept_version = self.candidate
            self._baseline = deque(self._trial, maxlen=self.episodes)
            self.candidate, self.waiting = self.waiting, None
        self._trial = []
        self.last = v
        return v


class VerdictSink(Protocol):
    """Where verdicts go: the adapter trainer (see :class:`robot_agent.trainer.AdapterTrainerProcess`)."""

    def keep(self, version: int) -> None:
        """Make ``version`` the kept adapter (the file a restart loads)."""

    def roll_back(self, version: int) -> None:
        """Discard ``version`` and what was built on it; learn on from the kept adapter."""


class GuardedAdapters:
    """The agent's side of guarded learning: which adapter each episode runs, and what the trainer is told.

    ``guard=None`` keeps every update as it arrives (no test). Verdicts reach the trainer when
    :meth:`next_adapter` is called between episodes, after the trial's last segments have gone out.
    """

    def __init__(self, kept: tuple[Adapter, int], trainer: VerdictSink, guard: AdapterGuard | None):
        self.trainer, self.guard = trainer, guard
        self._adapters: dict[int, Adapter] = {kept[1]: kept[0]}
        self._kept_version = kept[1]
        self._unsent: list[Verdict] = []
        self._kept_unguarded = 0

    @classmethod
    def from_config(cls, kept: tuple[Adapter, int], trainer: VerdictSink, cfg: AdapterTrainingConfig
                    ) -> GuardedAdapters:
        """As ``adapter.guard``, ``adapter.guard_episodes`` and ``adapter.guard_tolerance`` say."""
        guard = AdapterGuard(kept[1], cfg.guard_episodes, cfg.guard_tolerance) if cfg.guard else None
        return cls(kept, trainer, guard)

    @property
    def kept(self) -> tuple[Adapter, int]:
        """The last kept adapter and its version: what a restart loads."""
        return self._adapters[self._kept_version], self._kept_version

    def offer(self, adapter: Adapter, version: int) -> None:
        """A new version from the trainer."""
        if version in self._adapters or version < max(self._adapters):
            return
        self._adapters[version] = adapter
        if self.guard is None:
            self._kept_version = version
            self._kept_unguarded += 1
        else:
            self.guard.offer(version)
        self._forget()

    def episode_done(self, version: int, trunk_version: int, episode_return: float, complete: bool) -> None:
        """An episode ended; ``complete``: it ended by the task (failure or time-out), not by an abort."""
        if self.guard is None or not complete:
            return
        verdict = self.guard.record(version, episode_return, trunk_version)
        if verdict is not None:
            self._kept_version = self.guard.kept_version
            self._unsent.append(verdict)
            self._forget()

    def next_adapter(self, running_version: int) -> tuple[Adapter, int] | None:
        """Send pending verdicts to the trainer; the adapter the next episode runs, if not the running one."""
        for v in self._unsent:
            (self.trainer.keep if v.kept else self.trainer.roll_back)(v.version)
        self._unsent = []
        version = self.guard.version_to_run() if self.guard is not None else self._kept_version
        return None if version == running_version else (self._adapters[version], version)

    def status(self) -> dict[str, Any]:
        """Counts and the last verdict, for the agent's status."""
        g = self.guard
        if g is None:
            return {"adapter_guard": False, "adapter_kept_version": self._kept_version,
                    "adapter_kept": self._kept_unguarded, "adapter_rolled_back": 0}
        last = g.last
        return {"adapter_guard": True, "adapter_kept_version": self._kept_version, "adapter_kept": g.kept,
                "adapter_rolled_back": g.rolled_back, "adapter_skipped": g.skipped,
                "adapter_on_trial": g.candidate if g.version_to_run() == g.candidate else None,
                "adapter_last_verdict": None if last is None else {
                    "version": last.version, "kept": last.kept, "change": _finite(last.change),
                    "standard_error": _finite(last.standard_error)}}

    def _forget(self) -> None:
        """Drop adapters that can no longer run (rolled back, skipped, superseded)."""
        g = self.guard
        live = {self._kept_version} | ({g.candidate, g.waiting} - {None} if g is not None else set())
        self._adapters = {v: a for v, a in self._adapters.items() if v in live}


def _finite(x: float) -> float | None:
    """``x`` rounded for a status file, None for NaN or inf (a broken version's return), which JSON lacks."""
    return round(x, 3) if math.isfinite(x) else None
