"""Whether a pid names a live process: how `fleet-hub status` and `robot-agent status` tell a stopped
daemon from one that was killed without writing its final status."""

from __future__ import annotations

import os


def process_exists(pid: int) -> bool:
    """True when a process with this pid exists (even another user's); False for pid <= 0."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
