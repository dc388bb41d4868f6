"""The fleet registry: what the hub knows about each robot, written to ``<storage_dir>/registry.json``.

The hub's socket loop owns it (no locks: one thread writes it) and updates it as messages arrive; every
``registry_every_s`` it writes a snapshot atomically (temp file + rename, no fsync: it is a status report, rebuilt
from live traffic after a restart), which ``fleet-hub status DIR`` prints as a table; the same snapshot feeds
the Prometheus endpoint and W&B (fleet/metrics.py). Counters start at zero when the hub starts; the store holds
the durable totals (``ExperienceStore.counts``). A robot gone for ``forget_after_s`` is forgotten: its record
leaves (so the registry and the metrics' label sets stay bounded under churn) and its counters move into the
``forgotten`` totals, so fleet-wide sums never go down.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.protocol import Heartbeat, Hello

REGISTRY_FILE = "registry.json"
ALIVE, DEAD, CUT = "alive", "dead", "cut"  # cut: its key was revoked (or it broke identity) while connected
GONE = "gone"  # its connection vanished (a send found no peer) without missed heartbeats: it reconnects with HELLO
COUNTERS = ("chunks_in", "bytes_in", "duplicates", "nacks", "errors")  # summed fleet-wide, forgotten robots too


@dataclass
class RobotRecord:
    """One robot as the hub sees it. Times are Unix seconds (hub clock); 0 = never."""

    robot_id: str
    state: str = ALIVE
    hardware: str = ""
    profile_hash: str = ""
    agent_version: str = ""
    protocol: int = 0  # the protocol version of its HELLO
    trunk_version: int = 0
    adapter_version: int = 0
    connections: int = 0  # HELLOs accepted: each reconnect counts
    connected_since: float = 0.0
    last_seen: float = 0.0  # any message
    last_heartbeat: float = 0.0
    rtt_ms: float | None = None  # from its echo of the hub's heartbeat
    spool_depth: int = 0  # chunks waiting on the robot, as it last reported
    spool_bytes: int = 0
    chunks_in: int = 0  # stored for the first time
    bytes_in: int = 0
    duplicates: int = 0  # resends of stored chunks (acked again, stored once)
    nacks: int = 0
    errors: int = 0  # messages refused with an ERROR (malformed, unknown type, identity, ...)
    last_chunk_at: float = 0.0  # when its newest chunk was received
    credit: int = 0  # the window it was last told (its share of the hub's budget)
    credit_enforced: int = 0  # the most granted on this connection: chunks sent under it are still taken
    in_flight_bytes: int = 0  # chunk bytes queued to the store and not yet acked
    peak_in_flight_bytes: int = 0  # the most ever queued at once (at most credit_enforced, or one larger chunk)
    known_since: float = 0.0  # when the hub first heard of it (any message, refused ones too)
    trunk_bytes_out: int = 0  # trunk pieces sent to it
    adapter_stored: int | None = None  # the newest adapter version of it in the hub's store (durable)
    adapter_stored_trunk: int | None = None  # the trunk version that adapter was trained on


class FleetRegistry:
    """Robot id -> RobotRecord, updated by the hub loop; ``snapshot`` / ``write`` for ``fleet-hub status``."""

    def __init__(self, hub: dict[str, Any] | None = None):
        self.robots: dict[str, RobotRecord] = {}
        self.hub = dict(hub or {})  # bind, security, storage, pid: printed above the table
        self.forgotten: dict[str, int] = dict.fromkeys(("robots", *COUNTERS), 0)

    def record(self, robot_id: str) -> RobotRecord:
        """The record of ``robot_id`` (made on first use)."""
        rec = self.robots.get(robot_id)
        if rec is None:
            rec = self.robots[robot_id] = RobotRecord(robot_id, known_since=time.time())
        return rec

    def forget(self, robot_id: str) -> None:
        """Drop a robot's record; its counters stay in the ``forgotten`` totals."""
        rec = self.robots.pop(robot_id, None)
        if rec is not None:
            self.forgotten["robots"] += 1
            for key in COUNTERS:
                self.forgotten[key] += getattr(rec, key)

    def gone_for(self, robot_id: str, now: float) -> float:
        """Seconds since the hub last heard from a robot (its last message, else when it was first heard of)."""
        rec = self.robots[robot_id]
        return now - max(rec.last_seen, rec.connected_since, rec.known_since)

    def totals(self) -> dict[str, int]:
        """Fleet-wide sums of the counters since the hub started, forgotten robots included."""
        return {k: self.forgotten[k] + sum(getattr(r, k) for r in self.robots.values()) for k in COUNTERS}

    def hello(self, msg: Hello, protocol: int, credit: int, now: float) -> None:
        """A robot (re)connected with this HELLO."""
        rec = self.record(msg.robot_id)
        rec.state, rec.hardware, rec.profile_hash, rec.agent_version = ALIVE, msg.hardware, msg.profile_hash, \
            msg.agent_version
        rec.protocol, rec.credit = protocol, credit
        rec.connections += 1
        rec.connected_since = rec.last_seen = now
        self._robot_state(rec, msg)

    def heartbeat(self, msg: Heartbeat, rtt_s: float | None, now: float) -> None:
        """A robot's heartbeat: its spool and versions, and the RTT its echo gave."""
        rec = self.record(msg.robot_id)
        rec.last_heartbeat = now
        if rtt_s is not None:
            rec.rtt_ms = round(rtt_s * 1e3, 3)
        self._robot_state(rec, msg)

    @staticmethod
    def _robot_state(rec: RobotRecord, msg: Hello | Heartbeat) -> None:
        rec.spool_depth, rec.spool_bytes = msg.spool_depth, msg.spool_bytes
        rec.trunk_version, rec.adapter_version = msg.trunk_version, msg.adapter_version

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The registry as plain data: the hub's fields, the ``forgotten`` totals and, per robot, its record plus
        ``lag_s`` (seconds since its newest chunk was stored, None before the first: docs/observability.md),
        ``silent_s`` (since its last message) and ``heartbeat_age_s`` (since its last heartbeat)."""
        now = time.time() if now is None else now
        robots = {}
        for rid, rec in sorted(self.robots.items()):
            d = dict(vars(rec))  # its fields are scalars: a shallow copy, ~10x cheaper than asdict on the hub loop
            d["lag_s"] = round(now - rec.last_chunk_at, 3) if rec.last_chunk_at else None
            d["silent_s"] = round(now - rec.last_seen, 3) if rec.last_seen else None
            d["heartbeat_age_s"] = round(now - rec.last_heartbeat, 3) if rec.last_heartbeat else None
            robots[rid] = d
        return {"time": now, "hub": dict(self.hub), "forgotten": dict(self.forgotten), "robots": robots}

    def write(self, path: Path, now: float | None = None, snapshot: dict[str, Any] | None = None) -> None:
        """Replace ``path`` with the snapshot (``snapshot`` if given, else one taken now), atomically (a reader
        sees the old file or the new one)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        # one line: json's C encoder (indent= falls back to the pure-Python one, ~30 ms for 128 robots here, every
        # registry_every_s on the hub's loop thread, which showed in the acks' p99)
        tmp.write_text(json.dumps(snapshot if snapshot is not None else self.snapshot(now)))
        os.replace(tmp, path)


