"""The hub's trunk distribution and robots' adapter uploads, as methods of :class:`~fleet.hub.HubServer`.

Trunks: the loop looks for a newly published, promoted or rolled-back-to trunk every TRUNK_POLL_S and steps the
canary roll-out (fleet/rollout.py); each connected robot is told the version it should run (TRUNK_NOTICE) and
served pieces of it on TRUNK_FETCH (fleet/trunk_service.py). Adapters: an upload is stored by the adapter intake's
thread (fleet/adapter_store.py) and acked or nacked when the loop hears the result. docs/protocol.md, "Trunks and
adapters", has the conversation.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from fleet.adapter_store import AdapterIntake
from fleet.hub_session import RobotSession
from fleet.protocol import Ack, AdapterUpload, ErrorCode, Message, ProtocolError, TrunkFetch
from fleet.registry import FleetRegistry
from fleet.returns_by_version import EpisodeReturns
from fleet.rollout import Rollout
from fleet.rollout_log import CurrentSteps
from fleet.sockets import Delivery
from fleet.store import DUPLICATE, STORED
from fleet.trunk_service import TrunkService
from fleet.trunk_store import TrunkStoreError
from fleet.unit_watch import UnitWatch

log = logging.getLogger("fleet.hub")

TRUNK_POLL_S = 1.0  # how often the loop looks for a newly published trunk (trunks/CURRENT)
UNLOGGED_WARN_S = 30.0  # a current version no logged step names, this long: a change the unit watch cannot see


class HubTrunks:
    """Trunk notices and pieces, canary steps and adapter answers; mixed into the hub, whose loop thread calls
    them (it owns every attribute named below)."""

    sessions: dict[str, RobotSession]
    registry: FleetRegistry
    trunks: TrunkService
    rollout: Rollout
    watch: UnitWatch
    current_steps: CurrentSteps
    _unlogged_since: tuple[int, float, bool] | None = None  # (current version, seen since, warned)
    returns: EpisodeReturns
    adapter_intake: AdapterIntake
    _stopping: bool

    if TYPE_CHECKING:  # the hub's own methods; real no-op stubs would hide a rename as silence
        def _send(self, session: RobotSession, msg: Message) -> Delivery | None: ...
        def _nack(self, session: RobotSession, chunk_id: str, code: ErrorCode, text: str) -> None: ...
        def _reply_error(self, session: RobotSession, code: ErrorCode, text: str) -> None: ...
        def _note(self, robot: str, what: str, fmt: str, *args: Any) -> None: ...

    def _poll_trunk(self) -> None:
        """A newly published (or promoted, or rolled-back-to) trunk, once verified, and a trial's moves are
        announced to every connected robot: each is told the version it should run (fleet/rollout.py)."""
        connected = {r: self.registry.record(r).hardware for r, s in self.sessions.items() if s.connected}
        changed = moved = False
        known = {r: rec.hardware for r, rec in self.registry.robots.items() if rec.hardware}
        try:  # each part on its own: a canary trial that cannot step must not stop the unit watch, nor the reverse
            changed = self.trunks.poll()
            if (self.trunks.candidate_version or self.watch.version) and not self.returns.started:
                self.returns.start()  # the first trial or watch: from now on returns are read as they come
            moved = self.rollout.step(self.trunks.candidate_version, self.trunks.version, connected,
                                      self.returns.returns, known=known,
                                      baseline=lambda r: self.watch.baseline(r, self.trunks.version))
        except (OSError, TrunkStoreError) as exc:  # a full disk or a damaged candidate must not stop ingest
            log.error("roll-out step failed (retried at the next poll): %s", exc)
        try:
            moved = self._watch_units(list(known)) or moved
        except OSError as exc:
            log.error("unit watch step failed (retried at the next poll): %s", exc)
        if changed or moved:
            for session in self.sessions.values():
                if session.connected:
                    self._send_notice(session)

    def _watch_units(self, known: list[str]) -> bool:
        """Follow the roll-out log's last step that set the current version, once the trunk service serves it
        (a promotion starts the unit watch, anything else clears its holds), and judge the robots watched
        (fleet/unit_watch.py). True when a robot was moved."""
        moved, last = False, self.current_steps.last()
        if last is not None and self.trunks.version == last["version"]:
            moved = self.watch.follow(last, known)
            self._unlogged_since = None
        else:
            self._warn_unlogged(last)
        moved = self.watch.step(self.returns.returns, known) or moved
        self.trunks.held = self.watch.served()
        return moved

    def _warn_unlogged(self, last: dict[str, Any] | None) -> None:
        """Warn (once a change) when the current version has stayed one no logged step names: CURRENT set by a
        tool that does not log (``TrunkStore`` used directly), a step whose log append failed, or a logged
        version the trunk service cannot verify. Holds are released only by a logged step, so an operator must
        know."""
        now, current = time.monotonic(), self.trunks.version
        if last is None and not self.watch.holds:  # nothing logged yet (a first trunk published through the API)
            return
        if self._unlogged_since is None or self._unlogged_since[0] != current:
            self._unlogged_since = (current, now, False)
        elif not self._unlogged_since[2] and now - self._unlogged_since[1] >= UNLOGGED_WARN_S and current:
            self._unlogged_since = (current, self._unlogged_since[1], True)
            named = f"v{last['version']}" if last else "no version"
            log.warning("the current trunk is v%d but the roll-out log's last step that set CURRENT names %s (a "
                        "change made without a log step, a step whose append failed, or a logged version this hub "
                        "cannot verify): the unit watch acts only on a logged step of the version it serves, so "
                        "holds stay (%s) and no watch starts. If CURRENT was set by hand, `fleet-hub rollback %d` "
                        "logs it (and releases every hold)", current, named, self.watch.holds or "none", current)

    def _runs(self, robot_id: str) -> int:
        """The version ``robot_id`` runs when it is not a canary: the one the unit watch holds it on, else the
        current one."""
        return self.watch.wants(robot_id, self.trunks.version)

    def _wanted(self, robot_id: str) -> int:
        """The trunk version ``robot_id`` should run: the candidate on a canary, else ``_runs``."""
        return self.rollout.wants(robot_id, self._runs(robot_id))

    def _send_notice(self, session: RobotSession) -> None:
        notice = self.trunks.notice(session.robot_id, session.next_seq(), self._wanted(session.robot_id))
        if notice is not None:
            self._send(session, notice)

    def _trunk_fetch(self, session: RobotSession, msg: TrunkFetch) -> None:
        try:
            piece = self.trunks.fetch(msg, session.next_seq())
        except ProtocolError as exc:  # an unknown version or a range outside it: the robot hears why
            self._note(session.robot_id, exc.code, "robot %s: %s", session.robot_id, exc.text)
            self._reply_error(session, exc.code, exc.text)
            return
        if self._send(session, piece) == Delivery.SENT:
            self.registry.record(session.robot_id).trunk_bytes_out += piece.size

    def _adapter_upload(self, session: RobotSession, msg: AdapterUpload) -> None:
        refusal = self.adapter_intake.submit(session.robot_id, self.registry.record(session.robot_id).hardware, msg,
                                             self._stopping)
        if refusal is not None:
            self._nack(session, msg.ack_id, *refusal)

    def _answer_adapters(self) -> None:
        """Uploads stored durably are acked (the registry shows the newest); refused ones nacked."""
        for robot, msg, result in self.adapter_intake.results():
            session = self.sessions.get(robot)
            if session is None:  # forgotten while its upload was stored: the upload stands, there is no one to ack
                continue
            if isinstance(result, tuple):
                self._nack(session, msg.ack_id, *result)
                continue
            rec = self.registry.record(robot)
            rec.adapter_stored, rec.adapter_stored_trunk = self.adapter_intake.newest[robot]
            log.info("robot %s: adapter v%d (trunk v%d) %s", robot, msg.adapter_version, msg.trunk_version, result)
            self._send(session, Ack(robot_id=robot, seq=session.next_seq(), stored=[msg.ack_id] * (result == STORED),
                                    duplicate=[msg.ack_id] * (result == DUPLICATE)))
