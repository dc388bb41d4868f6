"""What the agent runs beside its control loop, and how it starts, watches and stops each part.

Every part that runs on its own (the spool writer, the status reporter, the trunk watcher, the adapter
trainer process, and the hub uplink of the fleet layer) is a :class:`Service`: it starts once, says
whether it is healthy, and stops by a deadline whatever state it is in, so that a dead or wedged part
never holds up the agent's shutdown.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

RUNNING, STOPPED = "running", "stopped"


@runtime_checkable
class Service(Protocol):
    """A part that runs beside the control loop in its own thread or process."""

    name: str

    def start(self) -> None:
        """Start it (once)."""

    def health(self) -> str:
        """``running``, ``stopped``, or what went wrong (``dead: ...``); read by the status reporter."""

    def stop(self, deadline: float) -> None:
        """Stop it by ``deadline`` (``time.monotonic()`` seconds), ending it by force if it does not."""


def seconds_left(deadline: float, floor: float = 0.0) -> float:
    """Seconds until ``deadline``, at least ``floor``."""
    return max(floor, deadline - time.monotonic())
