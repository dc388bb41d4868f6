"""Adapter training in its own process, so that learning never takes the control loop's GIL or core.

The agent sends recorded segments (and new trunk paths) down a queue; the process runs
:class:`AdapterLearner`, saves each update atomically, and reports the new version back. The agent loads
that file between episodes and swaps the adapter in. With the guard on (``adapter.guard``, see
:mod:`robot_agent.adapter_guard`) an update is a candidate until the agent's verdict: kept, it becomes the
file a restart loads; rolled back, the learner goes back to the kept version and drops what was built on
the rejected one.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing as mp
import os
import queue
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robot_agent.config import AdapterTrainingConfig
from robot_agent.drift_anchor import forget_anchor, load_anchor
from robot_agent.trunk_adapter import own_adapter_path
from shared_policy.adapter import Adapter, AdapterFileError, load_adapter, save_adapter
from shared_policy.adapter_learner import AdapterLearner
from shared_policy.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

SEGMENT, TRUNK, KEEP, ROLL_BACK, STOP = "segment", "trunk", "keep", "roll_back", "stop"
MAX_CANDIDATES = 64  # updates held for a verdict; the guard decides within a few, this only bounds memory


def candidate_path(adapter_path: str | Path) -> Path:
    """Where the newest update waits for its verdict (beside the kept adapter, which a restart loads)."""
    p = Path(adapter_path)
    return p.with_name(f"{p.name.split('.')[0]}.candidate.safetensors")


class AdapterVersions:
    """The trainer's record of adapter versions: the kept one (the file at ``path``, what a restart loads),
    the updates made since (held until the guard's verdict), and the version numbers issued.

    A number is never issued twice, also across restarts: the newest candidate's file keeps the last one
    issued, since transitions in the spool carry the version that acted. Unguarded, every update is kept
    at once and written straight to ``path``.
    """

    def __init__(self, path: Path, adapter: Adapter, version: int, trunk_version: int, guarded: bool,
                 last_issued: int = 0):
        self.path, self.candidate_path, self.guarded = path, candidate_path(path), guarded
        self._scratch = copy.deepcopy(adapter)  # what a saved state is written through
        self.kept_version = version
        self.kept_state = _snapshot(adapter)
        self.issued = max(version, last_issued)
        self.candidates: dict[int, tuple[dict[str, torch.Tensor], int]] = {}
        self.generation = 0  # rollbacks done: updates reported before one are stale

    def add(self, state: dict[str, torch.Tensor], trunk_version: int) -> tuple[int, Path]:
        """A new update: its version and the file the agent loads it from."""
        self.issued += 1
        if not self.guarded:
            self._save(self.path, state, self.issued, trunk_version)
            self.kept_version, self.kept_state = self.issued, state
            return self.issued, self.path
        self.candidates[self.issued] = (state, trunk_version)
        while len(self.candidates) > MAX_CANDIDATES:
            self.candidates.pop(min(self.candidates))
        self._save(self.candidate_path, state, self.issued, trunk_version)
        return self.issued, self.candidate_path

    def keep(self, version: int) -> None:
        """The guard kept ``version``: it becomes the file a restart loads."""
        if version not in self.candidates:
            log.error("adapter v%d was kept but is no longer held: the kept file stays v%d", version,
                      self.kept_version)
            return
        state, trunk_version = self.candidates[version]
        self._save(self.path, state, version, trunk_version)
        self.kept_version, self.kept_state = version, state
        self.candidates = {v: c for v, c in self.candidates.items() if v > version}

    def roll_back(self, version: int) -> dict[str, torch.Tensor]:
        """The guard rejected ``version``: it and every update built on it are dropped; returns the kept state
        to learn on from."""
        log.warning("adapter v%d rolled back: learning continues from v%d", version, self.kept_version)
        self.candidates.clear()
        self.generation += 1
        return self.kept_state

    def restart_from(self, adapter: Adapter, version: int, trunk_version: int, new_generation: bool = True) -> None:
        """A new trunk with its own adapter: it is the kept one (written where a restart loads it); updates
        built on the old trunk's adapter are dropped, and reported ones are stale (as after a rollback)."""
        state = _snapshot(adapter)
        self._save(self.path, state, version, trunk_version)
        self.kept_version, self.kept_state = version, state
        self.issued = max(self.issued, version)  # numbers stay unique: the next update is newer than it
        self.candidates.clear()
        self.generation += new_generation  # no: nothing was reported yet (a process that starts on the new trunk)

    def _save(self, path: Path, state: dict[str, torch.Tensor], version: int, trunk_version: int) -> None:
        self._scratch.load_state_dict(state)
        save_adapter(path, self._scratch, version, trunk_version)


def _adapter_to_learn_from(policy: torch.nn.Module, hardware: str, adapter_path: Path, version: int,
                           trunk_version: int) -> tuple[Adapter | None, int, bool]:
    """(adapter, its version, whether it replaces the adapter file's): the adapter file's, unless it was made for
    another trunk (the process died between the agent's swap and its TRUNK message); then the one the agent saved
    for this trunk before sending it (robot_agent/trunk_adapter.py), or a fresh one (None)."""
    if not adapter_path.is_file():
        return None, version, False
    adapter, meta = load_adapter(adapter_path, policy, hardware)
    made_for = int(meta.get("trunk_version", 0) or 0)
    if not (made_for and trunk_version and made_for != trunk_version):
        return adapter, version, False
    own = own_adapter_path(adapter_path.parent, trunk_version)
    log.warning("%s was made for trunk v%d, not v%d: learning from %s", adapter_path, made_for, trunk_version,
                own if own.is_file() else "a fresh adapter")
    try:
        adapter, meta = load_adapter(own, policy, hardware)
        return adapter, int(meta.get("version", 0)), True
    except AdapterFileError as exc:
        log.warning("no adapter for trunk v%d to learn from (%s): a fresh one", trunk_version, exc)
        return None, 0, True


def _snapshot(adapter: Adapter) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in adapter.state_dict().items()}


