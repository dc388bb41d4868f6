"""The robot's transitions, assembled by the step contract the simulator uses, and cut into chunks.

Per control tick the loop calls :meth:`TransitionRecorder.observe` before its command (it ends the
transition that led to this reading: failure, time-out, cut short; re-draws goals) and
:meth:`TransitionRecorder.record` after it (the transition's reward, its row, and a chunk to the sink
when one is full or the episode is over). Rewards, episode ends and goal re-draws come from
:class:`hardware.step.StepContract` with a batch of one, so a robot's transition is what the simulator
would have produced from the same states and actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fleet.record import encode_record
from hardware.observation import ObservationLayout
from hardware.randomization import PhysicsParams
from hardware.state import RobotState
from hardware.step import StepContract, StepResult
from hardware.tasks.base import Task
from robot_agent.sink import ExperienceSink

ROW_KEYS = ("obs", "critic_obs", "actions", "log_probs", "rewards", "dones", "time_outs", "stamp")
ROBOT = np.array([0])  # the batch of one


@dataclass
class EpisodeSummary:
    """How one episode went."""

    number: int
    length: int
    episode_return: float
    cut_short: bool  # ended by the agent (e-stop, shutdown, step limit), not by the task


def chunk_record_bytes(obs_layout: ObservationLayout, priv_layout: ObservationLayout, header: dict[str, Any],
                       n: int, priorities: bool = True) -> int:
    """The spool bytes of a chunk of ``n`` transitions recorded with these layouts under ``header`` (the
    recorder's: robot, hardware, task), at its widest header numbers: never below a real chunk's. ``priorities``:
    the spool writer adds a priority per transition (spool.priorities)."""
    profile = obs_layout.profile
    critic = obs_layout.size + priv_layout.size + PhysicsParams.NUM_PRIVILEGED  # the robot's nominal physics too
    rows = {"obs": np.zeros((n, obs_layout.size)), "critic_obs": np.zeros((n, critic)),
            "actions": np.zeros((n, profile.num_actions)), "log_probs": np.zeros(n), "rewards": np.zeros(n),
            "dones": np.zeros(n), "time_outs": np.zeros(n), "stamp": np.zeros(n)}
    robot = str(header.get("robot_id", "robot"))  # the spool's id format: <robot>-<16 hex epoch>-<seq>
    widest = {**header, "episode": 1 << 40, "first_step": 1 << 40, "steps": n, "episode_end": False,
              "trunk_version": 1 << 40, "adapter_version": 1 << 40, "chunk_id": f"{robot}-{'f' * 16}-{10**10 - 1}",
              "seq": 10**10 - 1, "spool_epoch": "f" * 16}
    arrays = chunk_arrays(rows, np.zeros(critic), 0, 0)
    if priorities:  # robot_agent/priorities.py
        arrays["priorities"] = np.zeros(n, np.float32)
    return len(encode_record(widest, arrays))


def transitions_fitting(obs_layout: ObservationLayout, priv_layout: ObservationLayout, header: dict[str, Any],
                        most: int, limit: int, priorities: bool = True) -> int:
    """The most transitions (at most ``most``) a chunk may hold and stay within ``limit`` bytes (0: not one)."""
    low, high = 0, most
    while low < high:  # the size grows with the transitions: the last count that fits
        mid = (low + high + 1) // 2
        if chunk_record_bytes(obs_layout, priv_layout, header, mid, priorities) <= limit:
            low = mid
        else:
            high = mid - 1
    return low


class TransitionRecorder:
    """Builds one robot's transitions with the shared step contract and hands them to a sink in chunks.

    A chunk holds at most ``chunk_steps`` transitions and ends at every episode end; its ``critic_obs``
    has one row more than its transitions: the critic observation at the reading after the last one,
    which a learner bootstraps a time-out (or a chunk cut mid-episode) from.
    """

    def __init__(self, task: Task, obs_layout: ObservationLayout, priv_layout: ObservationLayout, sink: ExperienceSink,
                 chunk_steps: int, rng: np.random.Generator, header: dict[str, Any]):
        self.task, self.obs_layout, self.priv_layout = task, obs_layout, priv_layout
        self.sink, self.chunk_steps, self.rng, self.header = sink, chunk_steps, rng, header
        self.contract = StepContract(task, 1)
        self.steps = 0  # transitions recorded, over all episodes
        self.inputs = task.make_inputs(1)
        self.episode, self.versions = 0, (0, 0)
        self._cut = np.zeros(1, dtype=bool)
        # the robot cannot measure the physics the sim critic saw: those columns enter as nominal (0)
        self._no_physics = np.zeros(PhysicsParams.NUM_PRIVILEGED, np.float32)
        self._rows: dict[str, list] = {k: [] for k in ROW_KEYS}
        self._first_step = 0
        self._step: StepResult | None = None  # the transition that ended at the latest reading
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None  # obs, critic, action, log-prob

    def begin(self, episode: int, trunk_version: int, adapter_version: int,
              rng: np.random.Generator | None = None) -> None:
        """A new episode from the home pose: fresh goals (drawn from ``rng`` from now on, where given), no
        transitions yet."""
        if rng is not None:
            self.rng = rng
        self.inputs = self.task.make_inputs(1)
        self.contract.begin_episodes(self.rng, self.inputs, ROBOT)
        self.episode, self.versions = episode, (trunk_version, adapter_version)
        self._rows = {k: [] for k in ROW_KEYS}
        self._first_step = 0  # the episode step of the next chunk's first row (its header's ``first_step``)
        self._step = self._last = None
        self._aborted = False

    def abort(self) -> None:
        """End the episode at the last reading the robot acted on, before an unusable one (non-finite): the
        transition in flight is dropped (its end state is unknown), the last recorded one is cut there and
        bootstraps from the critic observation at that reading."""
        self._aborted = True
        if self._last is not None and self._rows["rewards"]:
            self._rows["dones"][-1] = self._rows["time_outs"][-1] = 1.0
            self._emit(self._last[1], True)
        self._last = None

    def observe(self, state: RobotState, cut_short: bool) -> tuple[np.ndarray, bool]:
        """Before the command: end the transition that led to ``state`` (cut short if asked) and build the
        policy's observation at it; returns (observation, whether the episode ended here)."""
        done = False
        if self._last is not None:
            self._cut[0] = cut_short
            self._step = self.contract.step(state, self.inputs, self._last[2], self.rng, truncated=self._cut,
                                            defer_reward=True)
            self.steps += 1
            done = bool(self._step.done[0])
        return self.obs_layout.build(state, self.inputs)[0], done

    def record(self, stamp: float, state: RobotState, obs: np.ndarray, action: np.ndarray | None,
               log_prob: float = 0.0) -> None:
        """After the command (``action``, or None once the episode ended): the reward and row of the transition
        that ended at this reading, and a chunk to the sink when it is full or the episode is over."""
        extra = self.priv_layout.build(state, self.inputs)[0] if self.priv_layout.size else np.zeros(0, np.float32)
        critic = np.concatenate([obs, extra, self._no_physics])
        step = self._step
        if step is not None and self._last is not None:
            last_obs, last_critic, last_action, last_logp = self._last
            rows = self._rows
            done = bool(step.done[0])
            rows["obs"].append(last_obs)
            rows["critic_obs"].append(last_critic)
            rows["actions"].append(last_action[0])
            rows["log_probs"].append(last_logp)
            rows["rewards"].append(float(step.reward[0]))
            rows["dones"].append(float(done))
            rows["time_outs"].append(float(step.time_out[0]))
            rows["stamp"].append(stamp)
            if done or len(rows["rewards"]) >= self.chunk_steps:
                self._emit(critic, done)
        self._last = None if action is None else (obs, critic, action[None], log_prob)

    def episode_bytes(self, steps: int) -> int:
        """The spool bytes an episode of ``steps`` transitions takes (its full chunks and the last, shorter
        one): what an episode's room is judged by before any chunk was written."""
        full, rest = divmod(steps, self.chunk_steps)
        return full * self.chunk_bytes(self.chunk_steps) + (self.chunk_bytes(rest) if rest else 0)

    def chunk_bytes(self, n: int) -> int:
        """The spool bytes of a chunk of ``n`` transitions, at its widest header (never below a real one)."""
        return chunk_record_bytes(self.obs_layout, self.priv_layout, self.header, n)

    def summary(self) -> EpisodeSummary:
        """The episode so far (call at its end)."""
        length = int(self.contract.episode_length[0])
        cut = self._aborted or (self._step is not None and bool(self._step.time_out[0])
                                and length < self.contract.max_episode_length)
        return EpisodeSummary(self.episode, length, float(self.contract.episode_return[0]), cut)

    def _emit(self, final_critic_obs: np.ndarray, episode_end: bool) -> None:
        trunk, adapter = self.versions
        arrays = chunk_arrays(self._rows, final_critic_obs, trunk, adapter)
        steps = len(arrays["rewards"])
        # first_step lets a reader tell that every chunk of an episode before its last one has arrived
        header = {**self.header, "episode": self.episode, "first_step": self._first_step, "steps": steps,
                  "episode_end": episode_end, "trunk_version": trunk, "adapter_version": adapter}
        self._first_step += steps
        self._rows = {k: [] for k in ROW_KEYS}
        self.sink.put(header, arrays)


def chunk_arrays(rows: dict[str, list], final_critic_obs: np.ndarray, trunk_version: int,
                 adapter_version: int) -> dict[str, np.ndarray]:
    """One chunk's arrays from its transition rows (``ROW_KEYS``): the names, dtypes and shapes every
    reader of the record (adapter learner, hub, Parquet tier, fleet learner) relies on."""
    n = len(rows["rewards"])
    return {
        "obs": np.asarray(rows["obs"], dtype=np.float32),
        "critic_obs": np.asarray([*rows["critic_obs"], final_critic_obs], dtype=np.float32),
        "actions": np.asarray(rows["actions"], dtype=np.float32),
        "log_probs": np.asarray(rows["log_probs"], dtype=np.float32),
        "rewards": np.asarray(rows["rewards"], dtype=np.float32),
        "dones": np.asarray(rows["dones"], dtype=np.float32),
        "time_outs": np.asarray(rows["time_outs"], dtype=np.float32),
        "trunk_version": np.full(n, trunk_version, dtype=np.int64),
        "adapter_version": np.full(n, adapter_version, dtype=np.int64),
        "stamp": np.asarray(rows["stamp"], dtype=np.float64),
    }
