"""Cart-pole swing-up and balance (dm_control's smooth reward)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardware.profile import Family
from hardware.state import RobotState, TaskInputs
from hardware.tasks.base import Task, TaskConfig, TaskConfigError, tolerance_gaussian


@dataclass
class CartpoleConfig(TaskConfig):
    """Swing-up starts hanging down; balance (swing_up=false) starts near upright."""

    swing_up: bool = True
    upright_cos: float = 0.95  # success: pole within ~18 degrees of upright at episode end
    centered_margin: float = 2.0


class CartpoleTask(Task):
    """Reward in [0, 1] per step: upright x centred x small control x small angular velocity."""

    name = "cartpole_swingup"
    families = (Family.cartpole,)
    config_cls = CartpoleConfig
    reward_terms = ("smooth",)
    cfg: CartpoleConfig

    def validate(self) -> None:
        super().validate()
        if not -1.0 < self.cfg.upright_cos < 1.0:
            raise TaskConfigError(f"task.upright_cos must be in (-1, 1), got {self.cfg.upright_cos}")

    def reward_terms_of(self, state: RobotState, inputs: TaskInputs, action: np.ndarray,
                        prev_action: np.ndarray) -> dict[str, np.ndarray]:
        x, theta = state.joint_pos[:, 0], state.joint_pos[:, 1]
        theta_dot = state.joint_vel[:, 1]
        upright = (np.cos(theta) + 1.0) / 2.0
        centered = (1.0 + tolerance_gaussian(x, self.cfg.centered_margin)) / 2.0
        u = np.clip(action[:, 0], -1.0, 1.0)
        small_control = (4.0 + np.maximum(1.0 - u * u, 0.0)) / 5.0
        small_velocity = (1.0 + tolerance_gaussian(theta_dot, 5.0)) / 2.0
        return {"smooth": upright * centered * small_control * small_velocity}

    def success(self, state: RobotState, inputs: TaskInputs) -> np.ndarray:
        return np.cos(state.joint_pos[:, 1]) > self.cfg.upright_cos
