"""Observation terms and layouts: the exact vector a policy sees, built by one function in sim and on robot.

A layout is the profile's ordered term list resolved to sizes. Two parties agree on observations
when their layouts' :meth:`ObservationLayout.signature` are equal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hardware.compiled import copy_into, kernel, wrapped_angle32
from hardware.profile import HardwareProfile, ProfileError
from hardware.state import RobotState, TaskInputs


@dataclass(frozen=True)
class ProfileConstants:
    """Per-profile arrays the terms need, computed once per layout rather than once per step."""

    profile: HardwareProfile
    default_pos: np.ndarray  # (J,)
    continuous: np.ndarray  # indices of continuous joints
    limited: np.ndarray  # indices of the others
    limited_default: np.ndarray  # default_pos of the limited joints
    num_continuous: int

    @classmethod
    def of(cls, p: HardwareProfile) -> ProfileConstants:
        """Constants of profile ``p``."""
        cont = np.array([j.continuous for j in p.joints])
        default = np.array([j.default_pos for j in p.joints])
        lim = np.flatnonzero(~cont)
        return cls(p, default, np.flatnonzero(cont), lim, default[lim], int(cont.sum()))


@dataclass(frozen=True)
class ObservationTerm:
    """One named slice of the observation vector.

    ``fill``, where a term has one, writes the same values as ``value`` straight into the output slice:
    the batched env builds every world's observation at every step, and a temporary array per term
    costs more than the arithmetic.
    """

    name: str
    size: Callable[[HardwareProfile], int]
    value: Callable[[RobotState, TaskInputs, ProfileConstants], np.ndarray]
    doc: str
    fill: Callable[[RobotState, TaskInputs, ProfileConstants, np.ndarray], None] | None = None


def _need(x: np.ndarray | None, term: str) -> np.ndarray:
    if x is None:
        raise ProfileError(f"observation term '{term}' needs a state field this robot does not provide")
    return x


def _fill_joint_pos_encoded(s: RobotState, _: TaskInputs, c: ProfileConstants, out: np.ndarray) -> None:
    _encode_joint_pos(s.joint_pos, c.limited, c.limited_default, c.continuous, out)


@kernel
def _encode_joint_pos(joint_pos: np.ndarray, limited: np.ndarray, limited_default: np.ndarray,
                      continuous: np.ndarray, out: np.ndarray) -> None:
    """Per robot: the limited joints minus their default, then cos of every continuous joint, then sin."""
    nl, nc = len(limited), len(continuous)
    if joint_pos.shape[1] != nl + nc or out.shape[0] != joint_pos.shape[0] or out.shape[1] != nl + 2 * nc:
        raise ValueError("joint_pos does not have the profile's number of joints")
    for i in range(joint_pos.shape[0]):
        for k in range(nl):
            out[i, k] = joint_pos[i, limited[k]] - limited_default[k]
        for k in range(nc):
            angle = wrapped_angle32(joint_pos[i, continuous[k]])
            out[i, nl + k] = np.cos(angle)
            out[i, nl + nc + k] = np.sin(angle)


def _joint_pos_encoded(s: RobotState, t: TaskInputs, c: ProfileConstants) -> np.ndarray:
    out = np.empty((s.batch_size, len(c.limited_default) + 2 * c.num_continuous))
    _fill_joint_pos_encoded(s, t, c, out)
    return out


def _fill_joint_pos_rel(s: RobotState, _: TaskInputs, c: ProfileConstants, out: np.ndarray) -> None:
    np.subtract(s.joint_pos, c.default_pos, out=out, casting="same_kind")


def _ee_to_target(s: RobotState, t: TaskInputs, _: ProfileConstants) -> np.ndarray:
    return _need(t.target, "ee_to_target") - _need(s.ee_pos, "ee_to_target")


def _num_feet(p: HardwareProfile) -> int:
    return int(p.params.get("num_feet", 4))


TERMS: dict[str, ObservationTerm] = {
    t.name: t
    for t in [
        ObservationTerm("joint_pos_rel", lambda p: p.num_joints,
                        lambda s, t, c: s.joint_pos - c.default_pos, "joint positions minus the default pose",
                        _fill_joint_pos_rel),
        ObservationTerm("joint_pos_encoded", lambda p: p.num_joints + sum(j.continuous for j in p.joints),
                        _joint_pos_encoded, "limited joints minus default; continuous joints as cos, sin",
                        _fill_joint_pos_encoded),
        ObservationTerm("joint_vel", lambda p: p.num_joints, lambda s, t, c: s.joint_vel, "joint velocities"),
        ObservationTerm("base_ang_vel", lambda p: 3, lambda s, t, c: _need(s.base_ang_vel, "base_ang_vel"),
                        "gyro, body frame"),
        ObservationTerm("projected_gravity", lambda p: 3,
                        lambda s, t, c: s.gravity,
                        "gravity direction in the body frame"),
        ObservationTerm("base_lin_vel", lambda p: 3, lambda s, t, c: _need(s.base_lin_vel, "base_lin_vel"),
                        "linear velocity, body frame (privileged on hardware)"),
        ObservationTerm("base_height", lambda p: 1, lambda s, t, c: _need(s.base_pos, "base_height")[:, 2:3],
                        "base height above the floor (privileged on hardware)"),
        ObservationTerm("command", lambda p: 3, lambda s, t, c: _need(t.command, "command"),
                        "velocity command vx, vy, yaw rate"),
        ObservationTerm("ee_pos", lambda p: 3, lambda s, t, c: _need(s.ee_pos, "ee_pos"), "end-effector position"),
        ObservationTerm("target_pos", lambda p: 3, lambda s, t, c: _need(t.target, "target_pos"), "reach target"),
        ObservationTerm("ee_to_target", lambda p: 3, _ee_to_target, "target minus end-effector"),
        ObservationTerm("last_action", lambda p: p.num_actions, lambda s, t, c: t.last_action,
                        "previous policy action"),
        ObservationTerm("foot_contact", _num_feet, lambda s, t, c: _need(s.foot_contact, "foot_contact"),
                        "1 where a foot touches the ground"),
    ]
}


class ObservationLayout:
    """An ordered list of terms resolved to slices for one hardware profile."""

    def __init__(self, profile: HardwareProfile, terms: list[str]):
        unknown = [t for t in terms if t not in TERMS]
        if unknown:
            raise ProfileError(f"unknown observation terms {unknown}; known: {sorted(TERMS)}")
        self.profile = profile
        self.constants = ProfileConstants.of(profile)
        self.terms = list(terms)
        self.slices: dict[str, slice] = {}
        start = 0
        for name in self.terms:
            n = TERMS[name].size(profile)
            self.slices[name] = slice(start, start + n)
            start += n
        self.size = start
        self._resolved = [(TERMS[name], (slice(None), self.slices[name])) for name in self.terms]

    def signature(self) -> list[tuple[str, int]]:
        """(term, size) pairs: what a checkpoint manifest records and a robot checks against."""
        return [(t, self.slices[t].stop - self.slices[t].start) for t in self.terms]

    def build(self, state: RobotState, inputs: TaskInputs, out: np.ndarray | None = None) -> np.ndarray:
        """Fill ``out`` (B, size) float32 with the observation; allocates when ``out`` is None."""
        if out is None:
            out = np.empty((state.batch_size, self.size), dtype=np.float32)
        c = self.constants
        for term, where in self._resolved:
            if term.fill is not None:
                term.fill(state, inputs, c, out[where])
            else:
                copy_into(term.value(state, inputs, c), out[where])
        return out

    def noise_std(self, per_term: dict[str, float]) -> np.ndarray:
        """Per-element noise std (size,) from per-term values; terms not named get none."""
        std = np.zeros(self.size, dtype=np.float32)
        for name, value in per_term.items():
            if name in self.slices:
                std[self.slices[name]] = value
        return std
