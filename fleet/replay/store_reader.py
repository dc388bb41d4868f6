"""Fill the replay from the hub's store directly (the learner on the hub's machine).

A read-only store of its own (``ExperienceStore(read_only=True)``): it never takes the writer's lock, and WAL
mode lets it read committed rows while the hub commits. It tails rows after a cursor (``rowid``, the commit order
that ``ExperienceStore.read_since`` uses), so a restarted reader resumes where it says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fleet.record import RecordError, check_chunk, decode_record, robot_priorities
from fleet.replay.sequences import STEP_ARRAYS, ChunkSteps
from fleet.store import ExperienceStore, StoredChunk


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
        if not self.path.exists():  # say which file is missing; other StoreErrors (damage, no tables yet) as they are
            raise FileNotFoundError(f"store {self.path} does not exist")
        self._store = ExperienceStore(self.path, check=False, read_only=True)
        if min_received is not None:
            self.cursor = max(cursor, self._store.last_rowid(received_before=min_received))
        self.skipped: list[tuple[str, str]] = []  # (chunk id, why) of stored chunks no learner can use

    def read(self) -> list[ChunkSteps]:
        """Up to ``batch_chunks`` chunks after the cursor (which moves past them); bad ones go to ``skipped``."""
        out = []
        for row in self._store.read_since(self.cursor, self.batch_chunks):
            try:
                out.append(chunk_steps(row))
            except RecordError as exc:
                self.skipped.append((row.chunk_id, str(exc)))
            self.cursor = row.rowid
        return out

    def close(self) -> None:
        """Close the store."""
        self._store.close()
