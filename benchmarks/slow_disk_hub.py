"""``fleet-hub`` on a slow disk, for the fault benchmark only: the real Hydra app and hub, with every commit group of
its store held back as if the disk wrote ``SLOW_DISK_MBPS`` (environment, default 2) MB/s. Same arguments as
``fleet-hub``. The hub's socket loop, credit and writer are untouched: only the store's commit is slower.
"""

from __future__ import annotations

import os
import time
from typing import Any

import fleet.hub
from fleet.cli import hub_main
from fleet.store import ExperienceStore, StoreResult

MBPS = float(os.environ.get("SLOW_DISK_MBPS", "2"))


class SlowDiskStore(ExperienceStore):
    """An experience store whose commits take as long as ``MBPS`` allows (before the real commit and fsync)."""

    def put_many(self, records: list[bytes | memoryview],
                 vetted: list[dict[str, Any] | None] | None = None) -> list[StoreResult]:
        time.sleep(sum(map(len, records)) / (MBPS * 1e6))
        return super().put_many(records, vetted)


if __name__ == "__main__":
    fleet.hub.ExperienceStore = SlowDiskStore  # what HubServer constructs
    hub_main()
