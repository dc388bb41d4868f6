"""The robot's safety runtime: the watchdog, the e-stop latch and stale or non-finite readings damp the robot."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from hardware.profile import load_profile
from hardware.safety import NONFINITE_READING
from robot_agent.safe_driver import ESTOP, STALE_READING, WATCHDOG, SafeDriver, SafetyConfig
from sim.standin import MuJoCoStandInDriver

ARM = "arm2_planar"


def test_bad_safety_value_is_named():
    driver = MuJoCoStandInDriver(load_profile(ARM), realtime=False)
    with pytest.raises(ValueError, match="safety.watchdog_periods"):
        SafeDriver(driver, SafetyConfig(watchdog_periods=0))
    with pytest.raises(ValueError, match="safety.stale_periods"):
        SafeDriver(driver, SafetyConfig(stale_periods=0))


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


def test_nan_reading_damps_the_robot_behind_a_safe_driver_and_is_counted():
    driver = MuJoCoStandInDriver(load_profile(ARM), realtime=False)
    driver.connect()
    safe = SafeDriver(driver)
    ts = driver.read_state()
    ts.state.joint_vel[0, 1] = np.nan
    assert safe.send(np.zeros(2), ts) is None and driver.damping
    assert safe.counts[NONFINITE_READING] == 1
    sent = safe.send(np.zeros(2), driver.read_state())
    assert sent is not None and np.isfinite(sent).all() and not driver.damping


def test_a_reading_whose_stamp_stops_damps_after_stale_periods_and_counts():
    driver = MuJoCoStandInDriver(load_profile(ARM), realtime=False)
    driver.connect()
    safe = SafeDriver(driver, SafetyConfig(stale_periods=3))
    frozen = driver.read_state()  # the driver keeps returning this frame: its stamp never advances
    for _ in range(3):  # the frame itself, then 2 periods without a new one: still acted on
        assert safe.send(np.zeros(2), frozen) is not None
    assert safe.send(np.zeros(2), frozen) is None and driver.damping  # 3 periods without a new reading
    assert safe.counts[STALE_READING] == 1
    assert safe.send(np.zeros(2), frozen) is None and safe.counts[STALE_READING] == 2
    assert safe.send(np.zeros(2), driver.read_state()) is not None and not driver.damping  # fresh again


@pytest.mark.timeout(60)
def test_a_killed_standin_process_damps_the_robot_within_stale_periods():
    driver = MuJoCoStandInDriver(load_profile("cartpole"), realtime=True)  # physics in its own process
    driver.connect()
    safe = SafeDriver(driver, SafetyConfig(stale_periods=3))
    try:
        safe.arm()
        for _ in range(5):
            safe.send(np.zeros(1), driver.read_state())
            time.sleep(safe.period)
        os.kill(driver._remote.proc.pid, signal.SIGKILL)
        driver._remote.proc.join(timeout=10)
        sent = []
        for _ in range(6):  # a control loop goes on reading the dead unit's last frame
            sent.append(safe.send(np.zeros(1), driver.read_state()))
            time.sleep(safe.period)
        assert sent[-1] is None and safe.counts[STALE_READING] >= 3
        assert driver.damping  # what the unit's command slot says now
    finally:
        safe.stop()


class _WedgedStandIn(MuJoCoStandInDriver):
    """The stand-in with a bus that hangs on release, as a real robot's can."""

    def stop(self) -> None:
        threading.Event().wait()  # never returns


@pytest.mark.timeout(30)
def test_a_driver_whose_stop_hangs_does_not_hold_the_shutdown(caplog):
    driver = _WedgedStandIn(load_profile(ARM), realtime=False)
    driver.connect()
    safe = SafeDriver(driver, SafetyConfig(release_timeout_s=0.5))
    safe.start_watchdog()
    with caplog.at_level("ERROR"):
        assert safe.stop() is False
    assert "release_timeout_s" in caplog.text


def test_a_driver_that_releases_returns_true_and_its_errors_still_reach_the_caller():
    driver = MuJoCoStandInDriver(load_profile(ARM), realtime=False)
    driver.connect()
    assert SafeDriver(driver).stop() is True

    class _Failing(MuJoCoStandInDriver):
        def stop(self) -> None:
            raise RuntimeError("bus error on release")

    failing = _Failing(load_profile(ARM), realtime=False)
    failing.connect()
    with pytest.raises(RuntimeError, match="bus error"):
        SafeDriver(failing).stop()
