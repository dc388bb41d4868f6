"""The status thread: everything the agent tells the world happens here, never on the control thread.

Every ``every_s`` it writes ``status.json`` (atomically), prints the status line and logs the numbers to
W&B; in between it logs the safety layer's queued notices and the metrics other threads hand it with
:meth:`StatusReporter.log` (a queue put, no I/O). The status itself is read from the agent's counters,
so the control loop does no work for it at all.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from robot_agent.service import RUNNING, STOPPED, seconds_left
from robot_agent.status import status_line
from shared_policy.tracking import RunLogger

log = logging.getLogger(__name__)


def write_status_file(path: Path, status: dict[str, Any]) -> None:
    """Replace ``path`` with ``status`` as JSON, atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(status, indent=1))
    os.replace(tmp, path)


class StatusReporter:
    """Writes, prints and logs the agent's status from its own thread."""

    name = "status_reporter"

    def __init__(self, status: Callable[[], dict[str, Any]], path: Path, logger: RunLogger, every_s: float,
                 notices: Callable[[], None] | None = None, poll_s: float = 0.2):
        self.status, self.path, self.logger, self.every_s = status, Path(path), logger, every_s
        self.notices = notices  # e.g. the safety layer's queued warnings
        self.poll_s = min(poll_s, every_s)
        self.errors = 0
        self._metrics: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-reporter", daemon=True)
        self._last = float("-inf")

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Hand metrics to W&B from any thread (a queue put: no I/O on the caller's thread)."""
        self._metrics.put((metrics, step))

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def health(self) -> str:
        """``running`` or ``stopped``."""
        return RUNNING if self._thread.is_alive() else STOPPED

    def stop(self, deadline: float) -> None:
        """Stop the thread, write the final status from the caller, then close the logger by ``deadline``."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(seconds_left(deadline, floor=0.1))
        self._drain()
        self.write(final=True)
        closer = threading.Thread(target=self.logger.close, name="logger-close", daemon=True)
        closer.start()
        closer.join(seconds_left(deadline, floor=0.1))
        if closer.is_alive():
            log.error("the run logger did not close in time; its last records may be missing")

    def write(self, final: bool = False) -> dict[str, Any]:
        """Write, print and log the status now; returns it."""
        s = self.status()
        s["final"] = final
        write_status_file(self.path, s)
        print(status_line(s), flush=True)
        self.logger.log({k: float(v) for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
                        step=s["steps"])
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._drain()
                if self.notices is not None:
                    self.notices()
                now = time.monotonic()
                if now - self._last >= self.every_s:
                    self._last = now
                    self.write()
            except Exception:  # a reporter that died would leave the operator a stale status: log and go on
                self.errors += 1
                log.exception("status reporter: a report failed")

    def _drain(self) -> None:
        while True:
            try:
                metrics, step = self._metrics.get_nowait()
            except queue.Empty:
                return
            self.logger.log(metrics, step=step)

