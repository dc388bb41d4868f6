"""A stand-in unit's physics in its own process, linked to the driver through shared memory.

A real robot's hardware runs beside its computer, not inside the agent's Python process. A stand-in
whose physics runs in a thread of the agent shares the agent's interpreter lock, so at 500 Hz it
steals exactly the time a control loop cannot spare. :class:`UnitProcess` moves the unit's physics
clock into a child process; the agent and the unit exchange only the latest reading and the latest
command, each in a double-buffered, sequence-checked slot of one shared-memory block: a reader
never waits for the writer (a writer descheduled mid-copy leaves the previous value readable) and
never sees a half-written value.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable
from dataclasses import fields
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from hardware.state import RobotState

# int64 header: three words per slot (two buffer sequence numbers, the latest write), then counters
_READ, _CMD = 0, 3
_HOME_REQ, _HOME_DONE, _STOP, _PERIODS, _FAULTS = range(6, 11)
_HEADER = 16
StateLayout = list[tuple[str, tuple[int, ...]]]


def state_layout(state: RobotState) -> StateLayout:
    """The fields a unit reports and their shapes, in a fixed order."""
    return [(f.name, getattr(state, f.name).shape) for f in fields(RobotState) if getattr(state, f.name) is not None]


class _Slot:
    """One value, double-buffered: write k goes to buffer k % 2, whose sequence word reads 2k-1 during
    the copy and 2k after it; then ``latest`` becomes k. A reader copies buffer ``latest % 2`` and keeps
    the copy if that buffer's word still says 2k. It never waits on the (single) writer: a write in
    progress is always to the other buffer, unless the writer lapped the reader, and then it retries."""

    def __init__(self, header: np.ndarray, base: int, data: np.ndarray):
        self.header, self.base = header, base
        self.buffers = (data[0], data[1])

    @property
    def writes(self) -> int:
        """How many values have been written."""
        return int(self.header[self.base + 2])

    def write(self, values: np.ndarray) -> None:
        """Store the next value (one writer at a time)."""
        h, b = self.header, self.base
        k = int(h[b + 2]) + 1
        i = k % 2
        h[b + i] = 2 * k - 1
        self.buffers[i][:] = values
        h[b + i] = 2 * k
        h[b + 2] = k

    def read(self) -> tuple[np.ndarray, int]:
        """A consistent copy of the latest value and its write number (0: nothing written yet)."""
        h, b = self.header, self.base
        while True:
            k = int(h[b + 2])
            i = k % 2
            if int(h[b + i]) != 2 * k:  # lapped between reading ``latest`` and its buffer: look again
                continue
            out = self.buffers[i].copy()
            if int(h[b + i]) == 2 * k:
                return out, k


class SharedUnitBlock:
    """The shared memory of one unit: header counters, the reading slot and the command slot."""

    def __init__(self, layout: StateLayout, num_actions: int, name: str | None = None):
        self.layout = layout
        self.num_actions = num_actions
        # (field, where in the reading, shape), worked out once: a read is on the control loop's path
        self._fields: list[tuple[str, slice, tuple[int, ...]]] = []
        start = 1
        for n, shape in layout:
            size = int(np.prod(shape))
            self._fields.append((n, slice(start, start + size), shape))
            start += size
        self.state_size = start - 1
        # reading: stamp + state; command: damping flag + command; two buffers each
        reading, command = 1 + self.state_size, 1 + num_actions
        floats = 2 * (reading + command)
        size = 8 * (_HEADER + floats)
        self.shm = SharedMemory(name=name, create=name is None, size=size)
        self.owner = name is None
        self.header = np.ndarray((_HEADER,), dtype=np.int64, buffer=self.shm.buf)
        body = np.ndarray((floats,), dtype=np.float64, buffer=self.shm.buf, offset=8 * _HEADER)
        if self.owner:
            self.header[:] = 0
            body[:] = 0.0
        self.reading = _Slot(self.header, _READ, body[:2 * reading].reshape(2, reading))
        self.command = _Slot(self.header, _CMD, body[2 * reading:].reshape(2, command))

    @property
    def name(self) -> str:
        """The shared-memory name a child attaches to."""
        return self.shm.name

    def publish(self, stamp: float, state: RobotState) -> None:
        """Write a reading (batch of one)."""
        flat = [np.array([stamp])] + [getattr(state, n).reshape(-1) for n, _ in self.layout]
        self.reading.write(np.concatenate(flat))

    def latest(self) -> tuple[float, RobotState]:
        """The last reading written."""
        flat, _ = self.reading.read()
        return float(flat[0]), RobotState(**{n: flat[where].reshape(shape) for n, where, shape in self._fields})

    def close(self) -> None:
        """Detach; the creator also frees the block."""
        del self.reading, self.command, self.header
        self.shm.close()
        if self.owner:
            self.shm.unlink()


class UnitProcess:
    """The parent's handle on a unit whose physics clock runs in a spawned child process."""

    def __init__(self, child_main: Callable[..., None], child_args: tuple[Any, ...], layout: StateLayout,
                 num_actions: int, start_timeout: float = 60.0):
        self.block = SharedUnitBlock(layout, num_actions)
        self._write_lock = threading.Lock()  # the control thread and the watchdog both command: one writer at a time
        ctx = mp.get_context("spawn")  # never fork a process that may hold torch or threads
        parent_end, child_end = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=child_main, args=(*child_args, self.block.name, layout, num_actions, child_end),
                                name="standin-unit", daemon=True)
        self.proc.start()
        child_end.close()
        if not parent_end.poll(start_timeout):
            self.stop()
            raise RuntimeError(f"the stand-in unit process did not start within {start_timeout:.0f} s")
        try:
            msg = parent_end.recv()
        except EOFError:
            msg = f"it exited with code {self.proc.exitcode} before it was ready"
        if msg != "ready":
            self.stop()
            raise RuntimeError(f"the stand-in unit process failed to start: {msg}")

    def command(self, command: np.ndarray, damping: bool) -> None:
        """Hand the unit its next command (or damping mode)."""
        values = np.concatenate([[1.0 if damping else 0.0], command])
        with self._write_lock:
            self.block.command.write(values)

    @property
    def damping(self) -> bool:
        """Whether the last thing commanded was damping."""
        return bool(self.block.command.read()[0][0] > 0.5)

    def home(self, timeout: float = 5.0) -> None:
        """Ask the unit to home and wait until it has."""
        with self._write_lock:
            self.block.header[_HOME_REQ] += 1
        want = int(self.block.header[_HOME_REQ])
        deadline = time.monotonic() + timeout
        while int(self.block.header[_HOME_DONE]) < want:
            if not self.proc.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the stand-in unit process did not home (it died or hangs)")
            time.sleep(0.0005)

    def counter(self, which: str) -> int:
        """``periods`` or ``faults`` as the child counts them."""
        return int(self.block.header[{"periods": _PERIODS, "faults": _FAULTS}[which]])

    def stop(self) -> None:
        """Stop the child's clock and free the shared memory (idempotent)."""
        if self.proc is None:
            return
        self.block.header[_STOP] = 1
        self.proc.join(timeout=5.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5.0)
        self.proc = None
        self.block.close()


