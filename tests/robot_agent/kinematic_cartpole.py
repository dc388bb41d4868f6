"""A cart-pole driver with no MuJoCo in it: the textbook equations of motion, integrated in numpy.

It stands for a vendor's driver on a real robot computer (which loads no simulator): the agent finds it by
its ``module:Class`` name, as it would a vendor's, and it implements only :class:`hardware.driver.RobotDriver`.
Its clock is simulated (each command or damp advances one control period), so an episode runs at CPU speed.
"""

from __future__ import annotations

import numpy as np

from hardware.driver import DriverError, RobotDriver, TimedState
from hardware.profile import HardwareProfile
from hardware.state import RobotState

GRAVITY = 9.81


class KinematicCartpoleDriver(RobotDriver):
    """Cart (slider, force = command x max_torque) and a free pole (hinge, 0 = upright), semi-implicit Euler."""

    realtime = False  # the agent keeps no wall-clock deadline for a simulated clock

    def __init__(self, profile: HardwareProfile, seed: int = 0, realtime: bool = False):
        if profile.family != "cartpole":
            raise DriverError(f"kinematic cart-pole: cannot drive hardware '{profile.name}' ({profile.family})")
        if realtime:
            raise DriverError("kinematic cart-pole: its clock is simulated; set driver.options.realtime=false")
        self.profile = profile
        self.rng = np.random.default_rng(seed)
        slider, hinge = profile.joints[0], profile.joints[1]
        self._force = slider.max_torque
        self._rail = slider.range[1]
        self._home = np.array([slider.default_pos, hinge.default_pos])
        self._cart, self._pole = profile.param("cart_mass"), profile.param("pole_mass")
        self._half_length = 0.5 * profile.param("pole_length")
        self._dt = 1.0 / profile.physics_hz
        self._substeps = profile.decimation
        self._q = self._home.copy()
        self._qd = np.zeros(2)
        self._time = 0.0
        self._connected = False
        self.damping = False

    def connect(self) -> None:
        """Nothing to open: the 'robot' is this object."""
        self._connected = True
        self.home()

    def home(self) -> None:
        """Pole hanging, cart centred (a little noise), at rest."""
        self._q = self._home + self.rng.uniform(-0.01, 0.01, 2)
        self._qd = np.zeros(2)

    def read_state(self) -> TimedState:
        """Positions and velocities, batch of one, stamped with the simulated clock."""
        if not self._connected:
            raise DriverError("kinematic cart-pole: read_state() before connect()")
        return TimedState(self._time, RobotState(joint_pos=self._q[None].copy(), joint_vel=self._qd[None].copy()))

    def send_command(self, command: np.ndarray) -> None:
        """A normalised cart force in [-1, 1]; advances one control period."""
        command = np.asarray(command, dtype=np.float64)
        if command.shape != (1,):
            raise DriverError(f"kinematic cart-pole: command shape {command.shape}, expected (1,)")
        self.damping = False
        self._advance(float(command[0]))

    def damp(self) -> None:
        """A force against the cart's motion; advances one control period."""
        self.damping = True
        self._advance(float(np.clip(-2.0 * self._qd[0] / self.profile.joints[0].max_velocity, -1.0, 1.0)))

    def stop(self) -> None:
        """Damp and disconnect (idempotent)."""
        if self._connected:
            self.damp()
        self._connected = False

    def _advance(self, command: float) -> None:
        m_c, m_p, half = self._cart, self._pole, self._half_length
        force = self._force * float(np.clip(command, -1.0, 1.0))
        for _ in range(self._substeps):
            theta, theta_dot = self._q[1], self._qd[1]
            sin, cos = np.sin(theta), np.cos(theta)
            lean = (force + m_p * half * theta_dot**2 * sin) / (m_c + m_p)
            theta_acc = (GRAVITY * sin - cos * lean) / (half * (4.0 / 3.0 - m_p * cos**2 / (m_c + m_p)))
            x_acc = lean - m_p * half * theta_acc * cos / (m_c + m_p)
            self._qd += self._dt * np.array([x_acc, theta_acc])
            self._q += self._dt * self._qd
            if abs(self._q[0]) > self._rail:  # the rail's end stop
                self._q[0], self._qd[0] = np.clip(self._q[0], -self._rail, self._rail), 0.0
        self._time += self._substeps * self._dt
