"""The agent's uplink to the fleet hub: a service thread that drains the spool to the hub.

It runs in the agent's process (the spool is flock'ed by it) on its own thread, and the control loop never waits
on it: the loop hands chunks to the spool writer, and this thread reads what the spool holds, sends it, and acks
it in the spool only when the hub has acked it (stored durably, or already stored). Its Python work per message
is small (ZeroMQ and hashing release the GIL), and it has its own ZeroMQ context.

Per connection attempt it makes a new DEALER (so a dead hub does not collect queued messages), sends HELLO and
waits ``hello_timeout_s`` for WELCOME; then it sends chunks in spool order within the hub's credit
(:class:`~robot_agent.uplink_window.SendWindow`), heartbeats every interval the hub asked for, and reconnects when
the hub has been silent for ``missed_heartbeats`` intervals or answers ERROR HELLO_REQUIRED (it restarted).
Failed attempts back off exponentially with jitter, up to ``backoff_max_s``. With the hub down for hours the
robot keeps controlling and spooling; the spool absorbs it up to its quota. The conversation is in
docs/protocol.md.

The same thread downloads trunks the hub announces into ``trunk_dir`` (:mod:`robot_agent.trunk_download`) and
uploads each adapter the agent keeps (:meth:`HubUplink.offer_adapter`: only the newest waits, and it is sent
again after a reconnect until the hub acks it).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import zmq

from fleet.keys import HUB_PUBLIC, ROBOT_SECRET, load_public, load_secret
from fleet.protocol import (
    DOWNLINK,
    Ack,
    AdapterUpload,
    Chunk,
    Credit,
    Error,
    ErrorCode,
    Heartbeat,
    Hello,
    Limits,
    Message,
    Nack,
    ProtocolError,
    TrunkData,
    TrunkFetch,
    TrunkNotice,
    Welcome,
    adapter_ack_id,
    decode,
)
from fleet.sockets import recv_frames, robot_socket, send_frames
from robot_agent.config import AgentUplinkConfig
from robot_agent.service import RUNNING, STOPPED, seconds_left
from robot_agent.spool import Spool, SpoolError
from robot_agent.trunk_download import TrunkDownload
from robot_agent.uplink_window import RESEND_LATER, SendWindow

log = logging.getLogger(__name__)

RECV_SLICE_MS = 20  # the longest one receive waits before the thread looks at the window and timers again


def agent_version() -> str:
    """This package's version (what HELLO says)."""
    try:
        return version("fleet-learning")
    except PackageNotFoundError:
        return "0.0.0"


