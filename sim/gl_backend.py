"""Chooses MuJoCo's OpenGL back-end before MuJoCo is first imported (``sim/__init__`` imports it before any
sim module).

MuJoCo reads MUJOCO_GL once, when it is imported. Training machines are usually headless Linux,
where EGL works and GLFW does not, so EGL is the default there; a MUJOCO_GL the user set, or a
desktop session with a DISPLAY, keeps its own choice.
"""

import os
import sys

if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")
