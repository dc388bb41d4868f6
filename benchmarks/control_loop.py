"""Control-loop timing of the robot agent at 50 Hz and 500 Hz, with adapter training running beside it.

The real agent drives a real-time stand-in (its physics paced by the wall clock in its own process)
through the safety layer, with the default policy size, while its adapter trainer process learns
from the unit's experience (an update every ``--steps-per-update`` steps). The robot type is given as
a profile; the 500 Hz run uses the same robot with its controller at 500 Hz (a profile file written
next to the results). Per rate: deadline misses (command sent later than one period after its tick),
inference p50/p99 (the policy's forward pass), and the wake-up jitter percentiles; each rate runs at
normal scheduling and under SCHED_FIFO (``control_priority``) where the OS allows it.

Two figures say how much of the result is the machine: the hypervisor's steal time during each run
(``/proc/stat``), and the **floor**: a bare Python loop at the same rate and priority that only sleeps
to each tick and spins for the agent's median compute time, beside a nice-10 CPU hog (the adapter
trainer's worst case). Its misses are what this VM gives any Python control loop.

    python benchmarks/control_loop.py --seconds 60

Last line, e.g. ``control_loop miss_rate_50hz=0.0000 miss_rate_500hz=0.0004 inference_p99_ms=0.31``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import threading
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from result_record import write_result  # beside this script

import sim
from hardware.profile import PROFILE_DIR
from hardware.tasks.config import task_config
from robot_agent.agent import RobotAgent
from robot_agent.config import AgentConfig
from robot_agent.scheduling import NORMAL
from shared_policy.config import PolicyConfig, PPOConfig
from shared_policy.tracking import NullLogger
from sim.pretrain import PretrainRunner

TASKS = {"go2_like": "locomotion", "cartpole": "cartpole_swingup", "arm7": "reach"}


def profile_at(hw: str, rate: int, workdir: Path) -> str:
    """A profile file of ``hw`` with its controller at ``rate`` Hz (physics at a whole multiple)."""
    raw = OmegaConf.load(PROFILE_DIR / f"{hw}.yaml")
    if rate == raw.control_hz:
        return hw
    raw.name = f"{hw}_{rate}hz"
    raw.physics_hz = rate * max(1, int(round(raw.physics_hz / raw.control_hz / (rate / raw.control_hz))))
    raw.control_hz = rate
    path = workdir / f"{raw.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(raw, path)
    return str(path)


def tiny_checkpoint(hardware: str, task: str, out: Path) -> Path:
    """A default-size policy for this layout (two PPO iterations: timing does not depend on training)."""
    env = sim.make_env(task, hardware, 16)
    runner = PretrainRunner([env], PolicyConfig(), PPOConfig(num_steps_per_env=8), out, NullLogger(),
                            checkpoint_every=10**6)
    runner.learn(2, log_every=10**6)
    return runner.save()


def measure(hardware: str, task: str, checkpoint: Path, seconds: float, steps_per_update: int,
            state_dir: Path, priority: int = 0) -> dict[str, Any]:
    """Run the agent in real time for ``seconds``; returns its final status."""
    cfg = AgentConfig(hardware=hardware, checkpoint=str(checkpoint), state_dir=str(state_dir), status_every_s=10.0,
                      control_priority=priority)
    cfg.driver.options = {"realtime": True, "seed": 0}
    cfg.adapter.steps_per_update = steps_per_update
    cfg.logger.backend = "none"
    agent = RobotAgent(cfg, task_config(task))
    rate = agent.profile.control_hz
    cfg.max_steps = int(seconds * rate)
    t0 = time.perf_counter()
    status = agent.run()
    status["wall_s"] = time.perf_counter() - t0
    status["control_hz"] = rate
    return status


def host_steal_s() -> float:
    """Seconds of CPU time the hypervisor has taken from this VM so far (all CPUs), or 0 if unknown."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _cpu_hog() -> None:
    os.nice(10)
    while True:
        pass


