"""Batched, domain-randomised MuJoCo simulation with an Isaac Gym / rsl_rl-style API."""

from __future__ import annotations

from typing import Any

from hardware import gl_backend  # noqa: F401  (first: sets MUJOCO_GL before mujoco loads)
from hardware.profile import HardwareProfile, load_profile
from hardware.tasks import task_class
from sim.config import task_config
from sim.env import ActionError, BatchedEnv, make_batched_env


def make_env(task: str, hardware: str | HardwareProfile, num_envs: int, seed: int = 0, device: str = "cpu",
             nthread: int = 0, **overrides: Any) -> BatchedEnv:
    """A batched environment: ``num_envs`` worlds of ``hardware`` running ``task``.

    ``overrides`` replace task config values (e.g. ``episode_length_s=5``,
    ``randomization={"friction": [0.5, 1.5]}``); a wrong key or value raises naming it.
    """
    keep_final_obs = bool(overrides.pop("keep_final_obs", False))
    cfg = task_config(task, overrides)
    profile = load_profile(hardware)
    t = task_class(task)(cfg, profile)
    return make_batched_env(t, profile, num_envs, seed=seed, device=device, nthread=nthread,
                            keep_final_obs=keep_final_obs)


__all__ = ["ActionError", "BatchedEnv", "make_env"]
