"""Fixtures shared by the hub's tests."""

from __future__ import annotations

import pytest

from tests.fleet.hub_client import BareRobot


@pytest.fixture
def robots():
    """Make bare protocol clients of a hub (closed after the test): ``robots(endpoint, robot_id, keys_dir=None)``."""
    made = []

    def make(endpoint, robot_id, keys_dir=None):
        made.append(BareRobot(endpoint, robot_id, keys_dir))
        return made[-1]

    yield make
    for r in made:
        r.close()