def load_registry(path: Path) -> dict[str, Any]:
    """A registry snapshot from its file; ValueError saying why it cannot be read."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no registry (is a hub running with this storage_dir?)") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable registry ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("robots"), dict):
        raise ValueError(f"{path}: not a fleet registry")
    return data


_COLUMNS = (  # header, key, format
    ("ROBOT", "robot_id", "{}"), ("STATE", "state", "{}"), ("HARDWARE", "hardware", "{}"),
    ("TRUNK", "trunk_version", "v{}"), ("ADAPTER", "adapter_version", "v{}"), ("RTT_MS", "rtt_ms", "{:.1f}"),
    ("SILENT_S", "silent_s", "{:.1f}"), ("SPOOL", "spool_depth", "{}"), ("CHUNKS_IN", "chunks_in", "{}"),
    ("MB_IN", "bytes_in", "{:.1f}"), ("DUP", "duplicates", "{}"), ("NACK", "nacks", "{}"), ("ERR", "errors", "{}"),
    ("IN_FLIGHT_KB", "in_flight_bytes", "{:.0f}"), ("LAG_S", "lag_s", "{:.1f}"),
    ("HB_AGE_S", "heartbeat_age_s", "{:.1f}"), ("SPOOL_MB", "spool_bytes", "{:.1f}"),
    ("STORED_ADAPTER", "adapter_stored", "v{}"), ("ITS_TRUNK", "adapter_stored_trunk", "v{}"),
)


def _cell(key: str, fmt: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("bytes_in", "spool_bytes"):
        value = value / 2**20
    elif key == "in_flight_bytes":
        value = value / 2**10
    return fmt.format(value)


def format_table(snapshot: dict[str, Any]) -> str:
    """The registry as an aligned text table, one robot a line, under a line about the hub."""
    hub = snapshot.get("hub", {})
    age = time.time() - float(snapshot.get("time", 0))
    head = (f"hub pid {hub.get('pid', '?')} on {hub.get('bind', '?')} ({hub.get('security', '?')}), storage "
            f"{hub.get('storage', '?')}; registry written {age:.1f} s ago; {len(snapshot['robots'])} robots; "
            f"current trunk {'v' + str(hub['trunk_version']) if hub.get('trunk_version') else 'none'}")
    rows = [[h for h, _, _ in _COLUMNS]]
    rows += [[_cell(k, f, r.get(k)) for _, k, f in _COLUMNS] for r in snapshot["robots"].values()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join([head, *lines, *_footer(snapshot)])


def _footer(snapshot: dict[str, Any]) -> list[str]:
    """Fleet-wide lines under the table: who is connected or dead, and how fresh the Parquet tier is."""
    hub, robots = snapshot.get("hub", {}), snapshot["robots"].values()
    states = [r.get("state") for r in robots]
    beats, ms = hub.get("dead_after_heartbeats"), hub.get("heartbeat_ms")
    rule = f" (dead after {beats} missed heartbeats = {beats * ms / 1000:g} s)" if beats and ms else ""
    forgotten = snapshot.get("forgotten", {}).get("robots", 0)
    lines = [f"robots: {states.count(ALIVE)} connected, {states.count(DEAD)} dead, {states.count(CUT)} cut, "
             f"{states.count(GONE)} gone{rule}; {forgotten} forgotten"]
    commit = hub.get("commit")
    if commit and commit.get("count"):
        lines.append(f"store: {commit['count']} commit groups, mean {commit['sum_s'] / commit['count'] * 1e3:.1f} ms, "
                     f"max {commit['max_s'] * 1e3:.1f} ms; {hub.get('writer_pending', 0)} chunks waiting")
    pq = hub.get("parquet")
    if not pq or not pq.get("enabled"):
        lines.append("parquet: export off (python -m fleet.parquet_export STORE DIR brings it up to date)")
    else:
        through = pq.get("complete_through_received")
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(through)) if through else "nothing yet"
        lines.append(f"parquet: complete through {when} (rowid {pq.get('complete_through_rowid', 0)}); "
                     f"{pq.get('chunks_behind', 0)} chunks / {pq.get('behind_s', 0.0):.1f} s behind; "
                     f"{pq.get('rows_exported', 0)} rows in {pq.get('files', 0)} files; {pq.get('failures', 0)} failures"
                     + (f", {pq['restarts']} process restarts" if pq.get("restarts") else "")
                     + (f" (last: {pq['last_error']})" if pq.get("last_error") else ""))
    return lines
