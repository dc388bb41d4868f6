"""One episode's transitions, cut into the chunks the spool stores and the adapter learner reads."""

from __future__ import annotations

from typing import Any

import numpy as np


class EpisodeRecorder:
    """Collects one episode's transitions and cuts them into chunks of at most ``chunk_steps``."""

    def __init__(self, chunk_steps: int):
        self.chunk_steps = chunk_steps
        self.rows: dict[str, list] = {}
        self.clear()

    def clear(self) -> None:
        """Start an empty chunk."""
        self.rows = {k: [] for k in ("obs", "critic_obs", "actions", "log_probs", "rewards", "dones", "time_outs",
                                     "trunk_version", "adapter_version", "stamp")}

    def add(self, **row: Any) -> None:
        """One transition."""
        for k, v in row.items():
            self.rows[k].append(v)

    def __len__(self) -> int:
        return len(self.rows["rewards"])

    def cut(self, final_critic_obs: np.ndarray) -> dict[str, np.ndarray]:
        """The arrays of the chunk so far (critic_obs gets the bootstrap row), then start a new one."""
        r = self.rows
        arrays = {
            "obs": np.asarray(r["obs"], dtype=np.float32),
            "critic_obs": np.asarray([*r["critic_obs"], final_critic_obs], dtype=np.float32),
            "actions": np.asarray(r["actions"], dtype=np.float32),
            "log_probs": np.asarray(r["log_probs"], dtype=np.float32),
            "rewards": np.asarray(r["rewards"], dtype=np.float32),
            "dones": np.asarray(r["dones"], dtype=np.float32),
            "time_outs": np.asarray(r["time_outs"], dtype=np.float32),
            "trunk_version": np.asarray(r["trunk_version"], dtype=np.int64),
            "adapter_version": np.asarray(r["adapter_version"], dtype=np.int64),
            "stamp": np.asarray(r["stamp"], dtype=np.float64),
        }
        self.clear()
        return arrays
