import mujoco
import numpy as np
import pytest
from omegaconf import OmegaConf

from hardware import ActionMap, ObservationLayout, ProfileError, available_profiles, load_profile
from hardware.profile import PROFILE_DIR, profile_from_config
from hardware.state import projected_gravity, quat_rotate_inverse


def test_at_least_three_families_each_with_two_types():
    families = {}
    for name in available_profiles():
        families.setdefault(load_profile(name).family.value, []).append(name)
    for family in ("cartpole", "arm", "quadruped"):
        assert len(families[family]) >= 2, families


def test_arm_types_differ_in_joint_count_and_quadrupeds_in_physics():
    assert sorted(load_profile(n).num_joints for n in ("arm2_planar", "arm3_planar", "arm7")) == [2, 3, 7]
    go2, go1 = load_profile("go2_like"), load_profile("go1_like")
    assert go2.params["trunk_mass"] != go1.params["trunk_mass"]
    assert go2.joints[2].max_torque != go1.joints[2].max_torque


def test_unknown_hardware_name_lists_the_available_ones():
    with pytest.raises(ProfileError, match="unknown hardware type 'go3'.*go2_like"):
        load_profile("go3")


def test_profile_with_wrong_type_names_the_key():
    raw = OmegaConf.load(PROFILE_DIR / "cartpole.yaml")
    raw.control_hz = "fast"
    with pytest.raises(ProfileError, match="control_hz"):
        profile_from_config(raw)


def test_profile_with_unknown_key_names_it():
    raw = OmegaConf.load(PROFILE_DIR / "cartpole.yaml")
    raw.joints[0].max_torqe = 3.0
    with pytest.raises(ProfileError, match="max_torqe"):
        profile_from_config(raw)


def test_physics_rate_must_be_a_multiple_of_control_rate():
    raw = OmegaConf.load(PROFILE_DIR / "go2_like.yaml")
    raw.physics_hz = 130
    with pytest.raises(ProfileError, match="whole multiple"):
        profile_from_config(raw)


def test_default_pose_outside_joint_range_is_refused():
    raw = OmegaConf.load(PROFILE_DIR / "arm7.yaml")
    raw.joints[3].default_pos = 0.5  # joint4 range is [-3.07, -0.07]
    with pytest.raises(ProfileError, match="joint4.*outside range"):
        profile_from_config(raw)


def test_observation_layout_slices_cover_the_vector_in_profile_order():
    profile = load_profile("go2_like")
    layout = ObservationLayout(profile, profile.observation)
    assert layout.signature() == [("base_ang_vel", 3), ("projected_gravity", 3), ("command", 3),
                                  ("joint_pos_rel", 12), ("joint_vel", 12), ("last_action", 12)]
    assert layout.size == 45


def test_cartpole_pole_angle_is_observed_as_cos_sin():
    profile = load_profile("cartpole")
    layout = ObservationLayout(profile, profile.observation)
    from hardware.state import RobotState, TaskInputs

    state = RobotState(joint_pos=np.array([[0.5, np.pi]]), joint_vel=np.array([[0.1, 2.0]]))
    obs = layout.build(state, TaskInputs(last_action=np.zeros((1, 1))))
    assert obs[0] == pytest.approx([0.5, -1.0, 0.0, 0.1, 2.0], abs=1e-6)


def test_cartpole_pivot_differs_from_cartpole_in_observation_and_action_size():
    cart, pivot = load_profile("cartpole"), load_profile("cartpole_pivot")
    assert (cart.num_actions, pivot.num_actions) == (1, 2)
    assert [j.name for j in pivot.actuated_joints] == ["slider", "hinge"]
    sizes = [ObservationLayout(p, p.observation).size for p in (cart, pivot)]
    assert sizes == [5, 7]  # cart x, cos, sin, 2 velocities; pivot adds its 2 last actions
    assert pivot.family == cart.family and pivot.params == cart.params  # same task, same cart and pole
    # the pivot motor cannot hold the pole level by itself: below the pole's gravity torque m g L / 2
    hinge = pivot.joints[1]
    assert hinge.continuous and hinge.max_torque < pivot.param("pole_mass") * 9.81 * pivot.param("pole_length") / 2


def test_cartpole_pivot_observes_the_pole_as_cos_sin_after_many_turns_and_its_last_action():
    from hardware.state import RobotState, TaskInputs

    profile = load_profile("cartpole_pivot")
    layout = ObservationLayout(profile, profile.observation)
    theta = np.array([np.pi, 0.3, 0.3 + 6 * np.pi, -2.0 - 10 * np.pi])  # hanging, and turned many times
    state = RobotState(joint_pos=np.stack([np.full(4, 0.5), theta], axis=1),
                       joint_vel=np.array([[0.1, 2.0]] * 4))
    last = np.array([[0.25, -0.75]] * 4)
    obs = layout.build(state, TaskInputs(last_action=last))
    np.testing.assert_allclose(obs[:, 0], 0.5)
    np.testing.assert_allclose(obs[:, 1], np.cos(theta), atol=1e-6)
    np.testing.assert_allclose(obs[:, 2], np.sin(theta), atol=1e-6)
    np.testing.assert_allclose(obs[:, 3:5], [[0.1, 2.0]] * 4, atol=1e-6)
    np.testing.assert_allclose(obs[:, 5:7], last)
    np.testing.assert_allclose(obs[1], obs[2], atol=1e-6)  # 0.3 and 0.3 + 3 turns read the same


