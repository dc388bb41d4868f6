"""Chunks shaped as a robot agent records them (``robot_agent.recorder.TransitionRecorder._emit``: the same
array names, dtypes and shapes, and the header it writes plus the ids its spool adds), with random values, encoded
with the one record format. ``test_record`` checks the real recorder's chunks against the same contract."""

from __future__ import annotations

from typing import Any

import numpy as np

from fleet.record import encode_record

DIMS = {"cartpole": (5, 7, 1), "go1_like": (45, 52, 12)}  # hardware -> (obs, critic_obs, action) sizes
TASKS = {"cartpole": "cartpole_swingup", "go1_like": "locomotion"}


def agent_arrays(rng: np.random.Generator, steps: int, hardware: str = "cartpole", versions: tuple[int, int] = (0, 0),
                 episode_end: bool = False) -> dict[str, np.ndarray]:
    """One chunk's arrays: ``steps`` transitions, critic_obs with the bootstrap row after the last one."""
    obs_dim, critic_dim, act_dim = DIMS[hardware]
    ends = np.zeros(steps, np.float32)
    ends[-1] = float(episode_end)
    return {
        "obs": rng.standard_normal((steps, obs_dim)).astype(np.float32),
        "critic_obs": rng.standard_normal((steps + 1, critic_dim)).astype(np.float32),
        "actions": rng.standard_normal((steps, act_dim)).astype(np.float32),
        "log_probs": rng.normal(-1.0, 0.3, steps).astype(np.float32),
        "rewards": rng.random(steps).astype(np.float32),
        "dones": ends,
        "time_outs": ends * float(rng.random() < 0.5),
        "trunk_version": np.full(steps, versions[0], np.int64),
        "adapter_version": np.full(steps, versions[1], np.int64),
        "stamp": 1000.0 + 0.02 * np.arange(steps, dtype=np.float64),
    }


def agent_header(robot_id: str, epoch: str, seq: int, episode: int, arrays: dict[str, np.ndarray],
                 hardware: str = "cartpole", task: str = "cartpole_swingup", episode_end: bool = False) -> dict[str, Any]:
    """The header ``Agent._emit`` writes, with the ``chunk_id``, ``seq`` and ``spool_epoch`` its spool adds."""
    return {"robot_id": robot_id, "hardware": hardware, "task": task, "episode": episode,
            "steps": len(arrays["rewards"]), "episode_end": episode_end,
            "trunk_version": int(arrays["trunk_version"][0]), "adapter_version": int(arrays["adapter_version"][0]),
            "chunk_id": f"{robot_id}-{epoch}-{seq:010d}", "seq": seq, "spool_epoch": epoch}


def agent_record(rng: np.random.Generator, robot_id: str, seq: int, epoch: str = "0123456789abcdef", episode: int = 0,
                 steps: int = 20, hardware: str = "cartpole", versions: tuple[int, int] = (0, 0),
                 episode_end: bool = False) -> bytes:
    """The spool record bytes of one synthetic chunk."""
    arrays = agent_arrays(rng, steps, hardware, versions, episode_end)
    return encode_record(agent_header(robot_id, epoch, seq, episode, arrays, hardware, TASKS[hardware], episode_end),
                         arrays)
