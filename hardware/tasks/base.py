"""Task definitions shared by sim and robot: goals, rewards, terminations and success, in plain numpy.

A task reads only :class:`RobotState` and :class:`TaskInputs`, so a robot agent computes the same
reward and episode boundaries from its driver's state as the simulator does from MuJoCo.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from hardware.profile import Family, HardwareProfile, ProfileError
from hardware.randomization import RandomizationConfig
from hardware.state import RobotState, TaskInputs


class TaskConfigError(ValueError):
    """A task config value is out of range; the message names the key."""


@dataclass
class TaskConfig:
    """Settings every task has. Task-specific configs subclass it; Hydra validates YAML against them."""

    name: str = "???"  # a registered task (hardware.tasks.TASKS); the task=<name> group sets it
    episode_length_s: float = 10.0  # s; after round(this x control_hz) steps a time-out ends the episode
    # reward term -> weight; a term left out weighs 0 (off), an unknown one is refused
    reward_scales: dict[str, float] = field(default_factory=dict)
    obs_noise_std: dict[str, float] = field(default_factory=dict)  # per observation term, x randomization.obs_noise
    privileged_observation: list[str] = field(default_factory=list)  # extra terms only the critic sees
    init_joint_noise: float = 0.1  # uniform +- around the default pose at reset
    init_vel_noise: float = 0.1  # uniform +- joint velocity at reset (rad/s, m/s), also a free base's 6 dofs
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)


class Task(ABC):
    """Base class: subclasses set ``name``, ``families``, ``config_cls`` and ``reward_terms``."""

    name: ClassVar[str]
    families: ClassVar[tuple[Family, ...]]
    config_cls: ClassVar[type[TaskConfig]] = TaskConfig
    reward_terms: ClassVar[tuple[str, ...]]
    required_terms: ClassVar[tuple[str, ...]] = ()  # observation terms the profile must include

    def __init__(self, cfg: TaskConfig, profile: HardwareProfile):
        if profile.family not in self.families:
            allowed = ", ".join(f.value for f in self.families)
            raise ProfileError(f"task '{self.name}' runs on the {allowed} family; hardware '{profile.name}' "
                               f"is {profile.family.value}")
        missing = [t for t in self.required_terms if t not in profile.observation]
        if missing:
            raise ProfileError(f"task '{self.name}' needs observation terms {missing} in hardware '{profile.name}'")
        self.cfg = cfg
        self.profile = profile
        self.dt = 1.0 / profile.control_hz
        self.max_episode_length = int(round(cfg.episode_length_s * profile.control_hz))
        self.validate()
        unknown = sorted(set(cfg.reward_scales) - set(self.reward_terms))
        if unknown:
            raise TaskConfigError(f"task.reward_scales: unknown terms {unknown}; known: {list(self.reward_terms)}")
        self.scales = {k: float(cfg.reward_scales.get(k, 0.0)) for k in self.reward_terms}
        # the common single-term task (cart-pole) skips the scaling and summing below on every step
        active = [k for k, v in self.scales.items() if v]
        self._only_term = active[0] if len(active) == 1 and self.scales[active[0]] == 1.0 else None

    def validate(self) -> None:
        """Range checks beyond the schema's types; raise :class:`TaskConfigError` naming the key."""
        if self.cfg.episode_length_s <= 0:
            raise TaskConfigError(f"task.episode_length_s must be > 0, got {self.cfg.episode_length_s}")
        if self.cfg.init_joint_noise < 0 or self.cfg.init_vel_noise < 0:
            raise TaskConfigError("task.init_joint_noise and task.init_vel_noise must be >= 0")
        self.cfg.randomization.validate("task.randomization")

    # -- goals ---------------------------------------------------------------------------------------
    def make_inputs(self, batch: int) -> TaskInputs:
        """Zeroed task inputs for ``batch`` robots."""
        return TaskInputs(last_action=np.zeros((batch, self.profile.num_actions)))

    def sample_goals(self, rng: np.random.Generator, inputs: TaskInputs, ids: np.ndarray) -> None:
        """Draw new commands / targets for robots ``ids`` (at reset and every goal period)."""
        return  # tasks without goals (cart-pole, Ant) draw nothing

    @property
    def goal_period_steps(self) -> int:
        """Steps between goal re-draws within an episode; 0 = only at reset."""
        return 0

    # -- per step ------------------------------------------------------------------------------------
    @abstractmethod
    def reward_terms_of(self, state: RobotState, inputs: TaskInputs, action: np.ndarray,
                        prev_action: np.ndarray) -> dict[str, np.ndarray]:
        """Unscaled reward terms, (B,) each."""

    def reward(self, state: RobotState, inputs: TaskInputs, action: np.ndarray,
               prev_action: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Scaled total reward (B,) and the scaled terms; callers must not write into either."""
        terms = self.reward_terms_of(state, inputs, action, prev_action)
        if self._only_term is not None and len(terms) == 1:
            value = terms[self._only_term]
            return (value if value.dtype == np.float64 else value.astype(np.float64)), terms
        scaled = {name: value if self.scales[name] == 1.0 else self.scales[name] * value
                  for name, value in terms.items() if self.scales[name]}
        if len(scaled) == 1:  # the total is the one term's array itself (read-only by contract)
            return np.asarray(next(iter(scaled.values())), dtype=np.float64), scaled
        if not scaled:
            return np.zeros(state.batch_size), scaled
        return np.asarray(sum(scaled.values()), dtype=np.float64), scaled

    def terminated(self, state: RobotState, inputs: TaskInputs) -> np.ndarray:
        """(B,) bool: the episode ended by failure (not by time). Tasks that can fail override it."""
        return np.zeros(state.batch_size, dtype=bool)

    @property
    def can_fail(self) -> bool:
        """Whether :meth:`terminated` can ever be true (an env skips it on every step when not)."""
        return type(self).terminated is not Task.terminated

    def success(self, state: RobotState, inputs: TaskInputs) -> np.ndarray:
        """(B,) bool: whether the task counts as solved at this state (read at episode end)."""
        return np.zeros(state.batch_size, dtype=bool)


def tolerance_gaussian(x: np.ndarray, margin: float, value_at_margin: float = 0.1) -> np.ndarray:
    """dm_control's gaussian tolerance around 0: 1 at 0, ``value_at_margin`` at +-margin."""
    scale = np.sqrt(-2.0 * np.log(value_at_margin))
    return np.exp(-0.5 * (x * scale / margin) ** 2)
