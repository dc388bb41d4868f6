"""Chunks as a robot agent makes them: arrays through the agent's own ``chunk_arrays``, the header its
recorder writes plus the ids its spool adds, encoded with the one record format."""

from __future__ import annotations

from typing import Any

import numpy as np

from fleet.record import encode_record
from robot_agent.recorder import ROW_KEYS, chunk_arrays

DIMS = {"cartpole": (5, 7, 1), "go1_like": (45, 52, 12)}  # hardware -> (obs, critic_obs, action) sizes
TASKS = {"cartpole": "cartpole_swingup", "go1_like": "locomotion"}


def agent_arrays(rng: np.random.Generator, steps: int, hardware: str = "cartpole", versions: tuple[int, int] = (0, 0),
                 episode_end: bool = False) -> dict[str, np.ndarray]:
    """One chunk's arrays, recorded transition by transition as the agent's control loop does."""
    obs_dim, critic_dim, act_dim = DIMS[hardware]
    rows: dict[str, list] = {k: [] for k in ROW_KEYS}
    for t in range(steps):
        last = episode_end and t == steps - 1
        row = {"obs": rng.standard_normal(obs_dim).astype(np.float32),
               "critic_obs": rng.standard_normal(critic_dim).astype(np.float32),
               "actions": rng.standard_normal(act_dim), "log_probs": float(rng.normal(-1.0, 0.3)),
               "rewards": float(rng.random()), "dones": float(last), "time_outs": float(last and t % 2 == 0),
               "stamp": 1000.0 + 0.02 * t}
        for k in ROW_KEYS:
            rows[k].append(row[k])
    return chunk_arrays(rows, rng.standard_normal(critic_dim).astype(np.float32), *versions)


def agent_header(robot_id: str, epoch: str, seq: int, episode: int, arrays: dict[str, np.ndarray],
                 hardware: str = "cartpole", task: str = "cartpole_swingup", episode_end: bool = False,
                 first_step: int | None = None) -> dict[str, Any]:
    """The header ``Agent._emit`` writes, with the ``chunk_id``, ``seq`` and ``spool_epoch`` its spool adds
    (``first_step`` None: as an agent that did not write it)."""
    header = {"robot_id": robot_id, "hardware": hardware, "task": task, "episode": episode,
              "steps": len(arrays["rewards"]), "episode_end": episode_end,
              "trunk_version": int(arrays["trunk_version"][0]), "adapter_version": int(arrays["adapter_version"][0]),
              "chunk_id": f"{robot_id}-{epoch}-{seq:010d}", "seq": seq, "spool_epoch": epoch}
    if first_step is not None:
        header["first_step"] = first_step
    return header


def agent_record(rng: np.random.Generator, robot_id: str, seq: int, epoch: str = "0123456789abcdef", episode: int = 0,
                 steps: int = 20, hardware: str = "cartpole", versions: tuple[int, int] = (0, 0),
                 episode_end: bool = False, first_step: int | None = None) -> bytes:
    """The spool record bytes of one synthetic chunk."""
    arrays = agent_arrays(rng, steps, hardware, versions, episode_end)
    return encode_record(agent_header(robot_id, epoch, seq, episode, arrays, hardware, TASKS[hardware], episode_end,
                                      first_step), arrays)


def as_schema_1(record: bytes) -> bytes:
    """``record`` as a spool written before 2026-12-02 held it: magic ``FLSP`` and a sha256 digest."""
    import hashlib

    from fleet.record import DIGEST, MAGIC_SHA256, PREFIX

    body = record[PREFIX.size:len(record) - DIGEST]
    return MAGIC_SHA256 + record[len(MAGIC_SHA256):PREFIX.size] + body + hashlib.sha256(body).digest()
