"""Robot state as the policy's side of the world sees it, batched over a leading dimension.

The simulator fills it from MuJoCo arrays; a robot driver fills it (batch of 1) from its sensors.
Observation terms, rewards and terminations read only this, so sim and robot share them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass
class RobotState:
    """Measured state of B robots. Fields a family has no sensor for stay ``None``."""

    joint_pos: np.ndarray  # (B, J) rad or m, in action order
    joint_vel: np.ndarray  # (B, J)
    base_quat: np.ndarray | None = None  # (B, 4) wxyz, world frame
    base_ang_vel: np.ndarray | None = None  # (B, 3) body frame (gyro)
    base_lin_vel: np.ndarray | None = None  # (B, 3) body frame (privileged on a real robot)
    base_pos: np.ndarray | None = None  # (B, 3) world frame (privileged on a real robot)
    ee_pos: np.ndarray | None = None  # (B, 3) end-effector, arm base frame
    foot_contact: np.ndarray | None = None  # (B, F) 1.0 in contact
    joint_torque: np.ndarray | None = None  # (B, J) applied actuator torque

    @property
    def batch_size(self) -> int:
        """Number of robots in the batch."""
        return int(self.joint_pos.shape[0])

    def is_finite(self) -> bool:
        """Whether every measured value is finite (a NaN or inf reading must not become an observation)."""
        return all(np.isfinite(v).all() for v in (self.joint_pos, self.joint_vel, self.base_quat, self.base_ang_vel,
                                                     self.base_lin_vel, self.base_pos, self.ee_pos, self.foot_contact,
                                                     self.joint_torque) if v is not None)

    @functools.cached_property
    def gravity(self) -> np.ndarray:
        """Projected gravity (B, 3), computed once per state: observations, rewards and terminations share it."""
        if self.base_quat is None:
            raise ValueError("projected gravity needs base_quat, which this robot does not provide")
        return projected_gravity(self.base_quat)


@dataclass
class TaskInputs:
    """What the task gives the policy besides the robot's state: commands, targets, last action."""

    last_action: np.ndarray  # (B, A)
    command: np.ndarray | None = None  # (B, 3) vx, vy, yaw rate for locomotion
    target: np.ndarray | None = None  # (B, 3) reach target, arm base frame


def quat_rotate_inverse(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate world-frame vectors ``v`` (B, 3) into the frames of unit quaternions ``q`` (B, 4, wxyz)."""
    w, x, y, z = q[:, 0:1], q[:, 1:2], q[:, 2:3], q[:, 3:4]
    vx, vy, vz = v[:, 0:1], v[:, 1:2], v[:, 2:3]
    # v' = v (2w^2 - 1) - 2w (q_xyz x v) + 2 q_xyz (q_xyz . v); the cross product written out
    dot2 = 2.0 * (x * vx + y * vy + z * vz)
    a = 2.0 * w * w - 1.0
    w2 = 2.0 * w
    return np.concatenate([
        vx * a - w2 * (y * vz - z * vy) + x * dot2,
        vy * a - w2 * (z * vx - x * vz) + y * dot2,
        vz * a - w2 * (x * vy - y * vx) + z * dot2,
    ], axis=1)


def projected_gravity(q: np.ndarray) -> np.ndarray:
    """Unit gravity direction in the body frame, (B, 3): (0, 0, -1) when upright."""
    # R^T (0,0,-1) written out: cheaper than the general rotation on the hot path.
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    out = np.empty((q.shape[0], 3), dtype=q.dtype)
    out[:, 0] = -2.0 * (x * z - w * y)
    out[:, 1] = -2.0 * (y * z + w * x)
    out[:, 2] = -(1.0 - 2.0 * (x * x + y * y))
    return out


def as_slice(idx: np.ndarray) -> slice | np.ndarray:
    """A slice when the indices are contiguous (views instead of gathers on the hot path), else ``idx``."""
    if len(idx) and (np.diff(idx) == 1).all():
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx
