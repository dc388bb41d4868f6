"""The robot driver protocol and the registry that finds drivers by name.

A driver is the only code that talks to a robot's hardware. It claims a hardware profile, and the
robot agent checks that claim against the policy's layout before it sends a single command. Drivers
register under the ``fleet.drivers`` entry-point group, so a vendor's package adds one with a line in
its own ``pyproject.toml``:

    [project.entry-points."fleet.drivers"]
    acme_arm = "acme_fleet.driver:AcmeArmDriver"
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import numpy as np

from hardware.profile import HardwareProfile
from hardware.state import RobotState

ENTRY_POINT_GROUP = "fleet.drivers"
# Drivers this package ships, found even when the package is run from a checkout without being installed.
BUILTIN_DRIVERS = {"mujoco_standin": "hardware.standin:MuJoCoStandInDriver"}


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


def driver_class(name: str) -> type[RobotDriver]:
    """The driver class registered as ``name`` (entry points first, then the built-ins)."""
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name in found:
        cls = found[name].load()
    elif name in BUILTIN_DRIVERS:
        module, _, attr = BUILTIN_DRIVERS[name].partition(":")
        cls = getattr(__import__(module, fromlist=[attr]), attr)
    else:
        known = sorted({*found, *BUILTIN_DRIVERS})
        raise DriverError(f"unknown driver '{name}'; registered drivers: {', '.join(known)} "
                          f"(entry-point group '{ENTRY_POINT_GROUP}')")
    if not (isinstance(cls, type) and issubclass(cls, RobotDriver)):
        raise DriverError(f"driver '{name}' ({cls!r}) is not a hardware.driver.RobotDriver")
    return cls


def make_driver(name: str, profile: HardwareProfile, **options: Any) -> RobotDriver:
    """Instantiate the driver ``name`` for ``profile`` with its own options."""
    return driver_class(name)(profile, **options)