def test_pd_action_map_scales_around_default_and_clamps_to_range():
    profile = load_profile("arm7")
    amap = ActionMap(profile)
    cmd = amap.to_command(np.zeros((1, 7)))
    assert cmd[0] == pytest.approx([j.default_pos for j in profile.joints])
    cmd = amap.to_command(np.full((1, 7), 100.0))
    assert (cmd[0] <= [j.range[1] for j in profile.joints]).all()
    scale, clip = profile.actuator.action_scale, profile.actuator.action_clip
    assert cmd[0, 3] == pytest.approx(min(-2.0 + scale * clip, -0.0698))
    assert amap.to_command(np.full((1, 7), 0.1))[0, 0] == pytest.approx(0.1 * scale)


def test_torque_action_map_clips_to_unit_command():
    amap = ActionMap(load_profile("cartpole"))
    assert amap.to_command(np.array([[3.0], [-0.5]]))[:, 0] == pytest.approx([1.0, -0.5])


def test_nan_action_stays_nan_in_the_command_for_the_safety_layer_to_refuse():
    cmd = ActionMap(load_profile("arm7")).to_command(np.array([[np.nan] + [0.0] * 6]))
    assert np.isnan(cmd[0, 0]) and np.isfinite(cmd[0, 1:]).all()


def test_action_map_refuses_actions_of_the_wrong_width():
    with pytest.raises(ValueError, match="num_actions"):
        ActionMap(load_profile("arm7")).to_command(np.zeros((1, 6)))


def test_observation_layout_refuses_a_state_with_the_wrong_number_of_joints():
    from hardware.state import RobotState, TaskInputs

    profile = load_profile("cartpole")
    layout = ObservationLayout(profile, profile.observation)
    inputs = TaskInputs(last_action=np.zeros((1, 1)))
    with pytest.raises(ValueError, match="number of joints"):
        layout.build(RobotState(joint_pos=np.zeros((1, 3)), joint_vel=np.zeros((1, 2))), inputs)
    with pytest.raises(ValueError, match="shape"):
        layout.build(RobotState(joint_pos=np.zeros((1, 2)), joint_vel=np.zeros((1, 3))), inputs)


def test_quaternion_helpers_match_mujoco():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(6, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    v = rng.normal(size=(6, 3))
    ref = np.zeros((6, 3))
    for i in range(6):
        conj = np.zeros(4)
        mujoco.mju_negQuat(conj, q[i])
        mujoco.mju_rotVecQuat(ref[i], v[i], conj)
    assert np.allclose(quat_rotate_inverse(q, v), ref)
    assert np.allclose(projected_gravity(q), quat_rotate_inverse(q, np.tile([0.0, 0.0, -1.0], (6, 1))))


def test_a_profile_file_outside_the_package_loads_by_path(tmp_path):
    raw = OmegaConf.load(PROFILE_DIR / "cartpole.yaml")
    raw.name, raw.control_hz, raw.physics_hz = "cartpole_500hz", 500, 1000
    path = tmp_path / "cartpole_500hz.yaml"
    OmegaConf.save(raw, path)
    p = load_profile(str(path))
    assert (p.name, p.control_hz, p.decimation) == ("cartpole_500hz", 500, 2)
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(str(tmp_path / "nope.yaml"))


def test_profile_hash_covers_every_field_that_drives_the_robot_and_nothing_else():
    import dataclasses

    from hardware.profile import LimitSpec, profile_hash

    go2 = load_profile("go2_like")
    assert profile_hash(go2) == profile_hash(load_profile("go2_like"))
    joints = [dataclasses.replace(j) for j in go2.joints]
    joints[4] = dataclasses.replace(joints[4], kp=41.0)
    changed = [
        dataclasses.replace(go2, joints=joints),
        dataclasses.replace(go2, actuator=dataclasses.replace(go2.actuator, action_scale=0.3)),
        dataclasses.replace(go2, limits=LimitSpec(pd_target_rate=2.0)),
        dataclasses.replace(go2, control_hz=100.0, physics_hz=400.0),
        dataclasses.replace(go2, params={**go2.params, "trunk_mass": 7.0}),
    ]
    hashes = {profile_hash(p) for p in changed}
    assert profile_hash(go2) not in hashes and len(hashes) == len(changed)
    assert profile_hash(dataclasses.replace(go2, description="renamed")) == profile_hash(go2)
    raw = OmegaConf.load(PROFILE_DIR / "go2_like.yaml")
    raw.control_hz = 50  # YAML's int and float spellings of one rate are one profile
    same = profile_from_config(raw)
    raw.control_hz = 50.0
    assert profile_hash(same) == profile_hash(profile_from_config(raw))


def test_bad_limit_value_is_named():
    raw = OmegaConf.load(PROFILE_DIR / "cartpole.yaml")
    raw.limits = {"soft_range": 1.5}
    with pytest.raises(ProfileError, match="limits.soft_range"):
        profile_from_config(raw)
