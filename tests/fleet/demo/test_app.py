"""fleet-demo's own process: once it holds the stop signals (shutdown, collect, report) a SIGTERM does not stop
it, and the parts it starts from then on (the report, its W&B service) still stop at SIGTERM and SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
# the demo's process once it holds the stop signals: signalled itself, then it starts a part that reports which
# signals it ignores (the SigIgn mask of /proc/<pid>/status)
HOLDING_DEMO = """
import os, signal, sys, time
from pathlib import Path
from fleet.demo.app import hold_stop_signals
from fleet.demo.processes import ProcessGroups

hold_stop_signals()
os.kill(os.getpid(), signal.SIGTERM)
os.kill(os.getpid(), signal.SIGINT)
procs = ProcessGroups(Path(sys.argv[1]), dict(os.environ), Path(sys.argv[1]))
part = procs.start("report", [sys.executable, "-c", "print(open('/proc/self/status').read())"])
part.popen.wait(60)
print([line for line in part.output().splitlines() if line.startswith("SigIgn:")][0])
"""


@pytest.mark.timeout(120)
def test_a_part_started_while_the_demo_holds_its_stop_signals_still_stops_at_sigterm_and_sigint(tmp_path):
    res = subprocess.run([sys.executable, "-c", HOLDING_DEMO, str(tmp_path)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=100)
    assert res.returncode == 0, res.stdout + res.stderr  # the demo itself went on past both signals
    ignored = int(res.stdout.split()[-1], 16)
    for sig in (signal.SIGTERM, signal.SIGINT):
        assert not ignored & (1 << (sig - 1)), f"the part ignores {sig.name} (SigIgn {ignored:#x})"
