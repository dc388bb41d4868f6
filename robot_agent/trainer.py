"""Adapter training in its own process, so that learning never takes the control loop's GIL or core.

The agent sends recorded segments (and new trunk paths) down a queue; the process runs
:class:`AdapterLearner`, saves the adapter atomically after every update, and reports the new version
back. The agent loads that file off its control thread and swaps the adapter in.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
from pathlib import Path
from typing import Any

import numpy as np

from shared_policy.config import AdapterLearnerConfig

log = logging.getLogger(__name__)

SEGMENT, TRUNK, STOP = "segment", "trunk", "stop"


def _train_main(checkpoint: str, hardware: str, cfg: AdapterLearnerConfig, adapter_path: str, version: int,
                trunk_version: int, seed: int, inbox: Any, outbox: Any) -> None:
    import torch

    from shared_policy.adapter import load_adapter, save_adapter
    from shared_policy.adapter_learner import AdapterLearner
    from shared_policy.checkpoint import load_checkpoint

    torch.set_num_threads(1)  # one core for learning, the other stays with the control loop
    os.nice(10)  # learning yields the CPU to the control loop whenever both want it
    torch.manual_seed(seed)
    policy, _ = load_checkpoint(checkpoint)
    adapter = load_adapter(adapter_path, policy, hardware)[0] if Path(adapter_path).is_file() else None
    learner = AdapterLearner(policy, hardware, cfg, adapter)
    parent = mp.parent_process()
    while True:
        try:
            kind, payload = inbox.get(timeout=1.0)
        except queue.Empty:
            if parent is not None and not parent.is_alive():  # the agent was killed: do not linger
                return
            continue
        if kind == STOP:
            break
        if kind == TRUNK:
            policy, manifest = load_checkpoint(payload)
            learner = AdapterLearner(policy, hardware, cfg, learner.adapter)
            trunk_version = int(manifest["trunk_version"])
            continue
        try:
            learner.add(payload)
        except ValueError as exc:
            outbox.put({"error": f"segment refused: {exc}", "consumed": 1})
            continue
        if learner.ready():
            stats = learner.update()
            version += 1
            save_adapter(adapter_path, learner.adapter, version, trunk_version)
            outbox.put({"version": version, "stats": stats})
        outbox.put({"consumed": 1})


class AdapterTrainerProcess:
    """Owns the training process and its two queues."""

    def __init__(self, checkpoint: str | Path, hardware: str, cfg: AdapterLearnerConfig, adapter_path: str | Path,
                 version: int, trunk_version: int, seed: int = 0):
        ctx = mp.get_context("spawn")  # no fork of a process with threads and torch state
        self.inbox, self.outbox = ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(
            target=_train_main, name="adapter-trainer", daemon=True,
            args=(str(checkpoint), hardware, cfg, str(adapter_path), version, trunk_version, seed, self.inbox,
                  self.outbox))
        self.errors = 0
        self.submitted = 0  # segments sent
        self.consumed = 0  # segments the process has learned from (or refused)

    def start(self) -> None:
        """Spawn the process."""
        self.process.start()

    @property
    def alive(self) -> bool:
        """Whether the process is running."""
        return self.process.is_alive()

    def submit(self, segment: dict[str, np.ndarray]) -> None:
        """Queue a recorded segment for learning."""
        self.inbox.put((SEGMENT, segment))
        self.submitted += 1

    def new_trunk(self, path: str | Path) -> None:
        """Learn on top of a new trunk from now on."""
        self.inbox.put((TRUNK, str(path)))

    def updates(self) -> list[dict[str, Any]]:
        """Reports since the last call (new adapter versions with their stats, or errors)."""
        out = []
        while True:
            try:
                msg = self.outbox.get_nowait()
            except queue.Empty:
                return out
            if "error" in msg:
                self.errors += 1
                log.error("adapter trainer: %s", msg["error"])
            self.consumed += msg.get("consumed", 0)
            if "version" in msg:
                out.append(msg)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the process to finish (an update in progress completes and is saved), then join it."""
        if self.process.is_alive():
            self.inbox.put((STOP, None))
            self.process.join(timeout)
        if self.process.is_alive():
            log.warning("adapter trainer did not stop within %.1f s: terminating it", timeout)
            self.process.terminate()
            self.process.join(1.0)
        self.inbox.cancel_join_thread()
