"""The driver registry: finds a robot driver by the name in the agent's config.

A name is looked up among the drivers this project ships, then among the ``fleet.drivers`` entry points
(the shipped names first: an editable install's metadata from an older layout cannot shadow them); a name
of the form ``module:Class`` is imported directly (a vendor's driver before its package is
installed, or one a test defines). A vendor's package registers its driver with a line in its own
``pyproject.toml``:

    [project.entry-points."fleet.drivers"]
    acme_arm = "acme_fleet.driver:AcmeArmDriver"

Nothing is imported until a driver is asked for: an agent on a real robot loads only that robot's driver
(the MuJoCo stand-in, and MuJoCo with it, load only when ``mujoco_standin`` is chosen).
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from hardware.driver import DriverError, RobotDriver
from hardware.profile import HardwareProfile

ENTRY_POINT_GROUP = "fleet.drivers"
# Drivers this project ships, found even when it runs from a checkout without being installed.
BUILTIN_DRIVERS = {"mujoco_standin": "sim.standin:MuJoCoStandInDriver"}


def _import(name: str, target: str) -> Any:
    module, _, attr = target.partition(":")
    try:
        obj = import_module(module)
    except ImportError as exc:
        raise DriverError(f"driver '{name}': cannot import module '{module}': {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DriverError(f"driver '{name}': module '{module}' has no '{attr}'")
        obj = getattr(obj, part)
    return obj


def driver_class(name: str) -> type[RobotDriver]:
    """The driver class registered as ``name`` (the built-ins, then entry points), or named ``module:Class``."""
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name in BUILTIN_DRIVERS:
        cls = _import(name, BUILTIN_DRIVERS[name])
    elif name in found:
        cls = _import(name, f"{found[name].module}:{found[name].attr}")
    elif ":" in name and all(name.partition(":")[::2]):
        cls = _import(name, name)
    else:
        known = sorted({*found, *BUILTIN_DRIVERS})
        raise DriverError(f"unknown driver '{name}'; registered drivers: {', '.join(known)} "
                          f"(entry-point group '{ENTRY_POINT_GROUP}'), or name one as 'module:Class'")
    if not (isinstance(cls, type) and issubclass(cls, RobotDriver)):
        raise DriverError(f"driver '{name}' ({cls!r}) is not a hardware.driver.RobotDriver")
    return cls


def make_driver(name: str, profile: HardwareProfile, **options: Any) -> RobotDriver:
    """Instantiate the driver ``name`` for ``profile`` with its own options."""
    return driver_class(name)(profile, **options)
