"""The demo's child processes: each part is a separate process in its own process group (session), its
stdout and stderr in ``<run>/logs/<name>.log``; started, signalled, reaped, and at the end checked: no pid and
no process group the demo started may be left. A straggler is SIGKILLed with its whole group and reported."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


class PartFailed(RuntimeError):
    """A part exited with an error (its log's tail is in the message)."""


@dataclass
class Child:
    """One started process: its name, Popen and log file."""

    name: str
    popen: subprocess.Popen
    log: Path
    offset: int = 0  # where this process's output begins in the log (a restarted part appends to its log)
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        """Its pid (also its process group id: it leads its own session)."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether it still runs (reaps it if it ended)."""
        return self.popen.poll() is None

    def output(self) -> str:
        """What this process has written to its log so far."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self.offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def log_tail(path: Path, chars: int = 2000) -> str:
    """The last ``chars`` characters of a log file ('' if there is none)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def group_members(pgid: int) -> list[int]:
    """Pids of live (not zombie) processes in process group ``pgid``, read from /proc."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


MARK = "FLEET_DEMO_PARTS"  # environment variable every part inherits (ProcessGroups.mark)


def marked_processes(mark: str) -> list[int]:
    """Pids of live processes whose environment holds exactly the variable ``mark`` (``NAME=value``, the whole
    entry: a mark that is a prefix of another, ``...:123`` of ``...:1234``, is not it), read from /proc; this
    process is never one of them."""
    needle, out = mark.encode(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
            state = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if needle in environ.split(b"\0") and state[state.rindex(")") + 2] != "Z":
            out.append(int(entry.name))
    return out


class ProcessGroups:
    """Starts the demo's parts and keeps every one it started, for signals and the final leftover check."""

    def __init__(self, log_dir: Path, env: dict[str, str], cwd: Path):
        # every part and whatever it starts inherits this mark, even helpers that leave the part's process group
        # for a session of their own (W&B's wandb-core): the leftover check finds them by it
        self.mark = f"{MARK}={Path(log_dir).resolve()}:{os.getpid()}"
        self.log_dir, self.env, self.cwd = Path(log_dir), {**env, MARK: self.mark.split("=", 1)[1]}, Path(cwd)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.children: list[Child] = []

    def start(self, name: str, args: list[str]) -> Child:
        """Start ``args`` as part ``name`` in a new session; output appended to ``logs/<name>.log``."""
        log = self.log_dir / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            out.write(f"$ {' '.join(args)}\n".encode())
            out.flush()
            popen = subprocess.Popen(args, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        child = Child(name, popen, log, offset)
        self.children.append(child)
        return child

    def run(self, name: str, args: list[str], timeout_s: float, ok: tuple[int, ...] = (0,)) -> int:
        """Run a one-shot part to its end; PartFailed (with its log's tail) on an exit code not in ``ok`` or
        on running past ``timeout_s`` (then its group is killed)."""
        child = self.start(name, args)
        try:
            code = child.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill(child)
            raise PartFailed(f"{name} ran past {timeout_s:.0f} s and was killed; log {child.log}:\n"
                             f"{log_tail(child.log)}") from None
        if code not in ok:
            raise PartFailed(f"{name} exited {code}; log {child.log}:\n{log_tail(child.log)}")
        return code

    def kill(self, child: Child) -> None:
        """SIGKILL ``child`` and everything in its process group; reap it."""
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.popen.wait(30)

    def terminate(self, child: Child, timeout_s: float, send: bool = True) -> bool:
        """SIGTERM ``child`` (only it: it stops its own helpers; ``send=False``: it was signalled already) and
        wait; past ``timeout_s`` kill its group. True when it exited on its own."""
        if send and child.alive():
            try:
                child.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            child.popen.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            self.kill(child)
            return False

    def leftovers(self, grace_s: float = 0.0) -> list[str]:
        """Every started pid still alive and every started process group with a member left after ``grace_s``
        (helpers such as W&B's service exit just after their parent): each one is SIGKILLed (group and all) and
        described; [] when nothing is left."""
        end = time.monotonic() + grace_s
        while time.monotonic() < end and any(c.alive() or group_members(c.pid) for c in self.children):
            time.sleep(0.2)
        while time.monotonic() < end and marked_processes(self.mark):
            time.sleep(0.2)
        found, handled = [], set()
        for child in self.children:
            if child.alive():
                found.append(f"{child.name} (pid {child.pid}) still running")
            members = group_members(child.pid)
            handled.update(members)
            if members:
                found.append(f"{child.name}: process group {child.pid} still holds pids {members}")
            if child.alive() or members:
                self.kill(child)
        for pid in set(marked_processes(self.mark)) - handled:  # left its part's group (own session), outlived it
            found.append(f"pid {pid} started by a part (outside its process group) still running")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return found

    def stop_all(self, timeout_s: float) -> list[str]:
        """SIGTERM every part still running (newest first), then the leftover check; what had to be killed."""
        forced = [f"{c.name} (pid {c.pid}) ignored SIGTERM for {timeout_s:.0f} s: killed"
                  for c in reversed(self.children) if c.alive() and not self.terminate(c, timeout_s)]
        return forced + self.leftovers(grace_s=10.0)
