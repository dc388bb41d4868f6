"""A process that streams commit groups into a store and prints ``ACK <chunk id>`` for each chunk only after
the store said it is durable: what a hub does before it acks. The kill -9 test shoots it mid-stream.

    python tests/fleet/store_stream.py DB ROBOT EPOCH FIRST_SEQ MODE   (MODE: put_many | writer)

It sends chunks FIRST_SEQ, FIRST_SEQ+1, ... in groups of 1-16 (at most 20,000 chunks), and resends some a few
groups later, as an uplink does after a lost ack; a chunk's bytes depend only on its sequence number.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from fleet.store import ExperienceStore, GroupWriter  # noqa: E402
from tests.fleet.chunks import agent_record  # noqa: E402

MAX_CHUNKS = 20_000


def chunk_bytes(robot: str, epoch: str, seq: int) -> bytes:
    """Chunk ``seq``'s record: the same bytes every time, as a spool resends them."""
    rng = np.random.default_rng(seq)
    return agent_record(rng, robot, seq, epoch, episode=seq // 50, steps=int(rng.integers(1, 64)))


def main() -> None:
    db, robot, epoch, first, mode = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    rng = np.random.default_rng(first)
    store = ExperienceStore(db)
    writer = GroupWriter(store, max_group=16, max_wait_s=0.001) if mode == "writer" else None
    seq, resend = first, []
    while seq < first + MAX_CHUNKS:
        group, resend = resend[:4], resend[4:]
        for _ in range(int(rng.integers(1, 13))):
            group.append(chunk_bytes(robot, epoch, seq))
            if rng.random() < 0.3:
                resend.append(group[-1])
            seq += 1
        if writer is None:
            results = store.put_many(group)
        else:
            results = [f.result(timeout=60) for f in [writer.submit(rec) for rec in group]]
        sys.stdout.write("".join(f"ACK {r.chunk_id} {r.status}\n" for r in results if r.durable))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
