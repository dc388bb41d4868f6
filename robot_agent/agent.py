"""The robot agent: episodes of the control loop on one robot computer, and the services around it.

The parts and what runs where:

- control thread: :class:`robot_agent.loop.ControlLoop` runs each episode (read -> observation ->
  policy -> safety layer -> driver; the transition, built by the step contract shared with sim, after
  the command). Inside an episode it opens no file, prints and logs nothing: its chunks go to the
  spool writer's queue. Between episodes, with the robot damped and no deadline running, it swaps in a
  new trunk or adapter (loading the adapter file, recording the trunk in ``trunk.json``), checks the
  services, and waits while the e-stop is engaged or the spool is full.
- services (:class:`robot_agent.service.Service`, each stopped by a deadline): the spool writer
  (spool, then the adapter learner), the status reporter (``status.json``, the status line, W&B, the
  safety layer's notices), the trunk watcher, the adapter trainer process, the fleet uplink
  (:class:`robot_agent.uplink.HubUplink`, when ``uplink.enabled``: drains the spool to the hub and acks
  there, so it stops before the spool closes), and any service passed in. (Dropping the trunks the hub
  announces into ``trunk_dir`` for the watcher, and the upload of each kept adapter, are the uplink's.)

A spool writer or trainer that dies is restarted once; a writer that dies again stops the agent (no
episode may run whose experience cannot be stored) with a fault in its final status, while a trainer
that dies again only ends the unit's learning. Shutdown damps the robot first, then gives the spool
flush and every service's stop one deadline (``stop_timeout_s``).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from hardware.safety import SafetyLayer
from hardware.tasks import TaskConfig
from robot_agent.adapter_guard import GuardedAdapters
from robot_agent.config import AgentConfig
from robot_agent.loop import ControlLoop
from robot_agent.parts import (  # noqa: F401  (re-exported: the agent's files and errors)
    ADAPTER_FILE,
    ESTOP_FILE,
    GUARD_FILE,
    STATUS_FILE,
    TRUNK_FILE,
    AgentBuilder,
    AgentStartupError,
)
from robot_agent.priorities import critic_prioritiser
from robot_agent.recorder import TransitionRecorder
from robot_agent.reporter import StatusReporter, write_status_file
from robot_agent.robot_seeds import RobotSeeds
from robot_agent.scheduling import NORMAL, enter_realtime, leave_realtime
from robot_agent.service import Service, seconds_left
from robot_agent.sink import SpoolWriter
from robot_agent.spool import DROP_OLDEST
from robot_agent.status import LoopTiming
from robot_agent.trainer import candidate_path
from robot_agent.trunk_adapter import adapter_for_trunk, own_adapter_path, save_own_adapter
from shared_policy.adapter import (
    AdapterConfig,
    AdapterFileError,
    adapter_bytes,
    adapter_file_metadata,
    load_adapter,
    save_adapter,
)
from shared_policy.tracking import NullLogger, RunLogger
from shared_policy.vtrace import VTraceConfig

log = logging.getLogger(__name__)

LEARNER_WAIT_S = 120.0  # simulated clocks: the longest an episode end waits for the learner to catch up
WRITER_IDLE_WAIT_S = 10.0  # before judging the spool's room, the longest to wait for queued chunks


class RobotAgent:
    """Runs one robot unit: the control loop's episodes, the services beside it, a bounded shutdown."""

    def __init__(self, cfg: AgentConfig, task_cfg: TaskConfig, logger: RunLogger | None = None,
                 services: Sequence[Service] = ()):
        parts = AgentBuilder(cfg, task_cfg).build()
        self.parts = parts
        self.cfg, self.state_dir, self.profile, self.task = cfg, parts.state_dir, parts.profile, parts.task
        self.driver, self.safe, self.runtime, self.checkpoint = parts.driver, parts.safe, parts.runtime, parts.checkpoint
        self.spool, self.trainer, self.watcher = parts.spool, parts.trainer, parts.watcher
        prioritise = (critic_prioritiser(lambda: self.runtime.policy, self.profile.name,
                                         VTraceConfig(**asdict(cfg.spool.priority_vtrace)))
                      if cfg.spool.priorities else None)
        self.writer = SpoolWriter(self.spool, after_write=self.trainer.submit if self.trainer is not None else None,
                                  before_write=prioritise)
        self.timing = LoopTiming(1.0 / self.profile.control_hz)
        seeds = RobotSeeds(cfg.seed, cfg.robot_id)
        self.recorder = TransitionRecorder(
            self.task, parts.obs_layout, parts.priv_layout, self.writer, cfg.spool.chunk_steps,
            seeds.episode(0)[0], header=parts.record_header)  # each episode draws its own goals (ControlLoop)
        self._episode_bytes = self.recorder.episode_bytes(self.task.max_episode_length)
        self.loop = ControlLoop(self.driver, self.safe, self.runtime, parts.action_map, self.recorder, self.timing,
                                self._cut_short, explore=cfg.adapter.explore and self.trainer is not None,
                                seeds=seeds)
        self.reporter = StatusReporter(self.status, self.state_dir / STATUS_FILE, logger or NullLogger(),
                                       cfg.status_every_s, notices=self.safe.report)
        self.extra_services = list(services)
        self.uplink = parts.uplink  # stopped before the spool closes: it acks there
        self.services: list[Service] = [self.writer, *([self.watcher] if self.watcher else []),
                                        *([self.trainer] if self.trainer else []), *self.extra_services,
                                        *([self.uplink] if self.uplink else []), self.reporter]
        self.episodes = 0
        self.episode_returns: deque[float] = deque(maxlen=1000)
        self.refused_episodes = 0
        self.adapter_updates = 0
        self.trunk_swaps = 0
        self.trunk_adapter_source = "start"  # where the adapter of the last trunk swap came from
        # the adapter guard's verdicts in this run, over trunk swaps, each with its trunk (benchmarks record them)
        self.guard_verdicts: deque[dict[str, Any]] = deque(maxlen=1000)
        self.fault = ""  # why the agent stopped on its own, if it did
        # which adapter update each episode runs, and which are kept (robot_agent/adapter_guard.py)
        self.adapters = (GuardedAdapters.from_config((self.runtime.adapter, self.runtime.adapter_version), self.trainer,
                                                     cfg.adapter, self.state_dir / GUARD_FILE, self.runtime.trunk_version)
                         if self.trainer is not None else None)
        self._stop_at: float | None = None  # set by request_stop: finish the episode by then
        self._abort = threading.Event()
        self._t_start = time.monotonic()
        self.scheduling = NORMAL  # the control thread's scheduling policy, once run() starts
        self._adapter_trunks: dict[int, int] = {}  # adapter version -> the trunk version it was trained on
        # the highest adapter number this unit ran or issued: a rebased adapter is renumbered past it, so that a
        # number never names two adapters (the hub keys adapters by robot and number; steps carry the number)
        self._adapter_high = max(self.runtime.adapter_version, self._issued_before())
        self._adapter_offered = 0  # the newest kept adapter handed to the uplink for the hub
        self._offer_saved_adapter()

    @property
    def steps(self) -> int:
        """Transitions recorded so far."""
        return self.recorder.steps

    # -- lifecycle -----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """First call: finish the current episode within ``shutdown_timeout_s``; second call: abort now."""
        if self._stop_at is None:
            self._stop_at = time.monotonic() + self.cfg.shutdown_timeout_s
            log.warning("stop requested: finishing the episode (at most %.1f s)", self.cfg.shutdown_timeout_s)
        else:
            self._abort.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop_at is not None

    def run(self) -> dict[str, Any]:
        """Run episodes until stopped, a configured limit or a fault; always shuts down. Returns the status."""
        torch.set_num_threads(1)  # one small forward pass: threads only add wake-up latency
        # The control thread must get the GIL back within a fraction of a period from the spool writer, the
        # reporter and the watchdog; CPython's default hand-over interval (5 ms) is longer than a 500 Hz period.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.05 / self.profile.control_hz))
        self.driver.connect()
        try:
            self._warm_up()
            if getattr(self.driver, "realtime", True):  # a simulated clock has no wall-clock deadline to watch
                self.safe.start_watchdog()
            for service in self.services:
                service.start()
            # last, so that nothing started above inherits it
            self.scheduling = enter_realtime(self.cfg.control_priority)
            # Everything built so far (torch, the policy, the driver) lives until exit: a frozen heap is never
            # scanned again. Inside an episode the cyclic collector is off (a full collection stalls every
            # thread of the process for milliseconds); it runs between episodes, where no deadline waits.
            gc.collect()
            gc.freeze()
            while not self.stopping and not self._limits_reached():
                gc.collect()
                self._between_episodes()
                if self.stopping or self.fault:
                    break
                if self.safe.estop.poll():
                    self._wait_while_estopped()
                elif not self._spool_has_room():
                    if self.fault:  # the last episode's chunks, now all through the writer, could not be stored
                        break
                    self._hold(1.0)
                else:
                    self._run_episode()
        except BaseException as exc:  # a crash (a driver error, a bug) is a fault in the final status, not a stop
            if not isinstance(exc, KeyboardInterrupt):
                self.fault = self.fault or f"crashed: {type(exc).__name__}: {exc}"
            raise
        finally:
            self.shutdown()
        return self.status()

    def _run_episode(self) -> None:
        number = self._episode_number()  # may reserve a block of numbers on disk: before the episode starts
        gc.disable()
        try:
            summary = self.loop.run_episode(number)
        finally:
            gc.enable()
        self.episodes += 1
        self.episode_returns.append(summary.episode_return)
        if self.adapters is not None:  # an episode the agent cut short has a truncated return: it does not count
            verdict = self.adapters.episode_done(self.runtime.adapter_version, self.runtime.trunk_version,
                                                 summary.episode_return, not summary.cut_short)
            if verdict is not None:
                self.guard_verdicts.append({**dataclasses.asdict(verdict), "trunk_version": self.runtime.trunk_version})
        self.reporter.log({"episode/return": summary.episode_return, "episode/length": summary.length},
                          step=self.steps)
        if summary.cut_short:
            why = "e-stop" if self.safe.estop.engaged else "step limit" if self._limits_reached() else "shutdown"
            log.warning("episode %d cut short after %d steps (%s): robot damped", summary.number, summary.length, why)

    def _episode_number(self) -> int:
        """The number the next episode's chunks carry (the one place episodes are numbered): durable, so it
        never restarts with the process."""
        return self.spool.next_episode()

    def _cut_short(self, steps: int) -> bool:
        """Whether the episode must end at this reading, its transitions then ``steps`` in all (per tick)."""
        return bool(self._abort.is_set() or self.safe.estop.engaged
                    or (self._stop_at is not None and time.monotonic() > self._stop_at)
                    or (self.cfg.max_steps and steps >= self.cfg.max_steps))

    def _limits_reached(self) -> bool:
        c = self.cfg
        return bool((c.max_episodes and self.episodes >= c.max_episodes) or (c.max_steps and self.steps >= c.max_steps))

    def shutdown(self) -> None:
        """Damp the robot, flush the spool, stop every service by one deadline, write the final status."""
        deadline = time.monotonic() + self.cfg.stop_timeout_s  # every wait below, the robot's release included
        self.safe.begin_stop()  # the robot first: damped and released, on its own thread while data is flushed
        leave_realtime()
        gc.unfreeze()  # a process that runs agents one after another (tests) gets its heap back
        # the writer feeds the learner: it flushes first, and leaves the others the seconds they may need
        self.writer.stop(deadline - 4.0)
        self._upload_kept_adapter()  # a verdict of the last episode goes out in the drain (else at the next start)
        if self.uplink is not None:  # after the writer: its drain sends the last chunks too
            self.uplink.stop(deadline - 3.0)
        self.spool.close(seconds_left(deadline - 3.0, floor=0.1))  # releases its lock for the next agent
        if self.watcher is not None:
            self.watcher.stop(deadline - 3.0)
        if self.trainer is not None:
            self.adapters.next_adapter(self.runtime.adapter_version)  # the last verdict goes to the learner
            if self.cfg.adapter.wait_for_learner and not self.stopping:  # a simulated clock's last steps count too
                self._wait_for_learner(time.monotonic() + LEARNER_WAIT_S)
                deadline = max(deadline, time.monotonic() + 3.0)
            self.trainer.stop(deadline - 1.0)
            self._collect_adapter_updates()
            if self.adapters.kept[1] != self.runtime.adapter_version:  # the status reports what a restart loads
                self.runtime.swap_adapter(*self.adapters.kept)
        for service in self.extra_services:
            service.stop(deadline - 1.0)
        try:
            self.safe.finish_stop(min(self.cfg.safety.release_timeout_s, seconds_left(deadline - 0.5)))
        finally:  # a driver's release error still leaves the final status written and the lock released
            self.reporter.stop(deadline)
            if self.parts.state_lock is not None:
                self.parts.state_lock.close()  # the state directory is free for the next agent

    # -- between episodes (robot damped, no deadline) ------------------------------------------------
    def _between_episodes(self) -> None:
        self._check_services()
        self._take_new_trunk()
        self._collect_adapter_updates()
        if self.trainer is not None and self.cfg.adapter.wait_for_learner:
            self._wait_for_learner(time.monotonic() + LEARNER_WAIT_S)
        nxt = self.adapters.next_adapter(self.runtime.adapter_version) if self.adapters is not None else None
        if nxt is not None:  # the next update on trial, the kept version back, or (unguarded) the newest
            self.runtime.swap_adapter(*nxt)
        self._upload_kept_adapter()

    def _check_services(self) -> None:
        """A dead spool writer is restarted once, then stops the agent; a dead trainer is restarted once."""
        if not self.writer.alive:
            if self.writer.restarts == 0:
                log.error("spool writer died (%s): restarting it", self.writer.error)
                self.writer.restart()
            else:
                self.fault = f"spool writer died again ({self.writer.error}): no experience can be stored"
                log.error("%s: stopping the agent", self.fault)
        if self.trainer is not None:
            self.trainer.check()

    def _check_write_failures(self) -> None:
        """With the writer idle, a last chunk the spool could not store (ENOSPC, EIO) makes a fault: no episode
        may run whose experience cannot be stored. Judged per episode, not per chunk: an episode shorter than a
        chunk writes one chunk, so a count of failed chunks would let more episodes run on a failed disk."""
        if not self.fault and self.writer.failed_in_a_row > 0:
            self.fault = (f"the spool cannot be written ({self.writer.last_write_error}): "
                          f"its last write failed ({self.writer.failed_in_a_row} in a row)")
            log.error("%s: stopping the agent (no episode may run whose experience cannot be stored)", self.fault)

    def _take_new_trunk(self) -> None:
        ready = self.watcher.take() if self.watcher is not None else None
        if ready is None:
            return
        policy, manifest, path = ready
        version, old = int(manifest["trunk_version"]), self.runtime.trunk_version
        adapter, number, source = None, self.runtime.adapter_version, "none"
        if self.runtime.adapter is not None:  # never an adapter trained for another trunk (robot_agent/trunk_adapter.py)
            kept, number = self.adapters.kept if self.adapters is not None else (self.runtime.adapter, number)
            save_own_adapter(self.state_dir, kept, number, old)
            a = self.cfg.adapter
            adapter, number, source = adapter_for_trunk(path, policy, version, self.profile.name, self.state_dir,
                                                        AdapterConfig(a.rank, a.alpha))
            if source == "rebased" and number <= self._adapter_high:
                log.info("rebased adapter v%d for trunk v%d renumbered v%d: this unit issued up to v%d", number,
                         version, self._adapter_high + 1, self._adapter_high)
                number = self._adapter_high + 1
            self._adapter_high = max(self._adapter_high, number)
            save_own_adapter(self.state_dir, adapter, number, version)  # the trainer starts from this file
            if self.trainer is None:
                save_adapter(self.state_dir / ADAPTER_FILE, adapter, number, version)  # what a restart loads
        self.runtime.swap_trunk(policy, version, adapter, number)
        if adapter is not None:  # its upload must name the trunk it runs on, not whatever that number meant before
            self._adapter_trunks[number] = version
        self.trunk_swaps += 1
        self.trunk_adapter_source = source
        write_status_file(self.state_dir / TRUNK_FILE, {"path": str(path.resolve()), "trunk_version": version})
        if self.trainer is not None:
            self.adapters = GuardedAdapters.from_config((adapter, number), self.trainer, self.cfg.adapter,
                                                        self.state_dir / GUARD_FILE, version)
            own = own_adapter_path(self.state_dir, version) if adapter is not None else ""
            self.trainer.new_trunk(path, version, own)  # it writes the adapter file a restart loads
        log.info("now running trunk v%d (was v%d) with adapter v%d (%s)", version, old, number, source)

    def _wait_for_learner(self, deadline: float) -> None:
        if not self.writer.wait_idle(seconds_left(deadline)):  # every recorded chunk went to the learner
            return
        t = self.trainer
        while t.consumed < t.submitted and t.alive and time.monotonic() < deadline and not self._abort.is_set():
            time.sleep(0.005)
            self._collect_adapter_updates()

    def _collect_adapter_updates(self) -> None:
        if self.trainer is None:
            return
        for msg in self.trainer.updates():
            if "version" not in msg:
                continue
            try:
                adapter, meta = load_adapter(msg["path"], self.runtime.policy, self.profile.name)
            except AdapterFileError as exc:
                log.error("adapter v%s refused: %s", msg["version"], exc)
                continue
            self.adapters.offer(adapter, int(meta["version"]))
            self._adapter_trunks[int(meta["version"])] = int(meta.get("trunk_version", 0))
            self._adapter_high = max(self._adapter_high, int(meta["version"]))
            self.adapter_updates += 1
            self.reporter.log({f"adapter/{k}": v for k, v in msg["stats"].items()}, step=self.steps)

    def _issued_before(self) -> int:
        """The adapter number the trainer issued last before this start (its candidate file), 0 if none."""
        try:
            return int(adapter_file_metadata(candidate_path(self.state_dir / ADAPTER_FILE)).get("version", 0))
        except ValueError:  # a damaged number: the trainer reads the file the same way and issues past the kept one
            return 0

    def _offer_saved_adapter(self) -> None:
        """At start: the kept adapter file goes to the hub (it may have missed it; the hub dedupes)."""
        meta = adapter_file_metadata(self.state_dir / ADAPTER_FILE)
        if self.uplink is None or not self.cfg.adapter.enabled or not meta:
            return
        version, trunk = int(meta.get("version", 0)), int(meta.get("trunk_version", 0))
        if version >= 1 and trunk >= 1:
            self.uplink.offer_adapter((self.state_dir / ADAPTER_FILE).read_bytes(), version, trunk)
            self._adapter_offered = version

    def _upload_kept_adapter(self) -> None:
        """A newly kept adapter goes to the hub with the trunk it was trained on (the uplink sends the newest)."""
        if self.uplink is None or self.adapters is None:
            return
        adapter, version = self.adapters.kept
        trunk = self._adapter_trunks.get(version, 0)
        if version <= self._adapter_offered or trunk < 1:  # trunk 0: a checkpoint with no version to name
            return
        self.uplink.offer_adapter(adapter_bytes(adapter, version, trunk), version, trunk)
        self._adapter_offered = version
        self._adapter_trunks = {v: t for v, t in self._adapter_trunks.items() if v >= version}

    def _spool_has_room(self) -> bool:
        """Whether the next episode may start: the writer is idle (every queued chunk went to disk or failed),
        its last write did not fail (else a fault), and the spool has room for an episode (drop_oldest makes
        room by itself). The write failures are judged here, in both modes, because only an idle writer's
        count is final: judged while the writer is behind, an episode could start on a disk that has failed."""
        if not self.writer.wait_idle(WRITER_IDLE_WAIT_S):
            return False
        self._check_write_failures()
        if self.fault:
            return False
        if self.cfg.spool.when_full == DROP_OLDEST:
            return True
        steps = self.task.max_episode_length
        # an episode's encoded size even before its first chunk is on disk (going by written chunks alone,
        # 1 byte each until then, let a first episode start with no room for it)
        need = max(max(self.writer.chunk_bytes, 1) * -(-steps // self.cfg.spool.chunk_steps), self._episode_bytes)
        if self.spool.has_room(need):
            return True
        if self.refused_episodes == 0:
            log.error("spool full (%d chunks wait for the hub): no new episodes until there is room", self.spool.depth)
        self.refused_episodes += 1
        return False

    def _wait_while_estopped(self) -> None:
        """Keep the robot damped and record nothing until the e-stop is cleared (or a stop is asked)."""
        log.error("e-stop engaged (%s): robot damped, no episodes until it is cleared", self.safe.estop.reason)
        while self.safe.estop.poll() and not self.stopping:
            self.driver.damp()
            time.sleep(1.0 / self.profile.control_hz)
        if not self.safe.estop.engaged:
            log.warning("e-stop cleared: resuming episodes")

    def _hold(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.stopping:
            ts = self.driver.read_state()
            self.safe.send(self.safe.layer.hold(ts.state), ts)
            time.sleep(1.0 / self.profile.control_hz)

    def _warm_up(self) -> None:
        """Run two ticks' computations on a real reading before the first deadline: the policy's first call and
        the compiled observation, step-contract, action and safety-filter kernels' first load (or compilation)
        take milliseconds, and loading one opens its cache files. A recorder and a safety layer of their own
        leave the agent's streams and safety counts alone."""
        p = self.parts
        state = self.driver.read_state().state
        rec = TransitionRecorder(self.task, p.obs_layout, p.priv_layout, _Discard(), 1, np.random.default_rng(0), {})
        layer = SafetyLayer(self.profile)
        rec.begin(0, 0, 0)
        for _ in range(2):
            obs, _ = rec.observe(state, False)
            action = self.runtime.act(obs, False)[0]
            layer.filter(p.action_map.to_command(action[None])[0], state)
            layer.hold(state)
            rec.record(0.0, state, obs, action, 0.0)

    # -- status --------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Everything an operator asks about: rate, timing, versions, spool, safety, services, episodes."""
        elapsed = max(time.monotonic() - self._t_start, 1e-9)
        returns = list(self.episode_returns)[-20:]
        return {
            "robot_id": self.cfg.robot_id, "hardware": self.profile.name, "pid": os.getpid(),
            "time": time.time(), "uptime_s": elapsed, "rate_hz": self.timing.periods / elapsed,
            "episodes": self.episodes, "steps": self.steps,
            "mean_return_last_20": float(np.mean(returns)) if returns else None,
            **self.timing.summary(),
            "trunk_version": self.runtime.trunk_version, "trunk_swaps": self.trunk_swaps,
            "trunk_adapter_source": self.trunk_adapter_source,
            "trunks_refused": len(self.watcher.refused) if self.watcher else 0,
            "adapter_version": self.runtime.adapter_version, "adapter_updates": self.adapter_updates,
            **(self.adapters.status() if self.adapters is not None else {}),
            "spool_depth": self.spool.depth, "spool_bytes": self.spool.bytes, "spool_dropped": self.spool.dropped,
            "spool_refused_chunks": self.spool.refused, "spool_counters": self.spool.counters(), "spool_backlog": self.writer.backlog,
            "lost_chunks": self.writer.lost_chunks, "priority_errors": self.writer.before_write_errors, "refused_episodes": self.refused_episodes,
            "services": {s.name: s.health() for s in self.services if s is not self.reporter},
            "damped_episodes": self.loop.damped_episodes, "fault": self.fault, "trainer_pid": self.trainer.process.process.pid if self.trainer else None,
            "safety": dict(self.safe.counts), "estop": self.safe.estop.engaged, "scheduling": self.scheduling,
            "uplink": self.uplink.status() if self.uplink is not None else {"enabled": False},
        }


class _Discard:
    """A sink for the warm-up's chunks."""

    def put(self, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Drop the chunk."""