def _last_issued(path: Path, policy: torch.nn.Module, hardware: str) -> int:
    """The version in the candidate file (the last number issued before a restart), 0 if none is readable."""
    if not path.is_file():
        return 0
    try:
        return int(load_adapter(path, policy, hardware)[1]["version"])
    except AdapterFileError as exc:
        log.warning("ignoring %s: %s", path, exc)
        return 0


class AdapterTraining:
    """What the trainer process does with each message from the agent: learn from a segment, move to a new
    trunk, keep or roll back a version. Returns the reports for the agent."""

    def __init__(self, policy: torch.nn.Module, hardware: str, cfg: AdapterTrainingConfig, adapter_path: Path,
                 version: int, trunk_version: int):
        self.hardware, self.cfg, self.trunk_version = hardware, cfg, trunk_version
        self.adapter_path = adapter_path
        given = version  # numbers up to it may have been issued (and sit in the spool): never issue them again
        adapter, version, swapped = _adapter_to_learn_from(policy, hardware, adapter_path, version, trunk_version)
        self.learner = AdapterLearner(policy, hardware, cfg, adapter)
        if adapter is None and cfg.drift_kl > 0:  # a fresh adapter (none saved, or moved away): learning starts here
            forget_anchor(adapter_path, trunk_version)
        self._anchor(policy, version, trunk_version)
        self.versions = AdapterVersions(adapter_path, self.learner.adapter, version, trunk_version, cfg.guard,
                                        max(given, _last_issued(candidate_path(adapter_path), policy, hardware)))
        if swapped:  # the swap the process died before writing down: the adapter file a restart loads
            self.versions.restart_from(self.learner.adapter, version, trunk_version, new_generation=False)

    def _anchor(self, policy: torch.nn.Module, version: int, trunk_version: int) -> None:
        """With a drift budget, set the learner's anchor: the one kept for this trunk, else the adapter learning
        starts from (robot_agent/drift_anchor.py). Without, nothing is kept on disk."""
        if self.cfg.drift_kl <= 0:
            return
        self.learner.anchor = load_anchor(self.adapter_path, policy, self.hardware, trunk_version,
                                          copy.deepcopy(self.learner.adapter), version).requires_grad_(False)

    def handle(self, kind: str, payload: Any) -> list[dict[str, Any]]:
        """Act on one message (not ``STOP``)."""
        if kind == TRUNK:  # payload: (checkpoint, the adapter file made for it: robot_agent/trunk_adapter.py)
            checkpoint, adapter_file = payload if isinstance(payload, tuple) else (payload, "")
            policy, manifest = load_checkpoint(checkpoint)
            adapter, meta = load_adapter(adapter_file, policy, self.hardware) if adapter_file else (None, {})
            self.learner = AdapterLearner(policy, self.hardware, self.cfg, adapter)
            self.trunk_version = int(manifest["trunk_version"])
            if adapter_file:  # never learn on (or restart with) an adapter made for another trunk
                self.versions.restart_from(self.learner.adapter, int(meta.get("version", 0)), self.trunk_version)
            self._anchor(policy, int(meta.get("version", 0)), self.trunk_version)
            return []
        if kind == KEEP:
            self.versions.keep(payload)
            return [{"consumed": 1}]
        if kind == ROLL_BACK:
            self.learner.restore(self.versions.roll_back(payload))
            return [{"consumed": 1}]
        try:
            self.learner.add(payload)
        except ValueError as exc:
            return [{"error": f"segment refused: {exc}", "consumed": 1}]
        out = []
        if self.learner.ready():
            stats = self.learner.update()
            new, where = self.versions.add(self.learner.snapshot(), self.trunk_version)
            out.append({"version": new, "path": str(where), "generation": self.versions.generation, "stats": stats})
        return [*out, {"consumed": 1}]


