"""Quadruped locomotion: track joystick velocity commands (legged_gym-style reward terms)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hardware.profile import Family
from hardware.state import RobotState, TaskInputs
from hardware.tasks.base import Task, TaskConfig, TaskConfigError


@dataclass
class LocomotionConfig(TaskConfig):
    """Command ranges, their re-draw period, and the fall conditions."""

    lin_vel_x: list[float] = field(default_factory=lambda: [-1.0, 1.0])  # m/s: forward command range (body frame)
    lin_vel_y: list[float] = field(default_factory=lambda: [-0.5, 0.5])  # m/s: sideways command range (body frame)
    yaw_rate: list[float] = field(default_factory=lambda: [-1.0, 1.0])  # rad/s: turn command range
    command_period_s: float = 10.0  # s between uniform re-draws of the commands (and one at every reset)
    tracking_sigma: float = 0.25  # tracking rewards are exp(-squared error / this): smaller is stricter
    min_base_height: float = 0.15  # below: the trunk is on the ground
    max_tilt_cos: float = 0.5  # gravity's body-z component above -0.5: tilted past 60 degrees
    base_height_target: float = 0.28  # m: the trunk height the base_height term penalises deviation from


class LocomotionTask(Task):
    """Velocity tracking with stability and smoothness penalties; a fall ends the episode."""

    name = "locomotion"
    families = (Family.quadruped,)
    config_cls = LocomotionConfig
    reward_terms = ("tracking_lin_vel", "tracking_ang_vel", "lin_vel_z", "ang_vel_xy", "orientation",
                    "torques", "action_rate", "base_height", "alive")
    required_terms = ("command",)
    cfg: LocomotionConfig

    def validate(self) -> None:
        super().validate()
        for key in ("lin_vel_x", "lin_vel_y", "yaw_rate"):
            lo, hi = getattr(self.cfg, key)
            if lo > hi:
                raise TaskConfigError(f"task.{key}: need low <= high, got {[lo, hi]}")
        if self.cfg.command_period_s <= 0 or self.cfg.tracking_sigma <= 0:
            raise TaskConfigError("task.command_period_s and task.tracking_sigma must be > 0")

    @property
    def goal_period_steps(self) -> int:
        return int(round(self.cfg.command_period_s / self.dt))

    def make_inputs(self, batch: int) -> TaskInputs:
        inputs = super().make_inputs(batch)
        inputs.command = np.zeros((batch, 3))
        return inputs

    def sample_goals(self, rng: np.random.Generator, inputs: TaskInputs, ids: np.ndarray) -> None:
        n = len(ids)
        for k, key in enumerate(("lin_vel_x", "lin_vel_y", "yaw_rate")):
            lo, hi = getattr(self.cfg, key)
            inputs.command[ids, k] = rng.uniform(lo, hi, n)

    def reward_terms_of(self, state, inputs, action, prev_action) -> dict[str, np.ndarray]:
        v, w, cmd = state.base_lin_vel, state.base_ang_vel, inputs.command
        g = state.gravity
        lin_err = np.sum((cmd[:, :2] - v[:, :2]) ** 2, axis=1)
        yaw_err = (cmd[:, 2] - w[:, 2]) ** 2
        torque = state.joint_torque if state.joint_torque is not None else np.zeros_like(action)
        return {
            "tracking_lin_vel": np.exp(-lin_err / self.cfg.tracking_sigma),
            "tracking_ang_vel": np.exp(-yaw_err / self.cfg.tracking_sigma),
            "lin_vel_z": v[:, 2] ** 2,
            "ang_vel_xy": np.sum(w[:, :2] ** 2, axis=1),
            "orientation": np.sum(g[:, :2] ** 2, axis=1),
            "torques": np.sum(torque ** 2, axis=1),
            "action_rate": np.sum((action - prev_action) ** 2, axis=1),
            "base_height": (state.base_pos[:, 2] - self.cfg.base_height_target) ** 2,
            "alive": np.ones(state.batch_size),
        }

    def terminated(self, state: RobotState, inputs: TaskInputs) -> np.ndarray:
        g_z = state.gravity[:, 2]
        return (g_z > -self.cfg.max_tilt_cos) | (state.base_pos[:, 2] < self.cfg.min_base_height)

    def success(self, state: RobotState, inputs: TaskInputs) -> np.ndarray:
        # read at episode end: standing, tracking within 0.25 m/s
        err = np.linalg.norm(inputs.command[:, :2] - state.base_lin_vel[:, :2], axis=1)
        return ~self.terminated(state, inputs) & (err < 0.25)
