"""One result file per benchmark run: the figures, the summary line, and which code produced them.

Every benchmark script ends with :func:`write_result`: it writes ``benchmarks/results/<name>.json`` with the
date, the commit (and whether the work tree had uncommitted changes to the measured code), the exact command,
the machine (with a speed probe: machines differ between sessions), and the summary line the
script prints last. ``benchmarks/summary.py`` reads these files back, so BENCHMARKS.md's summary table is what
the scripts printed, and it says which results were measured on code that has changed since.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# what a benchmark measures: a change under any of these since its commit makes its result stale
MEASURED_PATHS = ("hardware", "sim", "shared_policy", "robot_agent", "fleet", "configs", "pyproject.toml")


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def code_revision() -> dict[str, Any]:
    """The commit the work tree is at, and whether the measured code differs from it."""
    commit = _git("rev-parse", "HEAD")
    script = os.path.relpath(sys.argv[0], ROOT)
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", *MEASURED_PATHS, script)) if commit else None
    return {"commit": commit or None, "dirty": dirty}


# Taken when the script starts (it imports this module first thing): a long run must record the code it
# imported, not whatever HEAD has moved to by the time it finishes.
REVISION_AT_START = code_revision()


def _proc_field(path: str, name: str) -> str:
    """The first ``name: value`` line's value in a /proc file ("" where there is none, as off Linux)."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return ""


def speed_probe(repeats: int = 5) -> dict[str, float]:
    """Two fixed pieces of work timed on this machine when the result is written (about 30 ms, after
    the run, so it reads whatever else the machine was doing then): a Python loop and
    sha256 over 4 MiB, each the median of ``repeats``. Hosts that read the same CPU model can differ by a third
    in speed (the raw peer of hub_ingest did between sessions, 2026-12-03); these say how fast a run's machine was,
    and a loaded machine reads slower too."""
    data, loop, digest = b"\x5a" * (4 << 20), [], []
    for _ in range(repeats):
        t = time.perf_counter()
        total = 0
        for i in range(50_000):
            total += i & 7
        loop.append((time.perf_counter() - t) / 50_000 * 1e9)
        t = time.perf_counter()
        hashlib.sha256(data).digest()
        digest.append(len(data) / (time.perf_counter() - t) / 1e6)
    return {"python_loop_ns": round(statistics.median(loop), 2), "sha256_mb_s": round(statistics.median(digest), 1)}


def machine_facts() -> dict[str, Any]:
    """What the run's machine was: the platform string (with its kernel build), cores, CPU model and clock,
    memory, and the speed probe. None of these names a physical host: the kernel build changed between this
    project's sessions, when the raw peer's speed did too, so runs with different platform strings ran on
    different VM images (perhaps different hosts), and the probe says how fast each machine was at the time."""
    memory_kb = _proc_field("/proc/meminfo", "MemTotal").split(" ")[0]
    return {"platform": platform.platform(), "cores": os.cpu_count(),
            "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor(),
            "cpu_mhz": _proc_field("/proc/cpuinfo", "cpu MHz").split(".")[0],
            "memory_gib": round(int(memory_kb) / 2**20, 1) if memory_kb.isdigit() else None,
            "probe": speed_probe()}


def write_result(path: str | Path, summary_line: str, payload: dict[str, Any]) -> Path:
    """Write one run's result file and print its summary line (the script's last line). Returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **REVISION_AT_START,
        "command": " ".join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "machine": machine_facts(),
        "summary_line": summary_line,
        **payload,
    }
    out.write_text(json.dumps(record, indent=1))
    print(summary_line, flush=True)
    return out


def committed_results(pattern: str, exclude: str = "", root: Path = ROOT) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every version git has ever held of the result files matching ``pattern`` (a path glob under the repository,
    e.g. ``benchmarks/results/hub_ingest*.json``; ``exclude``: a path glob to leave out, such as a pool's own files), as
    ``(path, parsed JSON)``, each file's newest version first. Versions that do not parse (a deletion) are skipped.
    ``root``: the repository (this one unless a test names another)."""
    names = subprocess.run(["git", "log", "--format=", "--name-only", "--", pattern], capture_output=True, text=True,
                           cwd=root, check=True).stdout.split()
    for path in sorted({n for n in names if not (exclude and fnmatch.fnmatchcase(n, exclude))}):
        revs = subprocess.run(["git", "log", "--format=%H", "--", path], capture_output=True, text=True, cwd=root,
                              check=True).stdout.split()
        for rev in revs:
            shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, cwd=root)
            try:
                yield path, json.loads(shown.stdout)
            except ValueError:
                continue