def backoff_s(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """The wait before reconnect attempt ``attempt`` (1, 2, ...): doubling from ``low`` up to ``high``, drawn
    between half and all of that (jitter, so robots that lost the hub together do not return together)."""
    ceiling = min(high, low * 2 ** min(attempt - 1, 30))
    return rng.uniform(ceiling / 2, ceiling)


@dataclass
class PendingAdapter:
    """The newest kept adapter, waiting for the hub's ack."""

    version: int
    trunk_version: int
    data: bytes = field(repr=False)
    sent_at: float = 0.0  # 0: not sent on this connection
    not_before: float = 0.0  # a resend-later NACK holds it until then


class _Reconnect(Exception):
    """The connection is over (hub silent, hub restarted): make a new one."""


class HubUplink:
    """Service: the spool -> hub stream (module docstring). ``status()`` is what ``robot-agent status`` shows."""

    name = "uplink"

    def __init__(self, cfg: AgentUplinkConfig, spool: Spool, robot_id: str, hardware: str, profile_hash: str,
                 versions: Callable[[], tuple[int, int]] = lambda: (0, 0), seed: int | None = None,
                 trunk_dir: str | Path | None = None):
        cfg.validate()
        if cfg.security.mode == "curve":  # a missing or too-open key file refuses the start, not the 1000th retry
            keys = Path(cfg.security.keys_dir)
            load_secret(keys / ROBOT_SECRET)
            load_public(keys / HUB_PUBLIC)
        self.cfg, self.spool, self.robot_id = cfg, spool, robot_id
        self.hardware, self.profile_hash, self.versions = hardware, profile_hash[:64], versions
        self.limits = Limits.for_frames(cfg.max_frame_bytes)
        self.window = SendWindow(spool, cfg.max_in_flight, cfg.resend_s, cfg.retry_s)
        self.rng = random.Random(seed)
        self.connected = False
        self.connects = 0  # WELCOMEs received
        self.attempts = 0  # failed connection attempts in a row
        self.rtt_ms: float | None = None
        self.last_error = ""
        self.errors = 0  # ERRORs from the hub and messages from it that failed to decode
        self.error = ""  # why the thread died, if it did
        self._seq = 0
        self._hub_t_us = self._hub_t_at_us = 0  # the hub's last heartbeat clock, to echo
        self._stop = threading.Event()
        self._drain_until = 0.0
        self.trunk = (TrunkDownload(trunk_dir, lambda: self.versions()[0], cfg.trunk_piece_bytes, cfg.trunk_window,
                                    cfg.trunk_fetch_timeout_s, cfg.trunk_max_bytes_per_s) if trunk_dir else None)
        self._adapter: PendingAdapter | None = None
        self._adapter_lock = threading.Lock()
        self.adapters_uploaded = 0  # acked by the hub (stored, or already stored)
        self.adapter_uploaded_version = 0
        self.adapters_refused = 0
        self._thread = threading.Thread(target=self._run, name="hub-uplink", daemon=True)

    # -- service ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def health(self) -> str:
        """``running``, ``stopped``, or ``dead: ...``."""
        if self._thread.is_alive():
            return RUNNING
        return f"dead: {self.error}" if self.error else STOPPED

    def stop(self, deadline: float) -> None:
        """Stop by ``deadline``: while connected, keep sending and collecting acks for ``drain_on_stop_s`` (or
        until the spool is empty and the kept adapter is uploaded), then close. What is not acked stays in the spool for the next start."""
        self._drain_until = min(deadline - 0.2, time.monotonic() + self.cfg.drain_on_stop_s)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(seconds_left(deadline, floor=0.1))
        if self._thread.is_alive():
            log.error("uplink: did not stop in time")

    def status(self) -> dict[str, Any]:
        """Connected, in flight, acked, RTT, last error ... (read from any thread)."""
        w, adapter = self.window, self._adapter  # read once: the uplink's thread may clear it meanwhile
        return {"enabled": True, "endpoint": self.cfg.endpoint, "connected": self.connected,
                "connects": self.connects, "in_flight": len(w.in_flight), "in_flight_bytes": w.in_flight_bytes,
                "credit": w.credit, "queued": w.queued, "sent": w.counts.sent, "resent": w.counts.resent,
                "acked": w.counts.acked, "nacked": w.counts.nacked, "refused_chunks": len(w.refused),
                "gone": w.counts.gone, "unreadable": w.counts.unreadable, "too_large": w.counts.too_large,
                "errors": self.errors,
                "rtt_ms": self.rtt_ms, "last_error": self.last_error,
                "trunk": self.trunk.status() if self.trunk is not None else {"enabled": False},
                "adapter_pending": adapter.version if adapter is not None else None,
                "adapters_uploaded": self.adapters_uploaded, "adapter_uploaded_version": self.adapter_uploaded_version,
                "adapters_refused": self.adapters_refused}

    def offer_adapter(self, data: bytes, version: int, trunk_version: int) -> None:
        """Upload this adapter file (a kept version, trained on ``trunk_version``) when connected; it replaces an
        older one not yet acked (only the newest matters). Any thread may call this."""
        with self._adapter_lock:
            if self._adapter is None or version >= self._adapter.version:
                self._adapter = PendingAdapter(version, trunk_version, bytes(data))

    # -- the thread ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        ctx = zmq.Context()
        try:
            while not self._stop.is_set():
                try:
                    healthy = self._connection(ctx)
                except Exception as exc:  # noqa: BLE001 - a bug here must not end the robot's uplink for good
                    log.exception("uplink: connection failed")
                    self.last_error, healthy = f"{type(exc).__name__}: {exc}", False
                if self._stop.is_set():
                    break
                self.attempts = 0 if healthy else self.attempts + 1
                self._stop.wait(backoff_s(max(self.attempts, 1), self.cfg.backoff_min_s, self.cfg.backoff_max_s,
                                          self.rng))
        except BaseException as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.connected = False
            ctx.term()

    def _connection(self, ctx: zmq.Context) -> bool:
        """One connection: HELLO, WELCOME, then the session until it ends. True if the hub welcomed us and kept
        the session for at least one of its heartbeat intervals: only that starts the backoff over (a hub that
        welcomes and cuts at once, by an ERROR or a dropped socket, would get every robot back every ~0.1 s)."""
        sock = robot_socket(ctx, self.cfg)
        try:
            self.window.requeue_in_flight()
            timeout_ms = int(self.cfg.hello_timeout_s * 1000)
            welcome = self._hello(sock, timeout_ms)
            if welcome is None:
                return False
            welcomed_at = time.monotonic()
            self.connected = True
            self.connects += 1
            self.window.credit = welcome.credit
            self.window.hub_limit(welcome.max_message_bytes - self.limits.max_header_bytes)
            self._reconnected()
            log.info("uplink: connected to %s (credit %d bytes, heartbeat %d ms, %d chunks in the spool)",
                     self.cfg.endpoint, welcome.credit, welcome.heartbeat_ms, self.spool.depth)
            try:
                self._session(sock, welcome.heartbeat_ms / 1000)
            except _Reconnect as exc:
                self.last_error = str(exc)
                log.warning("uplink: %s: reconnecting", exc)
            return time.monotonic() - welcomed_at >= welcome.heartbeat_ms / 1000
        finally:
            self.connected = False
            sock.close(0)

    def _hello(self, sock: zmq.Socket, timeout_ms: int) -> Welcome | None:
        trunk, adapter = self.versions()
        hello = Hello(robot_id=self.robot_id, seq=self._next_seq(), hardware=self.hardware,
                      profile_hash=self.profile_hash, agent_version=agent_version(), spool_depth=self.spool.depth,
                      spool_bytes=self.spool.bytes, trunk_version=trunk, adapter_version=adapter)
        end, sent = time.monotonic() + timeout_ms / 1000, False
        while not self._stop.is_set() and time.monotonic() < end:
            if not sent:  # waits for the handshake (IMMEDIATE): in slices, so a stop is not held up
                sent = send_frames(sock, hello.encode(), RECV_SLICE_MS * 5)
                continue
            msg = self._recv(sock, RECV_SLICE_MS * 5)
            if isinstance(msg, Welcome):
                return msg
            if isinstance(msg, Error):
                self.last_error = f"hub refused HELLO: {msg.code}: {msg.text}"
                log.error("uplink: %s", self.last_error)
                return None
        if not self._stop.is_set() and not sent:
            self.last_error = f"no connection to {self.cfg.endpoint} within {timeout_ms} ms (hub down, or key refused)"
            return None
        if not self._stop.is_set():
            self.last_error = f"no WELCOME from {self.cfg.endpoint} within {timeout_ms} ms"
        return None

    def _session(self, sock: zmq.Socket, beat_s: float) -> None:
        silent_limit = self.cfg.missed_heartbeats * beat_s
        last_heard = next_beat = time.monotonic()
        while True:
            now = time.monotonic()
            if self._stop.is_set() and (now >= self._drain_until or (self.window.empty(now) and self._adapter is None)):
                return
            if now - last_heard > silent_limit:
                raise _Reconnect(f"hub silent for {now - last_heard:.1f} s")
            self._pump(sock, now)
            self._pump_trunk(sock, now)
            self._pump_adapter(sock, now)
            if now >= next_beat:
                self._heartbeat(sock)
                next_beat = now + beat_s
            msg = self._recv(sock, max(1, min(RECV_SLICE_MS, int((next_beat - now) * 1000))))
            while msg is not None:
                last_heard = time.monotonic()
                self._handle(msg)
                msg = self._recv(sock, 0)

    def _pump(self, sock: zmq.Socket, now: float) -> None:
        """Send what the window allows: due resends, then new chunks within the credit."""
        while True:
            out = self.window.next_chunk(now)
            if out is None:
                return
            chunk = Chunk.of(self.robot_id, self._next_seq(), out.ref.chunk_id, out.data)
            if not send_frames(sock, chunk.encode(), 0):
                self.window.unsend(out)
                return

    def _reconnected(self) -> None:
        if self.trunk is not None:
            self.trunk.reconnected()
        with self._adapter_lock:
            if self._adapter is not None:
                self._adapter.sent_at = 0.0

    def _pump_trunk(self, sock: zmq.Socket, now: float) -> None:
        """Ask for the trunk pieces the download's window (and rate) allows."""
        if self.trunk is None:
            return
        for trunk_version, offset, length in self.trunk.fetches(now):
            send_frames(sock, TrunkFetch(robot_id=self.robot_id, seq=self._next_seq(), trunk_version=trunk_version,
                                         offset=offset, length=length).encode(), 0)  # lost: asked again later

    def _pump_adapter(self, sock: zmq.Socket, now: float) -> None:
        """Send the pending adapter once per connection (again after ``resend_s`` without an answer)."""
        with self._adapter_lock:
            a = self._adapter
            if a is None or now < a.not_before or (a.sent_at and now - a.sent_at < self.cfg.resend_s):
                return
            a.sent_at = now
        msg = AdapterUpload.of(self.robot_id, self._next_seq(), a.version, a.trunk_version, a.data)
        if not send_frames(sock, msg.encode(), 0):
            a.sent_at = 0.0

    def _adapter_answer(self, ack_id: str, reason: ErrorCode | None, text: str, now: float) -> bool:
        """An ACK (reason None) or NACK naming the pending adapter upload; False if it names none."""
        with self._adapter_lock:
            a = self._adapter
            if a is None or ack_id != adapter_ack_id(self.robot_id, a.version):
                return False
            if reason is None:
                self._adapter = None
                self.adapters_uploaded += 1
                self.adapter_uploaded_version = a.version
            elif reason in RESEND_LATER:
                a.sent_at, a.not_before = 0.0, now + self.cfg.retry_s
            else:
                self._adapter = None
                self.adapters_refused += 1
                log.error("uplink: hub refuses adapter v%d for good (%s: %s)", a.version, reason, text)
        return True

    def _heartbeat(self, sock: zmq.Socket) -> None:
        t = time.monotonic_ns() // 1000
        trunk, adapter = self.versions()
        echo, delay = (self._hub_t_us, max(0, t - self._hub_t_at_us)) if self._hub_t_us else (0, 0)
        send_frames(sock, Heartbeat(robot_id=self.robot_id, seq=self._next_seq(), t_us=t, echo_us=echo,
                                    echo_delay_us=delay, spool_depth=self.spool.depth, spool_bytes=self.spool.bytes,
                                    trunk_version=trunk, adapter_version=adapter).encode(), 0)

    def _recv(self, sock: zmq.Socket, timeout_ms: int) -> Message | None:
        frames = recv_frames(sock, timeout_ms)
        if frames is None:
            return None
        try:
            return decode(frames, self.limits, DOWNLINK)
        except ProtocolError as exc:
            self.errors += 1
            self.last_error = f"undecodable message from the hub: {exc}"
            log.warning("uplink: %s", self.last_error)
            return None

    def _handle(self, msg: Message) -> None:
        now = time.monotonic()
        if isinstance(msg, Ack):
            ids = [i for i in (*msg.stored, *msg.duplicate) if not self._adapter_answer(i, None, "", now)]
            done = self.window.acked(ids)
            if done:
                try:
                    self.spool.ack(done)
                except SpoolError as exc:  # the spool closed under us (shutdown): the hub dedupes the resend
                    log.warning("uplink: could not ack %d chunks in the spool: %s", len(done), exc)
        elif isinstance(msg, Nack):
            if msg.reason == ErrorCode.HELLO_REQUIRED:
                raise _Reconnect("hub asked for HELLO (it restarted)")
            if self._adapter_answer(msg.chunk_id, msg.reason, msg.text, now):
                return
            if not self.window.nacked(msg.chunk_id, msg.reason, now) and msg.chunk_id in self.window.refused:
                log.error("uplink: hub refuses chunk %s for good (%s: %s); it stays in the spool, unsent",
                          msg.chunk_id, msg.reason, msg.text)
        elif isinstance(msg, Credit):
            self.window.credit = msg.credit
        elif isinstance(msg, Heartbeat):
            t = time.monotonic_ns() // 1000
            self._hub_t_us, self._hub_t_at_us = msg.t_us, t
            if msg.echo_us and t - msg.echo_us - msg.echo_delay_us >= 0:
                self.rtt_ms = (t - msg.echo_us - msg.echo_delay_us) / 1000
        elif isinstance(msg, Error):
            self.errors += 1
            self.last_error = f"hub error {msg.code}: {msg.text}"
            if msg.code in (ErrorCode.HELLO_REQUIRED, ErrorCode.SHUTTING_DOWN, ErrorCode.VERSION_UNSUPPORTED):
                raise _Reconnect(self.last_error)
            if self.trunk is not None and msg.code in (ErrorCode.UNKNOWN_TRUNK, ErrorCode.BAD_RANGE):
                self.trunk.error(msg.code, msg.text)
            log.warning("uplink: %s", self.last_error)
        elif isinstance(msg, TrunkNotice):
            if self.trunk is not None:
                self.trunk.notice(msg)
        elif isinstance(msg, TrunkData):
            if self.trunk is not None:
                self.trunk.data(msg, now)
        elif isinstance(msg, Welcome):  # a repeated WELCOME only renews the credit
            self.window.credit = msg.credit

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq
