"""Batched, domain-randomised MuJoCo simulation with an Isaac Gym / rsl_rl-style API.

Everything that needs MuJoCo lives here: the models generated from hardware profiles (:mod:`sim.models`),
the batched physics (:mod:`sim.physics`), the environments, rendering, and the MuJoCo stand-in robot
(:mod:`sim.standin`, a driver of the :mod:`hardware.driver` protocol). The GL back-end is chosen here,
before any of them loads mujoco; :mod:`hardware` needs neither.
"""

from __future__ import annotations

from typing import Any

# hardware loads no MuJoCo, so gl_backend below still runs before the first mujoco import
from hardware.profile import HardwareProfile, load_profile
from hardware.tasks import task_class
from sim import gl_backend  # noqa: F401  (before any sim module: sets MUJOCO_GL before mujoco loads)
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
