"""Fill the replay from the hub's SQLite store directly (the learner on the hub's machine).

A read-only connection of its own (``mode=ro``): it never takes the writer's lock, and WAL mode lets it
read committed rows while the hub commits. It tails rows after a cursor (``rowid``, the commit order that
``ExperienceStore.read_since`` uses), so a restarted reader resumes where it says.
"""

from __future__ import annotations

import sqlite3
from dataclasses import fields
from pathlib import Path
from urllib.parse import quote

import numpy as np

from fleet.record import RecordError, check_chunk, decode_record, robot_priorities
from fleet.replay.sequences import STEP_ARRAYS, ChunkSteps
from fleet.store import StoredChunk

_COLUMNS = ", ".join(f.name for f in fields(StoredChunk))


def chunk_steps(row: StoredChunk) -> ChunkSteps:
    """A stored chunk's transitions; RecordError if its record or arrays are not sound. An optional
    ``priorities`` [T] array (the robot's |TD errors|) is used when finite and >= 0, else NaN (unknown)."""
    chunk = decode_record(row.record)
    n = check_chunk(chunk)
    a = chunk.arrays
    prios = robot_priorities(a, n)
    # one dtype per array whatever the robot's numpy wrote (check_chunk holds only the kind): batches stack them
    arrays = {k: a[k].astype(np.int64 if a[k].dtype.kind == "i" else np.float32, copy=False)
              for k in (*STEP_ARRAYS, "critic_obs") if k != "priorities"}
    arrays["priorities"] = prios
    return ChunkSteps(row.robot_id, row.spool_epoch, row.seq, row.hardware, row.episode, row.received, arrays)


class StoreReader:
    """Reads chunks committed after ``cursor`` from a store file, in commit order; with ``min_received``,
    not before the last chunk received earlier than that (a restarted learner skips data the replay's age
    limit would evict at once; rows commit in about the order the hub receives them)."""

    def __init__(self, path: str | Path, cursor: int = 0, batch_chunks: int = 256,
                 min_received: float | None = None):
        self.path, self.cursor, self.batch_chunks = Path(path), cursor, batch_chunks
        if not self.path.exists():  # mode=ro never creates it, but say which file is missing
            raise FileNotFoundError(f"store {self.path} does not exist")
        self._conn = sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?mode=ro", uri=True,
                                     check_same_thread=False, timeout=30.0)
        self._conn.execute("PRAGMA query_only=1")
        if min_received is not None:
            old = self._conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM chunks WHERE received < ?",
                                     (min_received,)).fetchone()[0]
            self.cursor = max(cursor, old)
        self.skipped: list[tuple[str, str]] = []  # (chunk id, why) of stored chunks no learner can use

    def read(self) -> list[ChunkSteps]:
        """Up to ``batch_chunks`` chunks after the cursor (which moves past them); bad ones go to ``skipped``."""
        rows = self._conn.execute(f"SELECT {_COLUMNS} FROM chunks WHERE rowid > ? ORDER BY rowid LIMIT ?",
                                  (self.cursor, self.batch_chunks)).fetchall()
        out = []
        for r in rows:
            row = StoredChunk(*r)
            try:
                out.append(chunk_steps(row))
            except RecordError as exc:
                self.skipped.append((row.chunk_id, str(exc)))
            self.cursor = row.rowid
        return out

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
