"""Cart-pole swing-up and balance (dm_control's smooth reward)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardware.compiled import kernel, wrapped_angle32
from hardware.profile import Family, HardwareProfile
from hardware.state import RobotState, TaskInputs
from hardware.tasks.base import Task, TaskConfig, TaskConfigError


@dataclass
class CartpoleConfig(TaskConfig):
    """Episodes start from the profile's default pose (the pole hanging, in cartpole.yaml): a swing-up."""

    # ignored (read by no code): episodes start from the profile's default pose either way
    swing_up: bool = True
    upright_cos: float = 0.95  # success: pole within ~18 degrees of upright at episode end
    centered_margin: float = 2.0  # m: cart offset at which the centred factor falls to 0.55; larger is laxer


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
        out = np.empty(state.batch_size)  # allocated here: an array made inside a kernel costs ~1 us to hand back
        _smooth_reward(state.joint_pos, state.joint_vel, action, self._k_centered, self._k_velocity, out)
        return {"smooth": out}

    def success(self, state: RobotState, inputs: TaskInputs) -> np.ndarray:
        return np.cos(state.joint_pos[:, 1]) > self.cfg.upright_cos


@kernel
def _smooth_reward(joint_pos: np.ndarray, joint_vel: np.ndarray, action: np.ndarray, k_centered: float,
                   k_velocity: float, out: np.ndarray) -> None:
    """dm_control's factors (1 + cos) / 2 * (1 + g(x)) / 2 * (4 + 1 - u^2) / 5 * (1 + g(theta_dot)) / 2, with g the
    gaussian tolerance exp(k v^2), per world: cart at joint 0, pole at joint 1. u^2 is the mean of the clipped
    squared actions, so that a pole with its own motor pays for both, and one action (the cart's force) gives
    dm_control's reward exactly."""
    n, na = joint_pos.shape[0], action.shape[1]
    if (joint_pos.shape[1] != 2 or joint_vel.shape != joint_pos.shape or action.shape[0] != n
            or na < 1 or out.shape[0] != n):
        raise ValueError("cart-pole reward needs joint_pos and joint_vel of shape (B, 2) and actions (B, >= 1)")
    for i in range(n):
        x, theta_dot = joint_pos[i, 0], joint_vel[i, 1]
        effort = 0.0
        for a in range(na):
            u = action[i, a]
            u = -1.0 if u < -1.0 else (1.0 if u > 1.0 else u)  # NaN stays NaN
            effort += u * u
        effort /= na  # exact for one action: x / 1.0 == x
        # Single-precision transcendentals run twice as fast in a compiled loop and keep ~1e-6 relative accuracy
        # here: the gaussian factors are 1 + exp(...) >= 1, and 1 + cos(theta) is taken as 2 sin^2(d / 2) with
        # d = theta - pi wrapped in double, so that it stays exact relative to its size near the hanging pose.
        half = np.float32(0.5) * wrapped_angle32(joint_pos[i, 1] - np.pi)
        upright = 2.0 * np.sin(half) ** 2
        centered = np.exp(np.float32(k_centered * x * x)) + 1.0
        slow = np.exp(np.float32(k_velocity * theta_dot * theta_dot)) + 1.0
        out[i] = upright * centered * slow * (5.0 - effort) * (1.0 / 40.0)
