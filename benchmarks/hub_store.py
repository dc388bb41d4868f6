"""Hub experience store: group commit throughput (record bytes appended to a segment file with one fdatasync per
group, then the group's SQLite index rows in one WAL transaction with synchronous=FULL).

Cases, each on a fresh store file on the machine's disk, chunks of real record format (``fleet.record``) of
4 KiB and 64 KiB:

- ``put_many`` with groups of 1 (one chunk per transaction), 8 and 32: MB/s and chunks/s of the store call
  alone (digest check, duplicate check, segment append + fdatasync, index insert + commit); the records are
  encoded outside the timed part.
- ``raw``: the same records appended to a plain file, one fsync per group of 1, 8, 32: the floor the disk
  sets at this moment, measured in the same run (the store's ratio to it is what transfers between machines).
- ``writer``: one producer submits to a ``GroupWriter`` (max group 32, max wait 1 ms) with at most 256 chunks
  in flight (as the hub's credit bounds it): chunks/s, the submit call's p99 (what the socket loop pays: it
  never waits on an fsync) and the p99 from submit to durable.

Rounds are interleaved over cases (a shared, noisy machine: read the ratios); medians are reported.

    python benchmarks/hub_store.py --seconds 1 --rounds 3

Last line, e.g. ``hub_store mbps_64k_g1=140 mbps_64k_g8=240 mbps_64k_g32=250 group_gain_64k=1.8
ratio_vs_raw_64k_g1=0.8 ... chunks_per_s_4k_g32=9000 writer_mbps_64k=230 submit_p99_us=40``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
from result_record import write_result  # beside this script

from fleet.record import encode_record
from fleet.store import ExperienceStore, GroupWriter

EPOCH = "00000000be0c4000"


class Records:
    """Unique real-format records of about ``size`` bytes (incompressible float32 payload)."""

    def __init__(self, size: int, seed: int = 0):
        self.rng, self.seq = np.random.default_rng(seed), 0
        self.floats = max(1, (size - 900) // 4)  # npz and header overhead ~ 900 bytes

    def take(self, n: int) -> list[bytes]:
        """The next ``n`` records."""
        out = []
        for _ in range(n):
            self.seq += 1
            header = {"chunk_id": f"bench-{EPOCH}-{self.seq:010d}", "robot_id": "bench", "hardware": "cartpole",
                      "task": "cartpole_swingup", "episode": self.seq // 10, "steps": 1, "trunk_version": 0,
                      "adapter_version": 0, "seq": self.seq, "spool_epoch": EPOCH}
            out.append(encode_record(header, {"obs": self.rng.standard_normal(self.floats).astype(np.float32)}))
        return out


def fs_type(path: Path) -> str:
    """The file system the store lives on (tmpfs would make fsync free and the figures meaningless)."""
    best, kind = "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        if str(path.resolve()).startswith(mount) and len(mount) > len(best):
            best, kind = mount, fstype
    return kind


def bench_put_many(path: Path, size: int, group: int, seconds: float) -> dict[str, float]:
    """Timed ``put_many`` calls of ``group`` records until ``seconds`` of store time are spent."""
    recs, spent, chunks, nbytes = Records(size), 0.0, 0, 0
    with ExperienceStore(path) as store:
        while spent < seconds:
            batch = recs.take(group)
            t0 = time.perf_counter()
            results = store.put_many(batch)
            spent += time.perf_counter() - t0
            assert all(r.status == "stored" for r in results)
            chunks, nbytes = chunks + len(batch), nbytes + sum(map(len, batch))
    return {"chunks_per_s": chunks / spent, "mbps": nbytes / spent / 1e6, "record_bytes": nbytes / chunks}


def bench_raw(path: Path, size: int, group: int, seconds: float) -> dict[str, float]:
    """The floor under any store: append ``group`` records to a plain file, then one fsync."""
    recs, spent, chunks, nbytes = Records(size), 0.0, 0, 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while spent < seconds:
            batch = recs.take(group)
            t0 = time.perf_counter()
            for rec in batch:
                os.write(fd, rec)
            os.fsync(fd)
            spent += time.perf_counter() - t0
            chunks, nbytes = chunks + len(batch), nbytes + sum(map(len, batch))
    finally:
        os.close(fd)
    return {"chunks_per_s": chunks / spent, "mbps": nbytes / spent / 1e6, "record_bytes": nbytes / chunks}


def bench_writer(path: Path, size: int, seconds: float, window: int = 256) -> dict[str, float]:
    """One producer, a GroupWriter, at most ``window`` chunks in flight."""
    recs, pool = Records(size), []
    submit_s, durable_s, inflight = [], [], deque()
    chunks = nbytes = 0
    with ExperienceStore(path) as store:
        writer = GroupWriter(store, max_group=32, max_wait_s=0.001)
        t_start = time.perf_counter()
        while time.perf_counter() - t_start < seconds or inflight:
            if inflight and (len(inflight) >= window or time.perf_counter() - t_start >= seconds):
                t_sub, fut, n = inflight.popleft()
                assert fut.result(timeout=60).status == "stored"
                durable_s.append(time.perf_counter() - t_sub)
                chunks, nbytes = chunks + 1, nbytes + n
                continue
            if not pool:
                pool = recs.take(64)  # encoding is the robot's work: kept out of submit's time
            rec = pool.pop()
            t0 = time.perf_counter()
            fut = writer.submit(rec)
            submit_s.append(time.perf_counter() - t0)
            inflight.append((t0, fut, len(rec)))
        elapsed = time.perf_counter() - t_start
        writer.close()
    return {"chunks_per_s": chunks / elapsed, "mbps": nbytes / elapsed / 1e6,
            "submit_p99_us": float(np.percentile(submit_s, 99) * 1e6),
            "durable_p99_ms": float(np.percentile(durable_s, 99) * 1e3),
            "mean_group": chunks / max(writer.groups, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="store time per case and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 65536])
    ap.add_argument("--groups", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--dir", default=None, help="where the store files go (default: the system temp dir)")
    ap.add_argument("--out", default="benchmarks/results/hub_store.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hub_store_", dir=args.dir))
    fs = fs_type(work)
    print(f"store files in {work} ({fs})", flush=True)
    cases = [(s, g) for s in args.sizes for g in args.groups] + [(s, "writer") for s in args.sizes]
    cases += [(s, f"raw{g}") for s in args.sizes for g in args.groups]
    runs: dict[str, list[dict[str, float]]] = {}
    for rnd in range(args.rounds):
        for size, group in cases:
            path = work / f"r{rnd}-{size}-{group}.sqlite"
            if group == "writer":
                res, key = bench_writer(path, size, args.seconds), f"{size // 1024}k_writer"
            elif isinstance(group, str):
                res, key = bench_raw(path, size, int(group[3:]), args.seconds), f"{size // 1024}k_{group}"
            else:
                res, key = bench_put_many(path, size, group, args.seconds), f"{size // 1024}k_g{group}"
            for p in work.glob(path.name + "*"):
                p.unlink()
            shutil.rmtree(path.with_suffix(".segments"), ignore_errors=True)
            runs.setdefault(key, []).append(res)
            print(f"round {rnd} {key:10s} " + " ".join(f"{k}={v:.1f}" for k, v in res.items()), flush=True)
    med = {key: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for key, rs in runs.items()}
    print("median over rounds:")
    for key, m in med.items():
        print(f"  {key:10s} " + " ".join(f"{k}={v:.1f}" for k, v in m.items()))
    parts = [f"mbps_{k}={med[k]['mbps']:.0f}" for k in med if k.startswith("64k_g")]
    if "64k_g1" in med and "64k_g32" in med:
        parts.append(f"group_gain_64k={med['64k_g32']['mbps'] / med['64k_g1']['mbps']:.2f}")
    for g in args.groups:  # the store against a plain append + fsync of the same groups, same run
        if f"64k_g{g}" in med and f"64k_raw{g}" in med:
            parts.append(f"ratio_vs_raw_64k_g{g}={med[f'64k_g{g}']['mbps'] / med[f'64k_raw{g}']['mbps']:.2f}")
    if "4k_g32" in med:
        parts.append(f"chunks_per_s_4k_g32={med['4k_g32']['chunks_per_s']:.0f}")
    if "64k_writer" in med:
        parts += [f"writer_mbps_64k={med['64k_writer']['mbps']:.0f}",
                  f"submit_p99_us={med['64k_writer']['submit_p99_us']:.0f}"]
    work.rmdir()
    write_result(args.out, "hub_store " + " ".join(parts),
                 {"args": vars(args), "fs": fs, "median": med, "runs": runs})


if __name__ == "__main__":
    main()
