"""The load of the ingest benchmark: many robot links in one process, and the raw ROUTER they are compared with.

``run_clients`` runs in a client process: one DEALER per robot (``fleet.sockets.robot_socket``, the robots' own
socket options and CURVE keys), all served by one thread around one ``zmq.Poller``. Against the hub each link
speaks the protocol as a robot must: HELLO, wait for WELCOME and its credit, chunks only within the credit
(``credit_allows``) and at most ``window_chunks`` / ``window_bytes`` unanswered, a resend of what is unanswered after ``resend_s``,
NO_CREDIT / STORAGE_FAILED / SHUTTING_DOWN nacks retried after ``retry_s``, heartbeats at the hub's interval.
Against the raw ROUTER (``raw_router``: receive, reply the header frame as the ack, store nothing) the links send
the very same frames under the same window, so the two runs differ only in what the peer does with a chunk.

Every chunk is a fresh, valid record (``RecordMaker``: its own header and digest over a fixed payload), made when
it is about to go, in both runs alike. Ack latency is measured here, at the client: first send -> ack received.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import zmq
from hub_processes import RecordMaker

from fleet.config import SecurityConfig, SocketConfig, UplinkConfig
from fleet.keys import load_secret
from fleet.protocol import (
    DOWNLINK,
    Ack,
    Chunk,
    Credit,
    Error,
    Heartbeat,
    Hello,
    Limits,
    Nack,
    Welcome,
    credit_allows,
    decode,
)
from fleet.sockets import recv_frames, robot_socket, send_frames
from robot_agent.config import AgentUplinkConfig
from robot_agent.uplink_window import RESEND_LATER

MAX_FRAME = 16 * 1024 * 1024
PING = b"ping"


@dataclass
class ClientSpec:
    """What one client process runs: its robots, the peer, the chunk size and the pace."""

    mode: str  # "hub" (fleet-hub, the protocol) or "raw" (raw_router: same frames, echo ack)
    endpoint: str
    robots: list[tuple[str, str | None]]  # (robot id, its key files' dir; None = plain text)
    size: int | None  # record bytes; None = a go2_like chunk of ``steps`` transitions
    seconds: float
    interval_s: float = 0.0  # 0 = as fast as the window allows; else one chunk per robot per interval
    steps: int = 250
    # Each robot's window, as the agent's uplink keeps it: at most max_in_flight chunks unanswered, within the
    # credit (the hub's WELCOME; the raw peer grants ``raw_credit``). window_bytes > 0 narrows it further.
    window_chunks: int = AgentUplinkConfig().max_in_flight
    window_bytes: int = 0
    raw_credit: int = 8 * 1024 * 1024
    max_ramp_s: float = 120.0  # steady state must be reached within this
    resend_s: float = 10.0
    retry_s: float = 0.5
    drain_s: float = 30.0
    seed: int = 0
    cpus: list[int] | None = None  # run on these cores only (hub_ingest --placement split)


@dataclass
class Stats:
    """What one client process saw."""

    window_chunks: int = 0  # acked within the measured window [start, end] (set once steady)
    window_bytes: int = 0
    window: list[float] = field(default_factory=lambda: [float("inf"), float("inf")])
    ramp_s: float = 0.0  # from the first send until the first window of every link was acked
    acked_bytes: int = 0
    acked: int = 0
    duplicate_acks: int = 0
    sent: int = 0
    resent: int = 0
    unanswered: int = 0  # still in flight when the drain ended
    nacks: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # paced runs: first send of each latency sample
    record_bytes: int = 0


class Link:
    """One robot's DEALER and its window."""

    def __init__(self, ctx: zmq.Context, spec: ClientSpec, robot_id: str, keys: str | None, seed: int):
        security = SecurityConfig(keys_dir=keys) if keys else SecurityConfig(mode="plaintext", keys_dir="")
        self.sock = robot_socket(ctx, UplinkConfig(endpoint=spec.endpoint, security=security,
                                                   max_frame_bytes=MAX_FRAME, socket=SocketConfig()))
        self.spec, self.robot_id, self.hub = spec, robot_id, spec.mode == "hub"
        self.maker = RecordMaker(robot_id, spec.size, seed, spec.steps)
        self.credit = 0 if self.hub else spec.raw_credit
        self.in_flight: dict[Any, list] = {}  # key -> [size, first sent, last sent, frames]
        self.in_flight_bytes = 0
        self.retry: deque[tuple[float, Any, list]] = deque()
        self.out: tuple[Any, list] | None = None  # the next new chunk, made but not sent yet
        self.due = 0.0  # interval mode: when the next chunk is due
        self.owed = 0  # interval mode: chunks due and not yet sent
        self.seq = 0
        self.beat_s = 1.0
        self.next_beat = 0.0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _make(self, now: float) -> tuple[Any, list]:
        cid, record = self.maker.next()
        frames = Chunk.of(self.robot_id, self.next_seq(), cid, record).encode()
        key = cid if self.hub else frames[0]
        return key, [len(record), now, now, frames]

    def _send(self, frames: list) -> bool:
        try:
            self.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        return True

    @property
    def allowed(self) -> int:
        """Bytes this link may have unanswered: the peer's credit, narrowed by the benchmark's window."""
        return min(self.credit, self.spec.window_bytes) if self.spec.window_bytes else self.credit

    def pump(self, now: float, sending: bool, stats: Stats) -> int:
        """Send what the window allows; how many messages went."""
        went = 0
        if self.hub and now >= self.next_beat:
            self._send(Heartbeat(robot_id=self.robot_id, seq=self.next_seq(), t_us=time.monotonic_ns() // 1000,
                                 echo_us=0, echo_delay_us=0, spool_depth=0, spool_bytes=0, trunk_version=0,
                                 adapter_version=0).encode())
            self.next_beat = now + self.beat_s
        if self.in_flight:  # the oldest unanswered chunk, sent again after resend_s (the hub stores it once)
            key, entry = next(iter(self.in_flight.items()))
            if now - entry[2] >= self.spec.resend_s and self._send(entry[3]):
                entry[2] = now
                self.in_flight[key] = self.in_flight.pop(key)
                stats.resent += 1
        while self.retry and self.retry[0][0] <= now:
            _, key, entry = self.retry[0]
            if not credit_allows(self.in_flight_bytes, entry[0], self.allowed) or not self._send(entry[3]):
                return went
            self.retry.popleft()
            entry[2] = now
            self.in_flight[key] = entry
            self.in_flight_bytes += entry[0]
            went += 1
        if self.spec.interval_s and sending and now >= self.due:
            self.owed += 1
            self.due += self.spec.interval_s
        while sending and (self.owed or not self.spec.interval_s) and len(self.in_flight) < self.spec.window_chunks:
            if self.out is None:
                self.out = self._make(now)
            key, entry = self.out
            if not credit_allows(self.in_flight_bytes, entry[0], self.allowed) or not self._send(entry[3]):
                break
            entry[1] = entry[2] = now
            self.in_flight[key] = entry
            self.in_flight_bytes += entry[0]
            self.out = None
            self.owed = max(0, self.owed - 1)
            stats.sent += 1
            stats.record_bytes = entry[0]
            went += 1
        return went

    def answered(self, key: Any, now: float, stats: Stats) -> list | None:
        entry = self.in_flight.pop(key, None)
        if entry is None:
            return None
        self.in_flight_bytes -= entry[0]
        stats.latencies_ms.append((now - entry[1]) * 1000)
        if self.spec.interval_s:  # paced robots: when each slow ack happened, to see what it coincided with
            stats.sent_at.append(entry[1])
        stats.acked += 1
        stats.acked_bytes += entry[0]
        if stats.window[0] <= now <= stats.window[1]:
            stats.window_chunks += 1
            stats.window_bytes += entry[0]
        return entry

    def handle(self, frames: list, now: float, stats: Stats) -> Welcome | None:
        """One message from the peer."""
        if not self.hub:
            self.answered(bytes(frames[0]), now, stats)
            return None
        msg = decode(frames, Limits.for_frames(MAX_FRAME), DOWNLINK)
        if isinstance(msg, Ack):
            for cid in msg.stored:
                self.answered(cid, now, stats)
            for cid in msg.duplicate:
                if self.answered(cid, now, stats) is not None:
                    stats.duplicate_acks += 1
        elif isinstance(msg, Nack):
            stats.nacks[str(msg.reason)] += 1
            entry = self.in_flight.pop(msg.chunk_id, None)
            if entry is not None:
                self.in_flight_bytes -= entry[0]
                if msg.reason in RESEND_LATER:
                    self.retry.append((now + self.spec.retry_s, msg.chunk_id, entry))
        elif isinstance(msg, Welcome | Credit):
            self.credit = msg.credit
            if isinstance(msg, Welcome):
                self.beat_s = msg.heartbeat_ms / 1000
                return msg
        elif isinstance(msg, Error):
            stats.errors.append(f"{self.robot_id}: {msg.code}: {msg.text}"[:200])
        return None


