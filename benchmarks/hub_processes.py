"""What the hub benchmarks share: real ``fleet-hub`` processes (start, SIGTERM, ``kill -9``), their memory and CPU
read from /proc, enrolled robot keys, synthetic robot records, and what a hub's store holds (read by SQLite itself).

Nothing here stands in for a part: the hub is the ``fleet-hub`` console script (or, for the slow-disk case, the
same Hydra app with a throttled store, ``slow_disk_hub.py``), the store is its SQLite file, the keys are what
``fleet-keys`` writes.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fleet.keys import enrol, init_hub
from fleet.record import npz_payload, record_with_payload

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EPOCH = "00000000be0c4000"  # the spool epoch of synthetic records (real spools draw their own)
GO2_DIMS = (45, 65, 12)  # go2_like locomotion: policy obs, critic obs, actions (sim.make_env measured)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (a restarted hub binds the same one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_keys(directory: Path, robot_ids: list[str]) -> Path:
    """The hub's key pair and every robot enrolled (``fleet-keys init`` + ``enrol``); returns the keys dir."""
    init_hub(directory)
    for robot in robot_ids:
        enrol(directory, robot)
    return directory


def robot_keys(keys: Path | None, robot_id: str) -> str | None:
    """Where ``enrol`` wrote a robot's key files (None: plain text)."""
    return str(keys / "robots" / robot_id) if keys else None


