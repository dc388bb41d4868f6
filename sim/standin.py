"""A MuJoCo stand-in that plays one physical robot unit behind the driver protocol.

Each unit draws its own true physics (masses, friction, motor strength, PD gains, damping, latency)
from a "reality gap" configuration that may lie outside the ranges the policy was trained on, plus
what a real unit adds: joint calibration offsets, sensor noise and bias, and jitter in the control
period. Its physics runs through the same :class:`sim.physics.MuJoCoBatchBackend` (a batch of
one) as the simulator, so the stand-in differs from sim only by its parameters.

``realtime=True``: the physics advances one control period at a time on the wall clock, whether or
not a command arrived (as a real robot does), in its own process by default (``process=True``, see
:mod:`sim.standin_link`: a unit's physics must not compete with the agent for its interpreter
lock, as real hardware does not) or in a thread of the caller. ``realtime=False``: each
:meth:`send_command` advances one period at once, as fast as the CPU allows (tests, evaluation).
The agent sees only :class:`TimedState`; the true parameters stay in :attr:`true_params`, for
benchmarks to build an oracle from, never for the agent.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hardware.action import ActionMap
from hardware.driver import DriverError, RobotDriver, TimedState
from hardware.profile import ActuatorMode, HardwareProfile
from hardware.randomization import RandomizationConfig, RandomizationError, sample_params
from hardware.state import RobotState
from sim.models import build_model
from sim.physics import MuJoCoBatchBackend
from sim.standin_link import StateLayout, UnitProcess, serve_unit, state_layout


@dataclass
class RealityGapConfig:
    """How one unit differs from the model: physics ranges (drawn once per unit) and sensor faults."""

    physics: RandomizationConfig = field(default_factory=RandomizationConfig)  # latency_steps = actuator delay
    joint_offset: float = 0.0  # rad (or m), max |calibration offset| per joint
    joint_pos_noise: float = 0.0  # std of encoder noise
    joint_vel_noise: float = 0.0
    gyro_noise: float = 0.0  # rad/s std on base angular velocity
    gyro_bias: float = 0.0  # rad/s, max |bias| per axis
    period_jitter: float = 0.0  # fraction of the control period, uniform +-
    home_noise: float = 0.05  # rad, uniform +- around the default pose at home()

    def validate(self) -> None:
        """Raise :class:`RandomizationError` naming the first bad key."""
        self.physics.validate("gap.physics")
        for name in ("joint_offset", "joint_pos_noise", "joint_vel_noise", "gyro_noise", "gyro_bias",
                     "home_noise"):
            if getattr(self, name) < 0:
                raise RandomizationError(f"gap.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.period_jitter < 0.5:
            raise RandomizationError(f"gap.period_jitter: must be in [0, 0.5), got {self.period_jitter}")


def reality_gap(cfg: RealityGapConfig | dict[str, Any] | None) -> RealityGapConfig:
    """A validated gap config from a dataclass, a plain/Hydra dict, or nothing (a perfect unit)."""
    if isinstance(cfg, RealityGapConfig):
        gap = cfg
    else:
        try:
            gap = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RealityGapConfig), cfg or {}))
        except OmegaConfBaseException as exc:
            raise RandomizationError(f"invalid reality gap (key: gap.{exc.full_key}): {exc.msg}") from exc
    gap.validate()
    return gap


class MuJoCoStandInDriver(RobotDriver):
    """One simulated robot unit with its own reality gap, behind the driver protocol."""

    def __init__(self, profile: HardwareProfile, gap: RealityGapConfig | dict[str, Any] | None = None,
                 seed: int = 0, realtime: bool = False, process: bool = True):
        self.profile = profile
        self.gap = reality_gap(gap)
        self.realtime = realtime
        self.process = process
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.robot = build_model(profile)
        self._backend = MuJoCoBatchBackend(self.robot, 1, nthread=1, randomized=self.gap.physics.randomized())
        self.true_params = sample_params(self.rng, self.gap.physics, 1)
        self._backend.apply_params(np.array([0]), self.true_params)
        joints = profile.joints
        g = self.gap
        self._offset = self.rng.uniform(-g.joint_offset, g.joint_offset, len(joints))
        self._gyro_bias = self.rng.uniform(-g.gyro_bias, g.gyro_bias, 3)
        self._actuated = np.array([i for i, j in enumerate(joints) if j.actuated])
        self._max_vel = np.array([j.max_velocity for j in profile.actuated_joints])
        self._neutral = ActionMap(profile).neutral(1)[0]
        self._latency = int(self.true_params.latency_steps[0])
        self._pipeline: deque[np.ndarray] = deque()
        self._command = self._neutral.copy()
        self._damping = False
        self._substeps = profile.decimation
        self._physics_dt = 1.0 / profile.physics_hz
        self._period = 1.0 / profile.control_hz
        self._sim_time = 0.0
        self._lock = threading.RLock()
        self._running = threading.Event()
        self._thread: threading.Thread | None = None
        self._remote: UnitProcess | None = None
        self._reading: TimedState | None = None
        self._periods = 0  # control periods the physics advanced
        self._faults = 0  # physics divergences (the unit was re-homed)

    @property
    def periods(self) -> int:
        """Control periods the unit's physics has advanced."""
        return self._remote.counter("periods") if self._remote is not None else self._periods

    @property
    def faults(self) -> int:
        """Physics divergences (each re-homed the unit)."""
        return self._remote.counter("faults") if self._remote is not None else self._faults

    # -- protocol ------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Home the unit; in real time, start its physics clock (in its own process by default)."""
        if self.realtime and self.process:
            if self._remote is None:
                self._reading = self._read()  # only to lay out the shared reading
                layout = state_layout(self._reading.state)
                try:
                    self._remote = UnitProcess(_unit_process_main, (self.profile, self.gap, self.seed), layout,
                                               len(self._neutral))
                except RuntimeError as exc:
                    raise DriverError(f"stand-in {self.profile.name}: {exc}") from exc
            return
        self.home()
        if self.realtime and self._thread is None:
            self._running.set()
            self._thread = threading.Thread(target=self.run_clock, args=(self._running.is_set,),
                                            name="standin-physics", daemon=True)
            self._thread.start()

    def home(self) -> None:
        """Default pose plus a little noise, zero velocity, commands pipeline flushed."""
        if self._remote is not None:
            try:
                self._remote.home()
            except RuntimeError as exc:
                raise DriverError(f"stand-in {self.profile.name}: {exc}") from exc
            return
        r, n = self.robot, self.gap.home_noise
        qpos = r.init_qpos.copy()
        qpos[r.joint_qpos_adr] += self.rng.uniform(-n, n, len(r.joint_qpos_adr))
        with self._lock:
            self._backend.reset(np.array([0]), qpos[None], np.zeros((1, r.model.nv)))
            self._command = self._neutral.copy()
            self._pipeline = deque(self._neutral.copy() for _ in range(self._latency))
            self._backend.ctrl[0, r.actuator_ids] = self._to_true(self._neutral)
            self._reading = self._read()

    def read_state(self) -> TimedState:
        """The latest reading: what the unit's (offset, noisy, biased) sensors report."""
        if self._remote is not None:
            return TimedState(*self._remote.block.latest())
        reading = self._reading  # replaced whole each period: no lock, so the physics never blocks a reader
        if reading is None:
            raise DriverError("stand-in: read_state() before connect()")
        return reading

    def send_command(self, command: np.ndarray) -> None:
        """Queue the command; without real time, advance one control period now."""
        command = np.asarray(command, dtype=np.float64)
        if command.shape != self._neutral.shape:
            raise DriverError(f"stand-in {self.profile.name}: command shape {command.shape}, "
                              f"expected {self._neutral.shape}")
        self.apply(command, damping=False)

    def damp(self) -> None:
        """Zero stiffness, velocity damping only; persists until the next command."""
        self.apply(self._command, damping=True)

    def apply(self, command: np.ndarray, damping: bool) -> None:
        """Take a (checked) command or damping mode; without real time, advance one control period now."""
        if self._remote is not None:
            self._remote.command(command, damping)
            self._command = command
            return
        # plain reference assignments (atomic): the control thread never waits for a physics step
        self._command = command.copy()
        self._damping = damping
        if not self.realtime:
            self._advance()

    @property
    def damping(self) -> bool:
        """Whether the unit is in damping mode."""
        return self._remote.damping if self._remote is not None else self._damping

    def stop(self) -> None:
        """Damp, stop the physics clock (thread or process)."""
        self.damp()
        self._running.clear()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._remote is not None:
            self._periods, self._faults = self.periods, self.faults
            self._remote.stop()
            self._remote = None

    # -- physics -------------------------------------------------------------------------------------
    def run_clock(self, keep_going: Callable[[], bool], after_period: Callable[[], None] | None = None) -> None:
        """Advance one control period per period of the wall clock while ``keep_going()`` (asked after
        each wait, so that it may also hand in the newest command); ``after_period`` publishes."""
        next_t = time.monotonic()
        while True:
            next_t += self._period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if not keep_going():
                return
            self._advance()
            if after_period is not None:
                after_period()

    def _advance(self) -> None:
        """One control period: the command from ``latency`` periods ago, a jittered number of substeps."""
        j = self.gap.period_jitter
        n = max(1, int(round(self._substeps * (1.0 + self.rng.uniform(-j, j))))) if j else self._substeps
        b, ids = self._backend, self.robot.actuator_ids
        with self._lock:
            self._pipeline.append(self._command)
            applied = self._pipeline.popleft()
            if self._damping:
                for _ in range(n):
                    b.ctrl[0, ids] = self._damping_command()
                    b.step(1)
            else:
                b.ctrl[0, ids] = self._to_true(applied)
                b.step(n)
            if b.unstable()[0]:  # MuJoCo reset the diverged world: put the unit back home
                self._faults += 1
                self.home()
            self._sim_time += n * self._physics_dt
            self._periods += 1
            self._reading = self._read()

    def _to_true(self, command: np.ndarray) -> np.ndarray:
        # PD targets are in the unit's (offset) encoder frame; the motor servos to the true angle
        if self.profile.actuator.mode == ActuatorMode.pd:
            return command - self._offset[self._actuated]
        return command

    def _damping_command(self) -> np.ndarray:
        s = self._backend.state()
        q, qd = s.joint_pos[0, self._actuated], s.joint_vel[0, self._actuated]
        if self.profile.actuator.mode == ActuatorMode.pd:
            return q.copy()  # target = where it is: only the D term acts
        return np.clip(-2.0 * qd / self._max_vel, -1.0, 1.0)

    def _read(self) -> TimedState:
        s = self._backend.state(with_torque=True)
        g, rng = self.gap, self.rng
        nj = s.joint_pos.shape[1]
        out = RobotState(
            joint_pos=s.joint_pos + self._offset + rng.normal(0.0, g.joint_pos_noise, (1, nj)),
            joint_vel=s.joint_vel + rng.normal(0.0, g.joint_vel_noise, (1, nj)),
            joint_torque=s.joint_torque.copy(),
        )
        if s.base_quat is not None:
            out.base_quat = s.base_quat.copy()
            out.base_pos = s.base_pos.copy()  # as a state estimator reports it
            out.base_lin_vel = s.base_lin_vel.copy()
            out.base_ang_vel = s.base_ang_vel + self._gyro_bias + rng.normal(0.0, g.gyro_noise, (1, 3))
        if s.ee_pos is not None:
            out.ee_pos = s.ee_pos.copy()  # as an external tracker measures it
        if s.foot_contact is not None:
            out.foot_contact = s.foot_contact.copy()
        stamp = time.monotonic() if self.realtime else self._sim_time
        return TimedState(stamp, out)


def _unit_process_main(profile: HardwareProfile, gap: RealityGapConfig, seed: int, block_name: str,
                       layout: StateLayout, num_actions: int, conn: Any) -> None:
    """Child process: the same unit (same seed, so the same true physics) on its own wall clock."""
    unit = MuJoCoStandInDriver(profile, gap, seed, realtime=True, process=False)
    serve_unit(unit, block_name, layout, num_actions, conn)
