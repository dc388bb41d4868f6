"""On-robot learning that cannot make a robot worse: an adapter update is kept only when it does not
measure worse than the best kept version so far on the unit's own episodes.

The test. The learner's newest update is the candidate; it runs ``episodes`` (M) complete episodes (aborted
episodes do not count: their returns are truncated). The reference is the best kept version so far on the
same trunk: of the kept versions with at least M recent complete episodes, the one with the highest mean
return, over its last ``reference_episodes`` (R) recent episodes (the kept version's episodes while no
candidate is on trial add to its sample). An episode is recent for the ``reference_decisions`` (D) decisions
that follow the first decision after it ran; then it no longer counts, for any version. When the kept version
is left with fewer than M recent episodes and no other version has M, it runs again (no trial) until it has.
With means ``m_c``, ``m_r`` and sample variances ``s_c^2``, ``s_r^2`` over ``n_c = M`` and ``n_r <= R``
episodes, the standard error of the difference is Welch's ``se = sqrt(s_c^2 / n_c + s_r^2 / n_r)`` (no
equal-variance assumption: a bad update often changes the spread as well as the mean). The candidate is rolled back when

    m_c < m_r - tolerance * se

(one-sided: only "worse" matters), or when every one of its returns lies below every one of the reference's
where, for two independent samples, chance alone does that at most 2.5% of the time (a one-sided Mann-Whitney
test at U = 0: M = 4 against 4 or more, M = 3 against 5 or more, M = 2 against 8 or more), else it is kept.
Why the rank rule: Welch's standard error grows with the candidate's own spread, so a wrecked update whose
returns are all far below the reference's, but spread wide among themselves, passed the first rule (a reach
unit: -2.3 to -14 million an episode against -45 to -95 was kept). Against the best of several kept versions
(a reference selected high) separation is more common than 1/C(n_c + n_r, n_c): in simulated chains of equal
updates 5-6% of decisions separate, and the rule adds about 0 to 1.6 points of rollbacks to the first rule's.
There is no setting for it: a larger ``tolerance`` loosens the first rule only. The first rule's noise: under
equal return distributions its statistic is about t-distributed with >= M - 1 degrees of freedom; tolerance 2.0 with M = 4 rolls back about
5% of equal updates by noise alone in one decision (2-3% on the two-peaked returns of a swing-up that sometimes
fails). A drop of 2.5 episode standard deviations (a collapse to failed swing-ups) is caught 85-92% of the time
against a reference of 4 episodes and 98-100% against 16; one of 1 standard deviation 35-45% of the time
(``tests/robot_agent/test_adapter_guard.py`` measures these). Along a chain of decisions the reference is the
best kept version, selected high by noise: about 14% of equal updates are rolled back, and drops are caught more
often by the same bias (``benchmarks/guard_noise.py``, normal returns). Smaller drops are below what 4 exploring
episodes resolve: the guard stops collapses and downhill walks, not every small loss.

With a ``floor`` f > 0 (off by default) a candidate is also rolled back when

    m_c < m_r - f * |m_r|

(its mean lies more than the fraction f of the reference's magnitude below it, resolved or not: "Why a floor").

Why against the best and not the previous version: compared only with its predecessor, a chain of updates
each a little worse, every one within the noise, walks the robot down without bound (the adaptation
benchmark saw a unit end 32.5 below zero-shot with every update kept). Against the best, every kept version
is within ``tolerance * se`` of the best measured in the last D decisions, however many updates follow. A
rolled-back update takes the updates built on it along; the learner goes on from the last kept version (itself
within the tolerance of the best).

Why the reference ages (D = 8): a best version that is no longer kept is never measured again, and its
returns are the (selected, so lucky) episodes of its own trial. After a drop in returns that no update caused
(wear, a changed floor, a heavier load), every later update would be compared with that old high mean and
rolled back for good, the kept version's own sample included while no episodes of it are added. With ageing,
the reference's pre-drop episodes stop counting D decisions after they ran; the kept version re-measures if
needed, and equal-quality updates are kept again at most D decisions after the drop (tests pin this). The
price: a chain of updates each a little worse is no longer stopped for good but slowed to one within-noise step
(< ``tolerance * se``) per about D + 1 decisions (1.5 se steps, D = 8: 7 kept of 60, 10.5 se down, against 90
se comparing with the predecessor). No rule on returns alone can tell such a chain from slow wear without
running old versions again. D counts decisions, not time or episodes: while updates are kept, each kept
version brings its trial's M fresh episodes and nothing is re-measured.

Why a floor (off by default): ``tolerance * se`` is wide on few episodes. With M = 3 exploring episodes of a
cart-pole whose returns spread about 23% of their mean, against 3 to 6 of the reference, 2 se is 33-38% of the
return, so a kept version may sit a third below the best; the fleet benchmark's units carry such versions into
their uploads (its single rounds of on-robot learning losing more than 10% were 16 of 320 as the robots act). A
floor f rolls back every candidate that *measures* more than f below the best: it cannot prove a loss either, but
it stops the ones that look like one. The price is paid in equal updates: with s the difference's standard error
as a fraction of the return, about ``Phi(-f / s)`` of them are rolled back by noise (f = 0.1: 27-30% at
s = 0.16-0.19; more when several kept versions qualify, since the best of them measured high by selection), so
learning slows; the tests measure both sides on one kept version. The floor is a fraction of the reference's
magnitude: it suits returns well away from zero (a cart-pole's hundreds); on returns near zero it rolls back
nearly every measured drop.

Why M = 4 (and not more): while a candidate is on trial, newer updates wait (only the newest is tried next;
an update that never ran is skipped), so the unit runs one update per M episodes and learns from episodes of
an update up to M episodes old. With an update every 2 episodes, M = 8 kept only 4 of 20 updates in the
benchmark's 40 episodes, learnt from stale episodes, and cost much of the gain (BENCHMARKS.md, adaptation);
M = 4 halves both, at a coarser resolution per trial (se 0.71 standard deviations against 0.5), which the
comparison with the best keeps from adding up.

Why a memory: the comparison with the best only holds while the guard remembers the best. An agent restarted
on the same trunk (a reboot, an update, a power cut; the fleet benchmark restarts its units twice a round) would
otherwise start from the kept version alone, which first re-measures itself and then is the only reference:
across restarts each update is compared with its predecessor again, the walk down that comparing with the best
exists to stop. (In 14 paired fleet benchmark runs the memory did not reduce the units that end beyond the
tolerance, 8 with it against 6 without, not resolved: forgetting at every reboot is a defect in itself.) So
:class:`GuardedAdapters` writes the guard's memory (the kept and best versions' recent returns and the decision
count) to the agent's state directory whenever it changes, atomically, and a restart on the same trunk with the
same kept adapter takes it up; another trunk or another kept adapter starts afresh, as does a missing or unreadable
file. The price: a restarted guard trusts returns measured before the restart (until they age out), so a robot
repaired while it was down is judged against its old returns for a few decisions; deleting the file makes it
measure afresh.

:class:`AdapterGuard` is the decision alone (versions and returns, no torch, no files).
:class:`GuardedAdapters` connects it to the agent: updates offered by the trainer, the adapter each episode
runs, and the verdicts sent back to the trainer, which then learns on from the kept version and writes
only kept versions to the file a restart loads.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from shared_policy.adapter import Adapter
from shared_policy.durable import write_atomic

if TYPE_CHECKING:
    from robot_agent.config import AdapterTrainingConfig

log = logging.getLogger(__name__)
MEMORY_FORMAT = 1  # of the guard's memory file: a file of another format is measured afresh


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
    candidate_returns: tuple[float, ...] = ()  # the episodes compared, for the decision log
    baseline_returns: tuple[float, ...] = ()
    by_floor: bool = False  # rolled back by the floor alone (neither the standard error nor the rank rule would)

    @property
    def change(self) -> float:
        """Candidate mean minus baseline mean."""
        return self.candidate_mean - self.baseline_mean


def welch_standard_error(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of mean(a) - mean(b) without assuming equal variances."""
    return math.sqrt(float(np.var(a, ddof=1)) / len(a) + float(np.var(b, ddof=1)) / len(b))


