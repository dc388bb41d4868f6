"""What a fleet learning round reads: the current trunk, each robot's latest adapter, the experience (from the
hub's store or its Parquet tier, minus chunks too stale to correct) and each robot's recorded observations."""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fleet.adapter_store import AdapterConflictError, AdapterStore, StoredAdapter, adapter_metadata
from fleet.learner_config import LearnConfig
from fleet.replay.feed import ChunkReader
from fleet.replay.parquet_reader import ParquetReader
from fleet.replay.sequences import ChunkSteps
from fleet.replay.store_reader import StoreReader
from fleet.store import STORE_FILE
from fleet.trunk_archive import TrunkArchiveError, read_packed_adapter, unpack_trunk
from fleet.trunk_store import TrunkStore, TrunkStoreError
from fleet.unit_watch import holds_path, read_holds
from shared_policy.adapter import Adapter, AdapterFileError, load_adapter
from shared_policy.checkpoint import CheckpointError, load_checkpoint, read_manifest, specs_from_manifest
from shared_policy.policy import FleetPolicy


def trunk_checkpoint(cfg: LearnConfig, work_dir: Path) -> Path:
    """The current trunk's checkpoint directory: ``trunk``, or the trunk store's CURRENT version unpacked into
    the (existing, empty) ``work_dir``."""
    if cfg.trunk:
        return Path(cfg.trunk)
    rec = TrunkStore(cfg.storage_dir).current()
    if rec is None:
        raise ValueError(f"storage_dir: {cfg.storage_dir} has no current trunk; publish one with `fleet-hub "
                         "publish CHECKPOINT STORAGE_DIR`, or set trunk=<checkpoint dir>")
    path = work_dir / f"v{rec.version}"
    unpack_trunk(rec.path, path)
    return path


def trunk_tasks(cfg: LearnConfig, checkpoint: Path) -> dict[str, str]:
    """Each hardware type of the trunk and the task it is gated and mixed on (from ``gate.tasks``, which may
    name more types than the trunk has): a candidate keeps every type's stem and head, so the gate judges them all."""
    types = sorted(specs_from_manifest(read_manifest(checkpoint)))
    missing = [hw for hw in types if hw not in cfg.gate.tasks]
    if missing:
        raise ValueError(f"gate.tasks.{missing[0]}: the trunk has hardware type '{missing[0]}' but no task is named "
                         f"for it (e.g. gate.tasks.{missing[0]}=<task>)")
    return {hw: cfg.gate.tasks[hw] for hw in types}


@dataclass
class AdapterOnOtherTrunk:
    """The adapter of a robot the hub's unit watch holds back on an older trunk version, with that trunk: at
    release it is rebased from there, so the robot moves forward with an adapter distilled from what it ran; it is
    never applied in learning."""

    adapter: Adapter
    stored: StoredAdapter
    trunk: FleetPolicy


@dataclass
class RobotAdapters:
    """What each robot runs, read once from the hub's storage dir (``robot_adapters``)."""

    adapters: dict[str, Adapter]  # trained on the learner's trunk version, loaded for its policy
    stored: dict[str, StoredAdapter]  # the records of those, and of every held robot's adapter
    held: dict[str, AdapterOnOtherTrunk]  # held robots' adapters with their trunks (where asked to load them)
    newest: dict[str, int]  # each robot's highest adapter version on any trunk: a rebased adapter is numbered past it


def _holds(storage_dir: str | Path) -> dict[str, int]:
    try:
        return read_holds(storage_dir)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"storage_dir: {holds_path(storage_dir)} is damaged ({exc}); the hub refuses to start on "
                         "it too") from None


