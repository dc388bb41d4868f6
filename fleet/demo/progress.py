"""What a person watching ``fleet-demo`` sees: the phase, how far along, and a few live numbers (steps/s,
returns, chunks acked, trunk versions), redrawn in place on a terminal; elsewhere (CI, a test, a pipe) one
compact line every few seconds. Raw logs go to files, never here."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

BAR = 24


def bar(fraction: float) -> str:
    """A text progress bar with its percentage."""
    f = min(max(fraction, 0.0), 1.0)
    full = int(round(f * BAR))
    return f"[{'#' * full}{'-' * (BAR - full)}] {100 * f:3.0f}%"


class Progress:
    """The demo's terminal display (module docstring)."""

    def __init__(self, stream: TextIO | None = None, every_s: float = 5.0, tty: bool | None = None,
                 log: Path | None = None):
        self.stream = stream or sys.stdout
        self.log = log  # permanent lines are also appended here (<run>/demo.log), with the time
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s
        self.name, self.index, self.total = "", 0, 0
        self.t_phase = time.monotonic()
        self._drawn = 0  # lines of the live block on screen (terminal only)
        self._last_line = float("-inf")

    def _write(self, text: str, permanent: bool = True) -> None:
        self.stream.write(text)
        self.stream.flush()
        if permanent and self.log is not None:
            with open(self.log, "a", encoding="utf-8") as f:
                f.write(time.strftime("%H:%M:%S ") + text)

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self._write(f"\x1b[{self._drawn}F\x1b[J", permanent=False)  # up to the block's first line, erase to the end
        self._drawn = 0

    def phase(self, index: int, total: int, name: str) -> None:
        """A new phase begins (a permanent line)."""
        self._clear()
        self.name, self.index, self.total, self.t_phase = name, index, total, time.monotonic()
        self._last_line = float("-inf")
        self._write(f"[demo] phase {index}/{total}: {name}\n")

    def note(self, message: str) -> None:
        """A permanent line (an event: a fault, a verdict, a version)."""
        self._clear()
        self._write(f"[demo]   {message}\n")

    def update(self, fraction: float, lines: list[str]) -> None:
        """The live numbers: a block redrawn in place, or one line every ``every_s`` off a terminal."""
        elapsed = time.monotonic() - self.t_phase
        head = f"{self.name} {bar(fraction)} {elapsed:5.0f} s"
        if self.tty:
            self._clear()
            block = [head, *[f"  {line}" for line in lines]]
            self._write("\n".join(block) + "\n", permanent=False)
            self._drawn = len(block)
        elif time.monotonic() - self._last_line >= self.every_s:
            self._last_line = time.monotonic()
            self._write(f"[demo]   {head} | {' | '.join(lines)}\n")

    def done(self, summary: str = "") -> float:
        """End the phase with a permanent line; returns its duration in seconds."""
        seconds = time.monotonic() - self.t_phase
        self._clear()
        self._write(f"[demo]   {self.name} done in {seconds:.0f} s{': ' + summary if summary else ''}\n")
        return seconds
