"""The hub's byte credit: one budget for all robots, shared among those connected, sized to what the store commits.

Per-robot credit alone bounds the hub's queue of chunks by credit x robots: 128 robots x 8 MiB is 1 GiB, and a
queue that long outgrows the robots' resend timeout, so they resend what waits and swamp the hub (BENCHMARKS.md,
"Fleet hub"). So the hub keeps one budget, ``credit_total_bytes``, and shares it: each connected robot's credit is
its share, at most ``credit_bytes``, re-announced (CREDIT) as robots come and go. While the store commits slowly the
shares shrink further, to what it commits in ``credit_queue_s`` of measured commit time: a slow disk shortens the
queue, so acks keep coming well within the robots' resend timeout.

Robots follow a lowered credit within a round trip, and chunks they sent under the old one are still taken
(docs/protocol.md); only a chunk that would take the queue past ``credit_total_bytes`` itself is refused
NO_CREDIT, unless its robot has nothing queued (every robot may move one chunk, so none starves). So the queue
holds at most ``credit_total_bytes`` plus one chunk per robot with nothing else queued, whatever robots do.
"""

from __future__ import annotations

from collections.abc import Iterable

from fleet.config import HubConfig
from fleet.hub_session import RobotSession

MIN_BUDGET_BYTES = 1 << 20  # the budget a slow store shrinks to at the least
RESHARE_FACTOR = 1.25  # a share is re-announced when it is off by more than this factor (not at every HELLO)


class CreditBudget:
    """The hub-wide credit (module docstring). The hub loop's thread only."""

    def __init__(self, cfg: HubConfig):
        self.per_robot, self.total_max, self.queue_s = cfg.credit_bytes, cfg.credit_total_bytes, cfg.credit_queue_s
        self.total = self.total_max  # the budget the shares are cut from now (<= total_max: the hard bound)
        self.queued_bytes = 0  # chunk bytes of all robots queued to the store
        self.peak_queued_bytes = 0
        self._seen = (0, 0.0)  # the store's (bytes committed, seconds committing) at the last measure
        self.rate: float | None = None  # bytes the store commits per second of committing (None: not measured)

    def share(self, robots: int) -> int:
        """Each of ``robots`` connected robots' credit."""
        return max(1, min(self.per_robot, self.total // max(1, robots)))

    def refusal(self, session: RobotSession, size: int) -> str | None:
        """Why a chunk of ``size`` bytes from ``session`` may not be queued (None: it may): the robot's own credit
        (the highest granted on its connection), then the hub-wide budget."""
        if not session.may_take(size):
            return f"{session.in_flight_bytes} bytes in flight + {size} exceed the credit of {session.highest_credit}"
        if session.in_flight_bytes and self.queued_bytes + size > self.total_max:
            return f"the hub's queue holds {self.queued_bytes} bytes: + {size} exceed its budget of {self.total_max}"
        return None

    def take(self, size: int) -> None:
        """A chunk of ``size`` bytes is queued to the store."""
        self.queued_bytes += size
        self.peak_queued_bytes = max(self.peak_queued_bytes, self.queued_bytes)

    def release(self, size: int) -> None:
        """A queued chunk's commit is over."""
        self.queued_bytes -= size

    def measure(self, committed_bytes: int, commit_seconds: float) -> None:
        """Size the budget to the store's commit rate since the last call (the group writer's running totals):
        at most what it commits in ``queue_s``. Unchanged while too little was committed to tell."""
        bytes0, seconds0 = self._seen
        db, ds = committed_bytes - bytes0, commit_seconds - seconds0
        if not self.queue_s or ds < 0.05 or db < MIN_BUDGET_BYTES:
            return
        self._seen = (committed_bytes, commit_seconds)
        self.rate = db / ds if self.rate is None else (self.rate + db / ds) / 2  # smoothed: one slow group is noise
        self.total = int(min(self.total_max, max(MIN_BUDGET_BYTES, self.rate * self.queue_s)))

    def reshare(self, sessions: Iterable[RobotSession], lower_only: bool) -> list[tuple[RobotSession, int]]:
        """The connected robots whose credit is off their share by more than RESHARE_FACTOR (``lower_only``: only
        those above it), each with its new share, already granted: the caller sends each a CREDIT."""
        connected = [s for s in sessions if s.connected]
        share = self.share(len(connected))
        moved = []
        for s in connected:
            if s.credit > share * RESHARE_FACTOR or (not lower_only and s.credit * RESHARE_FACTOR < share):
                s.grant(share)
                moved.append((s, share))
        return moved
