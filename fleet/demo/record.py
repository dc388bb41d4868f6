"""What a demo run recorded (``<run>/results.json``): the contract between ``fleet-demo``, which writes it, and
``fleet-eval report``, which turns it into the report. Raw observations only (episodes, counts, curves, the
roll-out log); every derived figure (zero-shot / adapted / fleet returns, intervals, gap recovered) is computed
by the report from these, so a report can be rebuilt from any run directory."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
SCHEMA_VERSION = 1


@dataclass
class EpisodeRow:
    """One completed robot episode as the hub stored it (fleet/episode_log.py)."""

    trunk_version: int
    adapter_version: int
    episode_return: float
    steps: int
    received: float  # hub wall-clock time of its last chunk


@dataclass
class UnitRecord:
    """One stand-in unit: its hardware, reality gap, episodes and data accounting."""

    robot_id: str
    hardware: str
    gap: dict[str, Any]  # the stand-in's reality-gap config as passed to its driver (RealityGapConfig fields)
    outside_training_range: list[str]  # gap parameters outside the ranges the trunk was trained on
    canary: bool
    restarted: bool  # the demo killed and restarted this unit's agent
    episodes: list[EpisodeRow] = field(default_factory=list)
    chunks_sent: int = 0  # chunks the agent wrote to its spool (all its processes)
    chunks_acked: int = 0  # chunks the hub acknowledged to it
    chunks_stored: int = 0  # distinct chunks of this robot in the hub's store
    chunks_lost: int = 0  # sent and neither stored at the hub nor still in the robot's spool
    chunks_unsent: int = 0  # still in the robot's spool at the end, not stored (sent at its next start)
    final_trunk_version: int = 0
    final_adapter_version: int = 0


@dataclass
class SimReturn:
    """A policy's return in sim on one hardware type: mean and 95% interval half-width over episodes."""

    mean: float
    ci95: float
    episodes: int


@dataclass
class RolloutStep:
    """One roll-out log entry (fleet/rollout_log.py), as logged."""

    time: float
    event: str
    version: int
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoRecord:
    """Everything ``fleet-demo`` measured in one run."""

    task: str
    hardware: list[str]
    started: float
    finished: float
    units: list[UnitRecord]
    sim_oracle: dict[str, SimReturn]  # per hardware type: the sim-pretrained trunk in sim (what sim promised)
    pretrain_curve: dict[str, list[list[float]]]  # per hardware type: [iteration, env steps, mean return]
    learner_curve: list[dict[str, float]]  # one row per fleet-learn update slot (update, losses, ...)
    rollout: list[RolloutStep]
    faults: list[dict[str, Any]]  # what the demo broke on purpose: {"what", "at_s", "back_after_s"}
    trunk_versions: dict[str, int]  # "pretrained", "final"
    data_dir: str  # the hub's storage directory (experience.sqlite, parquet/)
    wandb_dirs: list[str]  # offline W&B run directories of every part
    summary_line: str = ""
    schema: int = SCHEMA_VERSION
    outcome: str = ""  # what became of the fleet round's trunk, in words (promoted / refused / rolled back)
    problems: list[str] = field(default_factory=list)  # what broke (a failed part, a lost chunk, a leftover process)
    phase_times: dict[str, float] = field(default_factory=dict)  # seconds per demo phase
    processes: list[dict[str, Any]] = field(default_factory=list)  # every process the demo started: name, pid

    def save(self, run_dir: str | Path) -> Path:
        """Write ``<run_dir>/results.json`` (atomically); NaN and inf are written as null (the report shows them
        as missing), never as a number."""
        path = Path(run_dir) / RESULTS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_finite(asdict(self)), indent=1, allow_nan=False))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> DemoRecord:
        """Read ``<run_dir>/results.json``; a missing or malformed file raises ValueError naming it."""
        path = Path(run_dir) / RESULTS_FILE
        try:
            raw = json.loads(path.read_text())
            if raw.get("schema") != SCHEMA_VERSION:
                raise ValueError(f"schema {raw.get('schema')!r}, expected {SCHEMA_VERSION}")
            raw["units"] = [UnitRecord(**{**u, "episodes": [EpisodeRow(**e) for e in u["episodes"]]})
                            for u in raw["units"]]
            raw["sim_oracle"] = {k: SimReturn(**v) for k, v in raw["sim_oracle"].items()}
            raw["rollout"] = [RolloutStep(**s) for s in raw["rollout"]]
            return cls(**raw)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{path}: not a demo record ({exc})") from None


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, through dicts and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def finite(x: float) -> bool:
    """True for a real number (the report shows anything else as missing, never as a figure)."""
    return isinstance(x, int | float) and math.isfinite(x)
