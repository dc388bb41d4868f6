"""Replay items: sequences of T consecutive steps of one robot's episode, cut from its chunks in order.

A robot's chunks of one episode follow each other by spool sequence number, each carrying its ``critic_obs``
with one row more than its steps (the observation its last step ended in). :class:`SequenceBuilder` joins
them and cuts T-step windows; a window never crosses an episode end, a missing chunk or a spool epoch. The
steps left at an episode's end (or before a gap) make a last window padded to T with ``mask`` 0, its last
real step bootstrapping from the recorded observation it ended in (``critic_obs[k + 1]``). So in every item
``critic_obs[t + 1]`` is the observation step t ended in, which is what V-trace's ``next_values`` needs.

A chunk may carry ``priorities`` [T] (|TD error| of each step under the robot's own critic, as Ape-X actors
compute them); a window's initial priority mixes its steps' (:func:`sequence_priority`), or is None (the
table then gives it the largest priority seen) when any step lacks one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleet.record import RecordError

STEP_ARRAYS = ("obs", "actions", "log_probs", "rewards", "dones", "time_outs", "trunk_version", "adapter_version",
               "priorities")


@dataclass(frozen=True)
class ChunkSteps:
    """One stored chunk's transitions as both readers (store, Parquet) deliver them."""

    robot_id: str
    spool_epoch: str
    seq: int
    hardware: str
    episode: int
    received: float  # hub receive time (unix s): the age eviction goes by
    arrays: dict[str, np.ndarray]  # STEP_ARRAYS [n, ...] (priorities NaN where unknown) and critic_obs [n + 1, C]


@dataclass(frozen=True)
class Sequence:
    """One replay item: T steps of one robot's episode, padded past its end (``mask`` 0 there)."""

    robot_id: str
    hardware: str
    episode: int
    received: float  # newest receive time of its chunks
    obs: np.ndarray  # [T, O]
    critic_obs: np.ndarray  # [T + 1, C]: row t + 1 is the observation step t ended in
    actions: np.ndarray  # [T, A]
    log_probs: np.ndarray  # [T] behaviour log-probabilities
    rewards: np.ndarray  # [T]
    dones: np.ndarray  # [T] 1 after the episode's last step (termination or time-out)
    time_outs: np.ndarray  # [T] 1 where that end was a time-out (truncation)
    mask: np.ndarray  # [T] 1 on real steps, 0 on padding
    trunk_version: np.ndarray  # [T] int64
    adapter_version: np.ndarray  # [T] int64


def sequence_priority(step_priorities: np.ndarray, mask: np.ndarray, eta: float) -> np.ndarray:
    """R2D2's priority of sequences from their steps' |TD errors| ([T] or [T, B] -> scalar or [B]):
    ``eta * max + (1 - eta) * mean`` over the unmasked steps. The robot's initial priorities and the learner's
    updates go through this one function."""
    p = np.abs(np.asarray(step_priorities, np.float64))
    m = np.asarray(mask, np.float64)
    n = np.maximum(m.sum(axis=0), 1.0)
    return eta * np.where(m > 0, p, 0.0).max(axis=0) + (1.0 - eta) * (p * m).sum(axis=0) / n


@dataclass
class _Pending:
    """The steps of a robot's current episode not yet cut into a window."""

    hardware: str
    episode: int
    last_seq: int
    received: float
    steps: dict[str, np.ndarray]  # STEP_ARRAYS [k, ...]
    critic_obs: np.ndarray  # [k + 1, C]

    @property
    def size(self) -> int:
        return len(self.steps["rewards"])


class SequenceBuilder:
    """Joins each robot's chunks into T-step windows (module docstring); ``add`` returns the windows (and
    their initial priorities) that became complete."""

    def __init__(self, sequence_length: int, priority_eta: float = 0.9):
        if sequence_length < 1:
            raise ValueError(f"sequence_length: {sequence_length!r} must be >= 1")
        self.length, self.eta = sequence_length, priority_eta
        self._pending: dict[tuple[str, str], _Pending] = {}

    def add(self, chunk: ChunkSteps) -> list[tuple[Sequence, float | None]]:
        """The windows ``chunk`` completes. RecordError (and nothing changed) if it ends its episode before its
        last step: the chunk layout has no room for the final observation of an inner episode end."""
        dones = chunk.arrays["dones"]
        if (dones[:-1] > 0.5).any():
            raise RecordError(f"chunk {chunk.robot_id}/{chunk.seq}: an episode ends before its last step")
        out: list[tuple[Sequence, float | None]] = []
        stream = (chunk.robot_id, chunk.spool_epoch)
        p = self._pending.get(stream)
        if p is not None and (p.episode != chunk.episode or chunk.seq != p.last_seq + 1):
            out += self._flush(stream)  # a new episode, or a gap: the old steps end here
            p = None
        steps = {k: chunk.arrays[k] for k in STEP_ARRAYS}
        if p is None:
            p = self._pending[stream] = _Pending(chunk.hardware, chunk.episode, chunk.seq, chunk.received, steps,
                                                 chunk.arrays["critic_obs"])
        else:  # the new chunk's first critic row is the observation the pending steps ended in: keep one
            p.steps = {k: np.concatenate([p.steps[k], v]) for k, v in steps.items()}
            p.critic_obs = np.concatenate([p.critic_obs[:-1], chunk.arrays["critic_obs"]])
            p.last_seq, p.received = chunk.seq, max(p.received, chunk.received)
        while p.size >= self.length:
            out.append(self._window(stream[0], p, self.length))
            p.steps = {k: v[self.length:] for k, v in p.steps.items()}
            p.critic_obs = p.critic_obs[self.length:]
        if dones[-1] > 0.5:
            out += self._flush(stream)
        return out

    def flush(self) -> list[tuple[Sequence, float | None]]:
        """Cut every robot's pending steps into padded windows now (e.g. at the end of a finite read)."""
        out: list[tuple[Sequence, float | None]] = []
        for stream in list(self._pending):
            out += self._flush(stream)
        return out

    def _flush(self, stream: tuple[str, str]) -> list[tuple[Sequence, float | None]]:
        p = self._pending.pop(stream)
        return [self._window(stream[0], p, p.size)] if p.size else []

    def _window(self, robot_id: str, p: _Pending, k: int) -> tuple[Sequence, float | None]:
        """The first ``k`` pending steps as a window padded to T."""
        T = self.length

        def pad(a: np.ndarray, rows: int) -> np.ndarray:
            out = np.zeros((rows, *a.shape[1:]), a.dtype)
            out[:len(a)] = a
            return out

        s = {name: pad(v[:k], T) for name, v in p.steps.items()}
        mask = np.zeros(T, np.float32)
        mask[:k] = 1.0
        seq = Sequence(robot_id, p.hardware, p.episode, p.received, s["obs"], pad(p.critic_obs[:k + 1], T + 1),
                       s["actions"], s["log_probs"], s["rewards"], s["dones"], s["time_outs"], mask,
                       s["trunk_version"], s["adapter_version"])
        prios = p.steps["priorities"][:k]
        priority = None if np.isnan(prios).any() else float(sequence_priority(s["priorities"], mask, self.eta))
        return seq, priority
