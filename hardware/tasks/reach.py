"""Reach: bring the end-effector to a random target in the arm's workspace."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hardware.profile import Family
from hardware.state import RobotState, TaskInputs
from hardware.tasks.base import Task, TaskConfig, TaskConfigError


@dataclass
class ReachConfig(TaskConfig):
    """Targets lie at a fraction of the arm's reach from its workspace centre."""

    target_radius: list[float] = field(default_factory=lambda: [0.35, 0.85])  # fraction of reach
    success_radius: float = 0.05  # m


class ReachTask(Task):
    """Dense distance reward, a bonus inside the success radius, and an action-rate penalty."""

    name = "reach"
    families = (Family.arm,)
    config_cls = ReachConfig
    reward_terms = ("distance", "success_bonus", "action_rate")
    required_terms = ("ee_to_target",)
    cfg: ReachConfig

    def __init__(self, cfg: ReachConfig, profile):
        super().__init__(cfg, profile)
        p = profile
        self.spatial = bool(p.params.get("spatial", 0.0))
        if self.spatial:
            self.center = np.array([0.0, 0.0, 0.333])
            self.reach = 0.855  # Panda's published maximum reach
        else:
            self.center = np.zeros(3)
            self.reach = sum(p.param(f"link{i + 1}_length") for i in range(p.num_joints))

    def validate(self) -> None:
        super().validate()
        lo, hi = self.cfg.target_radius
        if not 0 < lo <= hi <= 1.0:
            raise TaskConfigError(f"task.target_radius must satisfy 0 < low <= high <= 1, got {[lo, hi]}")
        if self.cfg.success_radius <= 0:
            raise TaskConfigError(f"task.success_radius must be > 0, got {self.cfg.success_radius}")

    def make_inputs(self, batch: int) -> TaskInputs:
        inputs = super().make_inputs(batch)
        inputs.target = np.zeros((batch, 3))
        return inputs

    def sample_goals(self, rng: np.random.Generator, inputs: TaskInputs, ids: np.ndarray) -> None:
        n = len(ids)
        lo, hi = self.cfg.target_radius
        r = self.reach * rng.uniform(lo, hi, n)
        if self.spatial:  # a front hemisphere shell, above the floor
            az = rng.uniform(-np.pi / 2, np.pi / 2, n)
            el = rng.uniform(-0.3, 0.9, n)
            d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=1)
        else:  # the vertical x-z plane, in front of and above/below the shoulder
            ang = rng.uniform(-np.pi / 2, np.pi / 2, n)
            d = np.stack([np.cos(ang), np.zeros(n), np.sin(ang)], axis=1)
        inputs.target[ids] = self.center + r[:, None] * d

    def reward_terms_of(self, state, inputs, action, prev_action) -> dict[str, np.ndarray]:
        dist = np.linalg.norm(inputs.target - state.ee_pos, axis=1)
        return {
            "distance": dist,
            "success_bonus": (dist < self.cfg.success_radius).astype(np.float64),
            "action_rate": np.sum((action - prev_action) ** 2, axis=1),
        }

    def success(self, state: RobotState, inputs: TaskInputs) -> np.ndarray:
        return np.linalg.norm(inputs.target - state.ee_pos, axis=1) < self.cfg.success_radius