# the rank rule's level: complete separation is used only where chance alone gives it at most this often
SEPARATION_LEVEL = 0.025


def separated_below(candidate: np.ndarray, baseline: np.ndarray, level: float = SEPARATION_LEVEL) -> bool:
    """Whether every candidate return lies below every baseline return, where equal distributions do that at most
    ``level`` of the time (``1 / C(n_c + n_r, n_c)``, the exact one-sided Mann-Whitney p-value at U = 0)."""
    n_c, n_r = len(candidate), len(baseline)
    return bool(n_c and n_r and 1 / math.comb(n_c + n_r, n_c) <= level and candidate.max() < baseline.min())


def measures_worse(candidate: np.ndarray, baseline: np.ndarray, tolerance: float,
                   floor: float = 0.0) -> tuple[bool, float]:
    """Whether ``candidate``'s mean return lies more than ``tolerance`` standard errors below ``baseline``'s, or
    every one of its returns lies below every one of ``baseline``'s (:func:`separated_below`), or (``floor`` > 0)
    its mean lies more than the fraction ``floor`` of the baseline's magnitude below it; also returns the standard
    error. The rank rule catches what the standard error hides when the candidate's own spread is huge: a wrecked
    adapter returned -2.3 to -14 million a reach episode against the kept version's -45 to -95, and Welch's
    standard error (2.9 million) let it through."""
    se = welch_standard_error(candidate, baseline)
    mc, mb = float(candidate.mean()), float(baseline.mean())
    return bool(mc < mb - tolerance * se or separated_below(candidate, baseline)
                or (floor > 0 and mc < mb - floor * abs(mb))), se


