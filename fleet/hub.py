"""The hub's ingest loop: one ROUTER socket, every robot's chunks into the store, acks only after the fsync.

One thread runs :meth:`HubServer.run`: it polls the socket and a wake-up pipe (never blocking without a
deadline), decodes and checks each message, binds it to its robot (CURVE key, per message), queues chunks to the
store's :class:`~fleet.store.GroupWriter` within the byte credit (fleet/hub_credit.py: one budget shared by the
robots), and acks a chunk only when the commit of its group has returned (the writer's thread fsyncs, then wakes
this loop through the pipe once per group). It also heartbeats every robot, declares silent ones dead, writes the
fleet registry, and distributes trunks and takes adapters (fleet/hub_trunks.py). The conversation is in
docs/protocol.md. Beside the loop, and never in its way: the Parquet export process (fleet/export_process.py), the
Prometheus endpoint and the W&B run (fleet/metrics.py, fleet/metrics_wandb.py), which read only the snapshot the
loop publishes with each registry write (docs/observability.md).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import zmq

from fleet.adapter_store import AdapterIntake, AdapterStore
from fleet.config import HubConfig
from fleet.export_process import ParquetExportProcess
from fleet.heap import CollectorPauses
from fleet.hub_credit import CreditBudget
from fleet.hub_session import RobotSession, now_us
from fleet.hub_trunks import TRUNK_POLL_S, HubTrunks
from fleet.keys import HubSecurity
from fleet.metrics import HubMetrics
from fleet.metrics_wandb import WandbReporter, wandb_wanted
from fleet.protocol import (
    PROTOCOL_VERSION,
    UPLINK,
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
    TrunkFetch,
    Welcome,
    decode,
)
from fleet.record import RecordError, record_header
from fleet.registry import ALIVE, CUT, DEAD, GONE, REGISTRY_FILE, FleetRegistry
from fleet.returns_by_version import EpisodeReturns
from fleet.rollout import Rollout
from fleet.rollout_log import CurrentSteps
from fleet.sockets import Delivery, hub_socket, recv_waiting, route_frames
from fleet.store import DUPLICATE, STORE_FILE, STORED, ExperienceStore, GroupWriter, StoreError, StoreResult
from fleet.trunk_service import TrunkService
from fleet.trunk_store import TrunkStore
from fleet.unit_watch import UnitWatch

log = logging.getLogger(__name__)

RECV_BATCH = 256  # messages taken per poll before acks and timers get their turn
MAX_POLL_MS = 100  # the loop looks at its stop flag at least this often
UNKNOWN_ROBOT = "unknown"  # the address of an ERROR to a plain-text peer that never said who it is


def _printable(text: str, limit: int) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


class _RobotAcks:
    """One robot's answers gathered in one pass over the committed groups: its session, the chunks stored and the
    duplicates (each list becomes ACKs), and the bytes stored."""

    __slots__ = ("session", "stored", "duplicate", "stored_bytes")

    def __init__(self, session: RobotSession):
        self.session, self.stored, self.duplicate, self.stored_bytes = session, [], [], 0


class HubServer(HubTrunks):
    """The hub: ROUTER loop, per-robot sessions, store writer and registry (module docstring). Construct, then
    ``run()`` in one thread; ``request_stop()`` from any thread (a signal handler) ends it gracefully."""

    def __init__(self, cfg: HubConfig):
        cfg.validate()
        self.cfg = cfg
        self.limits = Limits.for_frames(cfg.max_frame_bytes)
        self.storage = Path(cfg.storage_dir)
        self.storage.mkdir(parents=True, exist_ok=True)
        self.watch = UnitWatch(cfg.rollout, self.storage)  # every robot after a promotion (fleet/unit_watch.py)
        self.store = ExperienceStore(self.storage / STORE_FILE, direct_io=cfg.store_direct_io)  # first: a corrupt store stops the start unbound
        adapter_store = AdapterStore(self.storage / STORE_FILE)  # robots' adapters: a table of the same file
        self.ctx = zmq.Context()
        self.security: HubSecurity | None = None
        self.sock: zmq.Socket | None = None
        try:
            self.security = HubSecurity(self.ctx, cfg.security)
            self.sock = hub_socket(self.ctx, cfg, self.security)
            self.metrics = HubMetrics(cfg.metrics)  # a Prometheus port in use refuses the start, naming its key
        except BaseException:
            self._abandon_start(adapter_store)
            raise
        try:  # a start that fails past the bind leaves no port, thread, lock or file open behind it
            self.endpoint = self.sock.last_endpoint.decode()
            # each chunk reaches the writer vetted: its digest checked by the protocol decode (Chunk.verify) and its
            # header parsed by _chunk, so the store neither hashes nor parses it again. The hash runs on the loop's
            # thread while the writer's thread waits on its fsync (measured: hashing on the writer's thread instead
            # cost 10% of 64 KiB ingest, the writer being the slower stage)
            self.writer = GroupWriter(self.store, cfg.store_group_chunks, cfg.store_group_wait_ms / 1000,
                                      on_commit=self.metrics.commits.observe, on_results=self._committed,
                                      max_group_bytes=int(cfg.store_group_mb * 1024 * 1024))
            self.registry = FleetRegistry({"bind": self.endpoint, "security": cfg.security.mode, "pid": os.getpid(),
                                           "storage": str(self.storage.resolve()), "running": True,
                                           "heartbeat_ms": cfg.heartbeat_ms, "dead_after_heartbeats":
                                           cfg.dead_after_heartbeats, "prometheus": self.metrics.url})
            self.export = ParquetExportProcess.from_config(cfg, self.storage / STORE_FILE) if cfg.parquet_export else None
            self.wandb = WandbReporter(cfg.metrics, self.metrics, asdict(cfg)) if wandb_wanted(cfg.metrics) else None
            self.registry_path = self.storage / REGISTRY_FILE
            self.sessions: dict[str, RobotSession] = {}
            self.by_route: dict[bytes, str] = {}  # live connection -> its robot
            self.refused: Counter[str] = Counter()  # messages refused, by code
            self.nacked: Counter[str] = Counter()  # chunks refused, by reason
            self.acks_dropped = 0  # acks a robot's full queue could not take (it resends; the hub dedupes)
            self.heap: CollectorPauses | None = None  # the process's collector, where fleet-hub settled it (cli)
            self.credit = CreditBudget(cfg)  # one budget for all robots' queued chunks (fleet/hub_credit.py)
            self._written: deque[tuple[tuple[str, str], StoreResult | StoreError]] = deque()  # commits for the loop to answer
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._stop = threading.Event()
            self._stopping = False
            self._warned: set[tuple[str, str]] = set()
            # trunk distribution and robots' adapters (docs/protocol.md, "Trunks and adapters")
            self.trunks = TrunkService(TrunkStore(self.storage), cfg.trunk_piece_bytes)
            self.rollout = Rollout(cfg.rollout, self.trunks.store, self.storage)  # canary trials (fleet/rollout.py)
            self.trunks.held = self.watch.served()  # robots the unit watch held back keep their older version
            self.current_steps = CurrentSteps(self.storage)  # the roll-out log's steps that set CURRENT, followed
            self.watch.start_at(self.current_steps.last())
            self.returns = EpisodeReturns(self.store, cfg.rollout.history_chunks)  # what the canaries are judged by
            self.adapter_intake = AdapterIntake(adapter_store, self._wake_loop)
        except BaseException:
            self._abandon_start(adapter_store)
            raise

    def _abandon_start(self, adapter_store: AdapterStore) -> None:
        """Release what a failed start took, each part even if releasing another fails (that is logged: the
        start's own error is the one raised)."""
        steps: list[Callable[[], object]] = []
        if (writer := getattr(self, "writer", None)) is not None:
            steps.append(lambda: writer.close(self.cfg.stop_timeout_s))  # nothing was queued: it ends at once
        if (export := getattr(self, "export", None)) is not None:
            steps.append(lambda: export.stop(0))  # never started: closes its pipe
        steps += [functools.partial(os.close, fd) for fd in (getattr(self, "_wake_r", -1), getattr(self, "_wake_w", -1))
                  if fd >= 0]
        if (metrics := getattr(self, "metrics", None)) is not None:
            steps.append(metrics.close)
        sockets = [lambda: self.sock.close(self.cfg.socket.linger_ms)] if self.sock is not None else []
        if self.security is not None:
            sockets.append(self.security.close)
        self._release(steps)
        if self._release(sockets):  # term waits for every socket of the context: it would hang the start
            log.warning("the failed start leaves its ZeroMQ context open: one of its sockets would not close")
        else:
            self._release([self.ctx.term])
        self._release([adapter_store.close, self.store.close])

    @staticmethod
    def _release(steps: list[Callable[[], object]]) -> bool:
        """Run each release step whatever the others do; whether any failed (each failure logged with its
        traceback)."""
        failed = False
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the rest must still be released
                failed = True
                log.warning("a failed start could not release all it held (%s: %s)", type(exc).__name__, exc,
                            exc_info=True)
        return failed

    # -- life ------------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """End ``run``: new chunks are refused SHUTTING_DOWN, queued ones committed and acked, then it returns."""
        self._stop.set()

    def run(self) -> None:
        """Serve until ``request_stop``; always closes the socket, the writer and the store."""
        until = time.monotonic() + self.cfg.run_for_s if self.cfg.run_for_s else float("inf")
        try:  # outlets start inside: a failure or Ctrl-C while starting them still stops the export process
            for outlet in (self.export, self.wandb):  # the returns reader starts with the first trial (hub_trunks.py)
                if outlet is not None:
                    outlet.start()
            self._serve(lambda: self._stop.is_set() or time.monotonic() >= until)
            self._stopping = True
            end = time.monotonic() + self.cfg.stop_timeout_s
            self._serve(lambda: not any(s.in_flight for s in self.sessions.values()) or time.monotonic() > end)
        finally:
            self._close(self.cfg.stop_timeout_s)

    def _serve(self, done: Any) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        beat_s, every_s = self.cfg.heartbeat_ms / 1000, self.cfg.registry_every_s
        next_beat = next_registry = next_trunk = time.monotonic()
        while not done():
            wait = min(next_beat, next_registry, next_trunk) - time.monotonic()
            events = dict(poller.poll(max(0, min(MAX_POLL_MS, int(wait * 1000) + 1))))
            if self.sock in events:
                self._receive_batch()
            if self._wake_r in events:
                try:
                    os.read(self._wake_r, 1 << 16)
                except BlockingIOError:
                    pass
            self._answer_commits()
            self._answer_adapters()
            now = time.monotonic()
            if now >= next_trunk:
                self._poll_trunk()
                next_trunk = now + TRUNK_POLL_S
            if now >= next_beat:
                self._beat(now)
                next_beat = now + beat_s
            if now >= next_registry:
                self.write_registry()
                next_registry = now + every_s

    def _close(self, timeout: float) -> None:
        try:
            self.writer.close(timeout)
            self.adapter_intake.close(timeout)
            if not self.writer.finished:  # read before the last ack pass: a group it answers after that goes unacked
                log.warning("the store's group writer did not finish within %.3g s: groups it has not answered yet may "
                            "be committed but never acked (robots resend those chunks; the store dedupes them)", timeout)
            self._answer_commits()  # what committed while the writer closed is acked before the socket goes
            self._answer_adapters()
            self.trunks.close()
            self.returns.stop(timeout)
        finally:  # whatever failed above: a running export child would hold up interpreter exit
            if self.export is not None:
                self.export.stop(timeout)  # exports what is stored within the timeout, rolls its open files
        self.registry.hub["running"] = False
        self.write_registry()
        if self.wandb is not None:
            self.wandb.stop(timeout)  # logs the final snapshot
        self.metrics.close()
        self._close_sockets()
        self.store.close()
        # The writer's thread and the adapter pool wake the loop through this pipe, the writer after its group's
        # count is already down: close it only once neither can run, else a late wake-up writes a byte into
        # whatever file reuses the number (left open otherwise: a few bytes of fds until the process exits).
        if self.writer.finished and self.adapter_intake.finished:
            os.close(self._wake_r)
            os.close(self._wake_w)
        if self.writer.pending:
            log.error("%d chunks were still committing at exit: not acked, so robots resend them", self.writer.pending)

    def _close_sockets(self) -> None:
        if self.sock is not None:
            self.sock.close(self.cfg.socket.linger_ms)
        if self.security is not None:
            self.security.close()
        self.ctx.term()

    def write_registry(self) -> None:
        """Write ``registry.json`` now (the loop does it every ``registry_every_s``) and publish the same snapshot
        to the metrics outlets."""
        now = time.time()
        self._forget_gone(now)
        for robot, s in self.sessions.items():
            rec = self.registry.record(robot)
            rec.credit, rec.credit_enforced, rec.in_flight_bytes = s.credit, s.highest_credit, s.in_flight_bytes
            rec.peak_in_flight_bytes = s.peak_in_flight_bytes
            if rec.state == ALIVE and not s.connected:
                rec.state = GONE
        w = self.writer
        self.registry.hub.update(writer_pending=w.pending, writer_pending_bytes=w.pending_bytes, groups=w.groups,
                                 largest_group=w.largest_group, refused=dict(self.refused), nacked=dict(self.nacked),
                                 acks_dropped=self.acks_dropped, stopping=self._stopping,
                                 queued_bytes=self.credit.queued_bytes, peak_queued_bytes=self.credit.peak_queued_bytes,
                                 credit_budget_bytes=self.credit.total,
                                 commit=self.metrics.commits.summary(buckets=False),
                                 parquet=self.export.status() if self.export else {"enabled": False},
                                 trunk_version=self.trunks.version, trunk_candidate=self.trunks.candidate_version,
                                 rollout=self.rollout.status(), watch=self.watch.status(),
                                 trunk_pieces_served=self.trunks.pieces_served,
                                 trunk_bytes_served=self.trunks.bytes_served, trunks_refused=dict(self.trunks.refused),
                                 gc=self.heap.summary() if self.heap is not None else None)
        snapshot = self.registry.snapshot(now)
        self.metrics.publish(snapshot)
        try:
            self.registry.write(self.registry_path, snapshot=snapshot)
        except OSError as exc:  # a status file must not stop ingest
            log.warning("could not write %s: %s", self.registry_path, exc)

    # -- receiving -------------------------------------------------------------------------------------------
    def _receive_batch(self) -> None:
        for _ in range(RECV_BATCH):
            frames = recv_waiting(self.sock)
            if frames is None:
                return
            if len(frames) >= 2:  # a ROUTER prefixes the routing id
                try:
                    self._handle(frames[0].bytes, frames[1:])
                except Exception as exc:  # a fault in one message's handling must not stop the hub for the fleet
                    self.refused[ErrorCode.INTERNAL] += 1
                    self._note(UNKNOWN_ROBOT, f"internal-{type(exc).__name__}", "a message could not be handled "
                               "(%s: %s); the hub serves on", type(exc).__name__, exc, exc_info=True)

    def _handle(self, route: bytes, body: list[zmq.Frame]) -> None:
        try:  # the key first: a revoked robot is refused before its payload is hashed
            ident = self.security.senders.identity_of(body[0])
        except ProtocolError as exc:
            self._cut(route, exc)
            return
        try:
            msg = decode(body, self.limits, UPLINK, keep_chunk_frame=True)  # the store takes the frame, uncopied
            robot = msg.robot_id  # plain text: whoever the header says; CURVE: its key's robot, looked up once above
            if ident is not None and robot != ident:
                raise ProtocolError(ErrorCode.IDENTITY_MISMATCH, f"header names robot {robot!r:.70} but the key is "
                                    f"robot {ident!r}'s")
            bound = self.by_route.get(route)
            if bound is not None and bound != robot:  # plain text: a connection is the robot its HELLO named
                raise ProtocolError(ErrorCode.IDENTITY_MISMATCH, f"this connection is robot {bound!r}'s, not "
                                    f"{robot!r}'s")
        except ProtocolError as exc:
            self._refuse(route, ident, exc)
            return
        if isinstance(msg, Hello):
            self._hello(route, msg)
            return
        session = self.sessions.get(robot)
        if session is None or session.routing_id != route:
            self._refuse(route, robot, ProtocolError(ErrorCode.HELLO_REQUIRED, f"{msg.TYPE} before HELLO on this "
                                                     "connection: send HELLO, then resend what is unacked"))
            return
        session.last_heard = time.monotonic()
        self.registry.record(robot).last_seen = time.time()
        if isinstance(msg, Chunk):
            self._chunk(session, msg)
        elif isinstance(msg, Heartbeat):
            self.registry.heartbeat(msg, session.heard_heartbeat(msg, now_us()), time.time())
        elif isinstance(msg, TrunkFetch):
            self._trunk_fetch(session, msg)
        elif isinstance(msg, AdapterUpload):
            self._adapter_upload(session, msg)
        elif isinstance(msg, Error):
            self._note(robot, f"robot-error-{msg.code}", "robot %s says %s: %s", robot, msg.code, msg.text)

    def _hello(self, route: bytes, msg: Hello) -> None:
        robot = msg.robot_id
        session = self.sessions.get(robot)
        if session is None:
            session = self.sessions[robot] = RobotSession(robot)
        if session.routing_id is not None and session.routing_id != route:
            self.by_route.pop(session.routing_id, None)  # a reconnect: the old connection is over
        self.by_route[route] = robot
        session.connect(route, 0, time.monotonic())
        credit = self.credit.share(sum(1 for s in self.sessions.values() if s.connected))
        session.grant(credit)
        self.registry.hello(msg, PROTOCOL_VERSION, credit, time.time())
        rec = self.registry.record(robot)
        rec.adapter_stored, rec.adapter_stored_trunk = self.adapter_intake.newest.get(robot, (None, None))
        log.info("robot %s connected (%s, agent %s, spool %d chunks)", robot, msg.hardware, msg.agent_version,
                 msg.spool_depth)
        self._send(session, Welcome(robot_id=robot, seq=session.next_seq(), credit=credit,
                                    trunk_version=self._wanted(robot), heartbeat_ms=self.cfg.heartbeat_ms,
                                    max_message_bytes=self.limits.max_message_bytes))
        self._send_notice(session)  # its size and digest: what a robot needs to fetch it
        self._share_credit(lower_only=True)  # one more robot: the others' shares shrink

    def _chunk(self, session: RobotSession, msg: Chunk) -> None:
        cid, size = msg.chunk_id, msg.size
        if cid in session.in_flight:  # a resend of a chunk still in the store's queue: its ack is coming
            return
        code, text = None, ""
        if self._stopping:
            code, text = ErrorCode.SHUTTING_DOWN, "the hub is stopping: resend after reconnecting"
        elif (refusal := self.credit.refusal(session, size)) is not None:
            code, text = ErrorCode.NO_CREDIT, refusal
        else:
            try:  # that it is this chunk of this robot (its digest was checked at decode: BAD_DIGEST)
                header = record_header(msg.payload, cid)
                if header.get("robot_id") != session.robot_id:
                    code, text = ErrorCode.IDENTITY_MISMATCH, f"record of robot {header.get('robot_id')!r:.70}"
            except RecordError as exc:
                code, text = ErrorCode.BAD_RECORD, str(exc)
        if code is None:
            try:
                self.writer.enqueue(msg.payload, (session.robot_id, cid), header)
            except StoreError as exc:
                code, text = ErrorCode.STORAGE_FAILED, str(exc)
            else:
                session.take(cid, size)
                self.credit.take(size)
                return
        self._nack(session, cid, code, text)

    # -- answering -------------------------------------------------------------------------------------------
    def _committed(self, results: list[tuple[tuple[str, str], StoreResult | StoreError]]) -> None:
        """Runs on the writer's thread, once per commit group: hand the results to the loop and wake it."""
        self._written.extend(results)
        self._wake_loop()

    def _answer_commits(self) -> None:
        acks: dict[str, _RobotAcks] = {}
        now = time.time()
        written = self._written
        while written:  # once per chunk: a robot's session and lists are looked up once per pass, not per chunk
            (robot, cid), result = written.popleft()
            acked = acks.get(robot)
            if acked is None:
                acked = acks[robot] = _RobotAcks(self.sessions[robot])
            session = acked.session
            size = session.release(cid)
            self.credit.release(size)
            if isinstance(result, StoreError):
                self._nack(session, cid, ErrorCode.STORAGE_FAILED, str(result))
            elif result.status == STORED:
                acked.stored.append(cid)
                acked.stored_bytes += size
            elif result.status == DUPLICATE:
                acked.duplicate.append(cid)
            else:
                self._nack(session, cid, ErrorCode.BAD_RECORD, result.reason)
        n = self.limits.max_ids
        for robot, acked in acks.items():
            session, stored, dup = acked.session, acked.stored, acked.duplicate
            rec = self.registry.record(robot)
            if stored:
                rec.chunks_in += len(stored)
                rec.bytes_in += acked.stored_bytes
                rec.last_chunk_at = now
            rec.duplicates += len(dup)
            for i in range(0, max(len(stored), len(dup)), n):
                ack = Ack(robot_id=robot, seq=session.next_seq(), stored=stored[i:i + n], duplicate=dup[i:i + n])
                if self._send(session, ack) == Delivery.FULL:
                    self.acks_dropped += 1

    def _nack(self, session: RobotSession, chunk_id: str, code: ErrorCode, text: str) -> None:
        self.registry.record(session.robot_id).nacks += 1
        self.refused[code] += 1
        self.nacked[code] += 1
        self._note(session.robot_id, code, "robot %s: chunk %s refused %s: %s", session.robot_id, chunk_id, code, text)
        self._send(session, Nack(robot_id=session.robot_id, seq=session.next_seq(), chunk_id=chunk_id, reason=code,
                                 text=_printable(text, self.limits.max_text)))

    def _reply_error(self, session: RobotSession, code: ErrorCode, text: str) -> None:
        self.registry.record(session.robot_id).errors += 1
        self.refused[code] += 1
        self._send(session, Error(robot_id=session.robot_id, seq=session.next_seq(), code=code,
                                  text=_printable(text, self.limits.max_text)))

    def _refuse(self, route: bytes, ident: str | None, exc: ProtocolError) -> None:
        """Answer a refused message on its connection: NACK a chunk of a welcomed robot, else ERROR."""
        robot = self.by_route.get(route) or ident
        session = self.sessions.get(robot) if robot else None
        if session is not None and session.routing_id == route:
            if exc.chunk_id is not None:
                self._nack(session, exc.chunk_id, exc.code, exc.text)
            else:
                self._reply_error(session, exc.code, exc.text)
            return
        self.refused[exc.code] += 1
        if robot is not None:
            self.registry.record(robot).errors += 1
        self._note(robot or UNKNOWN_ROBOT, exc.code, "refused a message from %s: %s", robot or "an unnamed peer", exc)
        err = Error(robot_id=robot or UNKNOWN_ROBOT, seq=0, code=exc.code, text=_printable(exc.text, self.limits.max_text))
        route_frames(self.sock, route, err.encode())

    def _cut(self, route: bytes, exc: ProtocolError) -> None:
        """An unknown or revoked key: nothing goes back, and a connection it had is over."""
        self.refused[exc.code] += 1
        robot = self.by_route.pop(route, None)
        if robot is not None:
            self.sessions[robot].disconnect()
            self.registry.record(robot).state = CUT
            log.warning("robot %s cut off: %s", robot, exc.text)

    def _send(self, session: RobotSession, msg: Message) -> Delivery | None:
        if session.routing_id is None:
            return None  # disconnected: it resends what it misses after it reconnects
        delivery = route_frames(self.sock, session.routing_id, msg.encode())
        if delivery == Delivery.GONE:
            self.by_route.pop(session.routing_id, None)
            session.disconnect()
        return delivery

    def _note(self, robot: str, what: str, fmt: str, *args: Any, exc_info: bool = False) -> None:
        """Log the first of a kind per robot as a warning, the rest at debug (a fuzzing peer floods nothing)."""
        key = (robot, str(what))
        if key in self._warned or len(self._warned) > 10_000:
            log.debug(fmt, *args)
        else:
            self._warned.add(key)
            log.warning(fmt, *args, exc_info=exc_info)

    # -- timers ----------------------------------------------------------------------------------------------
    def _forget_gone(self, now: float) -> None:
        """Forget robots gone ``forget_after_s`` with nothing in flight: registry, sessions and metrics stay
        bounded under churn (their counts stay in the registry's ``forgotten`` totals)."""
        for robot in list(self.registry.robots):
            s = self.sessions.get(robot)
            if (s is None or not (s.connected or s.in_flight)) and \
                    self.registry.gone_for(robot, now) > self.cfg.forget_after_s:
                self.sessions.pop(robot, None)
                self.registry.forget(robot)

    def _share_credit(self, lower_only: bool) -> None:
        """Tell each robot whose credit is off its share of the budget its new credit (fleet/hub_credit.py)."""
        for session, share in self.credit.reshare(self.sessions.values(), lower_only):
            self.registry.record(session.robot_id).credit = share
            self._send(session, Credit(robot_id=session.robot_id, seq=session.next_seq(), credit=share))

    def _beat(self, now: float) -> None:
        """Heartbeat every connected robot; one silent for ``dead_after_heartbeats`` intervals is dead. Robots
        gone leave credit to share: the others' grow back."""
        limit = self.cfg.dead_after_heartbeats * self.cfg.heartbeat_ms / 1000
        t = now_us()
        for session in self.sessions.values():
            if not session.connected:
                continue
            if now - session.last_heard > limit:
                self.by_route.pop(session.routing_id, None)
                session.disconnect()
                self.registry.record(session.robot_id).state = DEAD
                log.warning("robot %s is dead: silent for %.1f s", session.robot_id, now - session.last_heard)
                continue
            echo, delay = session.echo(t)
            self._send(session, Heartbeat(robot_id=session.robot_id, seq=session.next_seq(), t_us=t, echo_us=echo,
                                          echo_delay_us=delay, spool_depth=0, spool_bytes=0,
                                          trunk_version=self._wanted(session.robot_id), adapter_version=0))
            if self.registry.record(session.robot_id).trunk_version != self._wanted(session.robot_id):
                self._send_notice(session)  # a notice may have met a full queue: repeat it while the robot differs
        self.credit.measure(self.writer.committed_bytes, self.writer.commit_seconds)
        self._share_credit(lower_only=False)

    def _wake_loop(self) -> None:
        """Wake the loop from another thread (a commit or an adapter's store is done)."""
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (the loop will wake anyway) or closed at shutdown
