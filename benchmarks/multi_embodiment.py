"""Multi-embodiment reach: one trunk pretrained on several arm types vs a separate run per type.

The joint run trains one policy on every type at once (each type its own batched env of N worlds).
Each separate run trains a policy on one type alone with the same N worlds for the same number of
iterations, so every type sees exactly the steps it saw in the joint run. Every policy is then scored on
the same 128 evaluation episodes per type (deterministic actions, fresh seeds): success = end-effector
within 5 cm of the target at the end of the 4 s episode.

    python benchmarks/multi_embodiment.py --iterations 150 --seeds 3

Every training seed trains the joint run and each separate run; returns are quoted with a 95% t-interval
over training seeds and success as its minimum over seeds. Last line, e.g. ``multi_embodiment seeds=3
joint_success_min=0.93 separate_success_min=0.91 joint_minus_separate_return_min=0.4 steps_per_type=921600``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from result_record import write_result  # beside this script
from seed_stats import t_interval

import sim
from shared_policy.config import PolicyConfig, PPOConfig
from shared_policy.tracking import NullLogger
from sim.evaluation import evaluate
from sim.pretrain import PretrainRunner

TASK = "reach"


def train(types: list[str], n: int, iterations: int, seed: int) -> tuple[PretrainRunner, float]:
    torch.manual_seed(seed)
    envs = [sim.make_env(TASK, hw, n, seed=seed + k) for k, hw in enumerate(types)]
    runner = PretrainRunner(envs, PolicyConfig(), PPOConfig(), Path(f"/tmp/multi_embodiment/{'+'.join(types)}"),
                            NullLogger(), checkpoint_every=10**9, seed=seed)
    t0 = time.perf_counter()
    runner.learn(iterations, log_every=10)
    return runner, time.perf_counter() - t0


def score(runner: PretrainRunner, hw: str, episodes: int) -> dict[str, float]:
    res = evaluate(runner.policy, sim.make_env(TASK, hw, 64, seed=10_000), episodes)
    return {"success": res.success_rate, "return": res.mean_return, "ci95": res.ci95}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", nargs="+", default=["arm2_planar", "arm3_planar", "arm7"])
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--num-envs", type=int, default=256, help="worlds per type")
    ap.add_argument("--episodes", type=int, default=128)
    ap.add_argument("--seeds", type=int, default=3, help="training seeds (each a joint run and a run per type)")
    ap.add_argument("--out", default="benchmarks/results/multi_embodiment.json")
    args = ap.parse_args()
    steps_per_type = args.iterations * args.num_envs * PPOConfig().num_steps_per_env
    runs: list[dict] = []
    for seed in range(args.seeds):
        joint, t_joint = train(args.types, args.num_envs, args.iterations, seed)
        rows = {hw: {"joint": score(joint, hw, args.episodes)} for hw in args.types}
        print(f"seed {seed}: joint run ({'+'.join(args.types)}): {t_joint / 60:.1f} min", flush=True)
        for hw in args.types:
            alone, t_alone = train([hw], args.num_envs, args.iterations, seed)
            rows[hw]["separate"] = score(alone, hw, args.episodes)
            rows[hw]["separate_minutes"] = t_alone / 60
            print(f"seed {seed}: separate run ({hw}): {t_alone / 60:.1f} min", flush=True)
        runs.append({"seed": seed, "joint_minutes": t_joint / 60, "rows": rows})
    table = {}
    for hw in args.types:
        cell = {}
        for mode in ("joint", "separate"):
            ret, half = t_interval([r["rows"][hw][mode]["return"] for r in runs])
            cell[mode] = {"return": ret, "return_ci95_over_seeds": half,
                          "success_min": min(r["rows"][hw][mode]["success"] for r in runs),
                          "success_mean": sum(r["rows"][hw][mode]["success"] for r in runs) / len(runs)}
        j, s = cell["joint"], cell["separate"]
        print(f"{hw:12s} joint success min {j['success_min']:.2f} return {j['return']:7.2f} +- "
              f"{j['return_ci95_over_seeds']:.2f} | separate success min {s['success_min']:.2f} return "
              f"{s['return']:7.2f} +- {s['return_ci95_over_seeds']:.2f} (95% t-interval over {args.seeds} seeds)")
        table[hw] = cell
    jmin = min(c["joint"]["success_min"] for c in table.values())
    smin = min(c["separate"]["success_min"] for c in table.values())
    gap = min(c["joint"]["return"] - c["separate"]["return"] for c in table.values())
    write_result(args.out, f"multi_embodiment seeds={args.seeds} joint_success_min={jmin:.2f} "
                 f"separate_success_min={smin:.2f} joint_minus_separate_return_min={gap:.2f} "
                 f"steps_per_type={steps_per_type}",
                 {"args": vars(args), "steps_per_type": steps_per_type, "table": table, "runs": runs})


if __name__ == "__main__":
    main()
