"""Action -> joint command: one mapping for sim and robot."""

from __future__ import annotations

import numpy as np

from hardware.compiled import kernel
from hardware.profile import ActuatorMode, HardwareProfile


class ActionMap:
    """Turns policy actions (B, A) into actuator commands (B, A) for one profile.

    PD: position target = default_pos + action_scale * action, clamped to the joint range.
    Torque: normalised torque command clip(action_scale * action, -1, 1); the motor's gear is max_torque.
    """

    def __init__(self, profile: HardwareProfile):
        self.profile = profile
        self.mode = profile.actuator.mode
        self.scale = float(profile.actuator.action_scale)
        self.clip = float(profile.actuator.action_clip)
        joints = profile.actuated_joints
        self.default = np.array([j.default_pos for j in joints])
        lo = np.array([-np.inf if j.continuous else j.range[0] for j in joints])
        hi = np.array([np.inf if j.continuous else j.range[1] for j in joints])
        self.low, self.high = lo, hi
        # Clipping the action to +-clip and then the command to its range is one clip of the command to
        # the tighter bounds (the scale is positive), worked out once here: three in-place ops per call.
        self._pd = self.mode == ActuatorMode.pd
        if self._pd:
            self._lo = np.maximum(self.default + self.scale * -self.clip, lo)
            self._hi = np.minimum(self.default + self.scale * self.clip, hi)
        else:
            self._lo = np.full(len(joints), max(self.scale * -self.clip, -1.0))
            self._hi = np.full(len(joints), min(self.scale * self.clip, 1.0))
        self._offset = self.default if self._pd else np.zeros(len(joints))

    def to_command(self, actions: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Actuator commands for ``actions``; writes into ``out`` (e.g. MuJoCo's ctrl rows) when given."""
        if out is None:
            out = np.empty(np.shape(actions))
        _scale_and_clip(actions, self.scale, self._offset, self._lo, self._hi, out)
        return out

    def neutral(self, batch: int) -> np.ndarray:
        """The command that holds the default pose (PD) or applies no torque."""
        return self.to_command(np.zeros((batch, len(self.default))))


@kernel
def _scale_and_clip(actions: np.ndarray, scale: float, offset: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    out: np.ndarray) -> None:
    """out = clip(offset + scale * actions, lo, hi), per robot and joint; NaN stays NaN, as with np.clip, so
    that the safety layer sees it rather than a command at a joint limit."""
    if actions.shape != out.shape or actions.shape[1] != len(offset):
        raise ValueError("actions do not have the shape (batch, profile's num_actions)")
    for i in range(actions.shape[0]):
        for j in range(actions.shape[1]):
            v = offset[j] + scale * actions[i, j]
            if v < lo[j]:
                v = lo[j]
            elif v > hi[j]:
                v = hi[j]
            out[i, j] = v
