"""A batched simulation of one stand-in unit exactly as the agent meets it: what an oracle trains on.

The adaptation benchmark's oracle must be a ceiling for the unit, so it trains on everything the unit's
reality gap holds (``hardware/standin.py``), not only its physics:

- physics and actuator latency: the task's randomisation pinned to the unit's true values ([v, v]);
- joint calibration offsets: added to every joint reading, and taken off PD targets (the motor servos to
  the true angle), as the stand-in does;
- sensor noise (Gaussian, per reading) and gyro bias, on the readings; the task's own sim noise is off;
- control-period jitter: a jittered number of physics substeps per period (one draw for the batch, so
  every world sees the unit's distribution);
- home pose noise: the task's initial-pose noise set to the unit's, with zero initial velocity.

Rewards, terminations and observations are computed from the readings, as on the robot (the agent sees
nothing else). ``tests/benchmarks/test_unit_replica.py`` checks the replica against the stand-in reading
for reading. Not replicated: a diverged world ends its episode here, where the stand-in re-homes the unit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from hardware.action import ActionMap
from hardware.profile import ActuatorMode, HardwareProfile, load_profile
from hardware.randomization import RANGE_FIELDS
from hardware.state import RobotState
from hardware.tasks import task_class
from hardware.tasks.config import task_config
from sim.env import BatchedEnv
from sim.models import build_model
from sim.standin import MuJoCoStandInDriver, RealityGapConfig


class CalibratedActionMap(ActionMap):
    """The profile's action map, with PD targets moved from the unit's encoder frame to the true angle."""

    def __init__(self, profile: HardwareProfile, offset: np.ndarray):
        super().__init__(profile)
        self.calibration = offset

    def to_command(self, actions: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The profile's command minus the unit's offsets on its actuated joints."""
        out = super().to_command(actions, out)
        out -= self.calibration
        return out


class UnitReplicaEnv(BatchedEnv):
    """N copies of one stand-in unit (its physics, latency, offsets and sensor faults) running ``task``."""

    def __init__(self, task: Any, unit: MuJoCoStandInDriver, num_envs: int, seed: int = 0):
        # set before the base class reads its first state
        self.gap: RealityGapConfig = unit.gap
        # the unit's calibration is hidden from the agent; the benchmark reads it like ``true_params``
        self.joint_offset = unit._offset.copy()
        self.gyro_bias = unit._gyro_bias.copy()
        self._sensor_rng = np.random.default_rng([seed, 1])
        super().__init__(task, build_model(unit.profile), num_envs, seed=seed)
        self._substeps = self.decimation
        if self.profile.actuator.mode == ActuatorMode.pd:
            actuated = [i for i, j in enumerate(self.profile.joints) if j.actuated]
            self.action_map = CalibratedActionMap(self.profile, self.joint_offset[actuated])
            self._neutral = self.action_map.neutral(1)[0]  # what the latency ring holds after a reset
            self.reset()  # the first reset held the neutral pose without the offsets

    def _command_actuators(self, act: np.ndarray) -> None:
        """As on the unit: the agent's safety layer filters the command in the encoder frame (against the
        readings, offsets included), then the motor servos to the true angle (the calibration comes after it)."""
        if not isinstance(self.action_map, CalibratedActionMap):
            super()._command_actuators(act)
            return
        cmd = ActionMap.to_command(self.action_map, act)
        safe = self.safety.apply(cmd, self.state, out=cmd) - self.action_map.calibration
        applied = self._delay(safe)
        if self._ctrl_all:
            self.backend.ctrl[:] = applied
        else:
            self.backend.ctrl[:, self.robot.actuator_ids] = applied

    def step(self, actions: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """One control period of every copy, with the unit's period jitter."""
        j = self.gap.period_jitter
        if j:
            self.decimation = max(1, int(round(self._substeps * (1.0 + self._sensor_rng.uniform(-j, j)))))
        return super().step(actions)

    def _read_state(self) -> RobotState:
        s = super()._read_state()
        g, rng = self.gap, self._sensor_rng
        n, nj = s.joint_pos.shape

        def noisy(x: np.ndarray, std: float, shape: tuple[int, ...]) -> np.ndarray:
            return x + rng.normal(0.0, std, shape) if std else x + 0.0

        # a new state: the base class's may be a view of the live MuJoCo arrays
        out = dataclasses.replace(s, joint_pos=noisy(s.joint_pos + self.joint_offset, g.joint_pos_noise, (n, nj)),
                                  joint_vel=noisy(s.joint_vel, g.joint_vel_noise, (n, nj)))
        if s.base_ang_vel is not None:
            out.base_ang_vel = noisy(s.base_ang_vel + self.gyro_bias, g.gyro_noise, (n, 3))
        return out


def pinned_randomization(unit: MuJoCoStandInDriver) -> dict[str, Any]:
    """The task's randomisation collapsed onto the unit's true physics and latency, with no sim sensor noise."""
    p = unit.true_params
    r: dict[str, Any] = {"enabled": True, "obs_noise": 0.0, "push_interval_s": 0.0, "push_velocity": 0.0}
    for name in RANGE_FIELDS:
        v = np.asarray(getattr(p, name))[0]
        if np.ndim(v) and not np.allclose(v, v.flat[0]):
            raise ValueError(f"unit replica: {name} differs per axis ({v.tolist()}); a [low, high] range "
                             "cannot pin it")
        r[name] = [float(np.ravel(v)[0])] * 2
    r["latency_steps"] = [int(p.latency_steps[0])] * 2
    return r


def make_unit_replica(task: str, hardware: str, gap: RealityGapConfig | dict[str, Any], unit_seed: int,
                      num_envs: int, seed: int = 0) -> UnitReplicaEnv:
    """Copies of the stand-in unit ``MuJoCoStandInDriver(hardware, gap, unit_seed)`` running ``task``."""
    unit = MuJoCoStandInDriver(load_profile(hardware), gap=gap, seed=unit_seed)
    cfg = task_config(task, {"randomization": pinned_randomization(unit), "init_joint_noise": unit.gap.home_noise,
                             "init_vel_noise": 0.0})
    return UnitReplicaEnv(task_class(task)(cfg, unit.profile), unit, num_envs, seed=seed)
