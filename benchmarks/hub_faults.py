"""Hub faults: what a real hub and real robot uplinks lose, duplicate and hold in memory when things go wrong.

The robots are ``fault_agents.py`` processes (``--robots-per-agent`` robots each): per robot a real spool on disk
that a writer fills with go2_like chunks of 250 transitions as the agent's recorder would, and the agent's real
``HubUplink`` draining it to the hub, so the robot side's resend and the hub's dedupe are what is tested. The hub
is a real ``fleet-hub`` process (CURVE, every robot enrolled, a store on this machine's disk with fsync). Four
faults, each on a fresh hub store and fresh spools:

1. ``hub_kill``: ``kill -9`` of the hub ``--kills`` times (default 5), every ``--kill-every-s``, restarted at once
   on the same store, during a stream from ``--robots`` robots (default 16).
2. ``agent_kill``: SIGKILL of one robot process (its robots' spools on disk) mid-stream, restarted 1 s later.
3. ``hub_down``: the hub ``kill -9``'d and left down ``--down-s`` (default 180) while the robots keep spooling
   (a chunk each every ``--down-chunk-every-s``), then restarted: the seconds from the restart until the robots
   are all back (their reconnect backoff, up to ``backoff_max_s`` = 30 s, is most of it) and until the outage's
   backlog has drained.
4. ``slow_disk``: the hub's store commits throttled to ``--slow-disk-mbps`` (``slow_disk_hub.py``: the real app,
   its commits held back as a slow disk would) while the robots write faster; the hub's RSS is sampled from
   /proc every 0.2 s, its peak (VmHWM) reported beside the credit bound (credit x robots), and apart from it the
   peak of the hub's Parquet export process (a child of its own, fleet/export_process.py). Then the slow hub is
   killed, a normal one started on the same store, and the robots drain.

Per fault: chunks produced (ids the spools handed out), sent (the uplinks' first sends on each connection: a chunk
in flight when its connection ended is sent again on the next and counts again) and resent (sends again after
``resend_s`` without an answer; both from the uplinks' status, a killed process's as of its last status file),
acked (ids the hub acked, logged at the robot before its spool deletes anything), stored (rows in the hub's SQLite store after its
last stop, read by SQLite itself), duplicates (rows beyond one per chunk id or record digest), lost (produced and
not stored) and acked_lost (acked and not stored). A chunk a killed robot wrote to its spool but had not yet
logged shows up as stored_unlogged, not as a loss.

    python benchmarks/hub_faults.py                 # full (about 8 min with --down-s 180)
    python benchmarks/hub_faults.py --quick         # 4 robots, 2 kills, short phases (writes to /tmp)

Last line, e.g. ``hub_faults acked_lost=0 duplicates=0 lost=0 peak_rss_mb=180 hub_kills=5 down_s=180
drained_after_restart_s=28``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hub_processes import (
    HubProcess,
    RssSampler,
    bench_env,
    child_pids,
    free_port,
    make_keys,
    proc_status_kb,
    store_contents,
)
from hub_store import fs_type
from result_record import write_result  # beside this script

HERE = Path(__file__).resolve().parent
CREDIT_BYTES = 8 * 1024 * 1024  # configs/hub.yaml's credit_bytes, which these hubs run with


class RobotFleet:
    """The robot processes of one fault run, their state dirs and logs."""

    def __init__(self, state: Path, robots: list[str], per_agent: int, endpoint: str, keys: Path,
                 chunk_every_s: float):
        self.state, self.robots, self.endpoint, self.keys = state, robots, endpoint, keys
        self.chunk_every_s = chunk_every_s
        self.groups = [robots[i:i + per_agent] for i in range(0, len(robots), per_agent)]
        self.procs: list[subprocess.Popen | None] = [None] * len(self.groups)
        self.past = {"sent": 0, "resent": 0}  # counts of robot processes that were killed
        state.mkdir(parents=True, exist_ok=True)

    def start(self, i: int | None = None) -> None:
        """Start robot process ``i`` (all if None)."""
        for k in range(len(self.groups)) if i is None else [i]:
            self.procs[k] = subprocess.Popen(
                [sys.executable, str(HERE / "fault_agents.py"), "--state", str(self.state), "--robots", *self.groups[k],
                 "--endpoint", self.endpoint, "--keys", str(self.keys), "--chunk-every-s", str(self.chunk_every_s)],
                env=bench_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(
                    self.state / f"agent-{k}.log", "a"), start_new_session=True)

    def produce(self, on: bool) -> None:
        """Robots write chunks while on."""
        flag = self.state / "produce"
        flag.touch() if on else flag.unlink(missing_ok=True)

    def statuses(self) -> dict[str, dict[str, Any]]:
        """Each robot's last status file (empty dict if none yet)."""
        out = {}
        for robot in self.robots:
            try:
                out[robot] = json.loads((self.state / robot / "status.json").read_text())
            except (OSError, ValueError):
                out[robot] = {}
        return out

    def kill(self, i: int) -> None:
        """SIGKILL robot process ``i``; its counts so far are kept."""
        for robot in self.groups[i]:
            st = self.statuses()[robot]
            self.past["sent"] += st.get("sent", 0)
            self.past["resent"] += st.get("resent", 0)
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)

    def wait(self, cond: Any, timeout: float) -> float | None:
        """Seconds until ``cond(statuses written after now)`` holds, None if it did not within ``timeout``."""
        t0, wall0 = time.monotonic(), time.time()
        while time.monotonic() - t0 < timeout:
            sts = self.statuses()
            if all(s.get("time", 0) > wall0 for s in sts.values()) and cond(sts):
                return time.monotonic() - t0
            time.sleep(0.25)
        return None

    def stop(self) -> None:
        """SIGTERM every robot process (drain, close spools), kill what does not exit."""
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            if proc is not None:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)

    def ids(self, log: str) -> set[str]:
        """Every id in each robot's ``produced.log`` or ``acked.log``."""
        out: set[str] = set()
        for robot in self.robots:
            path = self.state / robot / log
            if path.exists():
                out.update(line for line in path.read_text().split("\n") if line)
        return out

    def tally(self, storage: Path) -> dict[str, Any]:
        """Produced, sent, acked, stored, duplicated, lost: the robots' logs against the hub's store."""
        contents = store_contents(storage)
        produced, acked = self.ids("produced.log"), self.ids("acked.log")
        sts = self.statuses().values()
        return {"produced": len(produced), "sent": self.past["sent"] + sum(s.get("sent", 0) for s in sts),
                "resent": self.past["resent"] + sum(s.get("resent", 0) for s in sts), "acked": len(acked),
                "stored": contents.rows, "duplicates": contents.duplicate_rows, "lost": len(produced - contents.ids),
                "acked_lost": len(acked - contents.ids), "stored_unlogged": len(contents.ids - produced),
                "left_in_spools": sum(s.get("depth", 0) for s in sts)}


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def drained(sts: dict[str, dict[str, Any]]) -> bool:
    """Every spool empty."""
    return all(s.get("depth", 1) == 0 for s in sts.values())


