"""The open-data tier: stored experience as Parquet files that DuckDB, pandas, Ray Data and Spark read as is.

Layout under the export directory::

    hardware=<type>/date=<YYYY-MM-DD>/part-<first rowid>-<last rowid>.parquet   one row per transition
    _manifest.json   the files (rows, chunks, rowid range, written time), and up to which store rowid and
                     received time the Parquet tier is complete

``hardware`` and ``date`` (UTC day the hub received the chunk) live in the path only (Hive partitioning): a
reader that discovers partitions gets them as columns. Columns in the files: robot_id, task, chunk_id, rowid
(the store's), episode, step (index within the episode: the header's ``first_step`` if it has one, else the
steps of the episode's chunks stored with a lower sequence number), trunk_version, adapter_version, log_prob (the
behaviour policy's), reward, done, time_out, stamp (driver clock), received, obs / action / critic_obs
(list<float32>), bootstrap_critic_obs (the state after the chunk's last transition, on that row only).

Incremental and crash-safe: the exporter tails the store (``read_since``) into one open temp file per partition
(row groups of ``row_group_rows``), and rolls ALL open files together when their size reaches ``file_bytes`` or
the oldest unexported row is ``roll_s`` old: fsync, rename to the final name, then rewrite the manifest
atomically. The manifest is the progress: after a crash, files not in it (and temp files) are removed and export
resumes after its ``complete_through_rowid``, so nothing is duplicated or skipped, and a reader never sees a
half-written file (temp names are hidden: ``.part-*.tmp``).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fleet.record import Chunk, RecordError, check_chunk, decode_record, robot_priorities
from fleet.store import ExperienceStore, StoredChunk
from shared_policy.durable import fsync_dir, write_atomic

MANIFEST = "_manifest.json"
MANIFEST_FORMAT = 1
KEPT_SKIPS = 1000  # the manifest names this many skipped chunks (all are counted)
# The exporter's working set: a batch of records read at a time, and a row group's decoded columns before they
# are written (numpy pieces, then one Arrow table of the same size). Row counts alone let 256 chunks of 1 MiB,
# or 65536 rows of a wide robot, take hundreds of MB.
BATCH_BYTES = 8 << 20
ROW_GROUP_BYTES = 8 << 20

_F32_LIST = pa.list_(pa.float32())
SCHEMA = pa.schema([
    ("robot_id", pa.string()), ("task", pa.string()), ("chunk_id", pa.string()), ("rowid", pa.int64()),
    ("episode", pa.int64()), ("step", pa.int64()), ("trunk_version", pa.int64()), ("adapter_version", pa.int64()),
    ("log_prob", pa.float32()), ("priority", pa.float32()), ("reward", pa.float32()), ("done", pa.bool_()), ("time_out", pa.bool_()),
    ("stamp", pa.float64()), ("received", pa.timestamp("us", tz="UTC")),
    ("obs", _F32_LIST), ("action", _F32_LIST), ("critic_obs", _F32_LIST), ("bootstrap_critic_obs", _F32_LIST),
])
_LISTS = ("obs", "action", "critic_obs", "bootstrap_critic_obs")


@dataclass(frozen=True)
class ExportLag:
    """How far the Parquet tier is behind the store."""

    rows: int  # chunks stored but not yet in a closed Parquet file
    seconds: float  # age of the oldest of them (0 when none)


def chunk_columns(row: StoredChunk, chunk: Chunk, first_step: int) -> dict[str, Any]:
    """One decoded chunk's transitions as column pieces (numpy); RecordError if its arrays are not sound."""
    n = check_chunk(chunk)
    a = chunk.arrays
    f32 = {k: np.ascontiguousarray(a[k], dtype=np.float32) for k in ("obs", "actions", "critic_obs")}
    boot = np.zeros(n, np.int64)  # the bootstrap state: a list on the chunk's last row, null on the others
    boot[-1] = f32["critic_obs"].shape[1]
    return {
        "robot_id": [row.robot_id] * n, "task": [row.task] * n, "chunk_id": [row.chunk_id] * n,
        "rowid": np.full(n, row.rowid, np.int64), "episode": np.full(n, row.episode, np.int64),
        "step": np.arange(first_step, first_step + n, dtype=np.int64),
        "trunk_version": a["trunk_version"].astype(np.int64), "adapter_version": a["adapter_version"].astype(np.int64),
        "log_prob": a["log_probs"].astype(np.float32), "priority": robot_priorities(a, n),
        "reward": a["rewards"].astype(np.float32),
        "done": a["dones"] > 0.5, "time_out": a["time_outs"] > 0.5, "stamp": a["stamp"].astype(np.float64),
        "received": np.full(n, int(row.received * 1e6), np.int64),
        # list columns: (flat values, length of each row, null mask or None)
        "obs": (f32["obs"].ravel(), np.full(n, f32["obs"].shape[1]), None),
        "action": (f32["actions"].ravel(), np.full(n, f32["actions"].shape[1]), None),
        "critic_obs": (f32["critic_obs"][:n].ravel(), np.full(n, f32["critic_obs"].shape[1]), None),
        "bootstrap_critic_obs": (f32["critic_obs"][n], boot, np.arange(n) != n - 1),
    }


