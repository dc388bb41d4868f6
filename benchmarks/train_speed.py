"""Cart-pole swing-up: wall-clock time to a return threshold, ours vs rsl_rl vs Stable-Baselines3.

Every learner trains on our cartpole env with the same PPO settings, so what differs is the learner and
how it meets the env:

- ours: ``PretrainRunner`` on the batched env;
- rsl_rl: rsl-rl-lib's ``OnPolicyRunner`` on the same batched env through ``RslRlVecEnv``;
- sb3_batched (the default SB3 peer): SB3's PPO on a VecEnv over our whole batch
  (``benchmarks/sb3_vec_env.py``), so the comparison is between learners, not env paths;
- sb3 (opt in with ``--only``): SB3's own ``DummyVecEnv`` over 256 copies of our single-world Gymnasium
  view (``sim.gym_vector.GymEnv``). Most of its time is our env stepped one world at a time, so it
  measures that path more than SB3.

One tracker wraps the env's ``step`` and records every finished episode's return with its wall-clock time;
the time to threshold is the first moment the mean of the last 256 finished episodes reaches the
threshold. Same PPO settings everywhere: 256 worlds x 24 steps per update, 5 epochs, 4 minibatches,
lr 1e-3 (KL-adaptive where the learner has it), entropy 0.01, gamma 0.99, lambda 0.95, clip 0.2,
comparable MLP sizes.

Threshold: an episode is 500 steps (10 s) with reward <= 1 per step. A swing-up costs ~1.5-2 s of low
reward before the pole is up; a policy that swings up and then balances centred scores ~400. 350 means
"swings up reliably and balances for most of the episode".

    python benchmarks/train_speed.py --seeds 8 --budget-min 8

Learners run interleaved per seed. Each learner's time is quoted as a mean with its 95% t-interval over
training seeds; each ratio (mean time of the peer / mean time of ours) with a 95% bootstrap interval over
seeds. Last line, e.g. ``train_speed seeds=8 ratio_vs_rsl_rl=1.10 [0.92,1.31] ratio_vs_sb3_batched=1.6
[1.4,1.9]``; a peer that misses the budget counts at the budget, so its ratio is a lower bound, marked '>'.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
from result_record import write_result  # beside this script
from seed_stats import ratio_interval, t_interval

import sim

TASK, HARDWARE, NUM_ENVS = "cartpole_swingup", "cartpole", 256


class ReturnTracker:
    """Wraps envs' step: remembers finished-episode returns and when the threshold was first met.

    Several envs (SB3's DummyVecEnv over single-world views) share one tracker and one window.
    """

    def __init__(self, env, threshold: float, window: int = 256):
        self.threshold, self.window = threshold, window
        self.recent: deque[float] = deque(maxlen=window)
        self.t0 = time.perf_counter()
        self.reached_at: float | None = None
        self.curve: list[tuple[float, float]] = []
        for e in env if isinstance(env, list) else [env]:
            self._wrap(e)

    def _wrap(self, env) -> None:
        threshold = self.threshold
        inner = env.step

        def step(actions):
            out = inner(actions)
            ep = out[3].get("episode")
            if ep is not None:
                self.recent.extend(ep["returns"].tolist())
                mean = float(np.mean(self.recent))
                now = time.perf_counter() - self.t0
                self.curve.append((now, mean))
                if self.reached_at is None and len(self.recent) >= self.window and mean >= threshold:
                    self.reached_at = now
            return out

        env.step = step

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def run_ours(seed: int, threshold: float, budget_s: float) -> ReturnTracker:
    from shared_policy.config import PolicyConfig, PPOConfig
    from shared_policy.tracking import NullLogger
    from sim.pretrain import PretrainRunner

    torch.manual_seed(seed)
    env = sim.make_env(TASK, HARDWARE, NUM_ENVS, seed=seed)
    tracker = ReturnTracker(env, threshold)
    # stem obs->64, trunk 64->64->64: three hidden layers of 64, as the peers' [64, 64, 64]
    policy = PolicyConfig(latent_dim=64, trunk_hidden=[64], stem_hidden=[], critic_hidden=[64])
    runner = PretrainRunner([env], policy, PPOConfig(), Path(f"/tmp/train_speed/ours{seed}"), NullLogger(),
                            checkpoint_every=10**9, seed=seed)
    while tracker.reached_at is None and tracker.elapsed() < budget_s:
        runner.learn(1, log_every=10**9)
    return tracker


def run_rsl_rl(seed: int, threshold: float, budget_s: float) -> ReturnTracker:
    from rsl_rl.runners import OnPolicyRunner

    from sim.rsl_rl_env import RslRlVecEnv

    torch.manual_seed(seed)
    env = sim.make_env(TASK, HARDWARE, NUM_ENVS, seed=seed)
    tracker = ReturnTracker(env, threshold)
    cfg = {
        "num_steps_per_env": 24, "save_interval": 10**9, "obs_groups": {"actor": ["policy"], "critic": ["critic"]},
        "algorithm": {"class_name": "rsl_rl.algorithms.PPO", "num_learning_epochs": 5, "num_mini_batches": 4,
                      "learning_rate": 1e-3, "schedule": "adaptive", "entropy_coef": 0.01},
        "actor": {"class_name": "rsl_rl.models.MLPModel", "hidden_dims": [64, 64, 64], "obs_normalization": True,
                  "distribution_cfg": {"class_name": "rsl_rl.modules.GaussianDistribution", "init_std": 1.0}},
        "critic": {"class_name": "rsl_rl.models.MLPModel", "hidden_dims": [64, 64, 64], "obs_normalization": True},
    }
    runner = OnPolicyRunner(RslRlVecEnv(env), cfg, log_dir=None, device="cpu")
    first = True
    while tracker.reached_at is None and tracker.elapsed() < budget_s:
        runner.learn(1, init_at_random_ep_len=first)
        first = False
    return tracker


def run_sb3(seed: int, threshold: float, budget_s: float) -> ReturnTracker:
    """SB3 on a VecEnv written for this benchmark over our whole batch (kinder to SB3 than its usual path)."""
    from sb3_vec_env import SB3VecEnv  # beside this script

    env = sim.make_env(TASK, HARDWARE, NUM_ENVS, seed=seed, keep_final_obs=True)
    tracker = ReturnTracker(env, threshold)
    _sb3_learn(_sb3_ppo(SB3VecEnv(env), seed), tracker, budget_s)
    return tracker


def _sb3_ppo(venv, seed: int):
    from stable_baselines3 import PPO

    return PPO("MlpPolicy", venv, n_steps=24, batch_size=NUM_ENVS * 24 // 4, n_epochs=5,
               learning_rate=1e-3, ent_coef=0.01, gamma=0.99, gae_lambda=0.95, clip_range=0.2, seed=seed,
               policy_kwargs={"net_arch": [64, 64, 64]}, device="cpu", verbose=0)


def _sb3_learn(model, tracker: ReturnTracker, budget_s: float) -> None:
    from stable_baselines3.common.callbacks import BaseCallback

    class Stop(BaseCallback):
        def _on_step(self) -> bool:
            return tracker.reached_at is None and tracker.elapsed() < budget_s

    model.learn(total_timesteps=10**10, callback=Stop())


def run_sb3_gym(seed: int, threshold: float, budget_s: float) -> ReturnTracker:
    """SB3 as its users run it on a Gymnasium env: its own DummyVecEnv over our single-world Gymnasium view."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sim.gym_vector import GymEnv

    worlds = [sim.make_env(TASK, HARDWARE, 1, seed=seed * NUM_ENVS + i, nthread=1, keep_final_obs=True)
              for i in range(NUM_ENVS)]
    tracker = ReturnTracker(worlds, threshold)
    venv = DummyVecEnv([lambda w=w: GymEnv(w) for w in worlds])
    _sb3_learn(_sb3_ppo(venv, seed), tracker, budget_s)
    return tracker


RUNNERS = {"ours": run_ours, "rsl_rl": run_rsl_rl, "sb3": run_sb3_gym, "sb3_batched": run_sb3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8, help="training seeds per learner (3 cannot resolve 1.2x)")
    ap.add_argument("--threshold", type=float, default=350.0)
    ap.add_argument("--budget-min", type=float, default=8.0, help="per run; a miss counts at the budget")
    # SB3 on its DummyVecEnv over single-world views mostly measures our env stepped one world at a time (~8x
    # slower than the batch): opt in with --only ... sb3; the default SB3 peer is SB3's PPO on the whole batch
    ap.add_argument("--only", nargs="+", choices=sorted(RUNNERS), default=["ours", "rsl_rl", "sb3_batched"])
    ap.add_argument("--out", default="benchmarks/results/train_speed.json")
    args = ap.parse_args()
    budget = args.budget_min * 60
    times: dict[str, list[float]] = {k: [] for k in args.only}
    missed: dict[str, int] = {k: 0 for k in args.only}
    curves = {}
    torch.set_num_threads(2)
    for seed in range(args.seeds):
        for name in args.only:  # interleaved: each seed runs every learner before the next seed
            tr = RUNNERS[name](seed, args.threshold, budget)
            t = tr.reached_at if tr.reached_at is not None else budget
            missed[name] += tr.reached_at is None
            times[name].append(t)
            curves[f"{name}/{seed}"] = tr.curve[:: max(1, len(tr.curve) // 200)]
            last = tr.curve[-1][1] if tr.curve else float("nan")
            print(f"{name:7s} seed {seed}: {'reached' if tr.reached_at else 'MISSED'} {args.threshold:g} "
                  f"after {t:7.1f} s (last mean return {last:.1f})", flush=True)
    stats = {}
    for k in args.only:
        mean, half = t_interval(times[k])
        stats[k] = {"mean_s": mean, "ci95_s": half, "median_s": statistics.median(times[k]), "missed": missed[k]}
        print(f"{k:11s} time to {args.threshold:g}: mean {mean:.1f} +- {half:.1f} s (95% t-interval over "
              f"{args.seeds} training seeds), median {stats[k]['median_s']:.1f} s, missed {missed[k]}/{args.seeds}")
    parts = []
    for peer in ("rsl_rl", "sb3_batched", "sb3"):
        if peer in times and "ours" in times:
            ratio, lo, hi = ratio_interval(times[peer], times["ours"])
            stats[peer].update(ratio=ratio, ratio_lo=lo, ratio_hi=hi)
            bound = ">" if missed[peer] else ""  # a peer that missed counts at the budget: a lower bound
            print(f"{peer:11s} / ours: {bound}{ratio:.2f} (95% bootstrap over seeds {lo:.2f}-{hi:.2f})")
            parts.append(f"ratio_vs_{peer}={bound}{ratio:.2f} [{lo:.2f},{hi:.2f}]")
    write_result(args.out, f"train_speed seeds={args.seeds} " + " ".join(parts),
                 {"args": vars(args), "threshold": args.threshold, "budget_s": budget, "times": times,
                  "missed": missed, "stats": stats, "curves": curves})


if __name__ == "__main__":
    main()
