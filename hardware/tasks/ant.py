"""Gymnasium Ant-v5's task on its own MJCF: run forward, stay healthy, spend little control."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hardware.profile import Family
from hardware.state import RobotState, TaskInputs, quat_rotate_inverse
from hardware.tasks.base import Task, TaskConfig


@dataclass
class AntConfig(TaskConfig):
    """Ant-v5 defaults: healthy z in [0.2, 1.0]."""

    # [low, high], m: a trunk height outside it (or not finite) ends the episode; 'healthy' pays 1 inside
    healthy_z: list[float] = field(default_factory=lambda: [0.2, 1.0])


class AntTask(Task):
    """forward velocity + healthy reward - control cost, as Ant-v5 (without the contact cost)."""

    name = "ant_run"
    families = (Family.mjcf_file,)
    config_cls = AntConfig
    reward_terms = ("forward", "healthy", "ctrl_cost")
    cfg: AntConfig

    def reward_terms_of(self, state, inputs, action, prev_action) -> dict[str, np.ndarray]:
        # world-frame x velocity: rotate the body-frame velocity back with the conjugate quaternion
        q_conj = state.base_quat * np.array([1.0, -1.0, -1.0, -1.0])
        v_world = quat_rotate_inverse(q_conj, state.base_lin_vel)
        return {
            "forward": v_world[:, 0],
            "healthy": (~self.terminated(state, inputs)).astype(np.float64),
            "ctrl_cost": np.sum(np.clip(action, -1, 1) ** 2, axis=1),
        }

    def terminated(self, state: RobotState, inputs: TaskInputs) -> np.ndarray:
        z = state.base_pos[:, 2]
        lo, hi = self.cfg.healthy_z
        return ~np.isfinite(z) | (z < lo) | (z > hi)

    def success(self, state: RobotState, inputs: TaskInputs) -> np.ndarray:
        return ~self.terminated(state, inputs)
