"""The README's example driver is real code: it runs against a shipped profile and gives the readings the agent
expects (a batch of one, the profile's joints, a monotonic stamp), so the guide cannot drift from the protocol."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hardware.driver import RobotDriver, TimedState
from hardware.profile import load_profile

README = Path(__file__).resolve().parents[2] / "README.md"


def _example_driver() -> type[RobotDriver]:
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    code = next(b for b in blocks if "(RobotDriver)" in b)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    return next(v for v in namespace.values() if isinstance(v, type) and issubclass(v, RobotDriver)
                and v is not RobotDriver)


def test_the_readme_driver_implements_the_protocol_for_a_shipped_profile():
    profile = load_profile("arm2_planar")
    driver = _example_driver()(profile, port="/dev/ttyUSB1")  # abstract methods left out would refuse this
    driver.connect()
    driver.home()
    first = driver.read_state()
    assert isinstance(first, TimedState) and first.state.joint_pos.shape == (1, profile.num_joints)
    np.testing.assert_allclose(first.state.joint_pos[0], [j.default_pos for j in profile.joints])
    target = np.full(profile.num_actions, 0.1)
    driver.send_command(target)
    second = driver.read_state()
    assert second.stamp >= first.stamp and second.state.is_finite()
    np.testing.assert_allclose(second.state.joint_pos[0], target)
    driver.damp()
    driver.stop()
    driver.stop()  # idempotent, as the protocol asks
