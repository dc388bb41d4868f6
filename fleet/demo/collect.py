"""Turn a finished demo run's files into its :class:`DemoRecord`: episodes and chunks from the hub's store, the
units' final status files, the roll-out log, the pretraining and learner curves, the W&B run directories.

Chunk accounting per unit, robot side against hub side. A spool hands out sequence numbers densely from where
its process started (1, or for a restarted agent the block end its ``ids.json`` held when the old process died),
so the chunks a unit's processes wrote are, per process, its first number up to the highest one seen in the
hub's store or still in the robot's spool at the end (read from the spool's files: its segments' records less
its ``acks.log``). ``stored`` is the robot's distinct chunks in the hub's store; ``unsent`` those still in its
spool and not stored (on the robot's disk, sent at its next start: not lost); ``acked`` = sent - still in the
spool (the spool lets a chunk go only once the hub acked it); ``lost`` = sent - stored - unsent: chunks neither
at the hub nor on the robot (a hole in the numbers). A chunk stored whose ack the robot missed is in both, and
counts once.
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

from fleet.demo.record import DemoRecord, EpisodeRow, RolloutStep, SimReturn, UnitRecord
from fleet.demo.units import Unit
from fleet.episode_log import stored_episodes
from fleet.record import scan_segment
from fleet.rollout_log import read_steps
from fleet.store import CHUNK_ID, STORE_FILE
from fleet.trunk_store import TrunkStore


def read_status(state_dir: Path) -> dict[str, Any]:
    """An agent's status.json ({} when it has none or it cannot be read)."""
    try:
        return json.loads((Path(state_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def stored_seqs(hub_dir: Path) -> dict[str, dict[str, list[int]]]:
    """robot -> spool epoch -> the sequence numbers of its chunks in the hub's store (read-only connection)."""
    db = Path(hub_dir) / STORE_FILE
    out: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
    try:
        for robot, epoch, seq in con.execute("SELECT robot_id, spool_epoch, seq FROM chunks"):
            out[robot][epoch].append(int(seq))
    finally:
        con.close()
    return {r: dict(e) for r, e in out.items()}


def spool_pending(spool_dir: Path) -> dict[str, set[int]]:
    """spool epoch -> sequence numbers of the chunks still in a stopped agent's spool: its segments' valid records
    less the ids in its ``acks.log`` (layout in robot_agent/spool.py). Segments are read as the spool reads them
    (``scan_segment``): past a damaged record to the valid ones behind it, which the agent still holds."""
    spool_dir = Path(spool_dir)
    try:
        acked = set((spool_dir / "acks.log").read_text().split())
    except OSError:
        acked = set()
    out: dict[str, set[int]] = defaultdict(set)
    for seg in sorted(spool_dir.glob("seg-*.spool")):
        for ref in scan_segment(seg).refs:
            m = CHUNK_ID.fullmatch(ref.chunk_id)
            if m and ref.chunk_id not in acked:
                out[m["epoch"]].add(int(m["seq"]))
    return dict(out)


def chunks_written(seqs: list[int], starts: list[int]) -> int:
    """Chunks a spool's processes handed out, given the stored numbers and each process's first number."""
    bounds = sorted(set([1, *starts]))
    total = 0
    for i, lo in enumerate(bounds):
        hi = bounds[i + 1] if i + 1 < len(bounds) else math.inf
        inside = [s for s in seqs if lo <= s < hi]
        total += max(inside) - lo + 1 if inside else 0
    return total


def read_curve(path: Path) -> list[dict[str, float]]:
    """A curve.csv as rows of floats (empty cells left out); [] when there is none."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def pretrain_curve(path: Path, hardware: list[str]) -> dict[str, list[list[float]]]:
    """Per type: [iteration, env steps, mean return] for every iteration with finished episodes."""
    rows = read_curve(path)
    return {hw: [[r["iteration"], r["env_steps"], r[f"return/{hw}"]] for r in rows if f"return/{hw}" in r]
            for hw in hardware}


def unit_record(unit: Unit, episodes: list, seqs: dict[str, list[int]], starts: list[int], final: dict[str, Any],
                restarted: bool, pending: dict[str, set[int]] | None = None) -> UnitRecord:
    """One unit's record: its episodes, and its chunks as the robot wrote them against what the hub stored
    (module docstring); ``pending``: what is still in its spool, per epoch."""
    pending = pending or {}
    sent = stored = unsent = left = 0
    for epoch in set(seqs) | set(pending):
        at_hub, on_robot = set(seqs.get(epoch, ())), pending.get(epoch, set())
        sent += chunks_written(sorted(at_hub | on_robot), starts)
        stored += len(at_hub)
        unsent += len(on_robot - at_hub)
        left += len(on_robot)
    rows = [EpisodeRow(e.trunk_version, e.adapter_version, e.episode_return, e.steps, e.last_received)
            for e in episodes]
    return UnitRecord(unit.robot_id, unit.hardware, unit.gap, unit.outside_training_range, unit.canary, restarted,
                      rows, chunks_sent=sent, chunks_acked=sent - left, chunks_stored=stored,
                      chunks_lost=sent - stored - unsent, chunks_unsent=unsent,
                      final_trunk_version=int(final.get("trunk_version", 0)),
                      final_adapter_version=int(final.get("adapter_version", 0)))


def collect(run_dir: Path, task: str, units: list[Unit], spool_starts: dict[str, list[int]],
            sim_oracle: dict[str, SimReturn], faults: list[dict[str, Any]], started: float,
            finished: float) -> DemoRecord:
    """The run's record from its files (module docstring); ``spool_starts``: robot -> first sequence number of
    each restarted process."""
    hub_dir = run_dir / "hub"
    episodes = stored_episodes(hub_dir) if (hub_dir / STORE_FILE).exists() else {}
    seqs = stored_seqs(hub_dir)
    state = {u.robot_id: run_dir / "agents" / u.robot_id / "state" for u in units}
    records = [unit_record(u, episodes.get(u.robot_id, []), seqs.get(u.robot_id, {}),
                           spool_starts.get(u.robot_id, []), read_status(state[u.robot_id]),
                           bool(spool_starts.get(u.robot_id)), spool_pending(state[u.robot_id] / "spool"))
               for u in units]
    rollout = [RolloutStep(float(s.get("time", 0)), str(s.get("event")), int(s.get("version", 0)),
                           {k: v for k, v in s.items() if k not in ("time", "event", "version")})
               for s in read_steps(hub_dir)]
    current = TrunkStore(hub_dir).current() if (hub_dir / "trunks").exists() else None
    hardware = sorted({u.hardware for u in units}, key=[u.hardware for u in units].index)
    return DemoRecord(
        task=task, hardware=hardware, started=started, finished=finished, units=records, sim_oracle=sim_oracle,
        pretrain_curve=pretrain_curve(run_dir / "pretrain" / "curve.csv", hardware),
        learner_curve=read_curve(run_dir / "learn" / "curve.csv"), rollout=rollout, faults=faults,
        trunk_versions={"pretrained": 1, "final": current.version if current else 0}, data_dir=str(hub_dir.resolve()),
        wandb_dirs=sorted(str(p) for p in (run_dir / "wandb").glob("**/offline-run-*") if p.is_dir()))
