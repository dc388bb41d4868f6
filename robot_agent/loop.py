"""The control loop: one episode at the profile's rate, on the control thread.

Per tick k: wait for the tick -> read s_k -> end transition k-1 (step contract) and build obs_k -> policy
-> safety layer -> driver; only then the work that no command waits for: the reward and row of
transition k-1, and a chunk handed to the sink (a queue put). The loop opens no file, prints nothing and
logs nothing: status, logging and the spool live on other threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from hardware.action import ActionMap
from hardware.driver import RobotDriver
from robot_agent.recorder import EpisodeSummary, TransitionRecorder
from robot_agent.robot_seeds import RobotSeeds
from robot_agent.runtime import PolicyRuntime
from robot_agent.safe_driver import SafeDriver
from robot_agent.status import LoopTiming


class ControlLoop:
    """Runs episodes of one robot: reads, acts through the safety layer, and records every transition."""

    def __init__(self, driver: RobotDriver, safe: SafeDriver, runtime: PolicyRuntime, action_map: ActionMap,
                 recorder: TransitionRecorder, timing: LoopTiming, cut_short: Callable[[int], bool],
                 explore: bool, seeds: RobotSeeds):
        self.driver, self.safe, self.runtime, self.action_map = driver, safe, runtime, action_map
        self.recorder, self.timing = recorder, timing
        self.cut_short = cut_short  # (steps so far) -> whether to end the episode now (e-stop, shutdown, limit)
        self.explore, self.seeds = explore, seeds
        self.action_rng: np.random.Generator = seeds.episode(0)[1]  # each episode draws its own (run_episode)
        self.realtime = bool(getattr(driver, "realtime", True))  # a simulated clock has no deadline to keep
        self.damped_episodes = 0  # episodes ended because the safety layer damped the robot (bad or stale reading)
        self._damped = False
        self._zero_command = np.zeros(len(action_map.default))

    def run_episode(self, number: int) -> EpisodeSummary:
        """One episode from the home pose until the task ends it or ``cut_short`` does; the robot is damped after."""
        self.driver.home()
        self.safe.layer.reset()
        self.safe.arm()
        rt = self.runtime
        goals, self.action_rng = self.seeds.episode(number)  # never the draws of an earlier start's episode
        self.recorder.begin(number, rt.trunk_version, rt.adapter_version, goals)
        self._damped = False
        period = self.timing.period
        tick = time.monotonic()
        while not self.tick(tick):
            tick += period
            if self.realtime:
                behind = time.monotonic() - tick
                if behind > period:  # fell more than a period behind: skip the ticks already lost, no burst
                    lost = int(behind / period)
                    self.timing.skipped(lost)
                    tick += lost * period
        self.safe.disarm()
        return self.recorder.summary()

    def tick(self, tick: float) -> bool:
        """One control period scheduled at ``tick``; returns whether the episode ended at this reading."""
        woke = self._wait_until(tick)
        ts = self.driver.read_state()
        if not ts.state.is_finite():  # the safety layer damps and counts it; no NaN becomes a transition
            self.safe.send(self._zero_command, ts)
            self.recorder.abort()
            self.damped_episodes += 1
            return True
        # a robot the safety layer damped (a non-finite or stale reading, the e-stop) did not act: the episode
        # ends at this reading, so no later transition records an action the robot never took
        obs, done = self.recorder.observe(ts.state, self._damped or self.cut_short(self.recorder.steps + 1))
        if done:
            self.recorder.record(ts.stamp, ts.state, obs, None)
            return True
        t0 = time.perf_counter()
        action, log_prob = self.runtime.act(obs, self.explore, self.action_rng)
        t1 = time.perf_counter()
        if self.safe.send(self.action_map.to_command(action[None])[0], ts) is None:  # ts: its stamp is checked
            self._damped = True
            self.damped_episodes += 1
        self.timing.command_sent(tick, woke, t1 - t0, self.realtime)
        self.recorder.record(ts.stamp, ts.state, obs, action, log_prob)  # the command is out: no deadline waits
        return False

    def _wait_until(self, tick: float) -> float:
        if not self.realtime:
            return time.monotonic()
        delay = tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        woke = time.monotonic()
        self.timing.lag.add(woke - tick)
        return woke