class Fault:
    """One fault run's directories, hub and robots."""

    def __init__(self, work: Path, name: str, keys: Path, robots: list[str], per_agent: int, chunk_every_s: float):
        self.dir, self.keys = work / name, keys
        self.port, self.storage = free_port(), self.dir / "hub"
        self.dir.mkdir(parents=True)
        self.hub: HubProcess | None = None
        self.fleet = RobotFleet(self.dir / "robots", robots, per_agent, f"tcp://127.0.0.1:{self.port}", keys,
                                chunk_every_s)

    def start_hub(self, slow_mbps: float = 0.0) -> HubProcess:
        argv0 = [sys.executable, str(HERE / "slow_disk_hub.py")] if slow_mbps else None
        self.hub = HubProcess(self.dir, self.port, self.storage, self.keys, argv0=argv0,
                              env={"SLOW_DISK_MBPS": str(slow_mbps)} if slow_mbps else None)
        return self.hub

    def finish(self, drain_timeout: float) -> dict[str, Any]:
        """Stop producing, wait for the spools to drain, stop robots and hub, count."""
        self.fleet.produce(False)
        took = self.fleet.wait(drained, drain_timeout)
        self.fleet.stop()
        if self.hub is not None:
            self.hub.stop()
        out = {**self.fleet.tally(self.storage), "final_drain_s": _round(took)}
        shutil.rmtree(self.dir / "robots", ignore_errors=True)
        return out