def columns_table(pieces: list[dict[str, Any]]) -> pa.Table:
    """One Arrow table (``SCHEMA``) from the column pieces of several chunks."""
    cols = {}
    for name in SCHEMA.names:
        if name in _LISTS:
            lengths = np.concatenate([p[name][1] for p in pieces])
            offsets = np.zeros(len(lengths) + 1, np.int32)
            np.cumsum(lengths, out=offsets[1:])
            mask = None if name != "bootstrap_critic_obs" else pa.array(np.concatenate([p[name][2] for p in pieces]))
            cols[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate([p[name][0] for p in pieces])),
                                                  type=_F32_LIST, mask=mask)
        elif isinstance(pieces[0][name], list):
            cols[name] = pa.array([v for p in pieces for v in p[name]], SCHEMA.field(name).type)
        else:
            cols[name] = pa.array(np.concatenate([p[name] for p in pieces]), SCHEMA.field(name).type)
    return pa.table(cols, schema=SCHEMA)


@dataclass
class _OpenFile:
    """One partition's file being written (under its temp name) until the next roll."""

    final_dir: Path
    tmp: Path
    writer: pq.ParquetWriter
    min_rowid: int
    max_rowid: int = 0
    rows: int = 0
    chunks: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)  # column pieces not yet in a row group
    pending_rows: int = 0
    pending_bytes: int = 0


