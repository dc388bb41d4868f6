"""The agent's side of the adapter trainer process: start it, feed it, notice its death, stop it by a deadline.

The trainer (:class:`robot_agent.trainer.AdapterTrainerProcess`) is a process of its own: it can be
killed (the kernel's OOM killer, an operator) or wedged (stopped, stuck in a native call). A dead trainer
is restarted once, from the adapter it last saved; after a second death the unit goes on with the adapter
it runs and learns no more, and its status says so. Stopping never waits past its deadline: a trainer
that does not finish its update in time is terminated, and one that ignores that too is killed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from robot_agent.config import AdapterTrainingConfig
from robot_agent.service import RUNNING, STOPPED, seconds_left
from robot_agent.trainer import AdapterTrainerProcess
from shared_policy.adapter import adapter_file_metadata

log = logging.getLogger(__name__)

SEGMENT_KEYS = ("obs", "critic_obs", "actions", "log_probs", "rewards", "dones", "time_outs")


def saved_adapter_version(path: Path) -> int:
    """The version recorded in a saved adapter file, or 0 when there is none (or it is unreadable)."""
    try:
        return int(adapter_file_metadata(path).get("version", 0))
    except ValueError:
        return 0


class TrainerLink:
    """One adapter trainer process at a time, restarted once if it dies."""

    name = "adapter_trainer"

    def __init__(self, checkpoint: str | Path, hardware: str, cfg: AdapterTrainingConfig, adapter_path: Path,
                 version: int, trunk_version: int, seed: int, restarts: int = 1):
        self.checkpoint, self.hardware, self.cfg = str(checkpoint), hardware, cfg
        self.adapter_path, self.trunk_version, self.seed = Path(adapter_path), trunk_version, seed
        self.restarts_left = restarts
        self.deaths: list[str] = []  # how each process ended when nobody asked it to
        self.gave_up = False  # died more often than it may be restarted: no more learning
        self.process = self._spawn(version)
        self._unread: list[dict[str, Any]] = []
        self._stopped = False

    def _spawn(self, version: int) -> AdapterTrainerProcess:
        return AdapterTrainerProcess(self.checkpoint, self.hardware, self.cfg, self.adapter_path, version,
                                     self.trunk_version, seed=self.seed + version)

    def start(self) -> None:
        """Spawn the process."""
        self.process.start()

    @property
    def alive(self) -> bool:
        """Whether the current process is running."""
        return self.process.alive

    @property
    def submitted(self) -> int:
        """Segments sent to the current process."""
        return self.process.submitted

    @property
    def consumed(self) -> int:
        """Segments the current process has learned from (or refused)."""
        return self.process.consumed

    def health(self) -> str:
        """``running``, ``stopped``, or how it died (and whether it was restarted)."""
        if self.gave_up:
            return f"dead: {self.deaths[-1]} (not restarted: learning stopped)"
        if not self.alive and self.process.process.exitcode is None:
            return "not started"
        if not self.alive and not self._stopped:
            return f"dead: {self._exit()}"  # until the agent's next check between episodes
        state = RUNNING if self.alive else STOPPED
        return f"{state} (restarted after: {self.deaths[-1]})" if self.deaths else state

    def submit(self, arrays: dict[str, np.ndarray]) -> None:
        """Queue a chunk's transitions for learning (the spool writer calls this); dropped while dead."""
        if self.process.alive:
            self.process.submit({k: arrays[k] for k in SEGMENT_KEYS})

    def new_trunk(self, path: str | Path, version: int, adapter_file: str | Path = "") -> None:
        """Learn on top of trunk ``version`` at ``path`` from now on, from the adapter in ``adapter_file`` (a
        restarted process starts from both too)."""
        self.checkpoint, self.trunk_version = str(path), version
        self.process.new_trunk(path, adapter_file)

    @property
    def rollbacks(self) -> int:
        """Rollback verdicts sent to the current process."""
        return self.process.rollbacks

    def keep(self, version: int) -> None:
        """The guard kept adapter ``version``: the trainer writes it where a restart loads it."""
        self.process.keep(version)

    def roll_back(self, version: int) -> None:
        """The guard rolled ``version`` back: the trainer learns on from the last kept adapter."""
        self.process.roll_back(version)

    def updates(self) -> list[dict[str, Any]]:
        """New adapter versions reported since the last call."""
        unread, self._unread = self._unread, []
        return unread + self.process.updates()

    def check(self) -> str | None:
        """Between episodes: if the process died, restart it once; returns what happened, or None."""
        if self._stopped or self.gave_up or self.process.alive or self.process.process.exitcode is None:
            return None
        why = self._exit()
        self.deaths.append(why)
        self._unread += self.process.updates()  # what it reported before it died still counts
        self.process.stop(timeout=0.0)  # a dead process's queue must not hold the agent's exit
        if self.restarts_left <= 0:
            self.gave_up = True
            log.error("adapter trainer died again (%s): the unit keeps its current adapter and learns no more", why)
            return f"{why}; not restarted"
        self.restarts_left -= 1
        version = saved_adapter_version(self.adapter_path)
        log.error("adapter trainer died (%s): restarting it from adapter v%d", why, version)
        self.process = self._spawn(version)
        self.process.start()
        return f"{why}; restarted"

    def stop(self, deadline: float) -> None:
        """Let an update in progress finish and save if the deadline allows; end the process by force if not."""
        if not (self._stopped or self.gave_up) and self.process.process.exitcode is not None:
            self.deaths.append(self._exit())  # died since the last check: the final status says so
            self.gave_up = True
        self._stopped = True
        # what the trainer's own stop adds after its timeout: terminate and a 1 s join; a kill needs ~1 s more
        self.process.stop(timeout=seconds_left(deadline - 2.0, floor=0.1))
        if self.process.alive:
            log.error("adapter trainer ignored SIGTERM: killing it")
            self.process.process.kill()
            self.process.process.join(1.0)

    def _exit(self) -> str:
        code = self.process.process.exitcode
        return f"exit code {code}" if code is not None and code >= 0 else f"killed by signal {-(code or 0)}"