def _train_main(checkpoint: str, hardware: str, cfg: AdapterTrainingConfig, adapter_path: str, version: int,
                trunk_version: int, seed: int, inbox: Any, outbox: Any) -> None:
    torch.set_num_threads(1)  # one core for learning, the other stays with the control loop
    os.nice(10)  # learning yields the CPU to the control loop whenever both want it
    torch.manual_seed(seed)
    policy, _ = load_checkpoint(checkpoint)
    training = AdapterTraining(policy, hardware, cfg, Path(adapter_path), version, trunk_version)
    parent = mp.parent_process()
    while True:
        if parent is not None and not parent.is_alive():  # the agent was killed: do not linger on its backlog
            return
        try:
            kind, payload = inbox.get(timeout=1.0)
        except queue.Empty:
            continue
        if kind == STOP:
            break
        for report in training.handle(kind, payload):
            outbox.put(report)


class AdapterTrainerProcess:
    """Owns the training process and its two queues."""

    def __init__(self, checkpoint: str | Path, hardware: str, cfg: AdapterTrainingConfig, adapter_path: str | Path,
                 version: int, trunk_version: int, seed: int = 0):
        ctx = mp.get_context("spawn")  # no fork of a process with threads and torch state
        self.inbox, self.outbox = ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(
            target=_train_main, name="adapter-trainer", daemon=True,
            args=(str(checkpoint), hardware, cfg, str(adapter_path), version, trunk_version, seed, self.inbox,
                  self.outbox))
        self.errors = 0
        self.rollbacks = 0  # verdicts sent that roll back: updates the process reported before them are stale
        self._segments = 0  # sent, counted by the spool writer thread
        self._verdicts = 0  # sent, counted by the control thread (one counter per thread: += is not atomic)
        self.consumed = 0  # segments the process has learned from (or refused), verdicts it has acted on

    @property
    def submitted(self) -> int:
        """Segments and verdicts sent to the process."""
        return self._segments + self._verdicts

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
        self._segments += 1

    def new_trunk(self, path: str | Path, adapter_file: str | Path = "") -> None:
        """Learn on top of a new trunk from now on, from the adapter in ``adapter_file`` (one made for that
        trunk); updates reported before it are stale."""
        self.inbox.put((TRUNK, (str(path), str(adapter_file))))
        if adapter_file:
            self.rollbacks += 1  # the process's generation moves on: drop what it reported on the old trunk

    def keep(self, version: int) -> None:
        """The guard kept ``version``: the process writes it to the adapter file a restart loads."""
        self.inbox.put((KEEP, int(version)))
        self._verdicts += 1

    def roll_back(self, version: int) -> None:
        """The guard rejected ``version``: the process learns on from the kept version, and the updates it
        built on the rejected one are never reported."""
        self.inbox.put((ROLL_BACK, int(version)))
        self.rollbacks += 1
        self._verdicts += 1

    def updates(self) -> list[dict[str, Any]]:
        """Reports since the last call (new adapter versions with their stats and file, or errors); an update
        made before the process took in the last rollback is left out."""
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
            if "version" in msg and msg["generation"] >= self.rollbacks:
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
