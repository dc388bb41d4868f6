"""rsl_rl ``VecEnv`` view of a :class:`BatchedEnv`, so ``rsl-rl-lib``'s ``OnPolicyRunner`` trains on it unchanged."""

from __future__ import annotations

import torch
from rsl_rl.env import VecEnv
from tensordict import TensorDict

from sim.env import BatchedEnv


class RslRlVecEnv(VecEnv):
    """Observation groups: ``policy`` (what the robot sees) and ``critic`` (with privileged state)."""

    def __init__(self, env: BatchedEnv):
        self.env = env
        self.num_envs = env.num_envs
        self.num_actions = env.num_actions
        self.max_episode_length = env.max_episode_length
        self.device = env.device
        self.cfg = {"task": env.task.name, "hardware": env.profile.name}

    @property
    def episode_length_buf(self) -> torch.Tensor:
        """Steps into the current episode, per world (shared with the env)."""
        return self.env.episode_length_buf

    @episode_length_buf.setter
    def episode_length_buf(self, value: torch.Tensor) -> None:
        # the runner assigns random lengths at start; write through to the env's buffer
        self.env.episode_length_buf.copy_(value)

    def _obs(self) -> TensorDict:
        return TensorDict({"policy": self.env.get_observations(), "critic": self.env.get_privileged_observations()},
                          batch_size=[self.num_envs], device=self.device)

    def get_observations(self) -> TensorDict:
        """Current observation groups."""
        return self._obs()

    def step(self, actions: torch.Tensor) -> tuple[TensorDict, torch.Tensor, torch.Tensor, dict]:
        """Step; extras carry ``time_outs`` for bootstrapping and ``log`` for rsl_rl's logger."""
        _, rew, done, extras = self.env.step(actions)
        out = {"time_outs": extras["time_outs"]}
        if "episode" in extras:
            ep = extras["episode"]
            out["log"] = {"/episode/return": ep["return"], "/episode/success": ep["success"]}
        return self._obs(), rew, done.to(torch.long), out
