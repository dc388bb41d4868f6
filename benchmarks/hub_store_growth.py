"""Hub store over a long run: the CPU each 64 KiB chunk costs as the store grows to several GB.

A hub runs for days, and the ingest benchmark's cells last seconds on a fresh store. On this machine (a VM), a
writer's kernel time per append grew several-fold once a few GB of written segments sat in the page cache. So the
store drops each full segment from the page cache (``fleet.segments.drop_cached_pages``), and since 2026-12-03
writes a group's whole blocks with O_DIRECT, past the cache (``store_direct_io``). This script writes ``--gb`` GB
through a ``GroupWriter`` (groups of 512, 1024 chunks in flight, chunk ids of 128 robots interleaved) on a fresh
store per arm:

- ``direct``: the store as it is (O_DIRECT whole blocks, full segments dropped);
- ``cached``: every byte through the page cache, full segments dropped (``store_direct_io=false``; the store
  of 2307b18);
- ``keep``: through the page cache, full segments left in it (the store before fa143f6).

Arms rotate over ``--rounds``. Per arm and round: the whole process's user and system CPU per chunk (the
producer's record encoding, ~150 us of user time per chunk, is the same in every arm, so the ratios understate
the writer's own) and wall time per chunk, over the first 20% of the run (``early``) and from 60% of it on
(``late``); medians over rounds are reported. The machine's memory is recorded with them: where the cache turns
dear depends on it.

    python benchmarks/hub_store_growth.py --gb 5 --rounds 2

Last line, e.g. (the result file, d809afc) ``hub_store_growth late_cpu_us_direct=213 late_cpu_us_cached=262
late_cpu_us_keep=483 late_cached_vs_direct=1.23 late_keep_vs_cached=1.84 late_sys_us_direct=39
late_sys_us_cached=90 late_sys_us_keep=302 early_cpu_us_direct=249 early_cpu_us_cached=282 early_cpu_us_keep=258
late_wall_us_direct=193 late_wall_us_cached=242 late_wall_us_keep=457 gb=4.8``.
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
from hub_store import fs_type  # beside this script
from result_record import write_result  # beside this script

import fleet.segments
from fleet.record import encode_record
from fleet.store import ExperienceStore, GroupWriter

EPOCH = "00000000be0c4000"
CHUNK = 65536
ROBOTS = 128
SLICE = 4096  # chunks per measured slice


ARMS = {"direct": (True, True), "cached": (False, True), "keep": (False, False)}  # (direct_io, drop full segments)


def write_store(path: Path, chunks: int, seed: int, slice_chunks: int = SLICE,
                direct_io: bool = True) -> list[dict[str, float]]:
    """Write ``chunks`` records through a GroupWriter into a fresh store at ``path``; per slice of ``slice_chunks``
    chunks, the process's user / system CPU and wall microseconds per chunk."""
    obs = np.random.default_rng(seed).standard_normal((CHUNK - 900) // 4).astype(np.float32)
    seqs, inflight, slices = [0] * ROBOTS, deque(), []
    with ExperienceStore(path, direct_io=direct_io) as store:
        writer = GroupWriter(store, max_group=512, max_wait_s=0.001)
        t0, w0 = os.times(), time.perf_counter()
        for i in range(chunks):
            r = i % ROBOTS
            seqs[r] += 1
            header = {"chunk_id": f"r{r:03d}-{EPOCH}-{seqs[r]:010d}", "robot_id": f"r{r:03d}", "hardware": "cartpole",
                      "task": "cartpole_swingup", "episode": seqs[r] // 10, "steps": 1, "trunk_version": 0,
                      "adapter_version": 0, "seq": seqs[r], "spool_epoch": EPOCH}
            inflight.append(writer.submit(encode_record(header, {"obs": obs})))
            if len(inflight) >= 1024:
                assert inflight.popleft().result(timeout=60).status == "stored"
            if (i + 1) % slice_chunks == 0:
                t1, w1 = os.times(), time.perf_counter()
                slices.append({"user_us": (t1.user - t0.user) / slice_chunks * 1e6,
                               "sys_us": (t1.system - t0.system) / slice_chunks * 1e6,
                               "wall_us": (w1 - w0) / slice_chunks * 1e6})
                t0, w0 = t1, w1
        while inflight:
            assert inflight.popleft().result(timeout=60).status == "stored"
        writer.close()
    return slices


def phase(slices: list[dict[str, float]], lo: float, hi: float) -> dict[str, float]:
    """Mean per-chunk figures over the slices from fraction ``lo`` to ``hi`` of the run (whole slices, at least
    one)."""
    part = slices[int(len(slices) * lo):max(int(len(slices) * hi), int(len(slices) * lo) + 1)]
    out = {k: float(np.mean([s[k] for s in part])) for k in ("user_us", "sys_us", "wall_us")}
    out["cpu_us"] = out["user_us"] + out["sys_us"]
    return out


def run_arm(arm: str, work: Path, chunks: int, seed: int, slice_chunks: int = SLICE) -> dict[str, object]:
    """One arm on a fresh store under ``work`` (deleted after)."""
    direct_io, drop = ARMS[arm]
    keep = fleet.segments.drop_cached_pages
    if not drop:
        fleet.segments.drop_cached_pages = lambda fd: None  # the store before full segments were dropped
    try:
        slices = write_store(work / arm / "experience.sqlite", chunks, seed, slice_chunks, direct_io)
    finally:
        fleet.segments.drop_cached_pages = keep
        shutil.rmtree(work / arm, ignore_errors=True)
    return {"early": phase(slices, 0.0, 0.2), "late": phase(slices, 0.6, 1.0), "slices": slices}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=5.0, help="record bytes written per arm and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", default=None, help="where the stores go (default: the temp dir; not tmpfs)")
    ap.add_argument("--out", default="benchmarks/results/hub_store_growth.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hub_store_growth_", dir=args.dir))
    if fs_type(work) == "tmpfs":  # its pages are the storage: nothing to drop, and fsync is free
        shutil.rmtree(work)
        raise SystemExit(f"{work.parent} is tmpfs: give --dir on a disk")
    mem_gb = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    chunks = max(int(args.gb * 1e9 / CHUNK) // SLICE, 5) * SLICE
    runs: dict[str, list[dict[str, object]]] = {arm: [] for arm in ARMS}
    order = list(ARMS)
    try:
        for k in range(args.rounds):
            for arm in order[k % len(order):] + order[:k % len(order)]:  # each arm first in turn
                res = run_arm(arm, work, chunks, seed=k)
                runs[arm].append(res)
                e, late = res["early"], res["late"]
                print(f"[store_growth] round {k} {arm}: cpu/chunk early {e['cpu_us']:.0f} us (sys {e['sys_us']:.0f}), "
                      f"late {late['cpu_us']:.0f} us (sys {late['sys_us']:.0f}); wall late {late['wall_us']:.0f} us",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def median(arm: str, when: str, key: str) -> float:
        return statistics.median(r[when][key] for r in runs[arm])

    fig = {f"{when}_{key}_{arm}": median(arm, when, key) for arm in runs for when in ("early", "late")
           for key in ("cpu_us", "sys_us", "wall_us")}
    line = " ".join(["hub_store_growth", *(f"late_cpu_us_{a}={fig[f'late_cpu_us_{a}']:.0f}" for a in ARMS),
                     f"late_cached_vs_direct={fig['late_cpu_us_cached'] / fig['late_cpu_us_direct']:.2f}",
                     f"late_keep_vs_cached={fig['late_cpu_us_keep'] / fig['late_cpu_us_cached']:.2f}",
                     *(f"late_sys_us_{a}={fig[f'late_sys_us_{a}']:.0f}" for a in ARMS),
                     *(f"early_cpu_us_{a}={fig[f'early_cpu_us_{a}']:.0f}" for a in ARMS),
                     *(f"late_wall_us_{a}={fig[f'late_wall_us_{a}']:.0f}" for a in ARMS),
                     f"gb={chunks * CHUNK / 1e9:.1f}"])
    write_result(args.out, line, {"args": vars(args), "fs": fs_type(work.parent), "mem_gb": mem_gb, "chunks": chunks,
                                  "chunk_bytes": CHUNK, "robots": ROBOTS, "figures": fig, "runs": runs})


if __name__ == "__main__":
    main()
