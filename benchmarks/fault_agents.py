"""One robot-side process of the fault benchmark: for each of its robots a real spool on disk, a writer that appends
chunks to it as the agent's recorder would, and the agent's real ``HubUplink`` draining it to the hub.

    python benchmarks/fault_agents.py --state DIR --robots r00 r01 --endpoint tcp://127.0.0.1:PORT [--keys KEYS]

Per robot, under ``DIR/<robot>/``: ``spool/`` (the Spool), ``produced.log`` (a chunk id per line, written after the
spool's fsynced append returned), ``acked.log`` (every id the hub acked, written when the ack arrives, before the
spool deletes anything) and ``status.json`` (the uplink's status and the spool's depth, every 0.25 s). Chunks are
written while ``DIR/produce`` exists, one per robot every ``--chunk-every-s``. SIGTERM: stop writing, let the
uplink drain for ``drain_on_stop_s``, close the spools, exit 0. SIGKILL loses nothing the spools hold: a restart
with the same ``--state`` resends what the hub did not ack.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
from hub_processes import go2_arrays

from fleet.config import SecurityConfig
from robot_agent.config import AgentUplinkConfig
from robot_agent.spool import Spool, SpoolFullError
from robot_agent.uplink import HubUplink

PRODUCE_FLAG = "produce"


class LoggedSpool(Spool):
    """The real spool, plus a log of what the hub acked (the robot's side of 'acked means durable')."""

    def ack(self, chunk_ids: list[str]) -> int:
        with open(self.dir.parent / "acked.log", "a") as f:
            f.write("".join(f"{c}\n" for c in chunk_ids))
        return super().ack(chunk_ids)


def write_chunks(robot: str, spool: Spool, state: Path, every_s: float, steps: int, stop: threading.Event) -> None:
    """Append a go2_like chunk every ``every_s`` while the produce flag exists (an episode every 4 chunks)."""
    arrays = go2_arrays(np.random.default_rng(abs(hash(robot)) % 2**32), steps)
    produced = open(state / robot / "produced.log", "a")
    next_at = time.monotonic()
    n = 0
    while not stop.is_set():
        if not (state / PRODUCE_FLAG).exists():
            stop.wait(0.05)
            next_at = time.monotonic()
            continue
        n += 1
        header = {"robot_id": robot, "hardware": "go2_like", "task": "locomotion", "episode": n // 4,
                  "steps": steps, "episode_end": n % 4 == 0, "trunk_version": 0, "adapter_version": 0}
        try:
            cid = spool.append(header, arrays)
        except SpoolFullError:
            stop.wait(every_s)
            continue
        produced.write(cid + "\n")
        produced.flush()  # in the page cache: a kill -9 of this process keeps it
        next_at += every_s
        stop.wait(max(0.0, next_at - time.monotonic()))
    produced.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", required=True)
    ap.add_argument("--robots", nargs="+", required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--keys", default="", help="the fleet-keys dir (robots' keys under robots/<id>); '' = plain text")
    ap.add_argument("--chunk-every-s", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--backoff-max-s", type=float, default=30.0)
    args = ap.parse_args()
    state = Path(args.state)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parts = []
    for robot in args.robots:
        (state / robot).mkdir(parents=True, exist_ok=True)
        spool = LoggedSpool(state / robot / "spool", quota_bytes=4 << 30)
        security = SecurityConfig(keys_dir=str(Path(args.keys) / "robots" / robot)) if args.keys else \
            SecurityConfig(mode="plaintext", keys_dir="")
        cfg = AgentUplinkConfig(enabled=True, endpoint=args.endpoint, security=security,
                                backoff_max_s=args.backoff_max_s, drain_on_stop_s=2.0)
        uplink = HubUplink(cfg, spool, robot, "go2_like", "ab" * 8)
        uplink.start()
        writer = threading.Thread(target=write_chunks, args=(robot, spool, state, args.chunk_every_s, args.steps, stop),
                                  daemon=True)
        writer.start()
        parts.append((robot, spool, uplink, writer))
    print(f"agent {os.getpid()} running {len(parts)} robots", flush=True)
    while not stop.wait(0.25):
        for robot, spool, uplink, _ in parts:
            status = {**uplink.status(), "depth": spool.depth, "time": time.time(), "pid": os.getpid()}
            tmp = state / robot / "status.json.tmp"
            tmp.write_text(json.dumps(status))
            tmp.replace(state / robot / "status.json")
    for _, _, _, writer in parts:
        writer.join(10)
    deadline = time.monotonic() + 5.0
    for robot, spool, uplink, _ in parts:
        uplink.stop(deadline)
        (state / robot / "status.json").write_text(json.dumps({**uplink.status(), "depth": spool.depth,
                                                               "time": time.time(), "final": True}))
        spool.close()


if __name__ == "__main__":
    main()
