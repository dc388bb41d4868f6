"""A Stable-Baselines3 VecEnv over our batched env (for the training-speed benchmark only)."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from sim.env import BatchedEnv
from sim.gym_vector import GymVectorEnv


class SB3VecEnv(VecEnv):
    """SB3's VecEnv API on top of :class:`GymVectorEnv` (same-step autoreset, terminal obs in infos)."""

    def __init__(self, env: BatchedEnv):
        self.venv = GymVectorEnv(env)
        super().__init__(env.num_envs, self.venv.single_observation_space, self.venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self):
        obs, _ = self.venv.reset(seed=self.venv.env.seed)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, rew, term, trunc, info = self.venv.step(self._actions)
        dones = term | trunc
        infos = [{} for _ in range(self.num_envs)]
        if "final_obs" in info:
            for i in np.flatnonzero(info["_final_obs"]):
                infos[i] = {"terminal_observation": info["final_obs"][i], "TimeLimit.truncated": bool(trunc[i])}
        return obs, rew.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name, indices=None):
        return [getattr(self.venv, attr_name, None)] * self.num_envs

    def set_attr(self, attr_name, value, indices=None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        return [getattr(self.venv, method_name)(*args, **kwargs)] * self.num_envs

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * self.num_envs
