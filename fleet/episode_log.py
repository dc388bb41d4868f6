"""Every robot's episodes as the hub stored them: return, length, and the trunk and adapter versions that ran them.

Read after the fact from the experience store (the demo's report, the fleet-round benchmark); the live roll-out
tails the store with :mod:`fleet.returns_by_version` instead. An episode is keyed by (robot, spool epoch,
episode number), so a restarted agent's episodes never merge with another process's; it is *complete* when its
last stored chunk carries ``done``. It is credited to the versions of its last step (the agent swaps trunks and
adapters only between episodes).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fleet.returns_by_version import chunk_steps
from fleet.store import STORE_FILE, ExperienceStore


@dataclass(frozen=True)
class StoredEpisode:
    """One robot episode from the store."""

    robot_id: str
    hardware: str
    spool_epoch: str
    episode: int
    trunk_version: int
    adapter_version: int
    steps: int
    episode_return: float
    complete: bool
    first_received: float  # hub wall-clock time its first chunk was stored
    last_received: float


def stored_episodes(storage_dir: str | Path, complete_only: bool = True) -> dict[str, list[StoredEpisode]]:
    """Each robot's episodes in ``storage_dir``'s store, ordered by when their first chunk was stored."""
    store = ExperienceStore(Path(storage_dir) / STORE_FILE, check=False, read_only=True)
    try:
        parts: dict[tuple[str, str, int], list] = defaultdict(list)
        rowid = 0
        while batch := store.read_since(rowid, limit=512):
            for c in batch:
                rewards, dones, _ = chunk_steps(c.record)
                parts[(c.robot_id, c.spool_epoch, c.episode)].append((c, float(np.sum(rewards)), bool(dones.any())))
            rowid = batch[-1].rowid
    finally:
        store.close()
    out: dict[str, list[StoredEpisode]] = defaultdict(list)
    for (robot, epoch, episode), chunks in parts.items():
        chunks.sort(key=lambda p: p[0].seq)
        last = chunks[-1][0]
        ep = StoredEpisode(robot, last.hardware, epoch, episode, last.trunk_version, last.adapter_version,
                           sum(p[0].steps for p in chunks), sum(p[1] for p in chunks), chunks[-1][2],
                           min(p[0].received for p in chunks), max(p[0].received for p in chunks))
        if ep.complete or not complete_only:
            out[robot].append(ep)
    for episodes in out.values():
        episodes.sort(key=lambda e: e.first_received)
    return dict(out)
