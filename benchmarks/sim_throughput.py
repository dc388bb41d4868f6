"""Simulator throughput: ours vs MuJoCo's own batched stepping (the limit), EnvPool and Gymnasium.

Env steps per second with uniform random actions, measured in interleaved rounds (ours, then each
peer, repeated) so that machine noise hits every contender alike; the median round counts.

- ours: ``sim.make_env`` on the same nominal model as the limit, with all env logic (observation noise,
  action latency, pushes, auto-reset, critic observations); ours_dr adds the task's default per-world
  physics randomisation (masses, friction, gains...), whose per-world model parameters cost MuJoCo
  itself 4-6% on these models.
- limit: ``mujoco.batch.Batch`` on the same model, same substeps, same threads, fed the same random
  actions through the same action map, with no env logic at all.
- Ant peers: EnvPool's Ant-v4 and Gymnasium's AsyncVectorEnv(Ant-v5), against ours on Gymnasium's own
  ant.xml with the same frame skip (5).

    python benchmarks/sim_throughput.py            # the full table (install the bench extra first)
    python benchmarks/sim_throughput.py --quick    # one quadruped configuration vs its limit, < 60 s

The last line sums up, e.g. ``sim_throughput ratio_vs_limit=0.93 ratio_vs_envpool=1.14 ratio_vs_gym_async=3.6``;
``limit_vs_gym_async`` beside it is MuJoCo's own stepping against Async, the most any env could reach.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from mujoco import batch as mjbatch
from result_record import write_result  # beside this script

import sim
from hardware.randomization import NONNEGATIVE_FIELDS, RANGE_FIELDS

ROBOTS = [("cartpole_swingup", "cartpole"), ("reach", "arm7"), ("locomotion", "go2_like")]
ANT = ("ant_run", "gym_ant")


def timed(step: Callable[[int], None], n: int, seconds: float) -> float:
    """Env steps per second of ``step`` over about ``seconds`` (at least 5 calls), n envs per call."""
    step(0)  # warm: first-call costs are not throughput
    t0 = time.perf_counter()
    calls = 0
    while calls < 5 or time.perf_counter() - t0 < seconds:
        step(calls)
        calls += 1
    return calls * n / (time.perf_counter() - t0)


# Model-level randomisation set to the nominal point: the env keeps all its logic (observation noise,
# latency, pushes, resets) but steps the very model the limit steps.
NOMINAL_PHYSICS = {name: ([1.0, 1.0] if name in NONNEGATIVE_FIELDS else [0.0, 0.0]) for name in RANGE_FIELDS}


class Ours:
    """Our batched env stepping random actions; ``per_world_physics`` keeps the task's physics randomisation."""

    def __init__(self, task: str, hardware: str, n: int, per_world_physics: bool = False):
        overrides = {} if per_world_physics else {"randomization": NOMINAL_PHYSICS}
        self.env = sim.make_env(task, hardware, n, seed=0, **overrides)
        g = torch.Generator().manual_seed(0)
        self.actions = [torch.rand(n, self.env.num_actions, generator=g) * 2 - 1 for _ in range(64)]

    def step(self, k: int) -> None:
        self.env.step(self.actions[k % 64])


class Limit:
    """MuJoCo's own batched stepping of the same model: same substeps, threads and action stream."""

    def __init__(self, ours: Ours):
        env = ours.env
        self.batch = mjbatch.Batch(env.robot.model, nsim=env.num_envs, nthread=0)
        self.batch.bind("qpos")[:] = env.robot.init_qpos
        self.ctrl = self.batch.bind("ctrl")
        self.ids = env.robot.actuator_ids
        self.cmds = [env.action_map.to_command(a.numpy().astype(np.float64)) for a in ours.actions]
        self.nsub = env.decimation

    def step(self, k: int) -> None:
        self.ctrl[:, self.ids] = self.cmds[k % 64]
        self.batch.step(nstep=self.nsub)


class EnvPoolAnt:
    """EnvPool's Ant-v4 (frame skip 5), all envs per batch, one thread per core."""

    def __init__(self, n: int):
        import envpool

        self.env = envpool.make("Ant-v4", env_type="gymnasium", num_envs=n, batch_size=n,
                                num_threads=os.cpu_count() or 1, seed=0)
        self.env.reset()
        rng = np.random.default_rng(0)
        self.actions = [rng.uniform(-1, 1, (n, 8)).astype(np.float32) for _ in range(64)]

    def step(self, k: int) -> None:
        self.env.step(self.actions[k % 64])