def _handshake(links: list[Link], timeout_s: float = 120.0) -> None:
    """Every link connected and answered once: WELCOME (hub) or the echo of a ping (raw)."""
    end = time.monotonic() + timeout_s
    for link in links:  # a DEALER with IMMEDIATE takes a message only once it is connected
        frames = [PING, b""] if not link.hub else Hello(
            robot_id=link.robot_id, seq=link.next_seq(), hardware="go2_like", profile_hash="ab" * 8,
            agent_version="bench", spool_depth=0, spool_bytes=0, trunk_version=0, adapter_version=0).encode()
        if not send_frames(link.sock, frames, max(1, int((end - time.monotonic()) * 1000))):
            raise RuntimeError(f"{link.robot_id}: not connected within {timeout_s} s")
    for link in links:
        while True:
            left_ms = int((end - time.monotonic()) * 1000)
            if left_ms <= 0:
                raise RuntimeError(f"{link.robot_id}: no answer to HELLO/ping within {timeout_s} s")
            frames = recv_frames(link.sock, min(left_ms, 1000))
            if frames is None:
                continue
            if not link.hub:
                break
            if link.handle(frames, time.monotonic(), Stats()) is not None:
                break


def run_clients(conn: Connection, spec: ClientSpec) -> None:
    """A client process: handshake, report ready, wait for the start time, run, drain, report Stats.

    Paced robots (``interval_s``) are measured from the start. Robots at full speed are measured once steady:
    after every link's first window has been acked (until then the queue fills and nothing flows back), for
    ``seconds``; then they stop sending and drain."""
    if spec.cpus:  # before the context: its I/O threads inherit the cores
        os.sched_setaffinity(0, spec.cpus)
    logging.getLogger("fleet.keys").setLevel(logging.ERROR)  # plain-text cells: one banner per link, not 128
    ctx = zmq.Context()
    links = [Link(ctx, spec, robot, keys, spec.seed * 1000 + i) for i, (robot, keys) in enumerate(spec.robots)]
    stats = Stats()
    try:
        _handshake(links)
        conn.send(None)  # ready
        start = conn.recv()
        while time.monotonic() < start:
            time.sleep(0.001)
        if spec.interval_s:
            stats.window = [start, start + spec.seconds]
        fill = 0  # bytes of the first window: steady state begins when as many have been acked
        rng = random.Random(spec.seed)
        for link in links:  # robots do not tick in step: each sends and heartbeats at its own phase
            link.due = start + rng.uniform(0, spec.interval_s)
            link.next_beat = start + rng.uniform(0, link.beat_s)
        poller = zmq.Poller()
        by_sock = {}
        for link in links:
            poller.register(link.sock, zmq.POLLIN)
            by_sock[link.sock] = link
        while True:
            now = time.monotonic()
            end = stats.window[1]
            sending = now < end
            if not sending and (now > end + spec.drain_s or not any(ln.in_flight or ln.retry for ln in links)):
                break
            went = sum(link.pump(now, sending, stats) for link in links)
            if not fill:
                fill = sum(ln.in_flight_bytes for ln in links)
            elif end == float("inf"):
                if stats.acked_bytes >= fill:
                    stats.ramp_s, stats.window = now - start, [now, now + spec.seconds]
                elif now - start > spec.max_ramp_s:
                    raise RuntimeError(f"no steady state within {spec.max_ramp_s} s ({stats.acked_bytes} of {fill} "
                                       "bytes of the first window acked)")
            for sock, _ in poller.poll(0 if went else 2):
                link = by_sock[sock]
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    link.handle(frames, time.monotonic(), stats)
        stats.unanswered = sum(len(ln.in_flight) + len(ln.retry) for ln in links)
    except Exception as exc:  # noqa: BLE001 - the parent must hear why, not wait for a dead child
        stats.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        for link in links:
            link.sock.close(0)
        ctx.term()
    conn.send(stats)


def raw_router(conn: Connection, port: int, hub_secret: str | None, cpus: list[int] | None = None) -> None:
    """The baseline peer: a ROUTER with the hub's socket limits (and its CURVE key, if given) that answers every
    message with its first frame and keeps nothing; on ``cpus`` only, if given. Runs until the parent sends
    anything."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    opts = SocketConfig()
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
    sock.setsockopt(zmq.SNDHWM, opts.sndhwm)
    sock.setsockopt(zmq.RCVHWM, opts.rcvhwm)
    sock.setsockopt(zmq.SNDTIMEO, opts.io_timeout_ms)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    if hub_secret:
        public, secret = load_secret(Path(hub_secret))
        sock.curve_server, sock.curve_publickey, sock.curve_secretkey = True, public, secret
    sock.bind(f"tcp://127.0.0.1:{port}")
    conn.send("ready")
    received = 0
    while not conn.poll(0):
        if not sock.poll(100, zmq.POLLIN):
            continue
        for _ in range(256):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            received += 1
            try:
                sock.send_multipart(frames[:2], copy=False)
            except zmq.ZMQError:
                pass  # the client is gone or stuck: it resends what is unanswered
    sock.close(0)
    ctx.term()
    conn.send(received)
