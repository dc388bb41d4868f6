import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env, data_equivalence

import sim
from sim.gym_vector import GymEnv, GymVectorEnv
from sim.rsl_rl_env import RslRlVecEnv


@pytest.mark.parametrize(("task", "hardware"), [("cartpole_swingup", "cartpole"), ("reach", "arm7"),
                                                ("locomotion", "go2_like")])
def test_single_world_view_passes_gymnasiums_env_checker(task, hardware):
    check_env(GymEnv(sim.make_env(task, hardware, num_envs=1, seed=0)), skip_render_check=True)


def test_vector_view_has_batched_spaces_and_same_step_autoreset():
    venv = GymVectorEnv(sim.make_env("cartpole_swingup", "cartpole", num_envs=5, seed=0, episode_length_s=0.2))
    obs, info = venv.reset(seed=42)
    assert venv.observation_space.contains(obs)
    assert venv.action_space.shape == (5, 1)
    for _ in range(10):
        obs, rew, term, trunc, info = venv.step(venv.action_space.sample())
    assert trunc.all() and not term.any()
    assert info["_final_obs"].all() and info["final_obs"].shape == (5, 5)
    assert venv.observation_space.contains(obs)


def test_vector_view_reset_with_a_seed_is_reproducible():
    venv = GymVectorEnv(sim.make_env("reach", "arm3_planar", num_envs=3, seed=0))
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 3, 3)).astype(np.float32)

    def run():
        out = [venv.reset(seed=5)[0]]
        out += [venv.step(a)[0] for a in actions]
        return out

    assert data_equivalence(run(), run(), exact=True)


def test_rsl_rl_on_policy_runner_trains_on_our_env():
    from rsl_rl.runners import OnPolicyRunner

    env = RslRlVecEnv(sim.make_env("cartpole_swingup", "cartpole", num_envs=32, seed=0))
    cfg = {
        "num_steps_per_env": 16, "save_interval": 100, "obs_groups": {"actor": ["policy"], "critic": ["critic"]},
        "algorithm": {"class_name": "rsl_rl.algorithms.PPO", "num_learning_epochs": 2, "num_mini_batches": 2},
        "actor": {"class_name": "rsl_rl.models.MLPModel", "hidden_dims": [32, 32], "obs_normalization": True,
                  "distribution_cfg": {"class_name": "rsl_rl.modules.GaussianDistribution", "init_std": 1.0}},
        "critic": {"class_name": "rsl_rl.models.MLPModel", "hidden_dims": [32, 32], "obs_normalization": True},
    }
    runner = OnPolicyRunner(env, cfg, log_dir=None, device="cpu")
    before = [p.detach().clone() for p in runner.alg.actor.parameters()]
    runner.learn(num_learning_iterations=2, init_at_random_ep_len=True)
    assert runner.current_learning_iteration == 1
    after = list(runner.alg.actor.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert int(env.episode_length_buf.max()) < env.max_episode_length
