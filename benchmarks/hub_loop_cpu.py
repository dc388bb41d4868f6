"""Hub socket loop: its own CPU per chunk, this checkout against another commit in the same run.

What it measures: the thread time of the hub's loop (``HubServer._receive_batch`` and ``_answer_commits``, so
receive, decode, the digest check, the record header, queueing to the store and the acks) per 64 KiB chunk. The
store's writer and ZeroMQ's I/O thread run beside it on their own threads and are not counted: their work is
the same in both trees. Why: in ``hub_ingest.py``'s 64 KiB CURVE cells the hub is one core's worth of threads,
and the loop is the largest of them (/proc per thread: loop ~100 us a chunk, I/O thread 80-110, writer ~60).

How: each measurement is a fresh child process that builds a real ``HubServer`` (plain text: CURVE's cost is
the I/O thread's; no Parquet export) on a store on this machine's disk, with the start-up heap frozen as
``fleet-hub`` does, connects one DEALER robot in the same process (one robot: the per-robot work of a commit
pass is spread over one robot's chunks, so this is the loop's per-chunk floor, not the 128-robot cell's figure), and feeds it ``--chunks`` fresh records
``--batch`` at a time (each batch is received, checked and queued while its frames are warm, as under load),
waiting for the last commit. ``--compare REF`` runs the same children from a temporary worktree of REF (its
``fleet`` package, this script's record maker), alternating with this checkout's, ``--repeats`` each; the
summary is the median of each and their ratio.

    python benchmarks/hub_loop_cpu.py --compare 9e8fd50

Last line, e.g. ``hub_loop_cpu us_per_chunk=108.0 compare_us_per_chunk=127.0 ratio=0.85 repeats=5``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from result_record import ROOT, write_result  # beside this script

HERE = Path(__file__).resolve().parent


def measure(chunks: int, batch: int, size: int) -> dict[str, Any]:
    """In the child: the loop's thread time per chunk over ``chunks`` records (module docstring)."""
    import zmq
    from hub_processes import RecordMaker

    from fleet.config import HubConfig, SecurityConfig
    from fleet.hub import HubServer
    from fleet.protocol import Chunk, Hello

    work = Path(tempfile.mkdtemp(prefix="hub_loop_cpu_", dir=os.environ.get("HUB_LOOP_DIR")))
    cfg = HubConfig(bind="tcp://127.0.0.1:*", storage_dir=str(work / "hub"), parquet_export=False,
                    security=SecurityConfig(mode="plaintext", keys_dir=""), credit_bytes=1 << 34,
                    credit_total_bytes=1 << 36)
    hub = HubServer(cfg)
    try:
        from fleet.heap import settle_heap
        settle_heap()
    except ImportError:
        pass
    ctx = zmq.Context()
    robot = ctx.socket(zmq.DEALER)
    for opt in (zmq.SNDHWM, zmq.RCVHWM):
        robot.setsockopt(opt, 0)
    robot.setsockopt(zmq.LINGER, 0)
    robot.connect(hub.endpoint)
    try:
        robot.send_multipart(Hello(robot_id="r000", seq=1, hardware="go2_like", profile_hash="ab" * 8,
                                   agent_version="0.1.0", spool_depth=0, spool_bytes=0, trunk_version=0,
                                   adapter_version=0).encode())
        end = time.monotonic() + 30
        while "r000" not in hub.sessions:
            if time.monotonic() > end:
                raise RuntimeError("the hub never welcomed the robot")
            if hub.sock.poll(100):
                hub._receive_batch()
        maker = RecordMaker("r000", size, 1)
        messages = []
        for i in range(chunks):
            cid, record = maker.next()
            messages.append(Chunk.of("r000", i + 2, cid, record).encode())
        cpu = 0.0
        for k in range(0, chunks, batch):
            for frames in messages[k:k + batch]:
                robot.send_multipart(frames, copy=False)
            time.sleep(0.004)  # the batch crosses the socket while this thread waits
            t0 = time.thread_time()
            while hub.sock.poll(0):
                hub._receive_batch()
            hub._answer_commits()
            cpu += time.thread_time() - t0
        end = time.monotonic() + 120
        while hub.writer.committed < chunks:  # a message of the last batch may still be on its way: keep taking
            if time.monotonic() > end:
                raise RuntimeError(f"only {hub.writer.committed} of {chunks} chunks committed")
            ready = hub.sock.poll(10)
            t0 = time.thread_time()
            if ready:
                hub._receive_batch()
            hub._answer_commits()
            cpu += time.thread_time() - t0
        t0 = time.thread_time()
        hub._answer_commits()
        cpu += time.thread_time() - t0
        import fleet
        return {"us_per_chunk": cpu / chunks * 1e6, "groups": hub.writer.groups, "committed": hub.writer.committed,
                "fleet": fleet.__file__}
    finally:
        robot.close(0)
        ctx.term()
        hub.request_stop()
        hub._close(30)
        shutil.rmtree(work, ignore_errors=True)


def child(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a fresh process importing ``fleet`` from ``root``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(HERE)])}
    out = subprocess.run([sys.executable, __file__, "--child", "--chunks", str(args.chunks), "--batch",
                          str(args.batch), "--size", str(args.size)], env=env, cwd=root, capture_output=True,
                         text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"child in {root} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=32, help="chunks sent before the loop takes them")
    ap.add_argument("--size", type=int, default=65536, help="record bytes")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compare", default=None, help="a git ref to measure beside this checkout")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="benchmarks/results/hub_loop_cpu.json")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.chunks, args.batch, args.size)))
        return
    trees = {"this": ROOT}
    tmp = Path(tempfile.mkdtemp(prefix="hub_loop_cpu_ref_")) if args.compare else None
    runs: dict[str, list[float]] = {}
    try:
        if tmp is not None:
            subprocess.run(["git", "worktree", "add", "--detach", str(tmp / "tree"), args.compare], cwd=ROOT,
                           check=True, capture_output=True)
            trees["compare"] = tmp / "tree"
        runs = {name: [] for name in trees}
        for r in range(args.repeats):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))  # alternate which goes first
            for name in order:
                res = child(trees[name], args)
                if not res["fleet"].startswith(str(trees[name]) + os.sep):  # an installed copy would shadow the tree
                    raise RuntimeError(f"{name}: imported fleet from {res['fleet']}, not {trees[name]}")
                runs[name].append(res["us_per_chunk"])
                print(f"repeat {r} {name:8s} {res['us_per_chunk']:7.1f} us a chunk ({res['groups']} commit groups)",
                      flush=True)
    finally:
        if tmp is not None:
            if "compare" in trees:
                subprocess.run(["git", "worktree", "remove", "--force", str(tmp / "tree")], cwd=ROOT,
                               capture_output=True)
            shutil.rmtree(tmp, ignore_errors=True)
    med = {name: statistics.median(v) for name, v in runs.items()}
    parts = [f"us_per_chunk={med['this']:.1f}"]
    if "compare" in med:
        parts += [f"compare_us_per_chunk={med['compare']:.1f}", f"ratio={med['this'] / med['compare']:.2f}"]
    parts.append(f"repeats={args.repeats}")
    write_result(args.out, "hub_loop_cpu " + " ".join(parts),
                 {"chunks": args.chunks, "batch": args.batch, "size": args.size, "compare": args.compare,
                  "runs_us_per_chunk": runs, "median_us_per_chunk": med})


if __name__ == "__main__":
    main()
