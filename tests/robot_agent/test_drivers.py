"""The driver registry: shipped names, entry points and `module:Class` names, and clear errors for the rest."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from hardware.driver import DriverError
from hardware.profile import load_profile
from robot_agent.drivers import BUILTIN_DRIVERS, ENTRY_POINT_GROUP, driver_class, make_driver

from .kinematic_cartpole import KinematicCartpoleDriver

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


class NotADriver:
    """A class that does not implement the driver protocol."""


def test_shipped_driver_is_found_by_name_and_unknown_names_are_listed():
    from sim.standin import MuJoCoStandInDriver

    assert driver_class("mujoco_standin") is MuJoCoStandInDriver
    with pytest.raises(DriverError, match="unknown driver 'acme'.*mujoco_standin.*module:Class"):
        driver_class("acme")


def test_a_driver_named_module_colon_class_is_imported_and_built():
    driver = make_driver("tests.robot_agent.kinematic_cartpole:KinematicCartpoleDriver", load_profile("cartpole"),
                         seed=3)
    assert isinstance(driver, KinematicCartpoleDriver) and driver.profile.name == "cartpole"


@pytest.mark.parametrize(("name", "match"), [
    ("acme_fleet_not_installed.driver:AcmeDriver", "cannot import module 'acme_fleet_not_installed.driver'"),
    (f"{__name__}:NoSuchDriver", "has no 'NoSuchDriver'"),
    (f"{__name__}:NotADriver", "is not a hardware.driver.RobotDriver"),
])
def test_a_bad_module_colon_class_name_is_refused_naming_what_is_wrong(name, match):
    with pytest.raises(DriverError, match=match):
        driver_class(name)


def test_the_installed_entry_points_name_the_shipped_drivers_where_they_are():
    # pip installs the entry points from pyproject.toml; the registry also knows them uninstalled (BUILTIN_DRIVERS)
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert declared == BUILTIN_DRIVERS
    for name in declared:
        driver_class(name)  # importable and a RobotDriver