class GymAsyncAnt:
    """Gymnasium's AsyncVectorEnv over Ant-v5 (frame skip 5), one process per env."""

    def __init__(self, n: int):
        import gymnasium as gym

        self.env = gym.make_vec("Ant-v5", num_envs=n, vectorization_mode="async")
        self.env.reset(seed=0)
        rng = np.random.default_rng(0)
        self.actions = [rng.uniform(-1, 1, (n, 8)).astype(np.float32) for _ in range(64)]

    def step(self, k: int) -> None:
        self.env.step(self.actions[k % 64])

    def close(self) -> None:
        self.env.close()


def measure(contenders: dict[str, Callable[[int], None]], n: int, rounds: int, seconds: float) -> dict[str, float]:
    """Median steps/s per contender over interleaved rounds."""
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, step in contenders.items():
            samples[name].append(timed(step, n, seconds))
    return {k: statistics.median(v) for k, v in samples.items()}


def robot_rows(robots, sizes, rounds, seconds, log) -> list[dict]:
    rows = []
    for task, hw in robots:
        for n in sizes:
            ours = Ours(task, hw, n)
            ours_dr = Ours(task, hw, n, per_world_physics=True)
            res = measure({"ours": ours.step, "ours_dr": ours_dr.step, "limit": Limit(ours).step}, n, rounds,
                          seconds)
            row = {"robot": hw, "task": task, "n": n, **res, "ratio_vs_limit": res["ours"] / res["limit"],
                   "ratio_dr_vs_limit": res["ours_dr"] / res["limit"]}
            log(f"{hw:10s} N={n:5d}  ours {res['ours']:10,.0f}  ours_dr {res['ours_dr']:10,.0f}  "
                f"limit {res['limit']:10,.0f}  ratio {row['ratio_vs_limit']:.2f}  "
                f"ratio_dr {row['ratio_dr_vs_limit']:.2f}")
            rows.append(row)
    return rows


def ant_rows(sizes, rounds, seconds, log) -> list[dict]:
    rows = []
    for n in sizes:
        ours = Ours(*ANT, n)
        contenders = {"ours": ours.step, "limit": Limit(ours).step, "envpool": EnvPoolAnt(n).step}
        async_env = GymAsyncAnt(n) if n == 64 else None
        if async_env:
            contenders["gym_async"] = async_env.step
        try:
            res = measure(contenders, n, rounds, seconds)
        finally:
            if async_env:
                async_env.close()
        row = {"robot": "gym_ant", "task": ANT[0], "n": n, **res, "ratio_vs_limit": res["ours"] / res["limit"],
               "ratio_vs_envpool": res["ours"] / res["envpool"]}
        if "gym_async" in res:
            row["ratio_vs_gym_async"] = res["ours"] / res["gym_async"]
            # the most any env can reach against Async: MuJoCo's own stepping of the model, no env logic
            row["limit_vs_gym_async"] = res["limit"] / res["gym_async"]
        peers = "  ".join(f"{k} {v:10,.0f}" for k, v in res.items())
        log(f"gym_ant    N={n:5d}  {peers}  ratio_vs_limit {row['ratio_vs_limit']:.2f}  "
            f"vs_envpool {row['ratio_vs_envpool']:.2f}" +
            (f"  vs_gym_async {row['ratio_vs_gym_async']:.2f}" if "ratio_vs_gym_async" in row else ""))
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one quadruped configuration vs its limit (< 60 s)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="per contender per round")
    ap.add_argument("--out", default="benchmarks/results/sim_throughput.json")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(f"sim_throughput on {platform.node()}: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    if args.quick:
        rows = robot_rows([("locomotion", "go2_like")], [256], rounds=5, seconds=1.0, log=log)
        print(f"sim_throughput ratio_vs_limit={rows[0]['ratio_vs_limit']:.2f} (quick: go2_like N=256)")
        return

    rows = robot_rows(ROBOTS, args.sizes, args.rounds, args.seconds, log)
    rows += ant_rows(args.sizes, args.rounds, args.seconds, log)
    big = [r for r in rows if r["n"] >= 256]
    summary = {
        "ratio_vs_limit": min(r["ratio_vs_limit"] for r in big),  # the worst robot at N >= 256
        "ratio_vs_limit_median": statistics.median(r["ratio_vs_limit"] for r in big),
        "ratio_dr_vs_limit": min(r["ratio_dr_vs_limit"] for r in big if "ratio_dr_vs_limit" in r),
        "ratio_vs_envpool": min(r["ratio_vs_envpool"] for r in rows if "ratio_vs_envpool" in r and r["n"] >= 256),
        "ratio_vs_gym_async": next(r["ratio_vs_gym_async"] for r in rows if "ratio_vs_gym_async" in r),
        "limit_vs_gym_async": next(r["limit_vs_gym_async"] for r in rows if "limit_vs_gym_async" in r),
    }
    write_result(args.out, "sim_throughput " + " ".join(f"{k}={v:.2f}" for k, v in summary.items()),
                 {"args": vars(args), "rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
