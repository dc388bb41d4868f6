"""A small experiment-logger interface: Weights & Biases (offline unless WANDB_MODE says otherwise) or none."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


class RunLogger(Protocol):
    """What apps log through."""

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record scalar metrics."""

    def log_video(self, key: str, gif: Path, step: int | None = None) -> None:
        """Record a rollout video from an encoded GIF file."""

    def close(self) -> None:
        """Flush and end the run."""


class NullLogger:
    """Logs nothing."""

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Drop the metrics."""

    def log_video(self, key: str, gif: Path, step: int | None = None) -> None:
        """Drop the video."""

    def close(self) -> None:
        """Nothing to flush."""


class WandbLogger:
    """A wandb run. The mode comes from WANDB_MODE (default offline): never hard-coded, never a network need."""

    def __init__(self, project: str, job: str, config: dict[str, Any], run_name: str = ""):
        import wandb

        os.environ.setdefault("WANDB_MODE", "offline")
        self._wandb = wandb
        self.run = wandb.init(project=project, job_type=job, config=config, name=run_name or None,
                              reinit="finish_previous")

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record scalar metrics on the run."""
        self.run.log(metrics, step=step)

    def log_video(self, key: str, gif: Path, step: int | None = None) -> None:
        """Log a GIF file as a wandb.Video (wandb copies it into the run)."""
        self.run.log({key: self._wandb.Video(str(gif), format="gif")}, step=step)

    def close(self) -> None:
        """Finish the run (offline runs stay under ./wandb for `wandb sync`)."""
        self.run.finish()


def open_logger(cfg: Any, job: str, config: dict[str, Any]) -> RunLogger:
    """The logger ``cfg.backend`` names (``wandb`` or ``none``)."""
    if cfg.backend == "none":
        return NullLogger()
    if cfg.backend == "wandb":
        return WandbLogger(cfg.project, job, config, cfg.run_name)
    raise ValueError(f"logger.backend must be 'wandb' or 'none', got '{cfg.backend}'")


class CurveFile:
    """A learning curve as CSV, one row appended (and flushed) per iteration: fixed columns, a missing value
    left empty, the header written when the file is new (a resumed run appends to its curve). A file whose
    header is not these columns (written by other code) is moved aside to ``<name>.old.csv`` (or, when that is
    taken, ``<name>.old.1.csv``, ``.old.2``, ...: an earlier one is never overwritten), never appended to under
    the wrong header."""

    def __init__(self, path: str | Path, columns: list[str]):
        self.path, self.columns = Path(path), list(columns)
        self._checked = False

    def append(self, values: dict[str, Any]) -> None:
        """Append one row of ``values`` (keys outside the columns are ignored)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._checked:
            self._checked = True
            if self.path.exists():
                with open(self.path, encoding="utf-8") as f:
                    header = f.readline().rstrip("\n")
                if header != ",".join(self.columns):
                    aside = self._free_old_name()
                    self.path.rename(aside)
                    log.warning("curve file %s has another header (%s): moved aside to %s", self.path, header, aside)
        new = not self.path.exists()
        with open(self.path, "a", encoding="utf-8") as f:
            if new:
                f.write(",".join(self.columns) + "\n")
            f.write(",".join("" if values.get(c) is None else f"{values[c]:.6g}" if isinstance(values[c], float)
                             else str(values[c]) for c in self.columns) + "\n")

    def _free_old_name(self) -> Path:
        """The first of ``<name>.old.csv``, ``<name>.old.1.csv``, ... that does not exist yet."""
        stem, suffix = self.path.stem, self.path.suffix
        aside, n = self.path.with_name(f"{stem}.old{suffix}"), 0
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{stem}.old.{n}{suffix}")
        return aside
