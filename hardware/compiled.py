"""Compiled per-step kernels: one decorator, so every kernel is built, cached and run the same way.

The batched env runs observation terms, rewards and the action map for every world at every control step.
At cart-pole's size (~1 us of physics per world-substep) numpy's ~1.5 us per call over ~50 calls a step
weighed 15% of the step; a compiled loop does each term in one call. The same kernels serve the robot
agent's batch of one, so sim and robot still share one code path. Kernels compile on first use and are
cached on disk (next to the source, or in the user's cache directory when that is read-only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numba
import numpy as np

F = TypeVar("F", bound=Callable)


def kernel(fn: F) -> F:
    """Compile ``fn`` with numba: nopython, cached, GIL released, numpy's float semantics (no raise on /0)."""
    try:
        return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)
    except RuntimeError:  # no writable cache directory (read-only install and home): compile in memory
        return numba.njit(cache=False, nogil=True, error_model="numpy")(fn)


@kernel
def wrapped_angle32(angle: float) -> np.float32:
    """``angle`` in [-pi, pi] as float32, wrapped in float64 first: cos and sin then run in single precision
    (twice as fast as double in a compiled loop, and observations are float32 anyway) without losing the
    precision of a continuous joint that has turned many times."""
    return np.float32(angle - 2.0 * np.pi * np.round(angle * (0.5 / np.pi)))


@kernel
def copy_into(src: np.ndarray, out: np.ndarray) -> None:
    """out[:] = src for 2-D arrays of equal shape, casting per element (a third of numpy's call cost)."""
    if src.shape != out.shape:
        raise ValueError("an observation term's value does not have the layout's shape")
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            out[i, j] = src[i, j]
