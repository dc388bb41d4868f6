import numpy as np
import pytest
import torch

import sim
from hardware.randomization import RandomizationError
from hardware.tasks import TaskConfigError
from sim import ActionError
from tests.conftest import TASK_HARDWARE


def random_actions(env, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(env.num_envs, env.num_actions, generator=g) * 2 - 1 for _ in range(steps)]


@pytest.mark.parametrize(("task", "hardware"), TASK_HARDWARE)
def test_random_rollout_stays_finite_and_shaped(task, hardware):
    env = sim.make_env(task, hardware, num_envs=8, seed=3)
    obs, extras = env.reset()
    assert obs.shape == (8, env.num_obs) and obs.dtype == torch.float32
    assert extras["observations"]["critic"].shape == (8, env.num_privileged_obs)
    for a in random_actions(env, 300):
        obs, rew, done, extras = env.step(a)
        assert torch.isfinite(obs).all() and torch.isfinite(rew).all()
        assert rew.shape == (8,) and done.shape == (8,) and done.dtype == torch.bool
        assert extras["time_outs"].shape == (8,)
        assert torch.isfinite(extras["observations"]["critic"]).all()
    assert env.num_divergences == 0


@pytest.mark.parametrize(("task", "hardware"), TASK_HARDWARE)
def test_same_seed_gives_identical_rollouts_and_another_seed_does_not(task, hardware):
    def rollout(seed):
        env = sim.make_env(task, hardware, num_envs=4, seed=seed)
        out = [env.get_observations()]
        for a in random_actions(env, 40):
            obs, rew, _, _ = env.step(a)
            out += [obs, rew[:, None]]
        return torch.cat(out, dim=1)

    a, b, c = rollout(7), rollout(7), rollout(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize(("task", "hardware"), TASK_HARDWARE)
def test_randomization_changes_the_physics_of_each_world(task, hardware):
    def spread(randomize):
        # every world starts in the same state and gets the same actions: only physics can differ
        env = sim.make_env(task, hardware, num_envs=6, seed=0, init_joint_noise=0.0, init_vel_noise=0.0,
                           randomization={"enabled": randomize, "obs_noise": 0.0, "latency_steps": [0, 0],
                                          "push_interval_s": 0.0, "mass_scale": [0.7, 1.3],
                                          "motor_strength": [0.7, 1.3]})
        a = torch.full((6, env.num_actions), 0.7)
        for _ in range(30):
            env.step(a)
        q = torch.from_numpy(env.backend.qpos.copy())
        return (q - q[0]).abs().max().item(), env

    nominal_spread, _ = spread(False)
    random_spread, env = spread(True)
    assert nominal_spread == 0.0
    assert random_spread > 1e-4
    mass = env.backend.batch.expanded("body_mass")
    assert mass is not None and np.ptp(mass.sum(axis=1)) > 0


def test_privileged_observation_exposes_the_sampled_friction():
    env = sim.make_env("locomotion", "go2_like", num_envs=16, seed=1, randomization={"friction": [0.5, 1.25]})
    priv = env.get_privileged_observations().numpy()
    friction_col = env.num_obs + env.priv_layout.size  # first physics-parameter column
    assert np.allclose(priv[:, friction_col], env.physics_params.friction - 1.0, atol=1e-6)
    world_friction = env.backend.batch.expanded("geom_friction")[:, 0, 0]  # the floor
    assert np.allclose(world_friction, env.physics_params.friction)


def test_reset_resamples_physics():
    env = sim.make_env("cartpole_swingup", "cartpole", num_envs=32, seed=0)
    before = env.physics_params.mass_scale.copy()
    env.reset()
    assert not np.allclose(before, env.physics_params.mass_scale)


def test_time_out_resets_the_world_and_reports_the_episode():
    env = sim.make_env("cartpole_swingup", "cartpole", num_envs=4, seed=0, episode_length_s=0.5)
    assert env.max_episode_length == 25
    for _step in range(25):
        obs, rew, done, extras = env.step(torch.zeros(4, 1))
    assert done.all() and extras["time_outs"].all()
    assert extras["episode"]["count"] == 4 and extras["episode"]["length"] == 25
    assert (env.episode_length_buf == 0).all()
    # the returned observation is the new episode's: pole hanging down again
    assert (obs[:, 1] < -0.9).all()


def test_fall_terminates_without_a_time_out():
    env = sim.make_env("locomotion", "go2_like", num_envs=4, seed=0, randomization={"push_interval_s": 0.0})
    env.backend.qpos[0, 2] = 0.05  # trunk on the floor
    _, _, done, extras = env.step(torch.zeros(4, 12))
    assert done[0] and not extras["time_outs"][0]


@pytest.mark.parametrize(("actions", "match"), [
    (torch.zeros(4, 3), "shape \\(4, 12\\)"),
    (torch.zeros(4, 12, dtype=torch.int64), "floating-point"),
    (torch.full((4, 12), float("nan")), "NaN or inf in envs \\[0, 1, 2, 3\\]"),
    ([[0.0] * 12] * 4, "torch.Tensor or numpy array"),
])
def test_bad_actions_are_refused_and_nothing_is_stepped(actions, match):
    env = sim.make_env("locomotion", "go2_like", num_envs=4, seed=0)
    qpos = env.backend.qpos.copy()
    with pytest.raises(ActionError, match=match):
        env.step(actions)
    assert np.array_equal(qpos, env.backend.qpos)


def test_inf_in_one_world_is_refused():
    env = sim.make_env("cartpole_swingup", "cartpole", num_envs=4, seed=0)
    a = torch.zeros(4, 1)
    a[2, 0] = float("inf")
    with pytest.raises(ActionError, match="envs \\[2\\]"):
        env.step(a)


def test_diverged_world_is_reset_and_counted_and_the_batch_is_unharmed():
    env = sim.make_env("locomotion", "go2_like", num_envs=4, seed=0, randomization={"push_interval_s": 0.0})
    env.backend.qvel[1, :] = 1e30  # blow one world up
    obs, rew, done, extras = env.step(torch.zeros(4, 12))
    assert extras["divergences"] == 1 and env.num_divergences == 1
    assert done.tolist() == [False, True, False, False]
    assert not extras["time_outs"][1]
    assert torch.isfinite(obs).all() and torch.isfinite(rew).all()
    for _ in range(20):
        obs, *_ = env.step(torch.zeros(4, 12))
    assert torch.isfinite(obs).all()


def test_unknown_task_and_hardware_are_named():
    with pytest.raises(TaskConfigError, match="unknown task 'fly'.*locomotion"):
        sim.make_env("fly", "go2_like", 2)
    from hardware.profile import ProfileError
    with pytest.raises(ProfileError, match="unknown hardware type 'spot'"):
        sim.make_env("locomotion", "spot", 2)


def test_task_on_the_wrong_family_is_refused():
    from hardware.profile import ProfileError
    with pytest.raises(ProfileError, match="runs on the quadruped family"):
        sim.make_env("locomotion", "arm7", 2)


def test_bad_override_key_and_type_are_named():
    with pytest.raises(TaskConfigError, match="frction"):
        sim.make_env("locomotion", "go2_like", 2, randomization={"frction": [0.5, 1.0]})
    with pytest.raises(TaskConfigError, match="episode_length_s"):
        sim.make_env("locomotion", "go2_like", 2, episode_length_s="long")


def test_out_of_range_randomization_is_refused_with_its_key():
    with pytest.raises(RandomizationError, match="task.randomization.friction"):
        sim.make_env("locomotion", "go2_like", 2, randomization={"friction": [1.5, 0.2]})


def test_action_latency_delays_the_command_by_whole_control_steps():
    env = sim.make_env("cartpole_swingup", "cartpole", num_envs=2, seed=0,
                       randomization={"latency_steps": [2, 2], "motor_strength": [1.0, 1.0]})
    ctrl = []
    for k in range(4):
        env.step(torch.full((2, 1), 0.1 * (k + 1)))
        ctrl.append(env.backend.ctrl[0, 0])
    assert ctrl == pytest.approx([0.0, 0.0, 0.1, 0.2])


def test_pushes_kick_the_base_velocity():
    env = sim.make_env("locomotion", "go2_like", num_envs=4, seed=0, init_vel_noise=0.0,
                       randomization={"push_interval_s": 0.04, "push_velocity": 1.0, "obs_noise": 0.0})
    env.step(torch.zeros(4, 12))
    env.step(torch.zeros(4, 12))
    before = env.backend.qvel[:, :2].copy()
    env.step(torch.zeros(4, 12))  # 0.04 s elapsed: every world is pushed before this step's physics
    assert np.abs(env.backend.qvel[:, :2] - before).max() > 0.2


def test_locomotion_commands_are_redrawn_each_period():
    env = sim.make_env("locomotion", "go2_like", num_envs=4, seed=0, command_period_s=0.1,
                       randomization={"push_interval_s": 0.0})
    first = env.inputs.command.copy()
    for _ in range(5):
        env.step(torch.zeros(4, 12))
    assert not np.allclose(first, env.inputs.command)


def test_observation_noise_has_the_configured_std_per_term():
    # the critic's copy is noise-free, so policy obs minus critic obs is exactly the sensor noise
    env = sim.make_env("cartpole_swingup", "cartpole", num_envs=512, seed=0)
    noise = []
    for a in random_actions(env, 20):
        obs, _, _, extras = env.step(a)
        noise.append((obs - extras["observations"]["critic"][:, :env.num_obs]).numpy())
    noise = np.concatenate(noise)
    want = env.obs_layout.noise_std(env.cfg.obs_noise_std)
    assert want.any()
    np.testing.assert_allclose(noise.std(axis=0), want, rtol=0.05)
    np.testing.assert_allclose(noise.mean(axis=0), 0.0, atol=0.05 * want.max())
