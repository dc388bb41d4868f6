"""The uplink's send window: which spool chunks go next, which are in flight, and what the hub's credit allows.

Chunks go in spool order. A chunk is *in flight* from its send until the hub answers it; the bytes in flight
never exceed the credit (``fleet.protocol.credit_allows``, the rule the hub enforces) and the chunks in flight
never exceed ``max_in_flight``. An unanswered chunk is sent again after ``resend_s`` (the hub stores it once and
acks it as a duplicate). What the hub's answers do:

- ACK (stored or duplicate): the chunk is durable on the hub; it leaves the window, and the caller acks it in the
  spool (which deletes a segment once all of its chunks are acked).
- NACK ``NO_CREDIT``, ``STORAGE_FAILED``, ``SHUTTING_DOWN``, ``SCHEMA_UNSUPPORTED``: resend later; the chunk
  goes back to the front of the queue and waits ``retry_s``. (``SCHEMA_UNSUPPORTED``: a hub older than the
  robot's record format, fleet/record.py; it takes the chunk once it is upgraded, on this connection or the next.)
- NACK with any other reason: the hub will never take the chunk as it is. It is logged and counted and stays in
  the spool (never deleted silently: an operator can inspect it, or a fixed hub take it after the agent restarts),
  but it is not sent again by this process.
- A new connection: every chunk in flight goes back to the front of the queue and is sent again under the new
  connection's credit (the hub may have lost or already stored it: it dedupes by chunk id).

Only the uplink's thread uses a window.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass

from fleet.protocol import ErrorCode, credit_allows
from robot_agent.spool import ChunkRef, Spool, SpoolError

log = logging.getLogger(__name__)

RESEND_LATER = frozenset({ErrorCode.NO_CREDIT, ErrorCode.STORAGE_FAILED, ErrorCode.SHUTTING_DOWN,
                          ErrorCode.SCHEMA_UNSUPPORTED})
REFILL_EVERY_S = 0.05  # how often an empty queue asks the spool for new chunks


@dataclass
class Outgoing:
    """A chunk on its way: where it lies in the spool, its record bytes, and when it was last sent."""

    ref: ChunkRef
    data: bytes
    sent_at: float = 0.0
    resend: bool = False  # this send is a resend (counted in ``resent``, not ``sent``)


@dataclass
class WindowCounts:
    """What a window did since the agent started."""

    sent: int = 0  # first sends
    resent: int = 0  # sends again after ``resend_s`` without an answer
    acked: int = 0  # answered stored or duplicate
    nacked: int = 0  # answered NACK (resend-later ones included)
    gone: int = 0  # dropped from the spool (when_full=drop_oldest) before they were sent
    unreadable: int = 0  # failed their checks when read back from the spool
    too_large: int = 0  # larger than the hub takes in one frame: never sent (kept in the spool)


class SendWindow:
    """Spool order, in-flight chunks and byte credit of one robot's uplink (module docstring)."""

    def __init__(self, spool: Spool, max_in_flight: int, resend_s: float, retry_s: float):
        self.spool, self.max_in_flight, self.resend_s, self.retry_s = spool, max_in_flight, resend_s, retry_s
        self.older_hub = False  # warned once: the hub refused a record format it does not read yet
        self.credit = 0  # bytes, from WELCOME / CREDIT; 0 stops chunks
        self.in_flight: OrderedDict[str, Outgoing] = OrderedDict()  # by last send, oldest first
        self.in_flight_bytes = 0
        self._queue: deque[ChunkRef] = deque()  # spool order, not yet sent (or sent back)
        self._known: set[str] = set()  # ids in the queue or in flight: never queued twice
        self._hold: dict[str, float] = {}  # chunk id -> not before (resend-later nacks)
        self.refused: dict[str, str] = {}  # chunk id -> why the hub will never take it (kept in the spool)
        self.max_chunk_bytes = 0  # the largest record the hub takes (its frame limit, from WELCOME); 0: no limit
        self._too_large: dict[str, int] = {}  # refused chunks over that limit -> their size
        self._next_refill = 0.0
        self.counts = WindowCounts()

    @property
    def queued(self) -> int:
        """Chunks known to wait for a first send (the spool may hold more not yet listed)."""
        return len(self._queue)

    def _refill(self, now: float, force: bool = False) -> None:
        if self._queue or (now < self._next_refill and not force):
            return
        self._next_refill = now + REFILL_EVERY_S
        pending = self.spool.pending()
        for ref in pending:
            cid = ref.chunk_id
            if cid not in self._known and cid not in self.refused:
                self._queue.append(ref)
                self._known.add(cid)
        if self.refused:  # a refused chunk the spool dropped (when_full=drop_oldest) is forgotten here too
            on_disk = {ref.chunk_id for ref in pending}
            self.refused = {cid: why for cid, why in self.refused.items() if cid in on_disk}
            self._too_large = {cid: n for cid, n in self._too_large.items() if cid in on_disk}

    def next_chunk(self, now: float) -> Outgoing | None:
        """The chunk to send now, already counted in flight (``unsend`` it if it could not leave), or None:
        nothing waits, the window is full, the credit is used or the next chunk waits out a retry delay.
        A chunk unanswered for ``resend_s`` comes first (its bytes are already counted)."""
        if self.in_flight:
            oldest = next(iter(self.in_flight.values()))
            if now - oldest.sent_at >= self.resend_s:
                self.in_flight.move_to_end(oldest.ref.chunk_id)
                oldest.sent_at, oldest.resend = now, True
                self.counts.resent += 1
                return oldest
        if len(self.in_flight) >= self.max_in_flight:
            return None
        self._refill(now)
        while self._queue:
            ref = self._queue[0]
            cid = ref.chunk_id
            if cid not in self._known:  # acked while it waited
                self._queue.popleft()
                continue
            if self.max_chunk_bytes and ref.size > self.max_chunk_bytes:
                # the hub's socket would drop the connection for it, and it would lead every reconnect: the
                # uplink would stall behind it for good
                self._queue.popleft()
                self._known.discard(cid)
                self.counts.too_large += 1
                self._too_large[cid] = ref.size
                self.refused[cid] = f"{ref.size} bytes: over the hub's {self.max_chunk_bytes}-byte frame limit"
                log.error("uplink: chunk %s is %d bytes, over the hub's frame limit of %d: never sent (kept in the "
                          "spool; make chunks smaller with spool.chunk_steps)", cid, ref.size, self.max_chunk_bytes)
                continue
            if self._hold.get(cid, 0.0) > now or not credit_allows(self.in_flight_bytes, ref.size, self.credit):
                return None
            self._queue.popleft()
            self._hold.pop(cid, None)
            try:
                data = self.spool.read_record_bytes(ref)
            except SpoolError as exc:  # dropped to make room, or bad on disk: nothing to send
                self._known.discard(cid)
                if not ref.segment.exists():
                    self.counts.gone += 1
                    continue
                self.counts.unreadable += 1
                self.refused[cid] = f"unreadable in the spool: {exc}"
                log.error("uplink: chunk %s cannot be read from the spool: %s", cid, exc)
                continue
            out = Outgoing(ref, data, now)
            self.in_flight[cid] = out
            self.in_flight_bytes += ref.size
            self.counts.sent += 1
            return out
        return None

    def unsend(self, out: Outgoing) -> None:
        """``out`` did not leave (the socket's queue is full): it goes back to the front, uncounted."""
        if self.in_flight.pop(out.ref.chunk_id, None) is not None:
            self.in_flight_bytes -= out.ref.size
            if out.resend:
                self.counts.resent -= 1
            else:
                self.counts.sent -= 1
            self._queue.appendleft(out.ref)

    def _take_back(self, cid: str) -> ChunkRef | None:
        out = self.in_flight.pop(cid, None)
        if out is None:
            return None
        self.in_flight_bytes -= out.ref.size
        return out.ref

    def acked(self, chunk_ids: list[str]) -> list[str]:
        """The hub has these durably: they leave the window; returns those this window knew (to ack in the spool)."""
        done = [cid for cid in chunk_ids if cid in self._known]
        for cid in done:
            self._take_back(cid)
            self._known.discard(cid)
            self._hold.pop(cid, None)
        self.counts.acked += len(done)
        return done

    def nacked(self, chunk_id: str, reason: ErrorCode, now: float) -> bool:
        """The hub did not store ``chunk_id``. True if it is to be sent again later, False if never."""
        ref = self._take_back(chunk_id)
        if ref is None:
            return False  # an answer to a copy this window no longer has in flight
        self.counts.nacked += 1
        if reason in RESEND_LATER:
            if reason == ErrorCode.SCHEMA_UNSUPPORTED and not self.older_hub:
                self.older_hub = True
                log.warning("uplink: the hub does not read this robot's record format (%s); chunks stay spooled "
                            "and are sent again every %.1f s until the hub is upgraded", chunk_id, self.retry_s)
            self._queue.appendleft(ref)
            self._hold[chunk_id] = now + self.retry_s
            return True
        self._known.discard(chunk_id)
        self.refused[chunk_id] = str(reason)
        return False

    def hub_limit(self, max_chunk_bytes: int) -> None:
        """A hub's frame limit (at each WELCOME): chunks refused as over a smaller one are sent again if they fit."""
        self.max_chunk_bytes = max_chunk_bytes
        fit = [cid for cid, size in self._too_large.items() if size <= max_chunk_bytes]
        for cid in fit:
            del self._too_large[cid]
            self.refused.pop(cid, None)  # listed again at the next refill
        if fit:
            log.info("uplink: %d chunks refused as too large fit this hub's frame limit: sending them", len(fit))

    def requeue_in_flight(self) -> int:
        """A new connection: everything in flight goes back to the front, in spool order, to be sent again."""
        outs = sorted(self.in_flight.values(), key=lambda o: int(o.ref.header.get("seq", 0)))
        for out in reversed(outs):
            self._queue.appendleft(out.ref)
        self.in_flight.clear()
        self.in_flight_bytes = 0
        return len(outs)

    def empty(self, now: float) -> bool:
        """Nothing in flight and nothing left in the spool to send (asks the spool now, whenever it last did)."""
        self._refill(now, force=True)
        return not self.in_flight and not any(r.chunk_id in self._known for r in self._queue)
