"""Gymnasium views of a :class:`BatchedEnv`: a ``VectorEnv`` over all worlds, and a single-world ``Env``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from sim.env import BatchedEnv


def _spaces(env: BatchedEnv) -> tuple[spaces.Box, spaces.Box]:
    clip = float(env.profile.actuator.action_clip)
    obs = spaces.Box(-np.inf, np.inf, shape=(env.num_obs,), dtype=np.float32)
    act = spaces.Box(-clip, clip, shape=(env.num_actions,), dtype=np.float32)
    return obs, act


class GymVectorEnv(VectorEnv):
    """All worlds as a Gymnasium ``VectorEnv`` with same-step autoreset (final obs in ``infos``)."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, env: BatchedEnv):
        if not env.keep_final_obs:
            env.keep_final_obs = True
        self.env = env
        self.num_envs = env.num_envs
        self.single_observation_space, self.single_action_space = _spaces(env)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset all worlds; ``seed`` re-seeds the whole batch."""
        obs, _ = self.env.reset(seed=seed)
        return obs.numpy(), {}

    def step(self, actions: np.ndarray):
        """Step all worlds; returns obs, rewards, terminated, truncated, infos."""
        obs, rew, done, extras = self.env.step(np.asarray(actions, dtype=np.float32))
        truncated = extras["time_outs"].numpy()
        terminated = done.numpy() & ~truncated
        infos: dict[str, Any] = {}
        if "final_ids" in extras:
            mask = np.zeros(self.num_envs, dtype=bool)
            mask[extras["final_ids"]] = True
            infos["final_obs"] = extras["final_observation"].numpy()
            infos["_final_obs"] = mask
        return obs.numpy(), rew.numpy().astype(np.float64), terminated, truncated, infos

    def close_extras(self, **kwargs: Any) -> None:
        """Nothing beyond the batch to release."""
        self.env.close()


class GymEnv(gym.Env):
    """One world of a batch as a plain Gymnasium ``Env`` (for single-env tooling and checkers)."""

    metadata = {"render_modes": []}

    def __init__(self, env: BatchedEnv):
        if env.num_envs != 1:
            raise ValueError(f"GymEnv wraps a batch of exactly one world, got {env.num_envs}")
        self.env = env
        self.observation_space, self.action_space = _spaces(env)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset the world; ``seed`` re-seeds it."""
        super().reset(seed=seed)
        obs, _ = self.env.reset(seed=seed)
        return obs[0].numpy(), {}

    def step(self, action: np.ndarray):
        """Step the world; the batch resets itself after a terminal step, as Gymnasium expects the caller to."""
        obs, rew, done, extras = self.env.step(np.asarray(action, dtype=np.float32)[None])
        truncated = bool(extras["time_outs"][0])
        terminated = bool(done[0]) and not truncated
        if done[0]:
            obs = extras["final_observation"]
        return obs[0].numpy(), float(rew[0]), terminated, truncated, {}
