"""The safety layer: every rule changes the command it must change, counts it, and leaves others alone."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hardware.profile import load_profile
from hardware.safety import (
    ESTOP,
    NONFINITE,
    POSITION_LIMIT,
    RATE_LIMIT,
    TORQUE_LIMIT,
    VELOCITY_LIMIT,
    WATCHDOG,
    SafeDriver,
    SafetyConfig,
    SafetyLayer,
)
from hardware.standin import MuJoCoStandInDriver
from hardware.state import RobotState

ARM = "arm2_planar"  # PD servos: shoulder kp 40 / 8 Nm, elbow kp 25 / 5 Nm, range +-2.6 rad, 3 rad/s


def _state(q, qd=(0.0, 0.0)) -> RobotState:
    return RobotState(joint_pos=np.array([q], float), joint_vel=np.array([qd], float))


def test_position_target_is_clamped_to_the_joint_range():
    layer = SafetyLayer(load_profile(ARM), SafetyConfig(pd_target_rate=100.0))
    out = layer.filter(np.array([3.5, 0.0]), _state([2.55, 0.0]))
    assert out[0] == pytest.approx(2.6)
    assert layer.counts[POSITION_LIMIT] == 1


def test_pd_target_is_pulled_in_to_respect_the_torque_limit():
    layer = SafetyLayer(load_profile(ARM), SafetyConfig(pd_target_rate=100.0))
    out = layer.filter(np.array([1.0, 0.0]), _state([0.0, 0.0]))
    assert 40.0 * (out[0] - 0.0) == pytest.approx(8.0)  # kp * error at the 8 Nm limit
    assert out[1] == 0.0 and layer.counts[TORQUE_LIMIT] == 1


def test_rate_limit_bounds_the_change_between_periods():
    profile = load_profile(ARM)
    layer = SafetyLayer(profile, SafetyConfig(pd_target_rate=1.0))
    step = 3.0 / profile.control_hz  # 1 x max_velocity x period
    layer.filter(np.array([0.0, 0.0]), _state([0.0, 0.0]))
    out = layer.filter(np.array([0.1, -0.01]), _state([0.0, 0.0]))
    assert out[0] == pytest.approx(step) and out[1] == pytest.approx(-0.01)
    assert layer.counts[RATE_LIMIT] == 1


def test_nan_command_holds_position_instead():
    layer = SafetyLayer(load_profile(ARM))
    out = layer.filter(np.array([np.nan, 0.2]), _state([0.3, -0.4]))
    np.testing.assert_allclose(out, [0.3, -0.4])
    assert layer.counts[NONFINITE] == 1


def test_over_speed_joint_gets_no_target_further_along_its_motion():
    layer = SafetyLayer(load_profile(ARM), SafetyConfig(pd_target_rate=100.0))
    out = layer.filter(np.array([0.1, 0.1]), _state([0.0, 0.0], qd=[4.0, -4.0]))
    assert out[0] == 0.0  # moving + at 4 rad/s > 3: held at the joint
    assert out[1] > 0  # moving - : a + target brakes it, allowed (within the torque limit)
    assert layer.counts[VELOCITY_LIMIT] == 1


def test_torque_mode_commands_are_clamped_to_full_scale():
    layer = SafetyLayer(load_profile("cartpole"), SafetyConfig(torque_rate=10.0))
    out = layer.filter(np.array([1.7]), _state([0.0, 3.1]))
    assert out[0] == 1.0 and layer.counts[TORQUE_LIMIT] == 1


def test_a_command_within_every_limit_passes_unchanged():
    layer = SafetyLayer(load_profile(ARM))
    cmd = np.array([0.01, -0.02])
    np.testing.assert_array_equal(layer.filter(cmd, _state([0.0, 0.0])), cmd)
    assert sum(layer.counts.values()) == 0


def test_bad_safety_value_is_named():
    with pytest.raises(ValueError, match="safety.watchdog_periods"):
        SafetyLayer(load_profile(ARM), SafetyConfig(watchdog_periods=0))


@pytest.mark.timeout(30)
def test_watchdog_damps_a_real_time_robot_when_commands_stop():
    driver = MuJoCoStandInDriver(load_profile(ARM), realtime=True)
    safe = SafeDriver(driver, SafetyConfig(watchdog_periods=2.0))
    driver.connect()
    safe.start_watchdog()
    try:
        safe.arm()
        for _ in range(3):
            ts = driver.read_state()
            safe.send(np.zeros(2), ts.state)
            time.sleep(0.5 * safe.period)
        assert not driver.damping and safe.counts[WATCHDOG] == 0
        time.sleep(6 * safe.period)  # the policy stalls
        assert driver.damping and safe.counts[WATCHDOG] == 1
        safe.send(np.zeros(2), driver.read_state().state)  # a fresh command leaves damping
        assert not driver.damping
    finally:
        safe.stop()


def test_estop_latches_until_cleared_after_its_file_is_gone(tmp_path):
    flag = tmp_path / "ESTOP"
    driver = MuJoCoStandInDriver(load_profile(ARM), realtime=False)
    driver.connect()
    safe = SafeDriver(driver, SafetyConfig(estop_file=str(flag)))
    state = driver.read_state().state
    assert safe.send(np.zeros(2), state) is not None
    flag.touch()
    assert safe.send(np.zeros(2), state) is None and driver.damping
    flag.unlink()
    assert safe.send(np.zeros(2), state) is None  # latched: the file going away is not enough
    flag.touch()
    assert not safe.estop.clear()  # refused while the file is back
    flag.unlink()
    assert safe.estop.clear()
    assert safe.send(np.zeros(2), state) is not None and not driver.damping
    assert safe.counts[ESTOP] == 2  # the two sends made while engaged


def test_estop_by_call_and_clear_request_file(tmp_path):
    flag = tmp_path / "ESTOP"
    driver = MuJoCoStandInDriver(load_profile(ARM), realtime=False)
    driver.connect()
    safe = SafeDriver(driver, SafetyConfig(estop_file=str(flag)))
    safe.estop.trigger("operator pressed the button")
    assert safe.send(np.zeros(2), driver.read_state().state) is None
    (tmp_path / "ESTOP.clear").touch()  # what `robot-agent clear-estop` writes
    assert safe.send(np.zeros(2), driver.read_state().state) is not None


def test_interventions_are_logged_after_the_command_first_then_as_periodic_summaries(caplog):
    layer = SafetyLayer(load_profile(ARM))
    state = _state([0.0, 0.0])

    def clamp(times):
        for _ in range(times):
            layer.reset()  # no rate limit: only the range clamp (and what follows from it) acts
            layer.filter(np.array([10.0, 0.0]), state)

    def lines():
        return [r.getMessage() for r in caplog.records if POSITION_LIMIT in r.getMessage()]

    with caplog.at_level("WARNING", logger="hardware.safety"):
        clamp(50)
        assert caplog.records == []  # nothing is written on the command path
        layer.report(now=100.0)
        assert len(lines()) == 1 and "#50" in lines()[0]
        clamp(30)
        layer.report(now=101.0)  # within report_every_s: no second line
        assert len(lines()) == 1
        layer.report(now=100.0 + layer.report_every_s)
        assert len(lines()) == 2 and "30 more" in lines()[1] and "80 in all" in lines()[1]
    assert layer.counts[POSITION_LIMIT] == 80