def running_adapters(storage_dir: str | Path, policy: FleetPolicy,
                     trunk_version: int) -> tuple[dict[str, StoredAdapter], dict[str, int]]:
    """Each robot's newest stored adapter for the trunk version it runs: the one the hub's unit watch holds it on
    (``trunks/unit_holds.json``), else ``trunk_version``; of a type ``policy`` has. A robot with none for that
    version is left out (learned bare: an adapter is never applied to a trunk it was not trained or rebased for,
    so the newest upload of a canary of a rolled-back candidate is not taken for the current trunk), except that a
    robot not held and without an upload for ``trunk_version`` yet gets the rebased adapter packed for it with
    that trunk (what it runs until its first upload). Also each robot's highest adapter version."""
    store_file = Path(storage_dir) / STORE_FILE
    if not store_file.is_file():
        return {}, {}
    holds = _holds(storage_dir)
    store = AdapterStore(store_file)
    try:
        by_trunk = store.latest_by_trunk()
    finally:
        store.close()
    out, newest, hardware = {}, {}, {}
    for (robot, _), rec in by_trunk.items():
        if rec.adapter_version >= newest.get(robot, 0):  # the robot's type as its newest upload names it
            hardware[robot] = rec.hardware
        newest[robot] = max(newest.get(robot, 0), rec.adapter_version)
    for robot in sorted(newest):
        rec = by_trunk.get((robot, holds.get(robot, trunk_version)))
        if rec is None and robot not in holds and hardware[robot] in policy.specs:  # nothing uploaded on this
            rec = _packed_adapter(storage_dir, robot, hardware[robot], trunk_version)  # trunk yet: what came with it
        if rec is not None and rec.hardware in policy.specs:
            out[robot] = rec
            newest[robot] = max(newest[robot], rec.adapter_version)
    return out, newest


def _packed_adapter(storage_dir: str | Path, robot: str, hardware: str, trunk_version: int) -> StoredAdapter | None:
    """The rebased adapter packed for ``robot`` with trunk ``trunk_version`` (what a robot runs on a trunk it has
    not uploaded an adapter for yet), as a record; None if none was packed or it fails its checks (said on
    stdout)."""
    try:
        rec = TrunkStore(storage_dir).robot_archive(trunk_version, robot)
        if rec is None:
            return None
        data = read_packed_adapter(rec.path, rec.sha256)
        meta = adapter_metadata(data)
        return StoredAdapter(robot, int(meta["version"]), trunk_version, hardware, 0.0, len(data),
                             hashlib.sha256(data).hexdigest(), meta.get("sha256", ""), data)
    except (TrunkStoreError, TrunkArchiveError, AdapterConflictError, OSError, KeyError, ValueError) as exc:
        print(f"[learn] the adapter packed for {robot} with trunk v{trunk_version} is not usable: learned bare "
              f"({exc})", flush=True)
        return None


def encode_running(running: dict[str, StoredAdapter], newest: dict[str, int]) -> bytes:
    """``running_adapters``' answer as JSON bytes (the files' bytes in base64): what rank 0 sends every rank."""
    return json.dumps({"running": {r: {**asdict(s), "data": base64.b64encode(s.data).decode()}
                                   for r, s in running.items()}, "newest": newest}).encode()


def decode_running(data: bytes) -> tuple[dict[str, StoredAdapter], dict[str, int]]:
    """``encode_running``'s bytes back as ``running_adapters``' answer."""
    raw = json.loads(data)
    running = {r: StoredAdapter(**{**s, "data": base64.b64decode(s["data"])}) for r, s in raw["running"].items()}
    return running, {r: int(v) for r, v in raw["newest"].items()}


def robot_adapters(storage_dir: str | Path, policy: FleetPolicy, trunk_version: int, load_held: bool = True,
                   running: tuple[dict[str, StoredAdapter], dict[str, int]] | None = None) -> RobotAdapters:
    """``running_adapters`` loaded (or ``running``, that answer as rank 0 read it: every rank of a data-parallel
    learner applies the same adapters though the hub keeps storing uploads): those on ``trunk_version`` for
    ``policy``; with ``load_held``, each held robot's for the (verified, kept) trunk it runs. A trunk that is
    gone or does not load, or an adapter that does not, costs only its robots (said on stdout)."""
    running, newest = running or running_adapters(storage_dir, policy, trunk_version)
    adapters, stored = _loaded({r: s for r, s in running.items() if s.trunk_version == trunk_version}, policy)
    older = {r: s for r, s in running.items() if s.trunk_version != trunk_version}
    stored.update(older)
    held: dict[str, AdapterOnOtherTrunk] = {}
    if not load_held:
        return RobotAdapters(adapters, stored, held, newest)
    trunks = TrunkStore(storage_dir)
    with tempfile.TemporaryDirectory() as tmp:
        for version in sorted({s.trunk_version for s in older.values()}):
            robots = sorted(r for r, s in older.items() if s.trunk_version == version)
            try:  # only the layouts these robots need: the trunk may have gained a hardware type since
                path = Path(tmp) / f"v{version}"
                unpack_trunk(trunks.verified(version).path, path)
                trunk, _ = load_checkpoint(path, expected={older[r].hardware: policy.specs[older[r].hardware]
                                                           for r in robots})
            except (TrunkStoreError, TrunkArchiveError, CheckpointError, OSError) as exc:
                print(f"[learn] {', '.join(robots)} held back on trunk v{version}, which cannot be loaded: their "
                      f"adapters are not rebased ({exc})", flush=True)
                continue
            loaded, _ = _loaded({r: older[r] for r in robots}, trunk)
            held.update({r: AdapterOnOtherTrunk(loaded[r], older[r], trunk) for r in loaded})
    return RobotAdapters(adapters, stored, held, newest)


