"""Cart-pole swing-up and balance (dm_control's smooth reward)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardware.profile import Family, HardwareProfile
from hardware.state import RobotState, TaskInputs
from hardware.tasks.base import Task, TaskConfig, TaskConfigError


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

    def __init__(self, cfg: CartpoleConfig, profile: HardwareProfile):
        super().__init__(cfg, profile)
        # tolerance_gaussian(v, m) = exp(k v^2) with k = ln(0.1) / m^2
        self._k_centered = np.log(0.1) / cfg.centered_margin ** 2
        self._k_velocity = np.log(0.1) / 5.0 ** 2

    def validate(self) -> None:
        super().validate()
        if not -1.0 < self.cfg.upright_cos < 1.0:
            raise TaskConfigError(f"task.upright_cos must be in (-1, 1), got {self.cfg.upright_cos}")

    def reward_terms_of(self, state: RobotState, inputs: TaskInputs, action: np.ndarray,
                        prev_action: np.ndarray) -> dict[str, np.ndarray]:
        # dm_control's factors, (1 + cos) / 2 * (1 + g(x)) / 2 * (4 + 1 - u^2) / 5 * (1 + g(theta_dot)) / 2 with
        # g the gaussian tolerance, multiplied out in place: this runs for every world at every step
        x, theta = state.joint_pos[:, 0], state.joint_pos[:, 1]
        theta_dot = state.joint_vel[:, 1]
        out = np.cos(theta)
        out += 1.0
        g = x * x
        g *= self._k_centered
        np.exp(g, out=g)
        g += 1.0
        out *= g
        np.multiply(theta_dot, theta_dot, out=g)
        g *= self._k_velocity
        np.exp(g, out=g)
        g += 1.0
        out *= g
        u = np.minimum(np.maximum(action[:, 0], -1.0), 1.0)
        u *= u
        np.subtract(5.0, u, out=u)
        out *= u
        out *= 1.0 / 40.0
        return {"smooth": out}

    def success(self, state: RobotState, inputs: TaskInputs) -> np.ndarray:
        return np.cos(state.joint_pos[:, 1]) > self.cfg.upright_cos