def hub_kill(f: Fault, kills: int, every_s: float, drain_timeout: float) -> dict[str, Any]:
    f.start_hub()
    f.fleet.start()
    f.fleet.produce(True)
    restart_s = []
    for _ in range(kills):
        time.sleep(every_s)
        f.hub.kill()
        t0 = time.monotonic()
        f.start_hub()
        restart_s.append(round(time.monotonic() - t0, 2))
    time.sleep(every_s)
    return {**f.finish(drain_timeout), "kills": kills, "hub_restart_s": restart_s}


def agent_kill(f: Fault, phase_s: float, drain_timeout: float) -> dict[str, Any]:
    f.start_hub()
    f.fleet.start()
    f.fleet.produce(True)
    time.sleep(phase_s)
    f.fleet.kill(0)
    time.sleep(1.0)
    f.fleet.start(0)
    time.sleep(phase_s)
    return {**f.finish(drain_timeout), "killed_robots": f.fleet.groups[0]}


def hub_down(f: Fault, down_s: float, warm_s: float, drain_timeout: float) -> dict[str, Any]:
    f.start_hub()
    f.fleet.start()
    f.fleet.produce(True)
    time.sleep(warm_s)
    f.hub.kill()
    time.sleep(down_s)
    backlog = sum(s.get("depth", 0) for s in f.fleet.statuses().values())
    f.start_hub()
    restarted, n = time.monotonic(), len(f.fleet.robots)
    back = f.fleet.wait(lambda sts: all(s.get("connected") for s in sts.values()), drain_timeout)
    # robots keep writing: the backlog is gone when every robot is back and no spool holds more than about the
    # chunk just written (both from the restart; the robots' reconnect backoff is most of it)
    caught = f.fleet.wait(lambda sts: sum(s.get("depth", n) for s in sts.values()) <= n, drain_timeout)
    caught_up = None if caught is None else time.monotonic() - restarted
    return {**f.finish(drain_timeout), "down_s": down_s, "backlog_chunks": backlog, "all_reconnected_s": _round(back),
            "backlog_drained_s": _round(caught_up)}


