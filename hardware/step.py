"""The step contract: how one control step of N robots becomes a transition, for sim and robot alike.

The simulator's batched env and the robot agent's batch of one both call :meth:`StepContract.step` with
the state measured after an action, so reward, failure, time-out and goal re-draws follow one set of
rules. For transition k -> k+1 (state s_{k+1} measured after action a_k):

1. ``reward`` = the task's reward of (s_{k+1}, a_k, a_{k-1}) under the goal a_k was chosen for; 0 for a
   world whose physics diverged.
2. ``terminated``: the task failed at s_{k+1} (``last_action`` already a_k), or the physics diverged.
3. The episode length grows by one. ``time_out``: the episode reached its length, or was cut short by
   its runner (``truncated``: an e-stop, a shutdown, a step limit), and did not fail; learners bootstrap
   a time-out from the value at s_{k+1}, never a failure. ``done`` = terminated or time-out.
4. Goals are re-drawn only for episodes that go on, after the reward read them and before the next
   observation does: an ended episode keeps its goal, so the observation it bootstraps from (built at
   s_{k+1} with the episode's goal) is the one its last reward was earned under.

The reward may be read later than the rest (``defer_reward``): the robot agent sends its command first
and computes the reward of the transition after the command is out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from hardware.compiled import kernel
from hardware.state import RobotState, TaskInputs
from hardware.tasks.base import Task


@dataclass(slots=True)
class StepResult:
    """One transition of N robots: how each episode ends here (and, once read, the reward)."""

    terminated: np.ndarray  # (N,) bool: failure (or a diverged world): no bootstrap
    time_out: np.ndarray  # (N,) bool: ended by time or cut short, not failed: bootstrap from the next state
    done: np.ndarray  # (N,) bool: terminated or time_out
    num_done: int
    terms: dict[str, np.ndarray] = field(default_factory=dict)  # scaled reward terms, once the reward is read
    _reward: np.ndarray | None = None
    _deferred: tuple | None = None  # what a deferred reward reads: (contract, state, goal inputs, action, prev, diverged)

    @property
    def reward(self) -> np.ndarray:
        """(N,) float32 reward of the transition (computed at the first read when deferred)."""
        if self._reward is None:
            contract, state, goal_inputs, action, prev, diverged = self._deferred
            self._deferred = None
            self._reward, self.terms = contract._book_reward(state, goal_inputs, action, prev, diverged)
        return self._reward


class StepContract:
    """Transition rules of one task over N robots, with each robot's episode length and return.

    ``episode_length`` may be an array the caller shares (rsl_rl writes the sim's episode lengths to
    spread its first resets); it is updated in place.
    """

    def __init__(self, task: Task, num_robots: int, episode_length: np.ndarray | None = None):
        self.task = task
        self.num_robots = int(num_robots)
        self.max_episode_length = task.max_episode_length
        self.goal_period = task.goal_period_steps
        self.episode_length = (np.zeros(self.num_robots, dtype=np.int64) if episode_length is None
                               else episode_length)
        self.episode_return = np.zeros(self.num_robots)
        self.never = np.zeros(self.num_robots, dtype=bool)  # read-only: no world diverged / none cut short
        self.never.flags.writeable = False
        self._can_fail = task.can_fail

    def begin_episodes(self, rng: np.random.Generator, inputs: TaskInputs, ids: np.ndarray) -> None:
        """Robots ``ids`` start an episode: length and return 0, no previous action, fresh goals."""
        inputs.last_action[ids] = 0.0
        self.task.sample_goals(rng, inputs, ids)
        self.episode_length[ids] = 0
        self.episode_return[ids] = 0.0

    def step(self, state: RobotState, inputs: TaskInputs, action: np.ndarray, rng: np.random.Generator, *,
             diverged: np.ndarray | None = None, truncated: np.ndarray | None = None,
             defer_reward: bool = False) -> StepResult:
        """Transition k -> k+1 for ``state`` = s_{k+1} after ``action`` = a_k (N, A); updates ``inputs``.

        ``diverged``/``truncated``: (N,) bool, default none. ``defer_reward``: compute the reward (and add it
        to the episode return) only when :attr:`StepResult.reward` is first read; the goal it reads is kept,
        and ``action`` must not be written to until then.
        """
        diverged = self.never if diverged is None else diverged
        truncated = self.never if truncated is None else truncated
        prev = inputs.last_action
        n = self.num_robots
        failed, time_out, done = np.empty(n, dtype=bool), np.empty(n, dtype=bool), np.empty(n, dtype=bool)
        if defer_reward:
            inputs.last_action = action.astype(np.float64)
            terminated = self.task.terminated(state, inputs) if self._can_fail else self.never
            num_done = _end_episodes(self.episode_length, self.max_episode_length, terminated, diverged, truncated,
                                     failed, time_out, done)
            goal_inputs = self._redraw_goals(rng, inputs, done, keep=True)
            return StepResult(failed, time_out, done, num_done,
                              _deferred=(self, state, goal_inputs, action, prev, diverged))
        rew, terms = self.task.reward(state, inputs, action, prev)
        inputs.last_action = action.astype(np.float64)  # a copy: ``action`` may view the caller's tensor
        terminated = self.task.terminated(state, inputs) if self._can_fail else self.never
        reward = np.empty(n, dtype=np.float32)
        # the simulator's hot path: the same two kernels as below, in one call
        num_done = _book_and_end(rew, diverged, self.episode_return, reward, self.episode_length,
                                 self.max_episode_length, terminated, truncated, failed, time_out, done)
        self._redraw_goals(rng, inputs, done, keep=False)
        return StepResult(failed, time_out, done, num_done, terms, reward)

    def _book_reward(self, state: RobotState, goal_inputs: TaskInputs, action: np.ndarray, prev: np.ndarray,
                     diverged: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        rew, terms = self.task.reward(state, goal_inputs, action, prev)
        out = np.empty(self.num_robots, dtype=np.float32)
        _book_rewards(rew, diverged, self.episode_return, out)
        return out, terms

    def _redraw_goals(self, rng: np.random.Generator, inputs: TaskInputs, done: np.ndarray,
                      keep: bool) -> TaskInputs:
        """Re-draw the goals of going-on episodes at each goal period; returns the inputs as the step's reward
        reads them (a copy from before the re-draw when ``keep`` and something was re-drawn)."""
        if not self.goal_period:
            return inputs
        ids = np.flatnonzero((self.episode_length % self.goal_period == 0) & ~done)
        if not len(ids):
            return inputs
        before = _goal_copy(inputs) if keep else inputs
        self.task.sample_goals(rng, inputs, ids)
        return before


def _goal_copy(inputs: TaskInputs) -> TaskInputs:
    """``inputs`` with every goal array copied (the last action is not a goal and is shared)."""
    return TaskInputs(**{f.name: (getattr(inputs, f.name) if f.name == "last_action" or getattr(inputs, f.name) is None
                                  else getattr(inputs, f.name).copy()) for f in fields(inputs)})


@kernel
def _end_episodes(ep_len: np.ndarray, max_len: int, terminated: np.ndarray, diverged: np.ndarray,
                  truncated: np.ndarray, failed: np.ndarray, time_out: np.ndarray, done: np.ndarray) -> int:
    """Every robot's episode grows by a step and ends on failure, divergence, its length, or a cut;
    returns how many ended."""
    num_done = 0
    for i in range(ep_len.shape[0]):
        ep_len[i] += 1
        failed[i] = terminated[i] or diverged[i]
        time_out[i] = (ep_len[i] >= max_len or truncated[i]) and not failed[i]
        done[i] = failed[i] or time_out[i]
        num_done += done[i]
    return num_done


@kernel
def _book_rewards(reward: np.ndarray, diverged: np.ndarray, ep_return: np.ndarray, reward32: np.ndarray) -> None:
    """A diverged world earns nothing for the step; every reward adds to its episode's return."""
    for i in range(reward.shape[0]):
        r = 0.0 if diverged[i] else reward[i]
        reward32[i] = r
        ep_return[i] += r


@kernel
def _book_and_end(reward: np.ndarray, diverged: np.ndarray, ep_return: np.ndarray, reward32: np.ndarray,
                  ep_len: np.ndarray, max_len: int, terminated: np.ndarray, truncated: np.ndarray,
                  failed: np.ndarray, time_out: np.ndarray, done: np.ndarray) -> int:
    """:func:`_book_rewards` then :func:`_end_episodes` (one call from Python instead of two)."""
    _book_rewards(reward, diverged, ep_return, reward32)
    return _end_episodes(ep_len, max_len, terminated, diverged, truncated, failed, time_out, done)
