"""Locomotion on flat ground: velocity tracking of a quadruped after a fixed wall-clock training budget.

Trains the shared policy with PPO on ``locomotion`` for one quadruped type until the budget runs out
(training time only; evaluation comes after), then scores the final policy's deterministic actions on
fresh worlds, every world running one full 20 s episode with the task's joystick commands (re-drawn
every 10 s):

- tracking error: per control step, |command_xy - base_velocity_xy| (Euclidean, m/s), averaged over
  every step of every world still standing; also per axis (vx, vy) and for the yaw rate;
- falls: episodes that end before the 20 s time-out (trunk on the ground or tilted past 60 degrees).

Two evaluation conditions: the training domain randomisation (friction, masses, motor strength,
latency, sensor noise, pushes), and the nominal robot. The learning curve goes to a PNG.

    python benchmarks/locomotion.py --minutes 55

Last line, e.g. ``locomotion tracking_error=0.21 no_fall_rate=0.97 minutes=55.0``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from result_record import write_result  # beside this script

import sim
from shared_policy.config import PolicyConfig, PPOConfig
from shared_policy.policy import FleetPolicy
from shared_policy.tracking import NullLogger
from sim.pretrain import PretrainRunner

TASK = "locomotion"


def train(hw: str, num_envs: int, minutes: float, seed: int, out: Path,
          threads: int = 0) -> tuple[PretrainRunner, list[dict]]:
    """PPO until the wall-clock budget is spent; returns the runner and (minutes, iteration, return) points."""
    env = sim.make_env(TASK, hw, num_envs, seed=seed, nthread=threads)
    runner = PretrainRunner([env], PolicyConfig(), PPOConfig(), out, NullLogger(), checkpoint_every=50, seed=seed)
    curve: list[dict] = []
    t0 = time.perf_counter()
    while (time.perf_counter() - t0) / 60 < minutes:
        for m in runner.learn(5, log_every=25)[-5:]:
            if f"{hw}/return" in m:
                curve.append({"minutes": (time.perf_counter() - t0) / 60, "iteration": m["iteration"],
                              "return": m[f"{hw}/return"], "success": m[f"{hw}/success"]})
    runner.save()
    return runner, curve


@torch.no_grad()
def score(policy: FleetPolicy, hw: str, num_envs: int, seed: int, randomized: bool) -> dict[str, float]:
    """One full episode per world; tracking error over standing steps and the fraction that never fell."""
    overrides = {} if randomized else {"randomization": {"enabled": False}}
    env = sim.make_env(TASK, hw, num_envs, seed=seed, **overrides)
    obs, _ = env.reset()
    period = env.task.goal_period_steps
    fell = np.zeros(num_envs, dtype=bool)
    finished = np.zeros(num_envs, dtype=bool)
    err_xy, err_x, err_y, err_yaw, settled = [], [], [], [], []
    for _ in range(env.max_episode_length):
        cmd = env.inputs.command.copy()  # the command this step is asked to track
        obs, _, done, extras = env.step(policy.action_mean(hw, obs))
        done = done.numpy()
        live = ~finished & ~done
        v, w = env.state.base_lin_vel[live], env.state.base_ang_vel[live]
        c = cmd[live]
        err_xy.append(np.linalg.norm(c[:, :2] - v[:, :2], axis=1))
        err_x.append(np.abs(c[:, 0] - v[:, 0]))
        err_y.append(np.abs(c[:, 1] - v[:, 1]))
        err_yaw.append(np.abs(c[:, 2] - w[:, 2]))
        # steady state: more than 1 s after the command was (re-)drawn
        since = (env.episode_length_buf.numpy()[live] - 1) % period
        settled.append(err_xy[-1][since >= int(1.0 / env.dt)])
        newly = done & ~finished
        fell |= newly & ~extras["time_outs"].numpy()
        finished |= done
        if finished.all():
            break
    cat = np.concatenate
    return {"tracking_error_xy": float(cat(err_xy).mean()), "mae_vx": float(cat(err_x).mean()),
            "mae_vy": float(cat(err_y).mean()), "mae_yaw": float(cat(err_yaw).mean()),
            "tracking_error_xy_settled": float(cat(settled).mean()),
            "no_fall_rate": float(1.0 - fell.mean()), "episodes": num_envs}


def plot_curve(curve: list[dict], path: Path, title: str) -> None:
    """Training return and success against wall-clock minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    mins = [p["minutes"] for p in curve]
    ax.plot(mins, [p["return"] for p in curve], label="episode return")
    ax.set_xlabel("training wall-clock (min)")
    ax.set_ylabel("mean episode return")
    ax2 = ax.twinx()
    ax2.plot(mins, [p["success"] for p in curve], color="tab:orange", alpha=0.6, label="success")
    ax2.set_ylabel("success rate (episode end)")
    ax2.set_ylim(0, 1)
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hardware", default="go2_like")
    ap.add_argument("--minutes", type=float, default=55.0, help="training wall-clock budget")
    ap.add_argument("--num-envs", type=int, default=1024)
    ap.add_argument("--eval-envs", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/locomotion.json")
    ap.add_argument("--plot", default="benchmarks/results/locomotion_curve.png")
    ap.add_argument("--threads", type=int, default=0,
                    help="physics and torch threads (0: every core); 1 for seeds run side by side")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    runner, curve = train(args.hardware, args.num_envs, args.minutes, args.seed,
                          Path(f"/tmp/locomotion_bench/seed{args.seed}"), args.threads)
    trained_min = curve[-1]["minutes"] if curve else 0.0
    rows = {"randomized": score(runner.policy, args.hardware, args.eval_envs, 10_000, True),
            "nominal": score(runner.policy, args.hardware, args.eval_envs, 20_000, False)}
    for cond, r in rows.items():
        print(f"{cond:10s} tracking error {r['tracking_error_xy']:.3f} m/s (settled {r['tracking_error_xy_settled']:.3f}; "
              f"vx {r['mae_vx']:.3f} vy {r['mae_vy']:.3f} yaw {r['mae_yaw']:.3f} rad/s) | "
              f"no fall {r['no_fall_rate']:.3f} of {r['episodes']} episodes of 20 s")
    cores = f"{args.threads} thread(s)" if args.threads else "every core"
    plot_curve(curve, Path(args.plot), f"{TASK}, {args.hardware}, {args.num_envs} worlds, {cores}, seed {args.seed}")
    r = rows["randomized"]
    write_result(args.out, f"locomotion tracking_error={r['tracking_error_xy']:.3f} "
                 f"no_fall_rate={r['no_fall_rate']:.3f} minutes={trained_min:.1f}",
                 {"args": vars(args), "minutes": trained_min, "iterations": runner.iteration, "rows": rows,
                  "curve": curve})


if __name__ == "__main__":
    main()
