"""The robot driver protocol: the one small interface every robot (and the MuJoCo stand-in) implements.

A driver is the only code that talks to a robot's hardware. It claims a hardware profile, and the
robot agent checks that claim against the policy's layout before it sends a single command. The agent
finds drivers by name (:mod:`robot_agent.drivers`): a vendor's package registers one under the
``fleet.drivers`` entry-point group, or names it ``module:Class``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from hardware.profile import HardwareProfile
from hardware.state import RobotState


class DriverError(RuntimeError):
    """A driver could not be found, connected, or does not match what the agent expects."""


@dataclass
class TimedState:
    """One reading of the robot's sensors, stamped with the driver's monotonic clock (seconds)."""

    stamp: float
    state: RobotState


class RobotDriver(ABC):
    """Connect, read state, send a command, stop; plus a home pose and a safe damping mode.

    Commands are actuator commands in the profile's units: joint position targets (rad or m) for PD
    actuators, normalised torques in [-1, 1] for torque actuators (see :class:`hardware.action.ActionMap`).
    """

    profile: HardwareProfile

    @abstractmethod
    def connect(self) -> None:
        """Open the link to the robot; raise :class:`DriverError` when it cannot be reached."""

    @abstractmethod
    def home(self) -> None:
        """Bring the robot to its start pose for a new episode (blocking)."""

    @abstractmethod
    def read_state(self) -> TimedState:
        """The latest sensor reading (batch of one)."""

    @abstractmethod
    def send_command(self, command: np.ndarray) -> None:
        """Command the actuators, shape (num_actions,); leaves damping mode."""

    @abstractmethod
    def damp(self) -> None:
        """Enter the safe damping mode: no position or torque goal, joint velocities damped."""

    @abstractmethod
    def stop(self) -> None:
        """Damp, then close the link (idempotent)."""