def slow_disk(f: Fault, seconds: float, mbps: float, drain_timeout: float) -> dict[str, Any]:
    hub = f.start_hub(slow_mbps=mbps)
    base_mb = proc_status_kb(hub.pid, "VmRSS") / 1024
    sampler = RssSampler(hub.pid)
    f.fleet.start()
    f.fleet.produce(True)
    time.sleep(seconds)
    f.fleet.produce(False)
    samples = sampler.stop()
    peak_mb = proc_status_kb(hub.pid, "VmHWM") / 1024
    export_peak_mb = sum(proc_status_kb(c, "VmHWM") for c in child_pids(hub.pid)) / 1024  # its own, apart
    stored_slow = store_contents(f.storage).rows
    depth = sum(s.get("depth", 0) for s in f.fleet.statuses().values())
    half = [mb for t, mb in samples if t >= seconds / 2]
    first = [mb for t, mb in samples if t < seconds / 2]
    hub.kill()  # a SIGTERM would commit the queue at the slow disk's pace first; the robots resend it anyway
    f.start_hub()
    out = f.finish(drain_timeout)
    return {**out, "disk_mbps": mbps, "seconds": seconds, "stored_while_slow": stored_slow,
            "spool_depth_at_end": depth, "hub_rss_start_mb": round(base_mb, 1), "peak_rss_mb": round(peak_mb, 1),
            "export_process_peak_rss_mb": round(export_peak_mb, 1),
            "rss_max_first_half_mb": max(first, default=0), "rss_max_second_half_mb": max(half, default=0),
            "credit_bound_mb": CREDIT_BYTES * len(f.fleet.robots) / 2**20, "rss_samples": samples[::5]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 robots, 2 kills, a few seconds per phase")
    ap.add_argument("--robots", type=int, default=16)
    ap.add_argument("--robots-per-agent", type=int, default=4)
    ap.add_argument("--chunk-every-s", type=float, default=0.25, help="each robot's chunk interval while streaming")
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--kill-every-s", type=float, default=6.0)
    ap.add_argument("--down-s", type=float, default=180.0)
    ap.add_argument("--down-chunk-every-s", type=float, default=1.0)
    ap.add_argument("--slow-seconds", type=float, default=60.0)
    ap.add_argument("--slow-disk-mbps", type=float, default=2.0)
    ap.add_argument("--drain-timeout-s", type=float, default=180.0)
    ap.add_argument("--faults", nargs="+", default=["hub_kill", "agent_kill", "hub_down", "slow_disk"])
    ap.add_argument("--dir", default=None)
    ap.add_argument("--out", default=None, help="default benchmarks/results/hub_faults.json (--quick: /tmp)")
    args = ap.parse_args()
    if args.quick:
        args.robots, args.robots_per_agent, args.kills, args.kill_every_s = 4, 2, 2, 2.5
        args.down_s, args.slow_seconds, args.drain_timeout_s = min(args.down_s, 5.0), min(args.slow_seconds, 5.0), 30.0
    out = args.out or ("/tmp/hub_faults_quick.json" if args.quick else "benchmarks/results/hub_faults.json")
    work = Path(tempfile.mkdtemp(prefix="hub_faults_", dir=args.dir))
    robots = [f"r{i:02d}" for i in range(args.robots)]
    keys = make_keys(work / "keys", robots)
    print(f"work dir {work} ({fs_type(work)}), {len(robots)} robots, {args.robots_per_agent} per process", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for name in args.faults:
        every = args.down_chunk_every_s if name == "hub_down" else args.chunk_every_s
        f = Fault(work, name, keys, robots, args.robots_per_agent, every)
        t0 = time.monotonic()
        try:
            if name == "hub_kill":
                res = hub_kill(f, args.kills, args.kill_every_s, args.drain_timeout_s)
            elif name == "agent_kill":
                res = agent_kill(f, args.kill_every_s, args.drain_timeout_s)
            elif name == "hub_down":
                res = hub_down(f, args.down_s, args.kill_every_s, args.drain_timeout_s)
            else:
                res = slow_disk(f, args.slow_seconds, args.slow_disk_mbps, args.drain_timeout_s)
        finally:
            f.fleet.stop()
            if f.hub is not None:
                f.hub.kill()
        res["wall_s"] = round(time.monotonic() - t0, 1)
        results[name] = res
        shown = {k: v for k, v in res.items() if k != "rss_samples"}
        print(f"{name}: " + " ".join(f"{k}={v}" for k, v in shown.items()), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    total = {k: sum(r[k] for r in results.values()) for k in ("acked_lost", "duplicates", "lost")}
    parts = [f"acked_lost={total['acked_lost']}", f"duplicates={total['duplicates']}", f"lost={total['lost']}"]
    if "slow_disk" in results:
        parts.append(f"peak_rss_mb={results['slow_disk']['peak_rss_mb']:.0f}")
        parts.append(f"export_peak_rss_mb={results['slow_disk']['export_process_peak_rss_mb']:.0f}")
    if "hub_kill" in results:
        parts.append(f"hub_kills={results['hub_kill']['kills']}")
    if "hub_down" in results:
        parts.append(f"down_s={args.down_s:.0f} drained_after_restart_s={results['hub_down']['backlog_drained_s']}")
    write_result(out, "hub_faults " + " ".join(parts), {"args": vars(args), "faults": results})


if __name__ == "__main__":
    main()