def serve_unit(unit: Any, block_name: str, layout: StateLayout, num_actions: int, conn: Any) -> None:
    """The child's loop: advance ``unit`` one control period per tick of the wall clock, exchanging
    commands and readings through the shared block; exit when told to or when the parent is gone."""
    block = SharedUnitBlock(layout, num_actions, name=block_name)
    parent = os.getppid()
    try:
        unit.home()
        block.publish(unit.read_state().stamp, unit.read_state().state)
        conn.send("ready")
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    homes_done = 0
    cmd_seq = 0

    def published() -> None:
        ts = unit.read_state()
        block.publish(ts.stamp, ts.state)
        block.header[_PERIODS] = unit.periods
        block.header[_FAULTS] = unit.faults

    def exchange() -> bool:
        nonlocal homes_done, cmd_seq
        h = block.header
        if h[_STOP] or os.getppid() != parent:
            return False
        if int(h[_HOME_REQ]) > homes_done:
            homes_done = int(h[_HOME_REQ])
            unit.home()
            published()  # the home pose is readable before home() returns to the agent
            h[_HOME_DONE] = homes_done
        if block.command.writes != cmd_seq:
            cmd, cmd_seq = block.command.read()
            unit.apply(cmd[1:], damping=bool(cmd[0] > 0.5))
        return True

    try:
        unit.run_clock(exchange, published)
    finally:
        block.close()
