"""Where recorded chunks go: the sink the control loop hands them to, and the thread that spools them.

The control loop calls :meth:`ExperienceSink.put` and never waits: :class:`SpoolWriter` queues the
chunk, and its own thread writes it to the spool (durably: the spool fsyncs every record) and then
offers it to the adapter learner. The hub uplink does not hang off this thread: it reads what the
spool holds and acknowledges it there, so a chunk reaches the hub only after it is on the robot's disk.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from robot_agent.service import RUNNING, STOPPED, seconds_left
from robot_agent.spool import Spool, SpoolFullError

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
_STOP = None


class ExperienceSink(Protocol):
    """Takes the control loop's chunks; ``put`` runs on the control thread, so it never blocks or touches a file."""

    def put(self, header: dict[str, Any], arrays: Arrays) -> None:
        """Accept one chunk (header: ids, versions, counts; arrays: the transitions)."""


class SpoolWriter:
    """The spool-writer thread: chunks in arrival order to the spool, then to ``after_write`` (the learner).

    A full spool or a write error (ENOSPC, EIO) costs the chunk, counted in :attr:`lost_chunks`, and the
    thread goes on. Anything else is a fault this thread does not understand: it logs it, counts the chunk
    in hand as lost, and ends; chunks queued behind it wait in memory until :meth:`restart` (the agent
    restarts a writer once) or the agent gives up.
    """

    name = "spool_writer"

    def __init__(self, spool: Spool, after_write: Callable[[Arrays], None] | None = None,
                 before_write: Callable[[Arrays], None] | None = None):
        self.spool = spool
        self.after_write = after_write
        self.before_write = before_write  # adds derived arrays (the robot's priorities); its failure costs only them
        self.before_write_errors = 0
        self.lost_chunks = 0
        self.failed_in_a_row = 0  # write errors since the last chunk that was stored: a disk that stays broken
        self.last_write_error = ""
        self.chunk_bytes = 0  # the largest record written so far: what the next episode's room is judged by
        self.error = ""  # why the thread died, if it did
        self.restarts = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread = self._new_thread()
        self._stopped = False
        self._died = False  # the current thread ended on an error

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._run, name="spool-writer", daemon=True)

    # -- control thread ----------------------------------------------------------------------------
    def put(self, header: dict[str, Any], arrays: Arrays) -> None:
        """Queue a chunk (never blocks)."""
        self._queue.put((header, arrays))

    # -- the agent, between episodes and at shutdown ---------------------------------------------
    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the thread is running."""
        return self._thread.is_alive()

    @property
    def backlog(self) -> int:
        """Chunks queued and not yet written (the one being written included)."""
        return self._queue.unfinished_tasks

    def health(self) -> str:
        """``running``, ``stopped`` (with the error it was restarted after, if any), or ``dead: <the error>``."""
        if not self.alive and self._died:
            return f"dead: {self.error}"
        state = RUNNING if self.alive else STOPPED
        return f"{state} (restarted after: {self.error})" if self.error else state

    def restart(self) -> None:
        """Start a fresh thread on the same queue after this one died (the agent does this once)."""
        if self.alive:
            return
        self.restarts += 1
        self._died = False
        self._thread = self._new_thread()
        self._thread.start()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued chunk is written; False if the thread is dead or ``timeout`` passes first."""
        end = time.monotonic() + timeout
        cond = self._queue.all_tasks_done
        with cond:
            while self._queue.unfinished_tasks:
                left = end - time.monotonic()
                if left <= 0 or not self.alive:
                    return False
                cond.wait(min(left, 0.1))  # wakes to notice a thread that died meanwhile
        return True

    def stop(self, deadline: float) -> None:
        """Write what is queued, by ``deadline``; what is left then is counted lost and logged."""
        if not self._stopped:
            self._stopped = True
            self._queue.put(_STOP)
        if self.alive:
            self._thread.join(seconds_left(deadline))
        left = sum(1 for item in list(self._queue.queue) if item is not _STOP)  # a chunk in hand is not counted
        if left:
            self.lost_chunks += left
            log.error("spool writer %s: %d chunks were not stored", "is stuck" if self.alive else "is dead", left)

    # -- the writer thread -------------------------------------------------------------------------
    def _run(self) -> None:
        # Not niced: this thread shares the control thread's GIL, and a low-priority GIL holder that gets
        # descheduled mid-encode stalls the control thread behind it (priority inversion). It only runs
        # while the control thread sleeps or waits, and fsync releases the GIL.
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._write(*item)
            except Exception as exc:  # a fault this thread does not know: end it, the agent decides
                self.lost_chunks += 1
                self.error = f"{type(exc).__name__}: {exc}"
                self._died = True
                log.exception("spool writer died on a chunk of episode %s", item[0].get("episode"))
                return
            finally:
                self._queue.task_done()

    def _write(self, header: dict[str, Any], arrays: Arrays) -> None:
        if self.before_write is not None:
            try:
                self.before_write(arrays)
            except Exception as exc:  # never lose a chunk over what is only added to it
                self.before_write_errors += 1
                if self.before_write_errors == 1:
                    log.exception("chunk of episode %s written without its derived arrays: %s", header.get("episode"), exc)
        try:
            before = self.spool.bytes
            self.spool.append(header, arrays)
            self.chunk_bytes = max(self.chunk_bytes, self.spool.bytes - before)
            self.failed_in_a_row = 0
        except SpoolFullError as exc:
            self.lost_chunks += 1
            log.error("%s: chunk of episode %s not stored", exc, header.get("episode"))
        except OSError as exc:
            self.lost_chunks += 1
            self.failed_in_a_row += 1
            self.last_write_error = str(exc)
            log.error("spool write failed: %s", exc)
        if self.after_write is not None:
            try:
                self.after_write(arrays)
            except Exception:  # the chunk is stored; only the learner misses it
                log.exception("spool writer: handing a chunk to the learner failed")
