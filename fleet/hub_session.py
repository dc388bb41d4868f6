"""One robot's state on the hub: its current connection, its byte credit and the chunks it has in the store's
queue, and the heartbeat clock it echoes.

A session outlives its connection: a robot that reconnects (a new DEALER, so a new routing id) gets the same
session, so acks of chunks it sent on the old connection reach it on the new one, and a chunk resent while its
first copy is still queued is not queued twice.
"""

from __future__ import annotations

import time

from fleet.protocol import Heartbeat, credit_allows


def now_us() -> int:
    """The hub's monotonic clock in microseconds (what heartbeats carry)."""
    return time.monotonic_ns() // 1000


class RobotSession:
    """Per-robot connection, credit, in-flight chunks and heartbeat echo state (the hub loop's thread only)."""

    def __init__(self, robot_id: str):
        self.robot_id = robot_id
        self.routing_id: bytes | None = None  # the live connection; None: disconnected, dead or cut
        self.credit = 0  # the window last granted
        self.highest_credit = 0  # the most granted on this connection: what the hub enforces
        self.in_flight: dict[str, int] = {}  # chunk id -> bytes, queued to the store and not yet acked
        self.in_flight_bytes = 0
        self.peak_in_flight_bytes = 0  # the most it ever had queued: what its memory bound is checked by
        self.seq = 0  # the hub's message counter to this robot
        self.last_heard = 0.0  # monotonic seconds of its last message
        self.peer_t_us = 0  # t_us of its last heartbeat (echoed back), 0: none yet
        self.peer_t_at_us = 0  # when that heartbeat arrived, on the hub's clock

    @property
    def connected(self) -> bool:
        """Whether the robot has a live, welcomed connection."""
        return self.routing_id is not None

    def connect(self, routing_id: bytes, credit: int, now: float) -> None:
        """A HELLO on ``routing_id``: the connection to answer on, and the credit its WELCOME grants."""
        self.routing_id, self.credit, self.highest_credit = routing_id, credit, credit
        self.last_heard = now
        self.peer_t_us = self.peer_t_at_us = 0

    def grant(self, credit: int) -> None:
        """A new window for the robot (WELCOME or CREDIT): chunks it sent under a higher one are still taken."""
        self.credit = credit
        self.highest_credit = max(self.highest_credit, credit)

    def disconnect(self) -> None:
        """The connection is gone (dead, cut, taken over): nothing more is sent to it."""
        self.routing_id = None

    def next_seq(self) -> int:
        """The seq of the hub's next message to this robot."""
        self.seq += 1
        return self.seq

    # -- credit ----------------------------------------------------------------------------------------------
    def may_take(self, size: int) -> bool:
        """Whether a chunk of ``size`` bytes fits the highest credit granted (the rule robots apply too)."""
        return credit_allows(self.in_flight_bytes, size, self.highest_credit)

    def take(self, chunk_id: str, size: int) -> None:
        """``chunk_id`` is queued to the store: its bytes count against the credit until it is answered."""
        self.in_flight[chunk_id] = size
        self.in_flight_bytes += size
        self.peak_in_flight_bytes = max(self.peak_in_flight_bytes, self.in_flight_bytes)

    def release(self, chunk_id: str) -> int:
        """``chunk_id``'s commit is over (acked or nacked): its bytes are free; how many (0: it was not in flight)."""
        size = self.in_flight.pop(chunk_id, 0)
        self.in_flight_bytes -= size
        return size

    # -- heartbeats ------------------------------------------------------------------------------------------
    def heard_heartbeat(self, msg: Heartbeat, at_us: int) -> float | None:
        """Keep the robot's clock to echo; the RTT in seconds its echo of the hub's clock gives (None: none)."""
        self.peer_t_us, self.peer_t_at_us = msg.t_us, at_us
        if not msg.echo_us:
            return None
        rtt_us = at_us - msg.echo_us - msg.echo_delay_us
        return rtt_us / 1e6 if rtt_us >= 0 else None

    def echo(self, at_us: int) -> tuple[int, int]:
        """(echo_us, echo_delay_us) for the hub's next heartbeat to this robot."""
        if not self.peer_t_us:
            return 0, 0
        return self.peer_t_us, max(0, at_us - self.peer_t_at_us)