class AdapterGuard:
    """Decides, from complete episodes' returns, whether each adapter update is kept or rolled back: kept only
    when it does not measure worse than the best kept version so far (see the module docstring)."""

    def __init__(self, kept_version: int, episodes: int = 4, tolerance: float = 2.0, reference_episodes: int = 16,
                 reference_decisions: int = 8, history: int = 1000, floor: float = 0.0):
        if episodes < 2:
            raise ValueError(f"adapter.guard_episodes: need at least 2 episodes per side, got {episodes}")
        if not tolerance >= 0:
            raise ValueError(f"adapter.guard_tolerance: must be >= 0 standard errors, got {tolerance}")
        if reference_episodes < episodes:
            raise ValueError(f"adapter.guard_reference_episodes: must be >= guard_episodes ({episodes}), "
                             f"got {reference_episodes}")
        if reference_decisions < 1:
            raise ValueError(f"adapter.guard_reference_decisions: must be >= 1, got {reference_decisions}")
        if not 0 <= floor < 1:
            raise ValueError(f"adapter.guard_floor: must be in [0, 1) (a fraction of the return), got {floor}")
        self.episodes, self.tolerance, self.reference_episodes = episodes, tolerance, reference_episodes
        self.floor = floor
        self.reference_decisions = reference_decisions
        self.kept_version = kept_version
        self.candidate: int | None = None  # on trial, or waiting for the reference's episodes
        self.waiting: int | None = None  # the newest update offered while a trial runs
        self.newest = kept_version  # versions only grow: anything not newer is a stale report
        # recent complete episodes on the current trunk of the kept version and of the best-measured earlier
        # one, each as (decisions made before it ran, return): the count ages them out
        self._returns: dict[int, deque[tuple[int, float]]] = {kept_version: deque(maxlen=reference_episodes)}
        self._trial: list[tuple[int, float]] = []
        self.decisions = 0
        self._trunk: int | None = None
        self.kept = 0
        self.rolled_back = 0
        self.skipped = 0  # updates replaced by a newer one before they ran an episode
        self.last: Verdict | None = None
        # the last decisions, in order (the benchmarks record them); bounded: an agent runs for months
        self.history: deque[Verdict] = deque(maxlen=history)

    @property
    def reference_version(self) -> int:
        """The best kept version so far: the highest mean return among kept versions with a full trial's
        recent episodes on this trunk (the kept one until another qualifies)."""
        full = [v for v, r in self._returns.items() if len(r) >= self.episodes]
        return max(full, key=lambda v: float(np.mean(self._reference_returns(v)))) if full else self.kept_version

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
        """The version the next episode runs: the kept one until the reference has M episodes, then the
        candidate until its trial is complete."""
        return self.candidate if self._on_trial() else self.kept_version

    def record(self, version: int, episode_return: float, trunk_version: int = 0) -> Verdict | None:
        """A complete episode's return under ``version``; returns the verdict when it completes a trial. A
        non-finite return rolls the version on trial back at once (under the kept version it is not counted)."""
        if not math.isfinite(episode_return):  # NaN actions or rewards: the version on trial is broken
            return self._decide(broken=True) if version == self.candidate and self._on_trial() else None
        if trunk_version != self._trunk:  # another trunk is another policy: its returns start afresh
            self._trunk = trunk_version
            self._returns = {self.kept_version: deque(maxlen=self.reference_episodes)}
            self._trial.clear()
        if version == self.kept_version:
            self._returns[version].append((self.decisions, episode_return))
        elif version == self.candidate and self._on_trial():
            self._trial.append((self.decisions, episode_return))
        if self.candidate is None or len(self._trial) < self.episodes:
            return None
        return self._decide()

    def memory(self) -> dict[str, Any]:
        """What a restarted agent needs to judge as this guard would: the recent returns of the kept version and
        of the best earlier one on this trunk, and the decision count that ages them. A trial in progress is left
        out (a restart learns on from the kept version)."""
        return {"format": MEMORY_FORMAT, "trunk_version": self._trunk, "kept_version": self.kept_version,
                "decisions": self.decisions,
                "returns": {str(v): [[d, x] for d, x in r] for v, r in self._returns.items()}}

    def restore(self, memory: Any, trunk_version: int) -> bool:
        """Take up ``memory`` (from :meth:`memory`) when it was measured on ``trunk_version`` with this guard's
        kept version; returns whether it was taken up. Malformed memory raises ValueError and changes nothing."""
        try:
            if not isinstance(memory, dict) or memory.get("format") != MEMORY_FORMAT:
                raise ValueError(f"not a format-{MEMORY_FORMAT} guard memory")
            trunk, kept, decisions = memory["trunk_version"], memory["kept_version"], memory["decisions"]
            if not (trunk is None or _is_int(trunk)) or not _is_int(kept) or not _is_int(decisions):
                raise ValueError("trunk_version, kept_version and decisions must be integers")
            returns = {int(v): [(_int(d), float(x)) for d, x in r] for v, r in memory["returns"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"malformed adapter guard memory: {e}") from None
        if not (decisions >= 0 and all(
                v <= kept and all(0 <= d <= decisions and math.isfinite(x) for d, x in r) for v, r in returns.items())):
            raise ValueError("malformed adapter guard memory: versions, decision counts or returns out of range")
        if trunk != trunk_version or kept != self.kept_version:
            return False  # another trunk or another kept adapter: another policy, measured afresh
        oldest = decisions - self.reference_decisions
        self._trunk, self.decisions = trunk_version, decisions
        self._returns = {v: deque(((d, x) for d, x in r if d >= oldest), maxlen=self.reference_episodes)
                         for v, r in returns.items()}
        self._returns.setdefault(kept, deque(maxlen=self.reference_episodes))
        self.candidate = self.waiting = None
        self._trial = []
        return True

    def _reference_returns(self, version: int) -> np.ndarray:
        return np.array([r for _, r in self._returns[version]])

    def _on_trial(self) -> bool:
        return self.candidate is not None and len(self._returns[self.reference_version]) >= self.episodes

    def _decide(self, broken: bool = False) -> Verdict:
        assert self.candidate is not None
        reference = self.reference_version
        cand, base = np.array([r for _, r in self._trial]), self._reference_returns(reference)
        by_floor = False
        if broken:
            worse, se, cand_mean = True, float("nan"), float("-inf")
        else:
            (worse, se), cand_mean = measures_worse(cand, base, self.tolerance, self.floor), float(cand.mean())
            by_floor = worse and not measures_worse(cand, base, self.tolerance)[0]
        v = Verdict(self.candidate, not worse, reference, cand_mean, float(base.mean()), se,
                    len(self._trial) + broken, tuple(cand.tolist()), tuple(base.tolist()), by_floor)
        if worse:
            self.rolled_back += 1
            self.candidate = self.waiting = None  # a waiting update was built on the rejected one
        else:
            self.kept += 1
            self.kept_version = self.candidate
            self._returns[self.candidate] = deque(self._trial, maxlen=self.reference_episodes)
            self.candidate, self.waiting = self.waiting, None
        self.decisions += 1
        oldest = self.decisions - self.reference_decisions  # episodes that ran before fewer decisions are old
        for k, r in self._returns.items():
            self._returns[k] = deque(((d, x) for d, x in r if d >= oldest), maxlen=self.reference_episodes)
        # only the kept version gains episodes; of the others only the best can ever be the reference
        self._returns = {k: r for k, r in self._returns.items() if k in (self.kept_version, self.reference_version)}
        self._trial = []
        self.last = v
        self.history.append(v)
        return v


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int(x: Any) -> int:
    if not _is_int(x):
        raise ValueError(f"a decision count must be an integer, got {x!r}")
    return int(x)


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

    def __init__(self, kept: tuple[Adapter, int], trainer: VerdictSink, guard: AdapterGuard | None,
                 memory_path: Path | None = None, trunk_version: int = 0):
        self.trainer, self.guard = trainer, guard
        self._adapters: dict[int, Adapter] = {kept[1]: kept[0]}
        self._kept_version = kept[1]
        self._unsent: list[Verdict] = []
        self._kept_unguarded = 0
        self.memory_path = memory_path if guard is not None else None
        self._save_failed = False  # reported once, until a write succeeds again
        self._saved = b""  # the memory last written
        self.restored = self._restore(trunk_version)

    @classmethod
    def from_config(cls, kept: tuple[Adapter, int], trainer: VerdictSink, cfg: AdapterTrainingConfig,
                    memory_path: Path | None = None, trunk_version: int = 0) -> GuardedAdapters:
        """As ``adapter.guard`` and its ``guard_*`` settings say; ``memory_path``: the file the guard's memory
        survives a restart in (None: it does not)."""
        guard = (AdapterGuard(kept[1], cfg.guard_episodes, cfg.guard_tolerance, cfg.guard_reference_episodes,
                              cfg.guard_reference_decisions, floor=cfg.guard_floor) if cfg.guard else None)
        return cls(kept, trainer, guard, memory_path, trunk_version)

    def _restore(self, trunk_version: int) -> bool:
        """The guard takes up its memory from before a restart, if it is there and was measured on this trunk with
        this kept adapter (module docstring, "Why a memory"). An unreadable file is reported and measured afresh:
        it holds measurements, nothing the robot cannot measure again."""
        if self.memory_path is None or not self.memory_path.exists():
            return False
        assert self.guard is not None
        try:
            restored = self.guard.restore(json.loads(self.memory_path.read_text()), trunk_version)
        except Exception as e:  # noqa: BLE001  (whatever is in the file, the robot starts: it measures afresh)
            log.warning("adapter guard memory %s unreadable (%s): the guard measures afresh", self.memory_path, e)
            return False
        if restored:
            log.info("adapter guard memory restored: best kept version v%d, %d decisions",
                     self.guard.reference_version, self.guard.decisions)
        return restored

    def _save(self) -> None:
        """Write the guard's memory; a failed write is reported, not raised: the robot goes on (the memory is
        measurements, and a restart without it measures afresh)."""
        if self.memory_path is None or self.guard is None:
            return
        data = json.dumps(self.guard.memory()).encode()
        if data == self._saved:
            return  # a trial's episodes change nothing remembered: no write, no fsync
        try:
            write_atomic(self.memory_path, data)
            self._saved = data
        except OSError as e:
            if not self._save_failed:
                log.warning("adapter guard memory %s not written (%s): a restart will measure afresh",
                            self.memory_path, e)
            self._save_failed = True
        else:
            self._save_failed = False

    @property
    def kept(self) -> tuple[Adapter, int]:
        """The last kept adapter and its version: what a restart loads."""
        return self._adapters[self._kept_version], self._kept_version

    def offer(self, adapter: Adapter, version: int) -> None:
        """A new version from the trainer. One that arrives while a rollback is decided but not yet sent was
        built on the rejected version (the trainer learns on from its newest update until it hears): dropped, as
        the trainer drops it when the rollback reaches it."""
        if version in self._adapters or version < max(self._adapters) or any(not v.kept for v in self._unsent):
            return
        self._adapters[version] = adapter
        if self.guard is None:
            self._kept_version = version
            self._kept_unguarded += 1
        else:
            self.guard.offer(version)
        self._forget()

    def episode_done(self, version: int, trunk_version: int, episode_return: float, complete: bool
                     ) -> Verdict | None:
        """An episode ended; ``complete``: it ended by the task (failure or time-out), not by an abort. Returns
        the verdict it completed, if any."""
        if self.guard is None or not complete:
            return None
        verdict = self.guard.record(version, episode_return, trunk_version)
        if verdict is not None:
            self._kept_version = self.guard.kept_version
            self._unsent.append(verdict)
            self._forget()
        self._save()
        return verdict

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
        return {"adapter_guard": True, "adapter_guard_restored": self.restored,
                "adapter_kept_version": self._kept_version, "adapter_kept": g.kept,
                "adapter_rolled_back": g.rolled_back, "adapter_skipped": g.skipped,
                "adapter_on_trial": g.candidate if g.version_to_run() == g.candidate else None,
                "adapter_last_verdict": None if last is None else {
                    "version": last.version, "kept": last.kept, "change": _finite(last.change),
                    "standard_error": _finite(last.standard_error), "by_floor": last.by_floor}}

    def _forget(self) -> None:
        """Drop adapters that can no longer run (rolled back, skipped, superseded)."""
        g = self.guard
        live = {self._kept_version} | ({g.candidate, g.waiting} - {None} if g is not None else set())
        self._adapters = {v: a for v, a in self._adapters.items() if v in live}


def _finite(x: float) -> float | None:
    """``x`` rounded for a status file, None for NaN or inf (a broken version's return), which JSON lacks."""
    return round(x, 3) if math.isfinite(x) else None
