"""Hub ingest: MB/s and chunks/s of a real ``fleet-hub`` against raw pyzmq DEALER->ROUTER, and ack latency at a robot's pace.

Throughput cells: 1, 16 and 128 concurrent robots x records of 4 KiB, 64 KiB and 1 MiB x CURVE on and off. In a
hub cell a fresh ``fleet-hub`` process (the console script with its default config but ``credit_bytes``, below;
group commit of 512 chunks or 32 MiB / 1 ms) stores into a fresh SQLite store on this machine's disk with ``synchronous=FULL``
(every ack follows an fsync), its CURVE allow-list holding every robot. In the raw cell beside it a bare ROUTER
(the hub's socket limits and CURVE key) answers every message with its header frame and stores nothing.

The robots are uplink clients several to a process: ``--procs`` client processes (default 2, for the 2 cores
here), each running its share of the robots as DEALERs around one poller in one thread (``ingest_clients.py``).

Placement (``--placement``): the peer (hub or raw) and the robots share one machine here, where in a fleet they
do not. ``split`` (default) gives the peer half the cores and the robots the other half (on 2 cores, one each:
the hub with its export process on core 0, every client on core 1), the same for hub and raw: the nearest this
box comes to a hub machine and robot computers, and it does not depend on how the kernel shares CPU time.
``shared`` lets all of them run anywhere, the hub in a process group of its own but in the benchmark's session,
as the raw peer is. (Until December 2026 the hub ran in a session of its own and the raw peer did not: with the
kernel's autogroup, on here, that capped the hub and its export at one group's share, ~1 core against the
clients', while raw shared the clients' group, so the two peers were not measured alike.) The 64 KiB CURVE cells
also run in the other placement (``--compare-placement``, default on), reported as ``<placement>_ratio_...``.
They speak the protocol to the hub (HELLO, credit, resend after 10 s, retry, heartbeats) and send the very same
frames under the same window to the raw peer. Each chunk is a fresh record (its own header and digest) made as it
goes, in both runs. Window: each robot may have the credit (both peers grant the same) and the uplink's
``max_in_flight`` unanswered; an operator sizes them to the fleet, so both are the defaults (8 MiB, 256 chunks)
cut to ``--inflight-budget-mb`` (256) and ``--inflight-budget-chunks`` (8192) over the robots: 2 MiB and 64 chunks
at 128 robots. (With the defaults, 128 robots queue ~1 GiB / 32k chunks, the hub's queue outgrows the robots'
10 s resend timeout, and their resends swamp it: measured, 112k resends in a 3 s window at 4 KiB.)

MB/s counts record bytes acked within ``--seconds`` once steady (after each client process's first window has
been acked); hub and raw cells run back to back, alternating which goes first, in each of ``--rounds`` rounds.
A cell's ratio is the median over rounds of that round's hub / raw, so each ratio is of one moment on a shared
machine (the ratio of the two medians is in the result file too, as ``ratio_of_medians``).

Latency case: 128 robots at a 50 Hz robot's real rate. The agent's recorder cuts a chunk every
``spool.chunk_steps`` = 250 transitions (and at each episode end, which for locomotion's 1000-step episodes falls
on a 250 boundary), so a 50 Hz robot sends one chunk every 5 s; the chunk is a go2_like record of 250 transitions
(obs 45, critic obs 65, actions 12, through the recorder's own ``chunk_arrays``: 135 KB). Robots start at
random phases; p50/p99 of first send -> ack received at the robot, over ``--latency-seconds``, CURVE on; the same
robots at the same pace against the raw peer give the floor this machine sets (``raw_p99_ack_ms``).

    python benchmarks/hub_ingest.py                # full matrix, 3 s per cell, 2 rounds, 60 s latency case
    python benchmarks/hub_ingest.py --quick        # 16 robots, 64 KiB, CURVE on, + 8 s latency cases (/tmp)

Last line, e.g. ``hub_ingest ratio_vs_raw=0.62 ratio_64k_curve_1=0.7 ratio_64k_curve_16=0.62
ratio_64k_curve_128=0.65 hub_mbps_64k_curve_16=170 p99_ack_ms=18 raw_p99_ack_ms=9 agents=128``; ``ratio_vs_raw`` is the lowest
of the 64 KiB CURVE ratios (the target: >= 0.5).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from hub_processes import (
    HubProcess,
    cpu_seconds,
    free_port,
    make_keys,
    proc_status_kb,
    robot_keys,
    split_cpus,
    store_contents,
)
from hub_store import fs_type
from ingest_clients import ClientSpec, Stats, raw_router, run_clients
from result_record import write_result  # beside this script

from fleet.keys import HUB_SECRET
from fleet.registry import REGISTRY_FILE, load_registry
from robot_agent.config import AgentUplinkConfig

SPAWN = mp.get_context("spawn")
LABEL = {4096: "4k", 65536: "64k", 1 << 20: "1m"}


def credit_for(agents: int, budget_mb: float) -> int:
    """The credit an operator gives each of ``agents`` robots: the hub's default 8 MiB, less when the robots
    together would have more than ``budget_mb`` unacked (the hub's memory and queue: a queue longer than the
    robots' resend_s makes them resend what waits, 128 x 8 MiB did, and the resends swamp the hub)."""
    return int(min(8 * 1024 * 1024, budget_mb * 1024 * 1024 / agents))


def window_for(agents: int, budget_chunks: int) -> int:
    """The robots' max_in_flight: the uplink's default 256, less when together they would have more than
    ``budget_chunks`` unacked (at 4 KiB the queue is long in chunks before it is in bytes)."""
    return max(1, min(AgentUplinkConfig().max_in_flight, budget_chunks // agents))


def _split(robots: list[tuple[str, str | None]], procs: int) -> list[list[tuple[str, str | None]]]:
    n = max(1, min(procs, len(robots)))
    return [robots[i::n] for i in range(n)]


def run_cell(mode: str, robots: list[tuple[str, str | None]], size: int | None, keys: Path | None, work: Path,
             seconds: float, procs: int, credit: int, window: int = 256, interval_s: float = 0.0,
             hub_overrides: tuple[str, ...] = (), placement: str = "split") -> dict[str, Any]:
    """One run: a fresh peer (hub or raw) granting each robot ``credit`` bytes, the robots in ``procs`` client
    processes, placed as ``placement`` says (module docstring), their merged figures."""
    port, storage = free_port(), work / f"store-{time.monotonic_ns()}"
    peer_cpus, load_cpus = split_cpus() if placement == "split" else (None, None)
    hub = router = None
    if mode == "hub":
        hub = HubProcess(work, port, storage, keys, f"credit_bytes={credit}", *hub_overrides, cpus=peer_cpus,
                         own_session=False)
        endpoint, pid = hub.endpoint, hub.pid
    else:
        parent, child = SPAWN.Pipe()
        router = SPAWN.Process(target=raw_router, args=(child, port, str(keys / HUB_SECRET) if keys else None,
                                                        peer_cpus), daemon=True)
        router.start()
        if not parent.poll(60):
            raise RuntimeError("raw router did not start")
        parent.recv()
        endpoint, pid = f"tcp://127.0.0.1:{port}", router.pid
    clients = []
    try:
        for i, share in enumerate(_split(robots, procs)):
            spec = ClientSpec(mode, endpoint, share, size, seconds, interval_s=interval_s, raw_credit=credit,
                              window_chunks=window, seed=i + 1, cpus=load_cpus)
            a, b = SPAWN.Pipe()
            p = SPAWN.Process(target=run_clients, args=(b, spec), daemon=True)
            p.start()
            clients.append((p, a))
        for _, a in clients:
            if not a.poll(180):
                raise RuntimeError(f"{mode}: a client process did not get ready")
            failed = a.recv()
            if failed is not None:
                raise RuntimeError(f"{mode}: a client process failed: {failed.errors}")
        start = time.monotonic() + 0.3
        for _, a in clients:
            a.send(start)
        time.sleep(max(0.0, start - time.monotonic()))
        cpu0 = cpu_seconds(pid)
        stats: list[Stats] = []
        for p, a in clients:
            if not a.poll(seconds + 400):
                raise RuntimeError(f"{mode}: a client process did not report")
            stats.append(a.recv())
            p.join(30)
        cpu_share = (cpu_seconds(pid) - cpu0) / (time.monotonic() - start)  # of one core, over the whole run
        peak_mb = proc_status_kb(pid, "VmHWM") / 1024
    finally:
        for p, _ in clients:
            if p.is_alive():
                p.kill()
        if hub is not None:
            hub.stop()
        if router is not None:
            parent.send("stop")
            router.join(30)
    lat = [x for s in stats for x in s.latencies_ms]
    out = {"mode": mode, "placement": placement, "agents": len(robots), "credit": credit, "window_chunks": window, "chunks_per_s": sum(s.window_chunks for s in stats) / seconds,
           "ramp_s": max(s.ramp_s for s in stats),
           "mbps": sum(s.window_bytes for s in stats) / seconds / 1e6, "acked": sum(s.acked for s in stats),
           "sent": sum(s.sent for s in stats), "resent": sum(s.resent for s in stats),
           "duplicate_acks": sum(s.duplicate_acks for s in stats), "unanswered": sum(s.unanswered for s in stats),
           "nacks": dict(sum((s.nacks for s in stats), Counter())),
           "errors": [e for s in stats for e in s.errors][:10], "record_bytes": max(s.record_bytes for s in stats),
           "peer_cpu_share": cpu_share, "peer_peak_rss_mb": peak_mb,
           "ack_p50_ms": float(np.percentile(lat, 50)) if lat else None,
           "ack_p99_ms": float(np.percentile(lat, 99)) if lat else None,
           "ack_max_ms": float(max(lat)) if lat else None, "latency_samples": len(lat)}
    if interval_s:  # when the slowest acks were sent (s from the start): a pattern points at their cause
        timed = sorted(((t - start, ms) for s in stats for t, ms in zip(s.sent_at, s.latencies_ms, strict=True)),
                       key=lambda x: -x[1])
        out["slowest_acks"] = sorted((round(t, 2), round(ms, 1)) for t, ms in timed[:20])
    if hub is not None:
        contents = store_contents(storage)
        out.update(stored=contents.rows, duplicate_rows=contents.duplicate_rows,
                   acked_not_stored=max(0, out["acked"] - contents.rows), **_commit_times(storage))
        shutil.rmtree(storage, ignore_errors=True)
    if out["errors"]:
        print(f"  errors: {out['errors'][:3]}", flush=True)
    return out


def _commit_times(storage: Path) -> dict[str, float]:
    """The hub's commit groups (write + fsync) and its collector's pauses as its last registry write saw them: if a
    burst of slow acks came with a slow commit, the disk held them up; with a long pause, the collector did."""
    out: dict[str, float] = {}
    try:
        hub = load_registry(storage / REGISTRY_FILE)["hub"]
    except (ValueError, KeyError, TypeError) as exc:
        print(f"  (no hub registry: {exc})", flush=True)
        return out
    try:
        commit = hub["commit"]
        out.update(hub_commit_groups=commit["count"], hub_commit_max_ms=1e3 * commit["max_s"],
                   hub_commit_mean_ms=1e3 * commit["sum_s"] / max(commit["count"], 1))
    except (KeyError, TypeError) as exc:
        print(f"  (no commit times: {exc})", flush=True)
    try:
        heap = hub["gc"]
        out.update(hub_gc_frozen=heap["frozen"], hub_gc_collections=sum(heap["collections"]),
                   hub_gc_max_ms=max(heap["max_ms"]))
    except (KeyError, TypeError) as exc:
        print(f"  (no collector pauses: {exc})", flush=True)
    return out


def paired_ratios(runs: dict[str, list[dict[str, Any]]], med: dict[str, dict[str, float]]
                  ) -> tuple[dict[str, float], dict[str, list[float]], dict[str, float]]:
    """Per cell: the median over rounds of hub / raw MB/s within each round (the pair ran back to back, so a
    moment when the shared machine was slow hits both), the per-round ratios, and the ratio of the medians."""
    ratios, per_round, of_medians = {}, {}, {}
    for key, hub_runs in runs.items():
        if not key.startswith("hub_") or "raw_" + key[4:] not in runs:
            continue
        cell, raw_runs = key[4:], runs["raw_" + key[4:]]
        # a round whose raw peer acked nothing has no ratio (and a NaN would make the median order-dependent)
        rounds = [h["mbps"] / r["mbps"] for h, r in zip(hub_runs, raw_runs, strict=True) if r["mbps"] > 0]
        if not rounds:
            continue
        per_round[cell], ratios[cell] = rounds, statistics.median(rounds)
        raw_median = med["raw_" + cell]["mbps"]
        of_medians[cell] = med[key]["mbps"] / raw_median if raw_median > 0 else float("nan")
    return ratios, per_round, of_medians


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="16 robots, 64 KiB, CURVE on, 1 round, short latency case")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured window per throughput cell")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--agents", type=int, nargs="+", default=[1, 16, 128])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 65536, 1 << 20])
    ap.add_argument("--curve", choices=["on", "off", "both"], default="both")
    ap.add_argument("--procs", type=int, default=2, help="client processes (robots are shared among them)")
    ap.add_argument("--inflight-budget-mb", type=float, default=256.0,
                    help="credit per robot = min(8 MiB, this / robots), for hub and raw peer alike")
    ap.add_argument("--inflight-budget-chunks", type=int, default=8192,
                    help="robots' max_in_flight = min(256, this / robots)")
    ap.add_argument("--latency-agents", type=int, default=128)
    ap.add_argument("--latency-seconds", type=float, default=60.0)
    ap.add_argument("--control-hz", type=float, default=50.0)
    ap.add_argument("--chunk-steps", type=int, default=250, help="the agent's spool.chunk_steps")
    ap.add_argument("--placement", choices=["split", "shared"], default="split",
                    help="split: the peer on half the cores, the robots on the other half; shared: anywhere")
    ap.add_argument("--compare-placement", action=argparse.BooleanOptionalAction, default=True,
                    help="also run the 64 KiB CURVE cells in the other placement")
    ap.add_argument("--hub-override", action="append", default=[],
                    help="a Hydra override for the hub (repeatable), e.g. parquet_export=false")
    ap.add_argument("--dir", default=None, help="work dir for stores and keys (default: the system temp dir)")
    ap.add_argument("--out", default=None, help="default benchmarks/results/hub_ingest.json (--quick: /tmp)")
    args = ap.parse_args()
    if args.quick:
        args.agents, args.sizes, args.curve, args.rounds = [16], [65536], "on", 1
        args.seconds, args.latency_seconds = min(args.seconds, 2.0), min(args.latency_seconds, 8.0)
    out = args.out or ("/tmp/hub_ingest_quick.json" if args.quick else "benchmarks/results/hub_ingest.json")
    work = Path(tempfile.mkdtemp(prefix="hub_ingest_", dir=args.dir))
    ids = [f"r{i:03d}" for i in range(max([*args.agents, args.latency_agents]))]
    keys = make_keys(work / "keys", ids)
    print(f"work dir {work} ({fs_type(work)}), {len(ids)} robots enrolled", flush=True)
    curves = {"on": [True], "off": [False], "both": [True, False]}[args.curve]
    other = {"split": "shared", "shared": "split"}[args.placement]
    cells = [(curve, size, agents, args.placement) for curve in curves for size in args.sizes for agents in args.agents]
    if args.compare_placement and True in curves and 65536 in args.sizes:
        cells += [(True, 65536, agents, other) for agents in args.agents]
    runs: dict[str, list[dict[str, Any]]] = {}
    for rnd in range(args.rounds):
        for curve, size, agents, placement in cells:
            robots = [(r, robot_keys(keys if curve else None, r)) for r in ids[:agents]]
            order = ("hub", "raw") if rnd % 2 == 0 else ("raw", "hub")
            for mode in order:
                key = f"{mode}_{LABEL.get(size, size)}_{'curve' if curve else 'plain'}_{agents}" + (
                    f"_{placement}" if placement != args.placement else "")
                res = run_cell(mode, robots, size, keys if curve else None, work, args.seconds, args.procs,
                               credit_for(agents, args.inflight_budget_mb),
                               window_for(agents, args.inflight_budget_chunks),
                               hub_overrides=tuple(args.hub_override), placement=placement)
                runs.setdefault(key, []).append(res)
                print(f"round {rnd} {key:29s} {res['mbps']:8.1f} MB/s {res['chunks_per_s']:8.0f} chunks/s "
                      f"ack p99 {res['ack_p99_ms'] or 0:7.1f} ms peer cpu {res['peer_cpu_share']:.2f} "
                      f"ramp {res['ramp_s']:.1f} s rss {res['peer_peak_rss_mb']:.0f} MB resent {res['resent']} "
                      f"nacks {res['nacks']}" + (f" stored {res['stored']}" if mode == "hub" else ""), flush=True)
    med = {k: {f: statistics.median(r[f] for r in rs) for f in ("mbps", "chunks_per_s", "peer_cpu_share")}
           for k, rs in runs.items()}
    ratios, round_ratios, ratio_of_medians = paired_ratios(runs, med)
    print("per round hub / raw (the two ran back to back), and the median of those:")
    for cell, r in ratios.items():
        print(f"  {cell:25s} hub {med['hub_' + cell]['mbps']:8.1f} MB/s {med['hub_' + cell]['chunks_per_s']:8.0f} "
              f"chunks/s | raw {med['raw_' + cell]['mbps']:8.1f} MB/s {med['raw_' + cell]['chunks_per_s']:8.0f} "
              f"chunks/s | rounds {' '.join(f'{x:.2f}' for x in round_ratios[cell])} | ratio {r:.2f} "
              f"(of medians {ratio_of_medians[cell]:.2f})", flush=True)
    interval = args.chunk_steps / args.control_hz
    lat_robots = [(r, robot_keys(keys, r)) for r in ids[:args.latency_agents]]
    print(f"latency case: {args.latency_agents} robots, one {args.chunk_steps}-step chunk each every {interval:.1f} s, "
          f"{args.latency_seconds:.0f} s", flush=True)
    lat_credit = credit_for(args.latency_agents, args.inflight_budget_mb)
    latency = run_cell("hub", lat_robots, None, keys, work, args.latency_seconds, args.procs, lat_credit,
                       interval_s=interval, hub_overrides=tuple(args.hub_override), placement=args.placement)
    print(f"  hub: {latency['acked']} chunks of {latency['record_bytes']} bytes acked, ack p50 "
          f"{latency['ack_p50_ms']:.1f} p99 {latency['ack_p99_ms']:.1f} max {latency['ack_max_ms']:.1f} ms, stored "
          f"{latency['stored']}; slowest acks (sent at s, ms): {latency['slowest_acks'][:8]}; commit groups: max "
          f"{latency.get('hub_commit_max_ms', float('nan')):.1f} ms, mean {latency.get('hub_commit_mean_ms', float('nan')):.2f}; "
          f"collector: {latency.get('hub_gc_collections', 0)} runs, max {latency.get('hub_gc_max_ms', float('nan')):.1f} ms",
          flush=True)
    # the same robots and pace against the raw peer: what this machine's loopback and scheduling cost by themselves
    latency_raw = run_cell("raw", lat_robots, None, keys, work, args.latency_seconds, args.procs, lat_credit,
                           interval_s=interval, placement=args.placement)
    print(f"  raw: ack p50 {latency_raw['ack_p50_ms']:.1f} p99 {latency_raw['ack_p99_ms']:.1f} max "
          f"{latency_raw['ack_max_ms']:.1f} ms", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    target = {a: ratios.get(f"64k_curve_{a}") for a in args.agents if f"64k_curve_{a}" in ratios}
    parts = [f"ratio_vs_raw={min(target.values()):.2f}" if target else "ratio_vs_raw=nan"]
    parts += [f"ratio_64k_curve_{a}={r:.2f}" for a, r in target.items()]
    parts += [f"hub_mbps_64k_curve_{a}={med[f'hub_64k_curve_{a}']['mbps']:.0f}" for a in target]
    parts += [f"{other}_ratio_64k_curve_{a}={ratios[f'64k_curve_{a}_{other}']:.2f}" for a in args.agents
              if f"64k_curve_{a}_{other}" in ratios]
    parts += [f"p99_ack_ms={latency['ack_p99_ms']:.1f}", f"raw_p99_ack_ms={latency_raw['ack_p99_ms']:.1f}",
              f"agents={args.latency_agents}", f"placement={args.placement}"]
    write_result(out, "hub_ingest " + " ".join(parts),
                 {"args": vars(args), "fs": fs_type(Path(tempfile.gettempdir()) if args.dir is None else Path(args.dir)),
                  "median": med, "ratios": ratios, "round_ratios": round_ratios,
                  "ratio_of_medians": ratio_of_medians, "latency": latency, "latency_raw": latency_raw, "runs": runs,
                  "latency_assumption": {"control_hz": args.control_hz, "chunk_steps": args.chunk_steps,
                                         "chunk_interval_s": interval, "record_bytes": latency["record_bytes"]}})


if __name__ == "__main__":
    main()
