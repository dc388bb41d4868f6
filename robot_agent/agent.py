"""The robot agent: the control loop on one robot computer, and everything it keeps running around it.

Per control period: read the driver's state -> build the observation with the simulator's own code
(:class:`hardware.observation.ObservationLayout`) -> policy (trunk + stem/head + this unit's adapter) ->
safety layer -> driver. Rewards and episode ends come from the task shared with sim. Every transition
goes, with its behaviour log-probability and the trunk and adapter versions that produced it, to the
spool (by a writer thread) and to the adapter trainer (its own process). Nothing in the loop waits on
a disk, a network or a learner.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hardware.action import ActionMap
from hardware.driver import DriverError, make_driver
from hardware.observation import ObservationLayout
from hardware.profile import load_profile
from hardware.randomization import PhysicsParams
from hardware.safety import SafeDriver, SafetyConfig
from hardware.state import RobotState, TaskInputs
from hardware.tasks import TaskConfig, task_class
from robot_agent.adapter_guard import GuardedAdapters
from robot_agent.config import AgentConfig
from robot_agent.recorder import EpisodeRecorder
from robot_agent.runtime import PolicyRuntime, TrunkWatcher, load_verified, robot_spec
from robot_agent.scheduling import NORMAL, enter_realtime, leave_realtime
from robot_agent.spool import DROP_OLDEST, Spool, SpoolFullError
from robot_agent.status import LoopTiming, status_line
from robot_agent.trainer import AdapterTrainerProcess
from shared_policy.adapter import Adapter, AdapterFileError, load_adapter
from shared_policy.checkpoint import CheckpointError
from shared_policy.config import AdapterConfig
from shared_policy.tracking import NullLogger, RunLogger

log = logging.getLogger(__name__)

ADAPTER_FILE, STATUS_FILE, ESTOP_FILE, TRUNK_FILE = "adapter.safetensors", "status.json", "ESTOP", "trunk.json"


class AgentStartupError(RuntimeError):
    """The agent refuses to start: a mismatched driver or policy, an unreadable checkpoint, a bad config."""


class RobotAgent:
    """Runs one robot unit: control loop, spool, adapter training, trunk hot-swap, status, shutdown."""

    def __init__(self, cfg: AgentConfig, task_cfg: TaskConfig, logger: RunLogger | None = None):
        cfg.validate()
        self.cfg = cfg
        self.logger = logger or NullLogger()
        self.state_dir = Path(cfg.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.profile = load_profile(cfg.hardware)
        self.task = task_class(task_cfg.name)(task_cfg, self.profile)
        self.spec = robot_spec(self.profile, task_cfg.privileged_observation)
        try:
            self.driver = make_driver(cfg.driver.name, self.profile, **dict(cfg.driver.options))
        except (DriverError, ValueError, TypeError) as exc:
            raise AgentStartupError(f"driver '{cfg.driver.name}': {exc}") from exc
        self._check_driver()
        checkpoint = self._trunk_to_start_from()
        try:
            policy, manifest = load_verified(checkpoint, self.spec)
        except CheckpointError as exc:
            raise AgentStartupError(f"policy {checkpoint} refused for hardware '{self.profile.name}': {exc}") from exc
        self.checkpoint = Path(checkpoint)
        trunk_version = int(manifest["trunk_version"])
        adapter, adapter_version = self._adapter_to_start_from(policy)
        self.runtime = PolicyRuntime(policy, self.profile.name, trunk_version, adapter, adapter_version)
        self.obs_layout = ObservationLayout(self.profile, self.profile.observation)
        self.priv_layout = ObservationLayout(self.profile, task_cfg.privileged_observation)
        self.action_map = ActionMap(self.profile)
        safety = SafetyConfig(**{**asdict(cfg.safety)})
        safety.estop_file = safety.estop_file or str(self.state_dir / ESTOP_FILE)
        self.safe = SafeDriver(self.driver, safety)
        self.spool = Spool(cfg.spool.dir or self.state_dir / "spool", int(cfg.spool.quota_mb * 2**20),
                           cfg.spool.when_full, int(cfg.spool.segment_mb * 2**20))
        self.trainer = (AdapterTrainerProcess(self.checkpoint, self.profile.name, cfg.adapter,
                                              self.state_dir / ADAPTER_FILE, adapter_version, trunk_version,
                                              seed=cfg.seed + adapter_version)
                        if cfg.adapter.enabled and cfg.adapter.learn else None)
        # which update each episode runs, and which are kept (robot_agent/adapter_guard.py)
        self.adapters = (GuardedAdapters.from_config((adapter, adapter_version), self.trainer, cfg.adapter)
                         if self.trainer is not None else None)
        self.watcher = TrunkWatcher(cfg.trunk_dir, self.spec, trunk_version) if cfg.trunk_dir else None
        self.timing = LoopTiming(1.0 / self.profile.control_hz)
        self.rng = np.random.default_rng(cfg.seed)
        self.action_rng = np.random.default_rng(cfg.seed + 1)  # exploration noise, apart from the goals
        self.episodes = 0
        self.steps = 0
        self.episode_returns: deque[float] = deque(maxlen=1000)
        self.refused_episodes = 0
        self.lost_chunks = 0
        self.adapter_updates = 0
        self.trunk_swaps = 0
        self._writes: queue.Queue = queue.Queue()
        self._writer = threading.Thread(target=self._write_chunks, name="spool-writer", daemon=True)
        self._stop_at: float | None = None  # set by request_stop: finish the episode by then
        self._abort = threading.Event()
        self._last_status = 0.0
        self._t_start = time.monotonic()
        self.scheduling = NORMAL  # the control thread's scheduling policy, once run() starts
        self._chunk_bytes = 0

    # -- start-up checks -----------------------------------------------------------------------------
    def _check_driver(self) -> None:
        claimed = robot_spec(self.driver.profile, self.task.cfg.privileged_observation)
        for key in ("num_obs", "num_actions", "obs_layout", "action_names"):
            if getattr(claimed, key) != getattr(self.spec, key):
                raise AgentStartupError(
                    f"driver '{self.cfg.driver.name}' claims hardware '{self.driver.profile.name}' whose {key} "
                    f"{getattr(claimed, key)} does not match the agent's hardware '{self.profile.name}' "
                    f"({getattr(self.spec, key)}): refusing to start")

    def _trunk_to_start_from(self) -> str:
        """The last trunk this unit swapped to (if it still verifies), else the configured checkpoint."""
        saved = self.state_dir / TRUNK_FILE
        if saved.is_file():
            try:
                path = json.loads(saved.read_text())["path"]
                load_verified(path, self.spec)
                return path
            except (CheckpointError, OSError, ValueError, KeyError) as exc:
                log.warning("last trunk in %s is unusable (%s); starting from %s", saved, exc, self.cfg.checkpoint)
        return self.cfg.checkpoint

    def _adapter_to_start_from(self, policy: torch.nn.Module) -> tuple[Adapter | None, int]:
        if not self.cfg.adapter.enabled:
            return None, 0
        path = self.state_dir / ADAPTER_FILE
        if path.is_file():
            try:
                adapter, meta = load_adapter(path, policy, self.profile.name)
                log.info("continuing from adapter v%s (%s)", meta["version"], path)
                return adapter.eval(), int(meta["version"])
            except AdapterFileError as exc:
                raise AgentStartupError(f"saved adapter refused: {exc} (move it away to start a fresh one)") from exc
        a = self.cfg.adapter
        return Adapter(policy, self.profile.name, AdapterConfig(a.rank, a.alpha)).eval(), 0

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
        """Run episodes until stopped or a configured limit; always shuts down cleanly. Returns the status."""
        torch.set_num_threads(1)  # one small forward pass: threads only add wake-up latency
        # The control thread must get the GIL back within a fraction of a period from the spool writer and
        # the watchdog; CPython's default hand-over interval (5 ms) is longer than a 500 Hz period.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.05 / self.profile.control_hz))
        self.driver.connect()
        self._warm_up()
        if getattr(self.driver, "realtime", True):  # a simulated clock has no wall-clock deadline to watch
            self.safe.start_watchdog()
        self._writer.start()
        if self.trainer is not None:
            self.trainer.start()
        if self.watcher is not None:
            self.watcher.start()
        # last, so that nothing started above inherits it
        self.scheduling = enter_realtime(self.cfg.control_priority)
        # Everything built so far (torch, the policy, the driver) lives until exit: a frozen heap is never
        # scanned again. Inside an episode the cyclic collector is off (a full collection stalls every
        # thread of the process for milliseconds); it runs between episodes, where no deadline waits.
        gc.collect()
        gc.freeze()
        try:
            while not self.stopping and not self._limits_reached():
                gc.collect()
                self._between_episodes()
                if self.stopping:
                    break
                if self.safe.estop.poll():
                    self._wait_while_estopped()
                    continue
                if not self._spool_has_room():
                    self._hold(1.0)
                    continue
                gc.disable()
                try:
                    self._run_episode()
                finally:
                    gc.enable()
        finally:
            self.shutdown()
        return self.status()

    def shutdown(self) -> None:
        """Damp the robot, flush the spool, stop the learner and watchers, write the final status."""
        self.safe.stop()
        leave_realtime()
        gc.unfreeze()  # a process that runs agents one after another (tests) gets its heap back
        self._writes.put(None)
        if self._writer.is_alive():
            self._writer.join(timeout=30.0)
        if self.watcher is not None:
            self.watcher.stop()
        if self.trainer is not None:
            self.adapters.next_adapter(self.runtime.adapter_version)  # the last verdict goes to the learner
            if self.cfg.adapter.wait_for_learner and self.trainer.alive:
                self._wait_for_learner()  # a simulated clock's last steps and verdict count, however loaded the machine
            self.trainer.stop(timeout=max(1.0, self.cfg.shutdown_timeout_s))
            self._collect_adapter_updates()
            if self.adapters.kept[1] != self.runtime.adapter_version:  # the status reports what a restart loads
                self.runtime.swap_adapter(*self.adapters.kept)
        self._write_status(final=True)
        self.logger.close()

    def _limits_reached(self) -> bool:
        c = self.cfg
        return bool((c.max_episodes and self.episodes >= c.max_episodes) or (c.max_steps and self.steps >= c.max_steps))

    def _between_episodes(self) -> None:
        if self.watcher is not None:
            ready = self.watcher.take()
            if ready is not None:
                policy, manifest, path = ready
                self.runtime.swap_trunk(policy, int(manifest["trunk_version"]))
                self.trunk_swaps += 1
                (self.state_dir / TRUNK_FILE).write_text(json.dumps({"path": str(path.resolve()),
                                                                     "trunk_version": self.runtime.trunk_version}))
                if self.trainer is not None:
                    self.trainer.new_trunk(path)
                log.info("now running trunk v%d", self.runtime.trunk_version)
        self._collect_adapter_updates()
        if self.trainer is not None and self.cfg.adapter.wait_for_learner:
            self._wait_for_learner()
        nxt = self.adapters.next_adapter(self.runtime.adapter_version) if self.adapters is not None else None
        if nxt is not None:  # the next update on trial, the kept version back, or (unguarded) the newest
            self.runtime.swap_adapter(*nxt)

    def _wait_for_learner(self, timeout: float = 120.0) -> None:
        self._writes.join()  # every recorded chunk has gone to the spool and the learner
        end = time.monotonic() + timeout
        while self.trainer.consumed < self.trainer.submitted and self.trainer.alive and time.monotonic() < end:
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
            self.adapter_updates += 1
            self.logger.log({f"adapter/{k}": v for k, v in msg["stats"].items()}, step=self.steps)

    def _spool_has_room(self) -> bool:
        if self.cfg.spool.when_full == DROP_OLDEST:
            return True
        self._writes.join()  # judge the room after the last episode's chunks are on disk
        steps = self.task.max_episode_length
        need = max(self._chunk_bytes, 1) * -(-steps // self.cfg.spool.chunk_steps)
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
            self._sleep(1.0 / self.profile.control_hz)
            self._maybe_status()
        if not self.safe.estop.engaged:
            log.warning("e-stop cleared: resuming episodes")

    def _hold(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.stopping:
            ts = self.driver.read_state()
            self.safe.send(self.safe.layer.hold(ts.state), ts.state)
            self._sleep(1.0 / self.profile.control_hz)
            self._maybe_status()

    def _warm_up(self) -> None:
        """Run one tick's computations on a real reading before the first deadline: the policy's first call and
        the compiled observation, reward and action kernels' first load (or compilation) take milliseconds."""
        state = self.driver.read_state().state
        inputs = self.task.make_inputs(1)
        self.task.sample_goals(np.random.default_rng(0), inputs, np.array([0]))  # leaves the agent's stream alone
        obs = self.obs_layout.build(state, inputs)[0]
        action = self.runtime.act(obs, False)[0][None]
        self.action_map.to_command(action)
        self.task.reward(state, inputs, action, inputs.last_action)
        self.task.terminated(state, inputs)
        self._critic_obs(obs, state, inputs)

    # -- the control loop ----------------------------------------------------------------------------
    def _critic_obs(self, obs: np.ndarray, state: RobotState, inputs: TaskInputs) -> np.ndarray:
        # the robot cannot measure the physics the sim critic saw: those columns enter as nominal (0)
        extra = self.priv_layout.build(state, inputs)[0] if self.priv_layout.size else np.zeros(0, np.float32)
        return np.concatenate([obs, extra, np.zeros(PhysicsParams.NUM_PRIVILEGED, np.float32)])

    def _run_episode(self) -> None:
        """One episode. Per tick k: read s_k -> reward and end of transition k-1 -> obs_k -> act -> safety ->
        driver; recording and status come after the command is out."""
        task, rt, timing = self.task, self.runtime, self.timing
        period = timing.period
        realtime = bool(getattr(self.driver, "realtime", True))
        self.driver.home()
        self.safe.layer.reset()
        self.safe.arm()
        inputs = task.make_inputs(1)
        task.sample_goals(self.rng, inputs, np.array([0]))
        rec = EpisodeRecorder(self.cfg.spool.chunk_steps)
        ep_len, ep_return = 0, 0.0
        explore = self.cfg.adapter.explore and self.trainer is not None
        goal_period = task.goal_period_steps
        prev: dict[str, Any] | None = None  # obs, critic obs, action, log-prob and versions of step k-1
        terminated = time_out = aborted = False
        tick = time.monotonic()
        while True:
            if realtime:
                self._sleep_until(tick)
                woke = time.monotonic()
                timing.lag.add(woke - tick)
            else:
                woke = time.monotonic()
            ts = self.driver.read_state()
            state = ts.state
            reward_inputs = inputs
            if prev is not None:  # the transition k-1 -> k ends here; its reward is computed after the command
                prev["last_action"] = inputs.last_action
                inputs.last_action = prev["act2"]
                ep_len += 1
                self.steps += 1
                terminated = bool(task.terminated(state, inputs)[0])
                time_out = ep_len >= task.max_episode_length and not terminated
                aborted = (self._abort.is_set() or self.safe.estop.engaged
                           or (self._stop_at is not None and time.monotonic() > self._stop_at)
                           or bool(self.cfg.max_steps and self.steps >= self.cfg.max_steps))
                if goal_period and ep_len % goal_period == 0:
                    reward_inputs = copy.deepcopy(inputs)  # the reward still reads the goal of step k-1
                    task.sample_goals(self.rng, inputs, np.array([0]))
            done = terminated or time_out or aborted
            obs = self.obs_layout.build(state, inputs)[0]
            if not done:
                t0 = time.perf_counter()
                action, logp = rt.act(obs, explore, self.action_rng)
                t1 = time.perf_counter()
                self.safe.send(self.action_map.to_command(action[None])[0], state)
                sent = time.monotonic()
                timing.inference.add(t1 - t0)
                timing.compute.add(sent - woke)
                timing.periods += 1
                if realtime and sent > tick + period:
                    timing.misses += 1
            critic = self._critic_obs(obs, state, inputs)
            if prev is not None:
                rew, _ = task.reward(state, reward_inputs, prev["act2"], prev["last_action"])
                ep_return += float(rew[0])
                rec.add(obs=prev["obs"], critic_obs=prev["critic"], actions=prev["act2"][0], log_probs=prev["logp"],
                        rewards=float(rew[0]), dones=float(done),
                        time_outs=float(time_out or (aborted and not terminated)),
                        trunk_version=prev["trunk"], adapter_version=prev["adapter"], stamp=ts.stamp)
                if done or len(rec) >= self.cfg.spool.chunk_steps:
                    self._emit(rec.cut(critic), episode_end=done)
            if done:
                break
            prev = {"obs": obs, "critic": critic, "act2": action[None], "logp": logp, "trunk": rt.trunk_version,
                    "adapter": rt.adapter_version}
            self.safe.report()  # logging waits until the command is out
            self._maybe_status()
            tick += period
            if realtime:
                behind = time.monotonic() - tick
                if behind > period:  # fell more than a period behind: skip the ticks already lost, no burst
                    lost = int(behind / period)
                    timing.skipped(lost)
                    tick += lost * period
        self.safe.disarm()
        if aborted and not (terminated or time_out):
            why = "e-stop" if self.safe.estop.engaged else "step limit" if self._limits_reached() else "shutdown"
            log.warning("episode %d aborted after %d steps (%s): robot damped", self.episodes, ep_len, why)
        self.episodes += 1
        self.episode_returns.append(ep_return)
        if self.adapters is not None:  # an aborted episode's return is cut short: it does not count
            self.adapters.episode_done(rt.adapter_version, rt.trunk_version, ep_return, terminated or time_out)
        self.logger.log({"episode/return": ep_return, "episode/length": ep_len}, step=self.steps)

    def _emit(self, arrays: dict[str, np.ndarray], episode_end: bool) -> None:
        header = {"robot_id": self.cfg.robot_id, "hardware": self.profile.name, "task": self.task.name,
                  "episode": self.episodes, "steps": len(arrays["rewards"]), "episode_end": episode_end,
                  "trunk_version": int(arrays["trunk_version"][0]), "adapter_version": int(arrays["adapter_version"][0])}
        self._writes.put((header, arrays))

    def _write_chunks(self) -> None:
        """Writer thread: spool first (durable), then the learner."""
        # Not niced: this thread shares the control thread's GIL, and a low-priority GIL holder that gets
        # descheduled mid-encode stalls the control thread behind it (priority inversion). It only runs
        # while the control thread sleeps or waits, and fsync releases the GIL.
        while True:
            item = self._writes.get()
            if item is None:
                self._writes.task_done()
                return
            header, arrays = item
            try:
                before = self.spool.bytes
                self.spool.append(header, arrays)
                # the largest record so far, as written: what the next episode's room is judged by
                self._chunk_bytes = max(self._chunk_bytes, self.spool.bytes - before)
            except SpoolFullError as exc:
                self.lost_chunks += 1
                log.error("%s: chunk of episode %d not stored", exc, header["episode"])
            except OSError as exc:
                self.lost_chunks += 1
                log.error("spool write failed: %s", exc)
            if self.trainer is not None and self.trainer.alive:
                self.trainer.submit({k: arrays[k] for k in ("obs", "critic_obs", "actions", "log_probs", "rewards",
                                                             "dones", "time_outs")})
            self._writes.task_done()

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def _sleep_until(self, t: float) -> None:
        self._sleep(t - time.monotonic())

    # -- status --------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Everything an operator asks about: rate, timing, versions, spool, safety, episodes."""
        elapsed = max(time.monotonic() - self._t_start, 1e-9)
        return {
            "robot_id": self.cfg.robot_id, "hardware": self.profile.name, "pid": os.getpid(),
            "time": time.time(), "uptime_s": elapsed, "rate_hz": self.timing.periods / elapsed,
            "episodes": self.episodes, "steps": self.steps,
            "mean_return_last_20": float(np.mean(list(self.episode_returns)[-20:])) if self.episode_returns else None,
            **self.timing.summary(),
            "trunk_version": self.runtime.trunk_version, "trunk_swaps": self.trunk_swaps,
            "trunks_refused": len(self.watcher.refused) if self.watcher else 0,
            "adapter_version": self.runtime.adapter_version, "adapter_updates": self.adapter_updates,
            **(self.adapters.status() if self.adapters is not None else {}),
            "spool_depth": self.spool.depth, "spool_bytes": self.spool.bytes, "spool_dropped": self.spool.dropped,
            "spool_refused_chunks": self.spool.refused, "lost_chunks": self.lost_chunks,
            "refused_episodes": self.refused_episodes,
            "safety": dict(self.safe.counts), "estop": self.safe.estop.engaged, "scheduling": self.scheduling,
        }

    def _maybe_status(self) -> None:
        now = time.monotonic()
        if now - self._last_status >= self.cfg.status_every_s:
            self._last_status = now
            self._write_status()

    def _write_status(self, final: bool = False) -> None:
        s = self.status()
        s["final"] = final
        tmp = self.state_dir / f".{STATUS_FILE}.tmp"
        tmp.write_text(json.dumps(s, indent=1))
        os.replace(tmp, self.state_dir / STATUS_FILE)
        print(status_line(s), flush=True)
        self.logger.log({k: float(v) for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
                        step=self.steps)
