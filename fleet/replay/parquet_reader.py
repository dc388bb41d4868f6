"""Fill the replay from the hub's Parquet tier (the learner on another machine, the files copied or mounted).

Reads only files the tier's ``_manifest.json`` lists (closed, complete ones: ``fleet.parquet_export``),
each once, in the manifest's order, and turns their rows back into chunks: the rows of one ``chunk_id`` in
``step`` order, ``critic_obs`` plus the chunk's ``bootstrap_critic_obs`` (its last row) as the chunk's
[n + 1] critic rows. The hardware type comes from the file's ``hardware=`` directory. The ``priority`` column
holds the robot's initial priorities (NaN where it sent none, and absent from files written before it): those
items start at the table's largest priority.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fleet.parquet_export import MANIFEST
from fleet.record import RecordError, robot_priorities
from fleet.replay.sequences import ChunkSteps
from fleet.store import CHUNK_ID

log = logging.getLogger(__name__)


def _matrix(col: pa.ChunkedArray, rows: int) -> np.ndarray:
    """A list<float32> column of equal-length lists as a [rows, width] array (nulls skipped)."""
    flat = pa.concat_arrays([c.flatten() for c in col.chunks]) if col.num_chunks else pa.array([], pa.float32())
    return flat.to_numpy(zero_copy_only=False).reshape(rows, -1)


def file_chunks(path: Path, hardware: str) -> list[ChunkSteps]:
    """The chunks in one exported file, in store commit order."""
    table = pq.read_table(path).sort_by([("rowid", "ascending"), ("step", "ascending")])
    col = {name: table.column(name) for name in table.column_names}
    rowid = col["rowid"].to_numpy()
    starts = np.flatnonzero(np.r_[True, rowid[1:] != rowid[:-1]])
    ends = np.r_[starts[1:], len(rowid)]
    obs, act, critic = (_matrix(col[n], len(rowid)) for n in ("obs", "action", "critic_obs"))
    boot = _matrix(col["bootstrap_critic_obs"].filter(col["bootstrap_critic_obs"].is_valid()), len(starts))
    ids = col["chunk_id"].to_pylist()
    robots, episodes = col["robot_id"].to_pylist(), col["episode"].to_numpy()
    received = col["received"].cast(pa.int64()).to_numpy() / 1e6
    scalars = {"log_probs": "log_prob", "rewards": "reward", "trunk_version": "trunk_version",
               "adapter_version": "adapter_version"}
    values = {k: col[v].to_numpy() for k, v in scalars.items()}
    # the robot's initial priorities (NaN where it sent none); files written before the column have none
    prios = (col["priority"].to_numpy(zero_copy_only=False).astype(np.float32) if "priority" in col
             else np.full(len(rowid), np.nan, np.float32))
    flags = {k: col[v].to_numpy(zero_copy_only=False).astype(np.float32)
             for k, v in (("dones", "done"), ("time_outs", "time_out"))}
    out = []
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        m = CHUNK_ID.fullmatch(ids[s])
        if m is None:
            raise RecordError(f"{path}: chunk id {ids[s]!r} is not <robot>-<epoch>-<seq>")
        arrays = {"obs": obs[s:e], "actions": act[s:e], "critic_obs": np.concatenate([critic[s:e], boot[i:i + 1]]),
                  "priorities": robot_priorities({"priorities": prios[s:e]}, e - s),
                  **{k: v[s:e] for k, v in values.items()}, **{k: v[s:e] for k, v in flags.items()}}
        out.append(ChunkSteps(robots[s], m["epoch"], int(m["seq"]), hardware, int(episodes[s]), float(received[s]),
                              arrays))
    return out


class ParquetReader:
    """Reads the files of a Parquet tier that it has not read yet (``read`` again for files written since)."""

    def __init__(self, root: str | Path, files_read: set[str] | None = None):
        self.root = Path(root)
        self.files_read: set[str] = set(files_read or ())  # manifest paths already read: the cursor
        self.skipped: list[tuple[str, str]] = []  # (file, why) of listed files no learner can read

    def read(self) -> list[ChunkSteps]:
        """The chunks of every listed file not read before, each robot's in spool order."""
        path = self.root / MANIFEST
        if not path.exists():
            return []
        manifest = json.loads(path.read_text())
        new = [f for f in manifest["files"] if f["path"] not in self.files_read]
        out: list[ChunkSteps] = []
        for f in sorted(new, key=lambda f: f["min_rowid"]):
            try:  # a bad file costs only itself: the chunks of the files before it are kept
                hardware = next(p.split("=", 1)[1] for p in Path(f["path"]).parts if p.startswith("hardware="))
                out += file_chunks(self.root / f["path"], hardware)
            except Exception as exc:  # Arrow, a bad record id, a file gone: all the same to the learner
                log.error("replay: skipping Parquet file %s: %s", f["path"], exc)
                self.skipped.append((f["path"], f"{type(exc).__name__}: {exc}"))
            self.files_read.add(f["path"])
        # the files of one roll hold interleaved rowid ranges (one per partition): put each robot's chunks
        # back in spool order, the order the sequence builder joins them in
        out.sort(key=lambda c: (c.robot_id, c.spool_epoch, c.seq))
        return out