def machine_floor(rate: float, seconds: float, work_s: float, priority: int) -> dict[str, float]:
    """Misses of a bare loop: sleep to each tick, spin ``work_s``, beside a nice-10 CPU hog."""
    from robot_agent.scheduling import enter_realtime

    hog = mp.get_context("spawn").Process(target=_cpu_hog, daemon=True)
    hog.start()
    out: dict[str, float] = {}

    def loop() -> None:
        out["scheduling"] = enter_realtime(priority)
        period, misses, n = 1.0 / rate, 0, int(seconds * rate)
        tick = time.monotonic()
        for _ in range(n):
            tick += period
            delay = tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            end = time.monotonic() + work_s
            while time.monotonic() < end:
                pass
            if time.monotonic() > tick + period:
                misses += 1
            if tick < time.monotonic() - period:
                tick = time.monotonic()
        out.update(periods=n, misses=misses, miss_rate=misses / n)

    try:
        t = threading.Thread(target=loop)
        t.start()
        t.join()
    finally:
        hog.kill()
        hog.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hardware", default="go2_like", choices=sorted(TASKS))
    ap.add_argument("--rates", type=int, nargs="+", default=[50, 500])
    ap.add_argument("--priorities", type=int, nargs="+", default=[0, 50],
                    help="control_priority values to run: 0 = normal scheduling, 1-99 = SCHED_FIFO")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--steps-per-update", type=int, default=1000)
    ap.add_argument("--workdir", default="/tmp/control_loop_bench")
    ap.add_argument("--out", default="benchmarks/results/control_loop.json")
    args = ap.parse_args()
    work = Path(args.workdir)
    task = TASKS[args.hardware]
    results: dict[str, dict[str, Any]] = {}
    for rate in args.rates:
        hw = profile_at(args.hardware, rate, work)
        ckpt = tiny_checkpoint(hw, task, work / f"policy-{rate}")
        for prio in args.priorities:
            steal0 = host_steal_s()
            st = measure(hw, task, ckpt, args.seconds, args.steps_per_update,
                         work / f"state-{rate}-{time.time_ns()}", priority=prio)
            st["host_steal_s"] = host_steal_s() - steal0
            st["floor"] = machine_floor(rate, args.seconds, st["compute_p50_ms"] / 1e3, prio)
            key = f"{rate}hz" + ("" if st["scheduling"] == NORMAL else "_fifo")
            results[key] = st
            print(f"{rate:4d} Hz, {st['scheduling']}: {st['periods']} periods in {st['wall_s']:.1f} s | misses "
                  f"{st['deadline_misses']} ({100 * st['miss_rate']:.3f}%) | inference p50 "
                  f"{st['inference_p50_ms']:.3f} p99 {st['inference_p99_ms']:.3f} ms | loop compute p50 "
                  f"{st['compute_p50_ms']:.3f} p99 {st['compute_p99_ms']:.3f} ms | jitter p50 "
                  f"{st['jitter_p50_ms']:.3f} p99 {st['jitter_p99_ms']:.3f} p99.9 {st['jitter_p999_ms']:.3f} max "
                  f"{st['jitter_max_ms']:.3f} ms | adapter updates {st['adapter_updates']} | safety "
                  f"{sum(st['safety'].values())} | host steal {st['host_steal_s']:.2f} s | floor: bare loop misses "
                  f"{st['floor']['misses']} ({100 * st['floor']['miss_rate']:.3f}%)", flush=True)
    parts = " ".join(f"miss_rate_{k}={v['miss_rate']:.4f} floor_{k}={v['floor']['miss_rate']:.4f}"
                     for k, v in results.items())
    worst = max(v["inference_p99_ms"] for v in results.values())
    write_result(args.out, f"control_loop {parts} inference_p99_ms={worst:.3f}",
                 {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
