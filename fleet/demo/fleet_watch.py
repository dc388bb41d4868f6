"""Reading the running fleet from its files, as an operator's tools do: the agents' status files, the hub's
registry and roll-out log, a part's log; and the progress lines made from them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet.demo.collect import read_status
from fleet.rollout_log import read_steps


def wait_for(cond: Callable[[], Any], timeout_s: float, tick: Callable[[], None], every_s: float = 0.5) -> Any:
    """Poll ``cond`` (calling ``tick`` between polls, e.g. the progress display) until it is truthy or
    ``timeout_s`` passes; its last result."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        tick()
        time.sleep(every_s)
    return cond()


def last_line(log: Path, prefix: str) -> str:
    """The last line of ``log`` that starts with ``prefix`` ('' if none yet)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line for line in reversed(lines) if line.startswith(prefix)), "")


def rollout_event(hub_dir: Path, events: tuple[str, ...], version: int) -> dict[str, Any] | None:
    """The first roll-out step of one of ``events`` for ``version``."""
    return next((s for s in read_steps(hub_dir) if s.get("event") in events and s.get("version") == version), None)


def registry_robots(hub_dir: Path) -> dict[str, Any]:
    """The robots of the hub's registry file ({} if there is none yet)."""
    try:
        return json.loads((hub_dir / "registry.json").read_text()).get("robots", {})
    except (OSError, ValueError):
        return {}


class FleetView:
    """The units' status files, read together."""

    def __init__(self, agents_dir: Path, robots: list[str]):
        self.agents_dir, self.robots = agents_dir, robots

    def statuses(self) -> dict[str, dict[str, Any]]:
        """robot -> its latest status ({} before the first)."""
        return {r: read_status(self.agents_dir / r / "state") for r in self.robots}

    def all(self, pred: Callable[[dict[str, Any]], bool]) -> bool:
        """Whether every unit's status satisfies ``pred``."""
        return all(s and pred(s) for s in self.statuses().values())

    def lines(self) -> list[str]:
        """The fleet's totals and one line per unit: episodes, return, versions, chunks acked."""
        sts = self.statuses()
        rate = sum(float(s.get("rate_hz", 0)) for s in sts.values() if s)
        acked = sum(int((s.get("uplink") or {}).get("acked", 0)) for s in sts.values() if s)
        out = [f"fleet: {rate:.0f} steps/s over {sum(1 for s in sts.values() if s)} units, "
               f"{acked} chunks acked (this run of each agent)"]
        for robot, s in sts.items():
            if not s:
                out.append(f"{robot}: starting")
                continue
            up = s.get("uplink") or {}
            ret = s.get("mean_return_last_20")
            out.append(f"{robot} {s.get('hardware')}: ep {s.get('episodes')} return "
                       f"{'-' if ret is None else f'{ret:.1f}'} | trunk v{s.get('trunk_version')} adapter "
                       f"v{s.get('adapter_version')} | hub {'up' if up.get('connected') else 'DOWN'}, "
                       f"{up.get('acked', 0)} acked, spool {s.get('spool_depth')}")
        return out
