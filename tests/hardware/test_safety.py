"""The safety layer: every rule changes the command it must change, counts it, and leaves others alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hardware.profile import LimitSpec, load_profile
from hardware.safety import (
    NONFINITE,
    NONFINITE_READING,
    POSITION_LIMIT,
    RATE_LIMIT,
    TORQUE_LIMIT,
    VELOCITY_LIMIT,
    SafetyLayer,
)
from hardware.state import RobotState

ARM = "arm2_planar"  # PD servos: shoulder kp 40 / 8 Nm, elbow kp 25 / 5 Nm, range +-2.6 rad, 3 rad/s


def _state(q, qd=(0.0, 0.0)) -> RobotState:
    return RobotState(joint_pos=np.array([q], float), joint_vel=np.array([qd], float))


def _profile(name: str, **limits: float):
    """A shipped profile with some of its command limits changed (a rate limit wide enough to stay out of the way)."""
    return dataclasses.replace(load_profile(name), limits=LimitSpec(**limits))


WIDE_RATE = {"pd_target_rate": 100.0, "pd_range_fraction": 100.0}


def test_position_target_is_clamped_to_the_joint_range():
    layer = SafetyLayer(_profile(ARM, **WIDE_RATE))
    out = layer.filter(np.array([3.5, 0.0]), _state([2.55, 0.0]))
    assert out[0] == pytest.approx(2.6)
    assert layer.counts[POSITION_LIMIT] == 1


def test_pd_target_is_pulled_in_to_respect_the_torque_limit():
    layer = SafetyLayer(_profile(ARM, **WIDE_RATE))
    out = layer.filter(np.array([1.0, 0.0]), _state([0.0, 0.0]))
    assert 40.0 * (out[0] - 0.0) == pytest.approx(8.0)  # kp * error at the 8 Nm limit
    assert out[1] == 0.0 and layer.counts[TORQUE_LIMIT] == 1


def test_torque_capped_target_stays_inside_the_joint_range():
    # shoulder at -2.55 rad moving at -6 rad/s toward its -2.6 limit: the 8 Nm cap alone would put the target at
    # -2.65, past the range; the range wins and the motor brakes at its own saturation
    layer = SafetyLayer(_profile(ARM, **WIDE_RATE))
    out = layer.filter(np.array([-2.5, 0.0]), _state([-2.55, 0.0], qd=[-6.0, 0.0]))
    assert out[0] == pytest.approx(-2.6)
    assert layer.counts[POSITION_LIMIT] == 1 and layer.counts[TORQUE_LIMIT] == 1


def test_rate_limit_bounds_the_change_between_periods():
    profile = _profile(ARM, pd_target_rate=1.0)
    layer = SafetyLayer(profile)
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
    layer = SafetyLayer(_profile(ARM, **WIDE_RATE))
    out = layer.filter(np.array([0.1, 0.1]), _state([0.0, 0.0], qd=[4.0, -4.0]))
    assert out[0] == 0.0  # moving + at 4 rad/s > 3: held at the joint
    assert out[1] > 0  # moving - : a + target brakes it, allowed (within the torque limit)
    assert layer.counts[VELOCITY_LIMIT] == 1


def test_torque_mode_commands_are_clamped_to_full_scale():
    layer = SafetyLayer(_profile("cartpole", torque_rate=10.0))
    out = layer.filter(np.array([1.7]), _state([0.0, 3.1]))
    assert out[0] == 1.0 and layer.counts[TORQUE_LIMIT] == 1


def test_a_command_within_every_limit_passes_unchanged():
    layer = SafetyLayer(load_profile(ARM))
    cmd = np.array([0.01, -0.02])
    np.testing.assert_array_equal(layer.filter(cmd, _state([0.0, 0.0])), cmd)
    assert sum(layer.counts.values()) == 0


def test_interventions_are_logged_after_the_command_first_then_as_periodic_summaries(caplog):
    layer = SafetyLayer(_profile(ARM, **WIDE_RATE))
    state = _state([0.0, 0.0])

    def clamp(times):
        for _ in range(times):
            layer.filter(np.array([10.0, 0.0]), state)  # the range clamp (and what follows from it) acts

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


def _home_state(profile, nan_at: tuple[str, int] | None = None) -> RobotState:
    """The profile's default pose at rest, with one joint's position or velocity reading NaN if asked."""
    q = np.array([[j.default_pos for j in profile.joints]])
    qd = np.zeros_like(q)
    if nan_at is not None:
        field, joint = nan_at
        (q if field == "pos" else qd)[0, joint] = np.nan
    return RobotState(joint_pos=q, joint_vel=qd)


# a PD type and torque types; the NaN lands on an actuated joint (go2's FL_hip, cartpole's slider, the pivot motor)
@pytest.mark.parametrize(("hardware", "joint"), [("go2_like", 3), ("cartpole", 0), ("cartpole_pivot", 1)])
@pytest.mark.parametrize("field", ["pos", "vel"])
def test_nan_joint_reading_gives_a_finite_hold_and_no_nan_survives_into_the_next_tick(hardware, joint, field):
    profile = load_profile(hardware)
    layer = SafetyLayer(profile)
    pd = profile.actuator.mode == "pd"
    # within every limit: 0.1 rad off the default pose, or half torque
    cmd = np.array([j.default_pos + 0.1 if pd else 0.5 for j in profile.actuated_joints])
    before = layer.filter(cmd, _home_state(profile))
    np.testing.assert_array_equal(before, cmd)
    held = layer.filter(cmd, _home_state(profile, (field, joint)))
    assert np.isfinite(held).all()
    # PD: the last command is held (no target exists at a NaN position); torque: no torque
    np.testing.assert_array_equal(held, before if pd else 0.0)
    assert layer.counts[NONFINITE_READING] == 1
    after = layer.filter(cmd, _home_state(profile))  # the reading recovers: so does the command
    assert np.isfinite(after).all() and np.isfinite(layer.filter_state.last).all()
    np.testing.assert_allclose(after, cmd)
    assert layer.counts[NONFINITE_READING] == 1


def test_nan_reading_on_the_first_tick_of_an_episode_holds_the_home_pose():
    profile = load_profile("go2_like")
    layer = SafetyLayer(profile)
    out = layer.filter(np.zeros(12), _home_state(profile, ("pos", 0)))
    np.testing.assert_array_equal(out, [j.default_pos for j in profile.joints])


@pytest.mark.parametrize("hardware", ["go2_like", "cartpole", "cartpole_pivot"])
def test_every_command_is_finite_whatever_the_command_and_reading(hardware):
    profile = load_profile(hardware)
    layer = SafetyLayer(profile)
    rng = np.random.default_rng(0)
    bad = [np.nan, np.inf, -np.inf, 1e308, -1e308]
    for _ in range(300):
        state = _home_state(profile)
        state.joint_pos += rng.normal(0, 1, state.joint_pos.shape)
        state.joint_vel += rng.normal(0, 40, state.joint_vel.shape)
        cmd = rng.normal(0, 3, profile.num_actions)
        for arr in (cmd, state.joint_pos[0], state.joint_vel[0]):
            if rng.random() < 0.2:
                arr[rng.integers(len(arr))] = bad[rng.integers(len(bad))]
        assert np.isfinite(layer.filter(cmd, state)).all()
    assert np.isfinite(layer.filter_state.last).all()


def test_torque_toward_a_joint_limit_fades_to_zero_across_the_soft_band():
    # cartpole's slider: range +-1.8 m, soft_range 0.9 -> full torque within +-1.62 m
    layer = SafetyLayer(_profile("cartpole", torque_rate=10.0, soft_range=0.9))
    push = np.array([1.0])

    def at(x, cmd=push):
        layer.reset()
        return float(layer.filter(cmd, _state([x, 3.1]))[0])

    assert at(0.0) == 1.0 and at(1.6) == 1.0 and layer.counts[POSITION_LIMIT] == 0
    assert at(1.71) == pytest.approx(0.5)  # half-way through the band
    assert at(1.8) == 0.0 and at(1.95) == 0.0  # at and past the limit: no torque toward it
    assert layer.counts[POSITION_LIMIT] == 3
    assert at(1.75, np.array([-1.0])) == -1.0  # away from the limit: untouched
    assert at(-1.71, np.array([-0.8])) == pytest.approx(-0.4)  # the lower band likewise
    assert at(-1.71, np.array([0.8])) == 0.8


def test_the_pivot_motor_of_a_continuous_pole_has_no_soft_band_at_any_angle():
    # cartpole_pivot's hinge turns freely: full torque either way at any angle, however many turns; the slider
    # keeps its band
    layer = SafetyLayer(_profile("cartpole_pivot", torque_rate=10.0, soft_range=0.9))
    for turns in (0.0, 0.45, 3.0, -7.2):
        for cmd in ([0.3, 1.0], [0.3, -1.0]):
            layer.reset()
            out = layer.filter(np.array(cmd), _state([0.0, 2 * np.pi * turns]))
            np.testing.assert_array_equal(out, cmd)
    assert sum(layer.counts.values()) == 0
    layer.reset()
    assert layer.filter(np.array([1.0, 1.0]), _state([1.71, 0.0]))[0] == pytest.approx(0.5)  # the slider's band


def test_go2_hip_target_cannot_cross_its_range_in_one_period():
    profile = load_profile("go2_like")
    hip = profile.joints[0]  # range +-1.047 rad, 30.1 rad/s
    layer = SafetyLayer(profile)
    at_rest = _home_state(profile)
    first = np.array([j.default_pos for j in profile.joints])
    first[0] = -0.5
    layer.filter(first, at_rest)
    second = first.copy()
    second[0] = 0.5  # within the torque limit at q = 0 (kp 40 x 0.5 = 20 Nm < 23.7), 1 rad from the last target
    out = layer.filter(second, at_rest)
    step = out[0] - (-0.5)
    assert step <= hip.max_velocity / profile.control_hz + 1e-9  # no faster than the joint can follow
    assert step <= 0.25 * (hip.range[1] - hip.range[0]) + 1e-9
    assert step == pytest.approx(layer.max_step[0]) and layer.counts[RATE_LIMIT] == 1
    np.testing.assert_array_equal(out[1:], second[1:])


def test_a_policy_step_the_joint_can_follow_passes_the_rate_limit():
    profile = load_profile("go2_like")
    layer = SafetyLayer(profile)
    at_rest = _home_state(profile)
    cmd = np.array([j.default_pos for j in profile.joints])
    layer.filter(cmd, at_rest)
    moved = cmd + 0.9 * layer.max_step * np.where(np.arange(12) % 2, 1.0, -1.0)
    # kp 40 x 0.47 rad < 23.7 Nm: none of the other limits acts either
    np.testing.assert_array_equal(layer.filter(moved, at_rest), moved)
    assert sum(layer.counts.values()) == 0


def test_rate_limits_derive_from_the_profile():
    profile = load_profile("go2_like")
    layer = SafetyLayer(profile)
    period = 1.0 / profile.control_hz
    want = [min(j.max_velocity * period, 0.25 * (j.range[1] - j.range[0])) for j in profile.joints]
    np.testing.assert_allclose(layer.max_step, want)
    assert (layer.max_step < [j.range[1] - j.range[0] for j in profile.joints]).all()
