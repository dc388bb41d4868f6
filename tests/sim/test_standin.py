"""The MuJoCo stand-in robot: found by name, its own physics per unit, latency, offsets, nothing privileged."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hardware.driver import DriverError
from hardware.profile import load_profile
from hardware.randomization import RandomizationError
from sim.standin import MuJoCoStandInDriver


def _roll(driver, commands):
    driver.connect()
    out = []
    for c in commands:
        driver.send_command(c)
        out.append(driver.read_state().state.joint_pos[0].copy())
    return np.array(out)


def test_units_with_different_gaps_move_differently_under_the_same_commands():
    profile = load_profile("arm2_planar")
    cmds = [np.array([0.8, -0.5])] * 40
    gap = {"home_noise": 0.0}
    nominal = _roll(MuJoCoStandInDriver(profile, gap=gap), cmds)
    weak = _roll(MuJoCoStandInDriver(profile, gap={**gap, "physics": {
        "motor_strength": [0.4, 0.4], "mass_scale": [1.6, 1.6]}}), cmds)
    same = _roll(MuJoCoStandInDriver(profile, gap=gap), cmds)
    np.testing.assert_array_equal(nominal, same)  # deterministic for a seed
    assert np.abs(nominal - weak).max() > 0.05


def test_actuator_latency_delays_the_command_by_whole_periods():
    profile = load_profile("cartpole")
    gap = {"home_noise": 0.0, "physics": {"latency_steps": [2, 2]}}
    pos = _roll(MuJoCoStandInDriver(profile, gap=gap), [np.array([1.0])] * 4)[:, 0]
    assert abs(pos[0]) < 1e-6 and abs(pos[1]) < 1e-6  # nothing moves for two periods
    assert pos[3] > pos[2] > 1e-4


def test_joint_offsets_show_in_readings_and_targets_follow_the_reading_frame():
    profile = load_profile("arm2_planar")
    d = MuJoCoStandInDriver(profile, gap={"home_noise": 0.0, "joint_offset": 0.1}, seed=3)
    d.connect()
    reading = d.read_state().state.joint_pos[0]
    assert np.all(np.abs(reading) > 0) and np.all(np.abs(reading) <= 0.1)
    for _ in range(100):  # hold the pose as the encoders report it: the arm stays where it is
        d.send_command(reading.copy())
    np.testing.assert_allclose(d.read_state().state.joint_pos[0], reading, atol=0.02)


def test_readings_carry_no_physics_parameters():
    d = MuJoCoStandInDriver(load_profile("go2_like"), gap={"physics": {"friction": [0.3, 0.3]}})
    d.connect()
    ts = d.read_state()
    assert set(vars(ts.state)) == {"joint_pos", "joint_vel", "base_quat", "base_ang_vel", "base_lin_vel", "base_pos",
                                   "ee_pos", "foot_contact", "joint_torque"}
    assert d.true_params.friction[0] == pytest.approx(0.3)  # kept for benchmarks' oracles only


def test_wrong_gap_key_is_named():
    with pytest.raises(RandomizationError, match="gap.*frictoin"):
        MuJoCoStandInDriver(load_profile("cartpole"), gap={"physics": {"frictoin": [1, 1]}})
    with pytest.raises(RandomizationError, match="gap.period_jitter"):
        MuJoCoStandInDriver(load_profile("cartpole"), gap={"period_jitter": 0.9})


def test_wrong_command_shape_is_refused():
    d = MuJoCoStandInDriver(load_profile("arm2_planar"))
    d.connect()
    with pytest.raises(DriverError, match="shape"):
        d.send_command(np.zeros(3))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(60)
def test_a_real_time_unit_runs_its_physics_in_its_own_process_and_follows_commands():
    d = MuJoCoStandInDriver(load_profile("arm2_planar"), gap={"home_noise": 0.0}, realtime=True)
    d.connect()
    try:
        child = d._remote.proc.pid
        assert child != os.getpid() and _pid_alive(child)
        t0 = d.read_state().stamp
        for _ in range(40):
            d.send_command(np.array([0.8, -0.5]))
            time.sleep(d._period)
        ts = d.read_state()
        assert ts.stamp > t0 and abs(ts.stamp - time.monotonic()) < 0.5  # one monotonic clock for both
        np.testing.assert_allclose(ts.state.joint_pos[0], [0.8, -0.5], atol=0.05)
        assert d.periods >= 30 and not d.damping
        d.damp()
        assert d.damping
        d.home()  # blocking: the home pose is what the next read shows
        np.testing.assert_allclose(d.read_state().state.joint_pos[0], [0.0, 0.0], atol=1e-9)
    finally:
        d.stop()
    assert not _pid_alive(child) or _zombie(child)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` is a zombie (exited, not yet reaped): as good as gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.timeout(60)
def test_unit_process_exits_when_its_owner_is_killed(tmp_path):
    script = (
        "import time\n"
        "from hardware.profile import load_profile\n"
        "from sim.standin import MuJoCoStandInDriver\n"
        "if __name__ == '__main__':\n"
        "    d = MuJoCoStandInDriver(load_profile('cartpole'), realtime=True)\n"
        "    d.connect()\n"
        "    print(d._remote.proc.pid, flush=True)\n"
        "    time.sleep(60)\n"
    )
    path = tmp_path / "owner.py"
    path.write_text(script)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    owner = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        child = int(owner.stdout.readline())
        assert _pid_alive(child)
        owner.kill()
        owner.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _pid_alive(child) and not _zombie(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _pid_alive(child) or _zombie(child)
    finally:
        owner.kill()