class ParquetExporter:
    """Exports a store's chunks to Hive-partitioned Parquet incrementally (module docstring); call ``step``
    (or ``run``) repeatedly, ``flush`` to roll now, ``close`` at the end."""

    def __init__(self, store: ExperienceStore, out_dir: str | Path, file_bytes: int = 128 << 20, roll_s: float = 300.0,
                 row_group_rows: int = 65536, batch_chunks: int = 256, fsync: bool = True,
                 row_group_bytes: int = ROW_GROUP_BYTES, batch_bytes: int = BATCH_BYTES):
        checks = {"file_bytes": file_bytes > 0, "roll_s": roll_s > 0, "row_group_rows": row_group_rows >= 1,
                  "batch_chunks": batch_chunks >= 1, "row_group_bytes": row_group_bytes >= 1,
                  "batch_bytes": batch_bytes >= 1}
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"{key}: invalid value {locals()[key]!r}")
        self.store, self.dir = store, Path(out_dir)
        self.file_bytes, self.roll_s, self.row_group_rows = file_bytes, roll_s, row_group_rows
        self.batch_chunks, self.fsync = batch_chunks, fsync
        self.row_group_bytes, self.batch_bytes = row_group_bytes, batch_bytes
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / MANIFEST
        self.manifest: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {
            "format": MANIFEST_FORMAT, "complete_through_rowid": 0, "complete_through_received": None,
            "updated": None, "skipped_chunks": 0, "skipped": [], "files": []}
        if self.manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{path}: manifest format {self.manifest.get('format')!r}, this code writes {MANIFEST_FORMAT}")
        self._remove_orphans()
        self._read_rowid = self.manifest["complete_through_rowid"]
        self._read_received: float | None = self.manifest["complete_through_received"]
        self._open: dict[tuple[str, str], _OpenFile] = {}
        self._skipped: list[dict[str, Any]] = []
        self._oldest_unflushed: float | None = None  # monotonic time the first row since the last roll was read

    def _remove_orphans(self) -> None:
        """Files a crash left: temp files, and renamed files the manifest never listed (their rows are
        exported again from the manifest's rowid)."""
        listed = {f["path"] for f in self.manifest["files"]}
        for p in self.dir.glob("hardware=*/date=*/*"):
            rel = p.relative_to(self.dir).as_posix()
            if (p.name.startswith(".part-") and p.name.endswith(".tmp")) or (
                    p.name.startswith("part-") and p.suffix == ".parquet" and rel not in listed):
                p.unlink()

    # -- exporting -----------------------------------------------------------------------------------
    def step(self) -> int:
        """Export the next batch of stored chunks (into the open files) and roll if due; returns how many
        chunks were read."""
        rows = self.store.read_since(self._read_rowid, self.batch_chunks, max_bytes=self.batch_bytes)
        for row in rows:
            if self._oldest_unflushed is None:
                self._oldest_unflushed = time.monotonic()
            self._add(row)
            self._read_rowid, self._read_received = row.rowid, row.received
        if self._oldest_unflushed is not None and (
                time.monotonic() - self._oldest_unflushed >= self.roll_s or self._open_bytes() >= self.file_bytes):
            self.flush()
        return len(rows)

    def _add(self, row: StoredChunk) -> None:
        try:
            chunk = decode_record(row.record)
            first = chunk.header.get("first_step")
            if not isinstance(first, int) or isinstance(first, bool) or first < 0:
                # the agent's header does not say (yet): the steps of the episode's earlier chunks do
                first = self.store.steps_before(row.robot_id, row.spool_epoch, row.episode, row.seq)
            pieces = chunk_columns(row, chunk, first)
        except RecordError as exc:  # acked bytes that no reader could use: named in the manifest, not fatal
            self._skipped.append({"rowid": row.rowid, "chunk_id": row.chunk_id, "reason": str(exc)})
            return
        date = datetime.fromtimestamp(row.received, UTC).date().isoformat()
        f = self._open.get((row.hardware, date))
        if f is None:
            final_dir = self.dir / f"hardware={row.hardware}" / f"date={date}"
            final_dir.mkdir(parents=True, exist_ok=True)
            tmp = final_dir / f".part-{row.rowid:012d}.tmp"
            f = self._open[(row.hardware, date)] = _OpenFile(
                final_dir, tmp, pq.ParquetWriter(tmp, SCHEMA, compression="zstd"), row.rowid)
        n = len(pieces["step"])
        f.pending.append(pieces)
        f.pending_rows += n
        f.pending_bytes += sum(v[0].nbytes for k, v in pieces.items() if k in _LISTS) + 64 * n
        f.rows, f.chunks, f.max_rowid = f.rows + n, f.chunks + 1, row.rowid
        if f.pending_rows >= self.row_group_rows or f.pending_bytes >= self.row_group_bytes:
            self._write_row_group(f)

    def _write_row_group(self, f: _OpenFile) -> None:
        if f.pending:
            f.writer.write_table(columns_table(f.pending), row_group_size=max(f.pending_rows, 1))
            f.pending, f.pending_rows, f.pending_bytes = [], 0, 0

    def _open_bytes(self) -> int:
        return sum(f.pending_bytes + (f.tmp.stat().st_size if f.tmp.exists() else 0) for f in self._open.values())

    def flush(self) -> list[Path]:
        """Close every open file under its final name and record them, with the new complete-through rowid,
        in the manifest (written last, atomically). Returns the new files."""
        written, entries = [], []
        for f in self._open.values():
            self._write_row_group(f)
            f.writer.close()
            if self.fsync:
                fd = os.open(f.tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            final = f.final_dir / f"part-{f.min_rowid:012d}-{f.max_rowid:012d}.parquet"
            os.replace(f.tmp, final)
            if self.fsync:
                for d in (f.final_dir, f.final_dir.parent, self.dir):  # new partition dirs too
                    fsync_dir(d)
            written.append(final)
            entries.append({"path": final.relative_to(self.dir).as_posix(), "rows": f.rows, "chunks": f.chunks,
                            "min_rowid": f.min_rowid, "max_rowid": f.max_rowid, "bytes": final.stat().st_size,
                            "written": datetime.now(UTC).isoformat(timespec="seconds")})
        m = self.manifest
        m["files"].extend(entries)
        m["skipped_chunks"] += len(self._skipped)
        m["skipped"] = (m["skipped"] + self._skipped)[-KEPT_SKIPS:]
        m["complete_through_rowid"], m["complete_through_received"] = self._read_rowid, self._read_received
        m["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
        write_atomic(self.dir / MANIFEST, json.dumps(m, indent=1).encode(), fsync=self.fsync)
        self._open, self._skipped, self._oldest_unflushed = {}, [], None
        return written

    def catch_up(self) -> int:
        """Export everything stored now and roll: the Parquet tier is then complete up to the store's last
        row. Returns the chunks read."""
        total = 0
        while n := self.step():
            total += n
        self.flush()
        return total

    def run(self, stop: threading.Event, idle_s: float = 1.0) -> None:
        """Tail the store until ``stop`` is set (a hub thread), then roll what is open."""
        while not stop.is_set():
            if self.step() == 0:
                stop.wait(idle_s)
        self.flush()

    def lag(self) -> ExportLag:
        """Chunks stored but not yet in a closed file, and the age of the oldest of them."""
        rows, first = self.store.backlog(self.manifest["complete_through_rowid"])
        return ExportLag(rows, max(0.0, time.time() - first) if first is not None else 0.0)

    def close(self) -> None:
        """Roll what is open (the store stays open: its owner closes it)."""
        self.flush()


def main(argv: list[str] | None = None) -> None:
    """``python -m fleet.parquet_export STORE OUT``: bring the Parquet tier up to date with a store (e.g. after
    deleting it to rebuild), then exit."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("store", help="the hub's experience.sqlite")
    ap.add_argument("out", help="the Parquet directory")
    ap.add_argument("--file-mb", type=float, default=128.0, help="roll files at about this size")
    ap.add_argument("--batch-chunks", type=int, default=256, help="chunks read from the store at a time")
    args = ap.parse_args(argv)
    with ExperienceStore(args.store, read_only=True) as store:  # beside a running hub too
        exporter = ParquetExporter(store, args.out, file_bytes=int(args.file_mb * (1 << 20)),
                                   batch_chunks=args.batch_chunks)
        n = exporter.catch_up()
        print(f"exported {n} chunks; complete through rowid {exporter.manifest['complete_through_rowid']}")


if __name__ == "__main__":
    main()