def bench_env() -> dict[str, str]:
    """The environment of every child: this work tree's packages first, W&B off."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT), "WANDB_MODE": "disabled"}


class HubProcess:
    """A real hub process (``fleet-hub`` unless ``argv0`` says otherwise) on 127.0.0.1:``port``."""

    def __init__(self, work: Path, port: int, storage: Path, keys: Path | None, *overrides: str,
                 argv0: list[str] | None = None, env: dict[str, str] | None = None, start_timeout_s: float = 120.0,
                 cpus: list[int] | None = None, own_session: bool = True):
        """``cpus``: run the hub (and the export process it starts) on these cores only (``taskset``).
        ``own_session``: a session of its own (else only a process group of its own: ``kill`` reaches the hub
        and its children either way). Where the kernel groups CPU time by session (autogroup), a hub in its own
        session competes as one group against everything else; see ``hub_ingest.py --placement``."""
        security = [f"security.keys_dir={keys}"] if keys else ["security.mode=plaintext"]
        pin = ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []
        args = [*pin, *(argv0 or [str(BIN / "fleet-hub")]), f"bind=tcp://127.0.0.1:{port}", f"storage_dir={storage}",
                f"hydra.run.dir={work / 'hydra'}", *security, *overrides]
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.output: list[str] = []
        group = {"start_new_session": True} if own_session else {"process_group": 0}
        self.proc = subprocess.Popen(args, cwd=work, env={**bench_env(), **(env or {})}, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **group)
        started = threading.Event()
        threading.Thread(target=self._pump, args=(started,), daemon=True).start()
        if not started.wait(start_timeout_s) or self.proc.poll() is not None:
            self.kill()
            raise RuntimeError("fleet-hub did not start:\n" + "".join(self.output[-40:]))

    def _pump(self, started: threading.Event) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]  # a full pipe must never block the hub
            self.output.append(line)
            if "listening on" in line:
                started.set()
        started.set()

    @property
    def pid(self) -> int:
        """The hub's process id."""
        return self.proc.pid

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (commit and ack what is queued, exit 0); its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        """``kill -9`` of the hub process (and anything it started), then reap it."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)


def split_cpus() -> tuple[list[int], list[int]]:
    """This process's cores in two halves: (the peer's, the load's). On 2 cores, one each: what a hub on its own
    machine and robots on theirs would have, on one box."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise RuntimeError("--placement split needs at least 2 cores; use --placement shared")
    half = len(cores) // 2
    return cores[:half], cores[half:]


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started that still run (the hub's Parquet export process)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def proc_status_kb(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` memory figure (``VmRSS``, ``VmHWM``) in KiB, 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class RssSampler:
    """Samples a process's VmRSS every ``every_s`` on a thread; ``samples`` are (seconds since start, MiB)."""

    def __init__(self, pid: int, every_s: float = 0.2):
        self.pid, self.every_s, self.samples = pid, every_s, []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            kb = proc_status_kb(self.pid, "VmRSS")
            if kb:
                self.samples.append((round(time.monotonic() - self._t0, 2), round(kb / 1024, 1)))

    def stop(self) -> list[tuple[float, float]]:
        """End sampling; the samples."""
        self._stop.set()
        self._thread.join(5)
        return self.samples


@dataclass
class StoreContents:
    """What a hub's SQLite store holds, read by a connection of our own."""

    rows: int
    ids: set[str]
    distinct_digests: int

    @property
    def duplicate_rows(self) -> int:
        """Rows beyond one per chunk id, or per record digest (0 in a correct store)."""
        return self.rows - min(len(self.ids), self.distinct_digests)


def store_contents(storage: Path) -> StoreContents:
    """Every chunk id in ``storage``'s experience store (empty if there is none)."""
    db = storage / "experience.sqlite"
    if not db.exists():
        return StoreContents(0, set(), 0)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
    try:
        ids = [r[0] for r in con.execute("SELECT chunk_id FROM chunks")]
        digests = con.execute("SELECT COUNT(DISTINCT digest) FROM chunks").fetchone()[0]
    finally:
        con.close()
    return StoreContents(len(ids), set(ids), digests)


def go2_arrays(rng: np.random.Generator, steps: int) -> dict[str, np.ndarray]:
    """One chunk's arrays as the agent's recorder makes them (``chunk_arrays``), go2_like sizes."""
    from robot_agent.recorder import ROW_KEYS, chunk_arrays

    obs, critic, act = GO2_DIMS
    rows: dict[str, list[Any]] = {k: [] for k in ROW_KEYS}
    for t in range(steps):
        rows["obs"].append(rng.standard_normal(obs).astype(np.float32))
        rows["critic_obs"].append(rng.standard_normal(critic).astype(np.float32))
        rows["actions"].append(rng.standard_normal(act).astype(np.float32))
        rows["log_probs"].append(float(rng.normal(-1.0, 0.3)))
        rows["rewards"].append(float(rng.random()))
        rows["dones"].append(0.0)
        rows["time_outs"].append(0.0)
        rows["stamp"].append(1000.0 + 0.02 * t)
    return chunk_arrays(rows, rng.standard_normal(critic).astype(np.float32), 0, 0)


class RecordMaker:
    """Unique records of one robot over one fixed payload: a real header per chunk (what the store indexes), a
    new digest per chunk (what every hop checks). ``size`` None: a go2_like chunk of ``steps`` transitions."""

    def __init__(self, robot_id: str, size: int | None, seed: int, steps: int = 250):
        rng = np.random.default_rng(seed)
        if size is None:
            arrays = go2_arrays(rng, steps)
        else:  # npz and header overhead ~ 900 bytes
            arrays, steps = {"obs": rng.standard_normal(max(1, (size - 900) // 4)).astype(np.float32)}, 1
        self.payload, self.steps, self.robot_id, self.seq = npz_payload(arrays), steps, robot_id, 0

    def next(self) -> tuple[str, bytes]:
        """(chunk id, record bytes) of the next chunk."""
        self.seq += 1
        cid = f"{self.robot_id}-{EPOCH}-{self.seq:010d}"
        header = {"chunk_id": cid, "robot_id": self.robot_id, "hardware": "go2_like", "task": "locomotion",
                  "episode": self.seq // 4, "steps": self.steps, "episode_end": False, "trunk_version": 0,
                  "adapter_version": 0, "seq": self.seq, "spool_epoch": EPOCH}
        return cid, record_with_payload(header, self.payload)
