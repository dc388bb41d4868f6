"""Offscreen rendering of chosen worlds to RGB arrays (for videos and the demo's snapshot)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import mujoco
import numpy as np
import torch

from sim.env import BatchedEnv


class RenderUnavailable(RuntimeError):
    """No OpenGL context could be made (set MUJOCO_GL=egl, or install libosmesa6 for osmesa)."""


class EnvRenderer:
    """Renders worlds of a :class:`BatchedEnv` with their own sampled physics parameters."""

    def __init__(self, env: BatchedEnv, width: int = 320, height: int = 240, camera: str | int = -1):
        self.env = env
        self.camera = camera
        self._model = env.backend.world_model(0)
        try:
            self._renderer = mujoco.Renderer(self._model, height=height, width=width)
        except Exception as exc:  # GL back-ends raise a variety of types
            raise RenderUnavailable(f"offscreen rendering failed (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): "
                                    f"{exc}") from exc

    def frame(self, env_id: int = 0) -> np.ndarray:
        """An (H, W, 3) uint8 image of world ``env_id`` now."""
        if not 0 <= env_id < self.env.num_envs:
            raise IndexError(f"env_id {env_id} out of range [0, {self.env.num_envs})")
        model = self.env.backend.batch.get_model(env_id, self._model)
        data = self.env.backend.world_data(env_id, model)
        r = self.env.robot
        if r.target_site >= 0 and self.env.inputs.target is not None:
            # show the reach target where the task put it (arm base frame -> world)
            base = model.body("base").pos
            model.site_pos[r.target_site] = base + self.env.inputs.target[env_id]
            mujoco.mj_forward(model, data)
        self._renderer.update_scene(data, camera=self.camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        """Free the GL context."""
        self._renderer.close()


def record_rollout(env: BatchedEnv, act: Callable[[torch.Tensor], torch.Tensor], steps: int, env_id: int = 0,
                   width: int = 320, height: int = 240) -> np.ndarray:
    """Step ``env`` with ``act(obs)`` for ``steps`` steps, rendering world ``env_id``: (T, H, W, 3) uint8."""
    renderer = EnvRenderer(env, width=width, height=height)
    try:
        obs, _ = env.reset()
        frames = [renderer.frame(env_id)]
        with torch.no_grad():
            for _ in range(steps - 1):
                obs, *_ = env.step(act(obs))
                frames.append(renderer.frame(env_id))
    finally:
        renderer.close()
    return np.stack(frames)


def write_gif(path: str | Path, frames: np.ndarray, fps: int) -> Path:
    """Encode (T, H, W, 3) uint8 frames as an animated GIF."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path