def fleet_adapters(storage_dir: str | Path, policy: FleetPolicy,
                   trunk_version: int) -> tuple[dict[str, Adapter], dict[str, StoredAdapter]]:
    """The adapters robots run on ``trunk_version`` (``running_adapters``), loaded for ``policy``, with their
    records; robots of a type the policy lacks, or whose adapter does not load (said on stdout), are left out."""
    found = robot_adapters(storage_dir, policy, trunk_version, load_held=False)
    return found.adapters, {r: found.stored[r] for r in found.adapters}


def _loaded(stored: dict[str, StoredAdapter],
            policy: FleetPolicy) -> tuple[dict[str, Adapter], dict[str, StoredAdapter]]:
    """``stored`` loaded for ``policy``; one that does not load is left out of both (said on stdout)."""
    stored = dict(stored)
    adapters = {}
    with tempfile.TemporaryDirectory() as tmp:
        for robot, rec in list(stored.items()):
            path = Path(tmp) / f"{robot}.safetensors"
            path.write_bytes(rec.data)
            try:
                adapters[robot], _ = load_adapter(path, policy, rec.hardware)
            except AdapterFileError as exc:  # one robot's bad upload must not stop the fleet's round
                print(f"[learn] adapter v{rec.adapter_version} of {robot} not usable, learned bare and not "
                      f"rebased: {exc}", flush=True)
                del stored[robot]
    return adapters, stored


def experience_reader(cfg: LearnConfig) -> ChunkReader:
    """The hub's store read directly (``replay.source=store``) or its Parquet tier (``parquet``); with an age
    limit, the store reader starts at the first chunk young enough to keep."""
    if cfg.replay.source == "parquet":
        root = Path(cfg.replay.parquet_dir or Path(cfg.storage_dir) / "parquet")
        if not root.is_dir():
            raise ValueError(f"replay.parquet_dir: {root} is not a directory")
        return ParquetReader(root)
    path = Path(cfg.storage_dir) / STORE_FILE
    if not path.is_file():
        raise ValueError(f"storage_dir: no experience store at {path}")
    min_received = time.time() - cfg.replay.max_age_s if cfg.replay.max_age_s > 0 else None
    return StoreReader(path, min_received=min_received)


class FreshChunks:
    """A reader that passes on only chunks a learner at ``trunk_version`` may learn from: a chunk whose every
    step was acted by a trunk more than ``max_staleness`` versions older is dropped before it takes replay room
    (steps in between are masked by the learner itself)."""

    def __init__(self, reader: ChunkReader, trunk_version: int, max_staleness: int):
        self.reader, self.trunk_version, self.max_staleness = reader, trunk_version, max_staleness
        self.stale_steps = self.stale_chunks = 0

    def read(self) -> list[ChunkSteps]:
        """The next chunks, stale ones left out (and counted)."""
        out = []
        for chunk in self.reader.read():
            if self.trunk_version - int(chunk.arrays["trunk_version"].max()) > self.max_staleness:
                self.stale_chunks += 1
                self.stale_steps += len(chunk.arrays["rewards"])
                continue
            out.append(chunk)
        return out


def robot_observations(reader: ChunkReader, robots: set[str], limit: int) -> dict[str, torch.Tensor]:
    """The newest ``limit`` recorded observations of each of ``robots`` (read to the end of ``reader``)."""
    kept: dict[str, deque[np.ndarray]] = {r: deque(maxlen=limit) for r in robots}
    while chunks := reader.read():
        for chunk in chunks:
            if chunk.robot_id in kept:
                kept[chunk.robot_id].extend(chunk.arrays["obs"])
    return {r: torch.as_tensor(np.stack(rows)) for r, rows in kept.items() if rows}
